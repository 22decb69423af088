"""``peerstack-ring``: build and inspect rings, with swift-ring-builder's commands.

Usage: ``peerstack-ring BUILDER [COMMAND] [ARGS...]``. Every command loads the
builder file, does one thing and, if that thing changed the builder, writes it back
atomically. Errors print one line on stderr and exit 2 with the builder untouched;
warnings (a rebalance that changed nothing or did not reach balance) exit 1.

The ring file written by ``write_ring`` is signed with the cluster secret, read from
the ``secret`` key (hex) of the TOML cluster file given by ``--secret-file`` or the
``PEERSTACK_CLUSTER_FILE`` environment variable.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import tomllib
from typing import Callable, NoReturn, Sequence

from ring.builder import RebalanceResult, RingBuilder
from ring.devices import Device, parse_change_value, parse_device_string
from ring.errors import RingError
from ring.ringfile import save_ring

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2
BALANCE_GOAL = 1.0


class UsageError(Exception):
    """The command line itself is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def read_cluster_secret(path: str) -> bytes:
    """The cluster secret: the hex ``secret`` key of a TOML cluster file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        return bytes.fromhex(data["secret"])
    except OSError as e:
        raise UsageError(f"cannot read cluster file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"cluster file {path} is not valid TOML: {e}") from None
    except KeyError:
        raise UsageError(f"cluster file {path} has no 'secret' key") from None
    except (ValueError, TypeError):
        raise UsageError(f"cluster file {path}: 'secret' must be a hex string") from None


def ring_path(builder_path: str) -> str:
    """``object.builder`` -> ``object.ring.gz``."""
    base = builder_path[: -len(".builder")] if builder_path.endswith(".builder") else builder_path
    return base + ".ring.gz"


class _Progress:
    """Prints rebalance progress on stderr, at most about once a second."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start

    def __call__(self, phase: str, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            print(f"rebalance: {phase} {fraction * 100:.0f}% ({now - self.start:.0f}s)", file=sys.stderr, flush=True)


# -- output ---------------------------------------------------------------------


def _device_table(builder: RingBuilder, devices: Sequence[Device]) -> list[str]:
    counts = builder.part_counts()
    desired = builder.desired_counts()
    lines = [
        f"{'id':>6} {'region':>6} {'zone':>4} {'ip address:port':>22} {'node_id':>22} {'device':>10} "
        f"{'weight':>8} {'partitions':>10} {'balance':>8} {'flags':>6} meta"
    ]
    for d in devices:
        want = desired.get(d.id, 0.0)
        have = counts.get(d.id, 0)
        bal = (have - want) / want * 100 if want else (999.99 if have else 0.0)
        flags = "DEL" if d.id in builder.pending_removal else ""
        lines.append(
            f"{d.id:>6} {d.region:>6} {d.zone:>4} {f'{d.ip}:{d.port}':>22} {d.node_id:>22} {d.device:>10} "
            f"{d.weight:>8.2f} {have:>10} {bal:>8.2f} {flags:>6} {d.meta}"
        )
    return lines


def _describe(builder: RingBuilder, path: str) -> list[str]:
    devs = sorted(builder.devices.values(), key=lambda d: d.id)
    regions = {d.region for d in devs}
    zones = {(d.region, d.zone) for d in devs}
    remaining = 0
    if builder.assign is not None and builder.min_part_hours:
        remaining = max(0, int(builder.last_moved.max()) + builder.min_part_hours * 3600 - int(time.time()))
    rp = ring_path(path)
    lines = [
        f"{path}, build version {builder.version}, id {builder.builder_id}",
        f"{builder.parts} partitions, {builder.replicas:.6f} replicas, {len(regions)} regions, {len(zones)} zones, "
        f"{len(devs)} devices, {builder.get_balance():.2f} balance, {builder.get_dispersion():.2f} dispersion",
        f"The minimum number of hours before a partition can be reassigned is {builder.min_part_hours} "
        f"({datetime.timedelta(seconds=remaining)} remaining)",
        f"Ring file {rp} {'exists' if os.path.exists(rp) else 'not found'}",
    ]
    if devs:
        lines.append("Devices:")
        lines.extend(_device_table(builder, devs))
    return lines


def _rebalance_message(result: RebalanceResult, parts: int) -> str:
    pct = result.parts_moved / parts * 100
    return (
        f"Reassigned {result.parts_moved} ({pct:.2f}%) partitions. "
        f"Balance is now {result.balance:.2f}.  Dispersion is now {result.dispersion:.2f}"
    )


# -- commands -------------------------------------------------------------------
# Each takes (builder or None, path, args, secret getter) and returns
# (exit code, builder to save or None).

Command = Callable[..., tuple[int, RingBuilder | None]]


def _parse_float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"invalid {what} {value!r}") from None


def cmd_create(_b: None, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    p = _Parser(prog="create", description="create <part_power> <replicas> <min_part_hours>")
    p.add_argument("part_power", type=int)
    p.add_argument("replicas", type=float)
    p.add_argument("min_part_hours", type=int)
    a = p.parse_args(argv)
    return EXIT_OK, RingBuilder(a.part_power, a.replicas, a.min_part_hours)


def cmd_add(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv and argv[0].startswith("-"):
        p = _Parser(prog="add")
        p.add_argument("--region", type=int, default=1)
        p.add_argument("--zone", type=int, required=True)
        p.add_argument("--ip", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--device", required=True)
        p.add_argument("--weight", type=float, required=True)
        p.add_argument("--meta", default="")
        p.add_argument("--node-id", default="")
        a = p.parse_args(argv)
        new = [Device(-1, a.region, a.zone, a.ip, a.port, a.device, a.weight, a.node_id, a.meta)]
    else:
        if not argv or len(argv) % 2:
            raise UsageError("add takes pairs of <r<region>z<zone>-<ip>:<port>/<device>_<meta>> <weight>")
        new = [parse_device_string(argv[i], _parse_float(argv[i + 1], "weight"), -1) for i in range(0, len(argv), 2)]
    for dev in new:
        dev = b.add_device(dev)
        print(f"Device {dev} with {dev.weight:g} weight got id {dev.id}")
    return EXIT_OK, b


def cmd_remove(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if not argv:
        raise UsageError("remove <search-value> [<search-value> ...]")
    devs = [d for value in argv for d in b.search(value)]
    for d in devs:
        b.remove_device(d.id)
        print(f"d{d.id}r{d.region}z{d.zone}-{d.ip}:{d.port}/{d.device} marked for removal and will be removed next rebalance.")
    return EXIT_OK, b


def cmd_set_weight(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if not argv or len(argv) % 2:
        raise UsageError("set_weight <search-value> <weight> [<search-value> <weight> ...]")
    for i in range(0, len(argv), 2):
        weight = _parse_float(argv[i + 1], "weight")
        for d in b.search(argv[i]):
            b.set_weight(d.id, weight)
            print(f"{d} weight set to {weight:g}")
    return EXIT_OK, b


def cmd_set_info(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if not argv or len(argv) % 2:
        raise UsageError("set_info <search-value> <ip>:<port>/<device>_<meta> [...]")
    for i in range(0, len(argv), 2):
        changes = parse_change_value(argv[i + 1])
        for d in b.search(argv[i]):
            b.set_info(d.id, changes)
            print(f"Device {d} is now {b.devices[d.id]}")
    return EXIT_OK, b


def cmd_set_replicas(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if len(argv) != 1:
        raise UsageError("set_replicas <replicas>")
    b.set_replicas(_parse_float(argv[0], "replica count"))
    print(f"The replica count is now {b.replicas:.6f}; rebalance to apply it.")
    return EXIT_OK, b


def cmd_set_min_part_hours(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if len(argv) != 1 or not argv[0].isdigit():
        raise UsageError("set_min_part_hours <hours>")
    b.min_part_hours = int(argv[0])
    print(f"The minimum number of hours before a partition can be reassigned is now {b.min_part_hours}")
    return EXIT_OK, b


def cmd_search(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if len(argv) != 1:
        raise UsageError("search <search-value>")
    print("Devices:")
    print("\n".join(_device_table(b, b.search(argv[0]))))
    return EXIT_OK, None


def cmd_list_parts(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if not argv:
        raise UsageError("list_parts <search-value> [<search-value> ...]")
    if b.assign is None:
        raise UsageError("the ring has not been rebalanced yet")
    ids = {d.id for value in argv for d in b.search(value)}
    print(f"{'Partition':>9}   Matches")
    for part, hits in b.parts_on(ids):
        print(f"{part:>9}   {hits:>7}")
    return EXIT_OK, None


def cmd_rebalance(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    p = _Parser(prog="rebalance")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--force", "-f", action="store_true", help="save even if nothing improved by 1%%")
    a = p.parse_args(argv)
    devs_changed = b.devs_changed
    before_balance, before_dispersion = b.get_balance(), b.get_dispersion()
    first = b.assign is None
    result = b.rebalance(seed=a.seed, progress=_Progress())
    if not result.changed:
        print(
            "No partitions could be reassigned. Either none need to be or none can be due to "
            f"min_part_hours [{b.min_part_hours}]."
        )
        return EXIT_WARNING, None
    improved = before_balance - result.balance >= 1.0 or result.dispersion < before_dispersion
    if not (first or devs_changed or improved or a.force):
        print("Cowardly refusing to save rebalance as it did not change at least 1%.")
        return EXIT_WARNING, None
    print(_rebalance_message(result, b.parts))
    if result.balance > BALANCE_GOAL:
        print(
            f"NOTE: Balance of {result.balance:.2f} indicates you should push this ring, wait at least "
            f"{b.min_part_hours} hours, and rebalance/repush."
        )
        return EXIT_WARNING, b
    return EXIT_OK, b


def cmd_dispersion(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    p = _Parser(prog="dispersion")
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    if b.assign is None:
        raise UsageError("the ring has not been rebalanced yet")
    print(f"Dispersion is {b.get_dispersion():.6f}, Balance is {b.get_balance():.6f}")
    rows = [r for r in b.dispersion_report() if a.verbose or r["over"]]
    if rows:
        width = max(len(str(r["tier"])) for r in rows)
        hist = " ".join(f"{k:>8}" for k in range(len(rows[0]["replicas"])))
        print(f"{'Tier':<{width}} {'Parts':>8} {'%':>7} {'Max':>4} {hist}")
        for r in rows:
            pct = r["over"] / b.parts * 100
            counts = " ".join(f"{c:>8}" for c in r["replicas"])
            print(f"{str(r['tier']):<{width}} {r['parts']:>8} {pct:>7.2f} {r['cap']:>4} {counts}")
    return EXIT_OK, None


def cmd_validate(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv:
        raise UsageError("validate takes no arguments")
    b.validate()
    print("Ring is valid.")
    return EXIT_OK, None


def cmd_pretend(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv:
        raise UsageError("pretend_min_part_hours_passed takes no arguments")
    b.pretend_min_part_hours_passed()
    return EXIT_OK, b


def cmd_write_ring(b: RingBuilder, path: str, argv: list[str], secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv:
        raise UsageError("write_ring takes no arguments")
    key = secret()
    b.validate()
    b.version += 1
    save_ring(ring_path(path), b.to_ring_data(), key)
    print(f"Wrote {ring_path(path)} (version {b.version})")
    return EXIT_OK, b


def cmd_increase_part_power(b: RingBuilder, _path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv:
        raise UsageError("increase-part-power takes no arguments")
    b.increase_part_power()
    print(f"The partition power is now {b.part_power}; every partition kept its devices.")
    return EXIT_OK, b


def cmd_default(b: RingBuilder, path: str, argv: list[str], _secret: Callable[[], bytes]) -> tuple[int, RingBuilder | None]:
    if argv:
        raise UsageError("default takes no arguments")
    print("\n".join(_describe(b, path)))
    return EXIT_OK, None


COMMANDS: dict[str, Command] = {
    "create": cmd_create,
    "add": cmd_add,
    "remove": cmd_remove,
    "set_weight": cmd_set_weight,
    "set_info": cmd_set_info,
    "set_replicas": cmd_set_replicas,
    "set_min_part_hours": cmd_set_min_part_hours,
    "search": cmd_search,
    "list_parts": cmd_list_parts,
    "rebalance": cmd_rebalance,
    "dispersion": cmd_dispersion,
    "validate": cmd_validate,
    "pretend_min_part_hours_passed": cmd_pretend,
    "write_ring": cmd_write_ring,
    "increase-part-power": cmd_increase_part_power,
    "default": cmd_default,
}


def _usage() -> str:
    return f"usage: peerstack-ring [--secret-file CLUSTER.toml] BUILDER [{'|'.join(COMMANDS)}] [ARGS...]"


def _split_secret_option(argv: list[str]) -> tuple[list[str], str | None]:
    """Pull ``--secret-file PATH`` (or ``--secret-file=PATH``) out of ``argv``, wherever it is."""
    rest, secret_file = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--secret-file":
            secret_file = next(it, None)
            if secret_file is None:
                raise UsageError("--secret-file needs a path")
        elif arg.startswith("--secret-file="):
            secret_file = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, secret_file


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``peerstack-ring``; returns the exit code (0 ok, 1 warning, 2 error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args, secret_file = _split_secret_option(args)
        if not args or args[0] in ("-h", "--help"):
            print(_usage())
            return EXIT_OK if args else EXIT_ERROR
        path, cmd_name, rest = args[0], (args[1] if len(args) > 1 else "default"), args[2:]
        command = COMMANDS.get(cmd_name)
        if command is None:
            raise UsageError(f"unknown command {cmd_name!r}; {_usage()}")

        def secret() -> bytes:
            source = secret_file or os.environ.get("PEERSTACK_CLUSTER_FILE")
            if not source:
                raise UsageError("no cluster secret: pass --secret-file CLUSTER.toml or set PEERSTACK_CLUSTER_FILE")
            return read_cluster_secret(source)

        if cmd_name == "create":
            if os.path.exists(path):
                raise UsageError(f"{path} already exists")
            builder = None
        else:
            try:
                builder = RingBuilder.load(path)
            except FileNotFoundError:
                raise UsageError(f"{path} does not exist; create it first") from None
        code, changed = command(builder, path, rest, secret)
        if changed is not None:
            changed.save(path)
        return code
    except (UsageError, RingError) as e:
        print(f"peerstack-ring: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
