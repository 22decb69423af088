"""The ring builder: devices, replicas, and the rebalance that places partitions.

The builder's state is small: the device list, the replica count, the partition
power, ``min_part_hours`` and two numpy arrays:

* ``assign`` (``replica2part2dev``): shape ``[ceil(replicas), 2**part_power]``,
  the device id holding each replica of each partition, ``-1`` where a fractional
  replica count leaves a slot empty (with 2.5 replicas the last row is filled for
  the first half of the partitions only);
* ``last_moved``: per partition, when (unix seconds) one of its replicas last moved.

A rebalance works in three phases, each vectorised over all partitions:

1. **Fill** empty slots: a new ring, added replicas, or replicas whose device was
   removed (their data is gone from that device anyway, so ``min_part_hours`` does
   not hold them back).
2. **Disperse**: replicas that break a tier cap (two replicas in one zone when there
   are enough zones, say) move somewhere that keeps the partition wider.
3. **Balance**: devices holding more than their weight-derived target give up
   replicas to devices below target, a few rounds of random candidates at a time;
   a candidate that has nowhere better to go simply stays.

Phases 2 and 3 only touch partitions that have not moved within ``min_part_hours``
and move at most one replica per partition per rebalance, so a partition always
keeps a majority of its replicas where they were.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import uuid
from typing import Any, Callable, Iterable

import numpy as np

from .atomic import atomic_write
from .devices import Device, SearchValue, parse_search_value
from .errors import BuilderError, DeviceError, RingFormatError
from .placement import Placer, ranks_within
from .ringfile import RingData
from .tiers import LEVELS, TierTree, ceil_replicas, dispersion_violations, integer_targets

BUILDER_FORMAT = "peerstack-builder/1"
MAX_PART_POWER = 32
# More rounds rarely help: each round offers every overloaded device fresh
# candidates, and after a few the remaining imbalance is below one partition.
_BALANCE_ROUNDS = 12

Progress = Callable[[str, float], None]


@dataclasses.dataclass(frozen=True)
class RebalanceResult:
    """What a rebalance did.

    ``parts_moved`` counts partitions with at least one replica assigned to a new
    device (on a first rebalance: every partition). ``balance`` is the largest
    deviation, in percent, of any device from its weight-derived share;
    ``dispersion`` the percentage of partitions with some tier over its cap.
    """

    parts_moved: int
    balance: float
    dispersion: float
    changed: bool


def balance_of(assign: np.ndarray, devices: Iterable[Device], replicas: float, part_power: int) -> float:
    """Largest percentage by which a device's partition count misses its share.

    A device of weight 0 that still holds partitions counts as 999.99, as in
    swift-ring-builder, since any share is infinitely too many.
    """
    devs = [d for d in devices]
    if not devs:
        return 0.0
    parts = 1 << part_power
    max_id = max(d.id for d in devs)
    tree = TierTree.build(devs, slot_count(replicas, part_power) / parts, max_id)
    desired = tree.desired_parts(parts)
    held = assign[assign >= 0]
    counts = np.bincount(held, minlength=max_id + 1)[: max_id + 1]
    ids = np.array([d.id for d in devs])
    want = desired[ids]
    have = counts[ids]
    dev = np.where(want > 0, np.abs(have - want) / np.where(want > 0, want, 1) * 100, np.where(have > 0, 999.99, 0))
    return float(min(dev.max(), 999.99))


def dispersion_of(assign: np.ndarray, devices: Iterable[Device], replicas: float, part_power: int) -> float:
    """Percentage of partitions with more replicas in some tier than its cap allows."""
    devs = list(devices)
    parts = 1 << part_power
    max_id = max(d.id for d in devs)
    tree = TierTree.build(devs, slot_count(replicas, part_power) / parts, max_id)
    bad = dispersion_violations(tree, assign).any(axis=0)
    return float(bad.mean() * 100)


def row_lengths(replicas: float, part_power: int) -> list[int]:
    """How many partitions each row serves: full rows, then a partial last row."""
    parts = 1 << part_power
    rows = ceil_replicas(replicas)
    whole = int(replicas + 1e-9)
    lengths = [parts] * whole
    if rows > whole:
        lengths.append(int(round((replicas - whole) * parts)))
    return lengths


def slot_count(replicas: float, part_power: int) -> int:
    """Total partition-replicas in a ring."""
    return sum(row_lengths(replicas, part_power))


class RingBuilder:
    """Holds a ring's devices and assignment and knows how to rebalance it."""

    def __init__(self, part_power: int, replicas: float, min_part_hours: int) -> None:
        if not 1 <= part_power <= MAX_PART_POWER:
            raise BuilderError(f"part_power must be in 1..{MAX_PART_POWER}, got {part_power}")
        if replicas < 1:
            raise BuilderError(f"replicas must be >= 1, got {replicas}")
        if min_part_hours < 0:
            raise BuilderError(f"min_part_hours must be >= 0, got {min_part_hours}")
        self.part_power = part_power
        self.replicas = float(replicas)
        self.min_part_hours = int(min_part_hours)
        self.devices: dict[int, Device] = {}
        self.pending_removal: set[int] = set()
        self.assign: np.ndarray | None = None
        self.last_moved = np.zeros(1 << part_power, dtype=np.uint32)
        self.builder_id = uuid.uuid4().hex
        self.version = 0
        self.next_dev_id = 0
        # Set whenever devices change, cleared by a rebalance; lets the command line
        # refuse a rebalance that would shuffle partitions for no gain.
        self.devs_changed = False

    @property
    def parts(self) -> int:
        """Number of partitions, ``2 ** part_power``."""
        return 1 << self.part_power

    # -- devices ----------------------------------------------------------------

    def add_device(self, dev: Device) -> Device:
        """Add ``dev`` (its ``id`` is assigned if negative) and return it.

        Two devices may not share IP, port and device name: they would be the
        same disk counted twice.
        """
        for other in self.devices.values():
            if other.address == dev.address:
                raise DeviceError(f"device {other.ip}:{other.port}/{other.device} already exists as d{other.id}")
        if dev.id < 0:
            dev = dataclasses.replace(dev, id=self.next_dev_id)
        if dev.id in self.devices:
            raise DeviceError(f"device id {dev.id} already exists")
        if dev.id > 0xFFFFFFFE:
            raise DeviceError("too many devices")
        self.devices[dev.id] = dev
        self.next_dev_id = max(self.next_dev_id, dev.id + 1)
        self.devs_changed = True
        return dev

    def search(self, value: str | SearchValue) -> list[Device]:
        """Devices matching a search value; raises :class:`DeviceError` if none do."""
        sv = parse_search_value(value) if isinstance(value, str) else value
        found = sv.filter(sorted(self.devices.values(), key=lambda d: d.id))
        if not found:
            raise DeviceError(f"no device matches {value!r}")
        return found

    def remove_device(self, dev_id: int) -> None:
        """Drain a device: its weight becomes 0 and the next rebalance forgets it."""
        dev = self._get(dev_id)
        dev.weight = 0.0
        self.pending_removal.add(dev_id)
        self.devs_changed = True

    def set_weight(self, dev_id: int, weight: float) -> None:
        """Change a device's weight; takes effect at the next rebalance."""
        if weight < 0:
            raise DeviceError(f"weight must be >= 0, got {weight}")
        self._get(dev_id).weight = float(weight)
        self.devs_changed = True

    def set_info(self, dev_id: int, changes: dict[str, Any]) -> None:
        """Change a device's ip, port, device name or meta (not its placement)."""
        dev = self._get(dev_id)
        updated = dataclasses.replace(dev, **changes)
        if changes.keys() & {"ip", "port"} and dev.node_id == f"{dev.ip}:{dev.port}":
            updated.node_id = f"{updated.ip}:{updated.port}"
        for other in self.devices.values():
            if other.id != dev_id and other.address == updated.address:
                raise DeviceError(f"{updated.ip}:{updated.port}/{updated.device} already exists as d{other.id}")
        self.devices[dev_id] = updated

    def _get(self, dev_id: int) -> Device:
        try:
            return self.devices[dev_id]
        except KeyError:
            raise DeviceError(f"no device with id {dev_id}") from None

    def set_replicas(self, replicas: float) -> None:
        """Change the replica count; the next rebalance adds or drops replicas."""
        if replicas < 1:
            raise BuilderError(f"replicas must be >= 1, got {replicas}")
        self.replicas = float(replicas)
        self.devs_changed = True

    # -- queries ----------------------------------------------------------------

    def part_counts(self) -> dict[int, int]:
        """Partition-replicas held by each device id."""
        if self.assign is None:
            return {i: 0 for i in self.devices}
        held = self.assign[self.assign >= 0]
        counts = np.bincount(held, minlength=self.next_dev_id + 1)
        return {i: int(counts[i]) for i in self.devices}

    def desired_counts(self) -> dict[int, float]:
        """Partition-replicas each device should hold given weights and tiers."""
        if not self.devices:
            return {}
        tree = TierTree.build(self.devices.values(), slot_count(self.replicas, self.part_power) / self.parts, self.next_dev_id)
        desired = tree.desired_parts(self.parts)
        return {i: float(desired[i]) for i in self.devices}

    def get_balance(self) -> float:
        """See :func:`balance_of`; 0 before the first rebalance."""
        if self.assign is None or not self.devices:
            return 0.0
        return balance_of(self.assign, self.devices.values(), self.replicas, self.part_power)

    def get_dispersion(self) -> float:
        """See :func:`dispersion_of`; 0 before the first rebalance."""
        if self.assign is None or not self.devices:
            return 0.0
        return dispersion_of(self.assign, self.devices.values(), self.replicas, self.part_power)

    def parts_on(self, dev_ids: Iterable[int]) -> list[tuple[int, int]]:
        """``(partition, replicas on the given devices)`` pairs, most replicas first."""
        if self.assign is None:
            return []
        hit = np.isin(self.assign, np.fromiter(dev_ids, dtype=np.int64)).sum(axis=0)
        parts = np.flatnonzero(hit)
        order = np.lexsort((parts, -hit[parts]))
        return [(int(parts[i]), int(hit[parts[i]])) for i in order]

    def dispersion_report(self) -> list[dict[str, Any]]:
        """Per tier: how many partitions have each number of replicas in it.

        ``replicas[k]`` counts partitions with exactly ``k`` replicas in the tier;
        ``over`` counts those above the tier's cap.
        """
        if self.assign is None:
            return []
        tree = TierTree.build(self.devices.values(), slot_count(self.replicas, self.part_power) / self.parts, self.next_dev_id)
        rows = self.assign.shape[0]
        report = []
        for level in range(len(LEVELS) - 1):
            t = tree.tier_of[level][self.assign]
            for idx, key in enumerate(tree.keys[level]):
                per_part = (t == idx).sum(axis=0)
                hist = np.bincount(per_part, minlength=rows + 1)
                report.append(
                    {
                        "tier": key,
                        "level": LEVELS[level],
                        "parts": int((per_part > 0).sum()),
                        "cap": int(tree.cap[level][idx]),
                        "over": int((per_part > tree.cap[level][idx]).sum()),
                        "replicas": [int(x) for x in hist],
                    }
                )
        return report

    def validate(self) -> None:
        """Check the builder's invariants; raise :class:`BuilderError` on the first break."""
        if self.assign is None:
            raise BuilderError("the ring has not been rebalanced yet")
        lengths = row_lengths(self.replicas, self.part_power)
        if self.assign.shape != (len(lengths), self.parts):
            raise BuilderError(f"assignment shape {self.assign.shape} does not match replicas and part power")
        for r, n in enumerate(lengths):
            row = self.assign[r]
            if (row[:n] < 0).any():
                raise BuilderError(f"replica {r} of partition {int(np.argmax(row[:n] < 0))} is unassigned")
            if (row[n:] >= 0).any():
                raise BuilderError(f"replica row {r} has assignments beyond its {n} partitions")
        unknown = set(np.unique(self.assign[self.assign >= 0]).tolist()) - set(self.devices)
        if unknown:
            raise BuilderError(f"partitions assigned to unknown devices {sorted(unknown)}")
        a = np.sort(np.where(self.assign >= 0, self.assign, -1 - np.arange(len(lengths))[:, None]), axis=0)
        dup = (a[1:] == a[:-1]).any(axis=0)
        if dup.any():
            raise BuilderError(f"partition {int(np.argmax(dup))} has two replicas on one device")

    # -- rebalance --------------------------------------------------------------

    def rebalance(self, seed: int | None = None, now: float | None = None, progress: Progress | None = None) -> RebalanceResult:
        """Place every replica, honouring weights, dispersion and ``min_part_hours``.

        ``seed`` makes the result reproducible: the same builder state, seed and
        ``now`` give the same ring. ``progress(phase, fraction)`` is called now and
        then during long runs.
        """
        report = progress or (lambda phase, frac: None)
        now_s = int(time.time() if now is None else now)
        rng = np.random.default_rng(seed)
        lengths = row_lengths(self.replicas, self.part_power)
        rows, parts = len(lengths), self.parts

        for dev_id in self.pending_removal:
            self.devices.pop(dev_id, None)
        self.pending_removal.clear()
        active = [d for d in self.devices.values() if d.weight > 0]
        if len(active) < rows:
            raise BuilderError(f"{rows} replicas need at least {rows} devices with weight > 0, have {len(active)}")

        old = self._old_assign(rows)
        assign = old.copy()
        gone = ~np.isin(assign, np.fromiter(self.devices, dtype=np.int64)) & (assign >= 0)
        assign[gone] = -1
        for r, n in enumerate(lengths):
            assign[r, n:] = -1

        max_id = self.next_dev_id
        tree = TierTree.build(self.devices.values(), sum(lengths) / parts, max_id)
        counts = np.bincount(assign[assign >= 0], minlength=max_id + 2).astype(np.int64)
        targets = np.zeros(max_id + 2, dtype=np.int64)
        targets[: max_id + 1] = integer_targets(tree.desired_parts(parts), sum(lengths), counts[: max_id + 1])
        need = targets - counts
        need[-1] = 0
        placer = Placer(tree, assign, need, rng)

        eligible = (now_s - self.last_moved.astype(np.int64)) >= self.min_part_hours * 3600
        moved = np.zeros(parts, dtype=bool)
        touched = np.zeros(assign.shape, dtype=bool)

        self._fill(placer, lengths, old, moved, touched, report)
        self._disperse(placer, tree, eligible, moved, touched, report)
        self._balance(placer, eligible, moved, touched, report)

        changed_parts = (assign != old).any(axis=0)
        changed = bool(changed_parts.any())
        self.assign = assign
        self.last_moved[changed_parts] = now_s
        self.devs_changed = False
        if changed:
            self.version += 1
        report("done", 1.0)
        return RebalanceResult(int(changed_parts.sum()), self.get_balance(), self.get_dispersion(), changed)

    def _old_assign(self, rows: int) -> np.ndarray:
        """The current assignment resized to ``rows`` rows (new rows empty)."""
        out = np.full((rows, self.parts), -1, dtype=np.int64)
        if self.assign is not None:
            keep = min(rows, self.assign.shape[0])
            out[:keep] = self.assign[:keep]
        return out

    def _fill(self, placer: Placer, lengths: list[int], old: np.ndarray, moved: np.ndarray, touched: np.ndarray, report: Progress) -> None:
        """Phase 1: give every empty slot a device, relaxing rules only if forced to."""
        total = sum(int((placer.assign[r, :n] < 0).sum()) for r, n in enumerate(lengths))
        done = 0
        # One row at a time so that a batch never holds two slots of one partition.
        for r, n in enumerate(lengths):
            parts = np.flatnonzero(placer.assign[r, :n] < 0)
            rows = np.full(len(parts), r)
            base = done
            left = placer.place(rows, parts, strict=True, caps=True, progress=lambda k: report("placing", (base + k) / max(total, 1)))
            for caps in (True, False):
                if left.any():
                    parts, rows = parts[left], rows[left]
                    left = placer.place(rows, parts, strict=False, caps=caps)
            if left.any():
                raise BuilderError(f"could not place replica {r} of partition {int(parts[left][0])}")
            filled = np.flatnonzero(placer.assign[r, :n] != old[r, :n])
            touched[r, filled] = True
            moved[filled[old[r, filled] >= 0]] = True
            done += n

    def _disperse(self, placer: Placer, tree: TierTree, eligible: np.ndarray, moved: np.ndarray, touched: np.ndarray, report: Progress) -> None:
        """Phase 2: move replicas that crowd a tier beyond its cap, if they may move."""
        report("dispersing", 0.0)
        assign = placer.assign
        bad = dispersion_violations(tree, assign)
        bad &= touched | (eligible & ~moved)[None, :]
        r, p = np.nonzero(bad)
        # One replica per partition: the first offender in row order.
        p, first = np.unique(p, return_index=True)
        r = r[first]
        if not len(p):
            return
        src = assign[r, p].copy()
        assign[r, p] = -1
        np.add.at(placer.need, src, 1)
        placer.refresh()
        left = placer.place(r, p, strict=True, caps=True)
        if left.any():
            left[left] = placer.place(r[left], p[left], strict=False, caps=True)
        assign[r[left], p[left]] = src[left]
        np.subtract.at(placer.need, src[left], 1)
        placer.refresh()
        ok = ~left
        touched[r[ok], p[ok]] = True
        moved[p[ok]] = True

    def _balance(self, placer: Placer, eligible: np.ndarray, moved: np.ndarray, touched: np.ndarray, report: Progress) -> None:
        """Phase 3: overloaded devices hand replicas to underloaded ones.

        Candidates are drawn once, shuffled and grouped by device; each round takes
        the next few from every overloaded device (more each round, since earlier
        ones had nowhere to go) and keeps only the moves that fit.
        """
        assign, need = placer.assign, placer.need
        flat = assign.ravel()
        n_parts = assign.shape[1]
        over = need[:-1] < 0
        if not over.any() or not (need[:-1] > 0).any():
            return
        movable = (touched | (eligible & ~moved)[None, :]).ravel()
        cand = np.flatnonzero(movable & (flat >= 0))
        cand = cand[over[flat[cand]]]
        cand = cand[placer.rng.permutation(len(cand))]
        cand = cand[np.argsort(flat[cand], kind="stable")]
        dev_sorted = flat[cand]
        rank = np.arange(len(cand)) - np.searchsorted(dev_sorted, dev_sorted, side="left")
        taken = np.zeros(len(need), dtype=np.int64)
        for round_no in range(_BALANCE_ROUNDS):
            report("balancing", round_no / _BALANCE_ROUNDS)
            excess = np.maximum(-need, 0)
            if not excess[:-1].any() or not (need[:-1] > 0).any():
                return
            ask = excess * (2 << min(round_no, 3))
            window = (rank >= taken[dev_sorted]) & (rank < taken[dev_sorted] + ask[dev_sorted])
            taken += ask
            pick = cand[window]
            src = dev_sorted[window]
            r, p = np.divmod(pick, n_parts)
            still = (flat[pick] == src) & (touched[r, p] | (eligible[p] & ~moved[p]))
            pick, src, r, p = pick[still], src[still], r[still], p[still]
            p, first = np.unique(p, return_index=True)
            pick, src, r = pick[first], src[first], r[first]
            if not len(p):
                if (taken[:-1][over] >= np.bincount(dev_sorted, minlength=len(need))[:-1][over]).all():
                    return
                continue
            assign[r, p] = -1
            dest = placer.choose(p, strict=True, caps=True)
            ok = dest >= 0
            ok &= ranks_within(src, ok) < excess[src]
            ok &= ranks_within(dest, ok) < need[dest]
            assign[r[~ok], p[~ok]] = src[~ok]
            np.add.at(need, src[ok], 1)
            placer.commit(r[ok], p[ok], dest[ok])
            touched[r[ok], p[ok]] = True
            moved[p[ok]] = True

    # -- other operations -------------------------------------------------------

    def pretend_min_part_hours_passed(self) -> None:
        """Forget when partitions last moved, so the next rebalance may move any."""
        self.last_moved[:] = 0

    def increase_part_power(self) -> None:
        """Double the partitions without moving data.

        A path's partition under power ``p+1`` is its old partition times two, plus
        the next hash bit; so old partition ``n`` becomes ``2n`` and ``2n+1``, both
        kept on ``n``'s devices.
        """
        if self.assign is None:
            raise BuilderError("rebalance before increasing the partition power")
        if self.part_power >= MAX_PART_POWER:
            raise BuilderError(f"part_power is already {MAX_PART_POWER}")
        self.assign = np.repeat(self.assign, 2, axis=1)
        self.last_moved = np.repeat(self.last_moved, 2)
        self.part_power += 1
        self.version += 1

    def to_ring_data(self) -> RingData:
        """The part of the builder that nodes need: devices and assignment."""
        if self.assign is None:
            raise BuilderError("the ring has not been rebalanced yet")
        devices: list[dict[str, Any] | None] = [None] * self.next_dev_id
        for d in self.devices.values():
            devices[d.id] = d.to_dict()
        return RingData(
            version=self.version,
            builder_id=self.builder_id,
            part_power=self.part_power,
            replicas=self.replicas,
            devices=devices,
            assign=self.assign,
        )

    # -- persistence ------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the builder atomically (one npz: JSON metadata plus arrays)."""
        meta = {
            "format": BUILDER_FORMAT,
            "part_power": self.part_power,
            "replicas": self.replicas,
            "min_part_hours": self.min_part_hours,
            "builder_id": self.builder_id,
            "version": self.version,
            "next_dev_id": self.next_dev_id,
            "devs_changed": self.devs_changed,
            "pending_removal": sorted(self.pending_removal),
            "devices": [d.to_dict() for d in sorted(self.devices.values(), key=lambda d: d.id)],
        }
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), "last_moved": self.last_moved}
        if self.assign is not None:
            arrays["assign"] = self.assign.astype(np.int32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path: str) -> RingBuilder:
        """Read a builder written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                last_moved = z["last_moved"]
                assign = z["assign"].astype(np.int64) if "assign" in z.files else None
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise RingFormatError(f"{path} is not a peerstack builder file: {e}") from None
        if meta.get("format") != BUILDER_FORMAT:
            raise RingFormatError(f"{path}: unknown builder format {meta.get('format')!r}")
        b = cls(meta["part_power"], meta["replicas"], meta["min_part_hours"])
        b.builder_id = meta["builder_id"]
        b.version = meta["version"]
        b.next_dev_id = meta["next_dev_id"]
        b.devs_changed = meta["devs_changed"]
        b.pending_removal = set(meta["pending_removal"])
        b.devices = {d["id"]: Device.from_dict(d) for d in meta["devices"]}
        b.last_moved = last_moved
        b.assign = assign
        return b
