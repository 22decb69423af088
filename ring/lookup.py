"""Finding the devices for a path: the read side of the ring.

:class:`Ring` is what every node keeps in memory. It maps a path to a partition by
hashing, maps a partition to its primary devices through the ring file's
``replica2part2dev`` array, and offers *handoffs*: further devices to try when a
primary is down, in an order that keeps the data spread (devices in regions the
partition does not use yet come first, then unused zones, then unused nodes).

Lookups happen on every request, so the hot path does no allocation beyond the
result list: device dicts are built once per load (one per device and replica
index), rows are read through memoryviews (indexing a memoryview yields a plain
int, much cheaper than a numpy scalar), and the ring file is checked for changes
at most once per ``reload_interval`` seconds with a single ``stat``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any, Iterator

import numpy as np

from .errors import RingError
from .ringfile import RingData, load_ring

log = logging.getLogger(__name__)

# Multiplier of Knuth's multiplicative hash: spreads consecutive partitions over
# far-apart starting points in the handoff order.
_SPREAD = 2654435761


class Ring:
    """A loaded, signature-checked ring file that reloads itself when replaced.

    ``hash_prefix`` and ``hash_suffix`` are the cluster's secret salts (made at
    cluster init, never changed): every node must use the same ones or they would
    disagree about where data lives. The returned device dicts are shared between
    calls; treat them as read-only.
    """

    def __init__(
        self,
        path: str,
        secret: bytes,
        hash_prefix: bytes = b"",
        hash_suffix: bytes = b"",
        reload_interval: float = 1.0,
    ) -> None:
        self.path = path
        self._secret = secret
        self._prefix = hash_prefix
        self._suffix = hash_suffix
        self.reload_interval = reload_interval
        self._install(*self._read())

    # -- loading ----------------------------------------------------------------

    def _read(self) -> tuple[tuple[int, int, int], RingData]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size), load_ring(self.path, self._secret)

    def _install(self, stat_key: tuple[int, int, int], data: RingData) -> None:
        self._stat_key = stat_key
        self._next_check = time.monotonic() + self.reload_interval
        self._data = data
        self._part_shift = 32 - data.part_power
        self._none = int(np.iinfo(data.assign.dtype).max) if data.assign.dtype.kind == "u" else -1
        fmt = {2: "H", 4: "I", 8: "q"}[data.assign.itemsize]
        self._rows = [memoryview(row).cast("B").cast(fmt) for row in data.assign]
        self._devs: list[dict[str, Any] | None] = data.devices
        self._by_index = [[None if d is None else dict(d, index=i) for d in data.devices] for i in range(len(self._rows))]
        handoff = [d for d in data.devices if d is not None and d["weight"] > 0]
        # A fixed pseudo-random order, so the devices of one node are not adjacent
        # and each partition's rotation of it starts somewhere different.
        handoff.sort(key=lambda d: hashlib.md5(str(d["id"]).encode()).digest())
        self._handoff = handoff

    def _maybe_reload(self) -> None:
        """Reload if the file was replaced; keep serving the old ring if the new one is bad."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_interval
        try:
            st = os.stat(self.path)
            if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stat_key:
                return
            self._install(*self._read())
        except (OSError, RingError) as e:
            log.warning("keeping ring version %s: cannot reload %s: %s", self._data.version, self.path, e)

    # -- properties -------------------------------------------------------------

    @property
    def version(self) -> int:
        """The loaded ring's version; higher means newer."""
        self._maybe_reload()
        return self._data.version

    @property
    def builder_id(self) -> str:
        """Identity of the builder that produced this ring."""
        return self._data.builder_id

    @property
    def part_power(self) -> int:
        """``log2`` of the number of partitions."""
        self._maybe_reload()
        return self._data.part_power

    @property
    def partition_count(self) -> int:
        """Number of partitions."""
        return 1 << self.part_power

    @property
    def replica_count(self) -> float:
        """Replicas per partition (may be fractional)."""
        return self._data.replicas

    @property
    def devs(self) -> list[dict[str, Any] | None]:
        """All devices, indexed by id (``None`` for unused ids)."""
        self._maybe_reload()
        return self._devs

    # -- lookups ----------------------------------------------------------------

    def get_part(self, account: str, container: str | None = None, obj: str | None = None) -> int:
        """Partition of ``/account[/container[/object]]``."""
        if obj is not None:
            if container is None:
                raise ValueError("an object needs a container")
            path = f"/{account}/{container}/{obj}"
        elif container is not None:
            path = f"/{account}/{container}"
        else:
            path = f"/{account}"
        self._maybe_reload()
        digest = hashlib.md5(self._prefix + path.encode("utf-8") + self._suffix).digest()
        return int.from_bytes(digest[:4], "big") >> self._part_shift

    def get_part_nodes(self, part: int) -> list[dict[str, Any]]:
        """Primary devices of ``part``, each dict carrying its replica ``index``."""
        none = self._none
        out = []
        for i, row in enumerate(self._rows):
            d = row[part]
            if d != none:
                out.append(self._by_index[i][d])
        return out

    def get_nodes(
        self, account: str, container: str | None = None, obj: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """``(partition, primary devices)`` for a path."""
        part = self.get_part(account, container, obj)
        return part, self.get_part_nodes(part)

    def get_more_nodes(self, part: int) -> Iterator[dict[str, Any]]:
        """Handoff devices for ``part``, best first, primaries and zero weights excluded.

        Order, as Swift does it: a device in a region no replica (or earlier handoff)
        uses yet; then one in an unused zone; then on an unused node; then every
        other device. Within each pass devices come in a fixed per-partition
        rotation, so the order is deterministic and differs between partitions.
        Each yielded dict carries ``handoff_index``.
        """
        self._maybe_reload()
        primaries = self.get_part_nodes(part)
        seen = {d["id"] for d in primaries}
        regions = {d["region"] for d in primaries}
        zones = {(d["region"], d["zone"]) for d in primaries}
        nodes = {(d["region"], d["zone"], d["ip"]) for d in primaries}
        devs = self._handoff
        if not devs:
            return
        start = (part * _SPREAD) % len(devs)
        order = devs[start:] + devs[:start]
        count = 0
        for tier in range(4):
            for d in order:
                if d["id"] in seen:
                    continue
                zone = (d["region"], d["zone"])
                node = (d["region"], d["zone"], d["ip"])
                if (
                    (tier == 0 and d["region"] in regions)
                    or (tier == 1 and zone in zones)
                    or (tier == 2 and node in nodes)
                ):
                    continue
                seen.add(d["id"])
                regions.add(d["region"])
                zones.add(zone)
                nodes.add(node)
                yield dict(d, handoff_index=count)
                count += 1
