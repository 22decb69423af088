"""``peerstack bench ring``: our ring builder against OpenStack Swift's, side by side.

Both builders get the same devices (two regions, five zones, nodes of ten devices,
weights 100/200/300) and the same operations: a first rebalance, then one device
added and a second rebalance. Balance and dispersion are measured with the same
function on both results, so the columns compare like with like. Swift's builder
comes from the ``swift`` package; without it only our figures are reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from typing import Any

import numpy as np

from ring.builder import RingBuilder, balance_of, dispersion_of
from ring.devices import Device

REPLICAS = 3
MIN_PART_HOURS = 1
CASES = [(14, 100), (18, 500), (20, 1000)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``peerstack bench ring``."""
    parser.add_argument("--quick", action="store_true", help="only the 2^14 partitions / 100 devices case")
    parser.add_argument("--full", action="store_true", help="also run Swift on 2^20 partitions (about 4 minutes)")
    parser.add_argument("--seed", type=int, default=1, help="seed for device weights and both builders")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")


def layout(count: int, seed: int) -> list[Device]:
    """``count`` devices: nodes of 10 devices alternating over 2 regions and 5 zones."""
    rng = np.random.default_rng(seed)
    weights = rng.choice([100.0, 200.0, 300.0], size=count + 1)
    devs = []
    for i in range(count + 1):
        node = i // 10
        devs.append(
            Device(
                id=i,
                region=1 + node % 2,
                zone=1 + node % 5,
                ip=f"10.{node // 65536}.{node // 256 % 256}.{node % 256}",
                port=6200,
                device=f"d{i % 10}",
                weight=float(weights[i]),
            )
        )
    # The last one is the device added before the second rebalance, on a new node.
    devs[-1] = Device(count, 1, 1, "10.255.255.254", 6200, "d0", 200.0)
    return devs


def _moved(before: np.ndarray | None, after: np.ndarray) -> int:
    if before is None:
        return after.shape[1]
    return int((before != after).any(axis=0).sum())


def _measure(name: str, assign: np.ndarray, before: np.ndarray | None, devs: list[Device], part_power: int, seconds: float) -> dict[str, Any]:
    return {
        "builder": name,
        "seconds": round(seconds, 3),
        "moved": _moved(before, assign),
        "balance": round(balance_of(assign, devs, REPLICAS, part_power), 3),
        "dispersion": round(dispersion_of(assign, devs, REPLICAS, part_power), 3),
    }


def run_ours(part_power: int, devs: list[Device], seed: int) -> list[dict[str, Any]]:
    """First rebalance and add-one-device rebalance with peerstack's builder."""
    b = RingBuilder(part_power, REPLICAS, MIN_PART_HOURS)
    for d in devs[:-1]:
        b.add_device(Device(**d.to_dict()))
    t = time.perf_counter()
    b.rebalance(seed=seed)
    first = _measure("peerstack", b.assign, None, devs[:-1], part_power, time.perf_counter() - t)
    before = b.assign.copy()
    b.pretend_min_part_hours_passed()
    b.add_device(Device(**devs[-1].to_dict()))
    t = time.perf_counter()
    b.rebalance(seed=seed)
    second = _measure("peerstack", b.assign, before, devs, part_power, time.perf_counter() - t)
    return [first, second]


def _swift_assign(rb: Any) -> np.ndarray:
    rows = [np.frombuffer(row, dtype=np.uint16).astype(np.int64) for row in rb._replica2part2dev]
    a = np.stack(rows)
    a[a == 0xFFFF] = -1
    return a


def run_swift(part_power: int, devs: list[Device], seed: int) -> list[dict[str, Any]]:
    """The same two rebalances with ``swift.common.ring.RingBuilder``."""
    from swift.common.ring import RingBuilder as SwiftBuilder

    def swift_dev(d: Device) -> dict[str, Any]:
        return {"id": d.id, "region": d.region, "zone": d.zone, "ip": d.ip, "port": d.port, "device": d.device, "weight": d.weight, "meta": ""}

    rb = SwiftBuilder(part_power, REPLICAS, MIN_PART_HOURS)
    for d in devs[:-1]:
        rb.add_dev(swift_dev(d))
    t = time.perf_counter()
    rb.rebalance(seed=seed)
    elapsed = time.perf_counter() - t
    before = _swift_assign(rb)
    first = _measure("swift", before, None, devs[:-1], part_power, elapsed)
    rb.pretend_min_part_hours_passed()
    rb.add_dev(swift_dev(devs[-1]))
    t = time.perf_counter()
    rb.rebalance(seed=seed)
    elapsed = time.perf_counter() - t
    second = _measure("swift", _swift_assign(rb), before, devs, part_power, elapsed)
    return [first, second]


def _ideal_moves(part_power: int, devs: list[Device]) -> int:
    """Partitions that must move when the last device joins: its share, one replica each."""
    share = devs[-1].weight / sum(d.weight for d in devs) * REPLICAS * (1 << part_power)
    return int(np.ceil(share))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints a table (and JSON with ``--json``). Returns 0."""
    have_swift = importlib.util.find_spec("swift") is not None
    if not have_swift:
        print("swift is not installed (pip install swift): reporting peerstack's builder only", file=sys.stderr)

    cases = CASES[:1] if args.quick else CASES
    results = []
    for part_power, count in cases:
        devs = layout(count, args.seed)
        label = f"2^{part_power} parts / {count} devices"
        print(f"running {label}: peerstack", file=sys.stderr, flush=True)
        ours = run_ours(part_power, devs, args.seed)
        theirs = None
        if have_swift and (part_power < 20 or args.full):
            print(f"running {label}: swift", file=sys.stderr, flush=True)
            theirs = run_swift(part_power, devs, args.seed)
        for step, name in enumerate(("first rebalance", "add 1 device")):
            row: dict[str, Any] = {
                "case": f"{label}, {name}",
                "ideal_moved": (1 << part_power) if step == 0 else _ideal_moves(part_power, devs),
                "peerstack": ours[step],
                "swift": theirs[step] if theirs else None,
            }
            if theirs:
                row["speedup"] = round(theirs[step]["seconds"] / max(ours[step]["seconds"], 1e-9), 1)
            results.append(row)

    header = f"{'case':<44} {'builder':<10} {'seconds':>8} {'moved':>9} {'ideal':>9} {'balance%':>9} {'dispersion%':>11}"
    print(header)
    print("-" * len(header))
    for row in results:
        for who in ("peerstack", "swift"):
            m = row[who]
            if m is None:
                continue
            case = row["case"] if who == "peerstack" else ""
            print(
                f"{case:<44} {who:<10} {m['seconds']:>8.2f} {m['moved']:>9} {row['ideal_moved']:>9} "
                f"{m['balance']:>9.2f} {m['dispersion']:>11.2f}"
            )
        if row.get("speedup"):
            print(f"{'':<44} {'speedup':<10} {row['speedup']:>7.1f}x")
    if args.json:
        print(json.dumps({"bench": "ring", "replicas": REPLICAS, "swift_available": have_swift, "results": results}))
    return 0
