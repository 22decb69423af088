"""Auto-join: the steward puts new nodes' devices into the ring.

For each ring type, the **steward** is the node with the lowest node id
among alive nodes that take part in auto-join (``membership.auto_join``)
and hold the newest ring *and* the builder that made it.  Everyone computes
this from the same heartbeat data, so exactly one node acts while views
agree; only the steward ever writes a builder.  Each tick it:

1. adds every device of an alive auto-join node that the builder lacks,
   with weight = the device's size in GiB and the node's region and zone;
2. rebalances (the builder moves nothing that moved within
   ``min_part_hours``; a device that gets no partitions yet still enters the
   ring, and the version is bumped so the new ring wins);
3. writes builder and ring (:meth:`RingStore.write_from_builder`), and ring
   gossip carries them to every node, which pull ring and builder.

Every ``REBALANCE_CHECK`` seconds the steward also rebalances an unbalanced
ring, so partitions held back by ``min_part_hours`` reach new devices later.

When no alive node holds a ring of a type, the lowest-id auto-join node
creates one (``part_power``, ``replicas``, ``min_part_hours`` from
``[membership]``) once enough devices are known for the replica count, and
not before it has been up ``suspect_after`` seconds, so that peers started
with it are heard first.

Convergence after a partition: each side may have had a steward publishing
its own ring.  When the sides meet, every node pulls the newest by
:attr:`RingState.key` -- higher version wins, equal versions go to the
higher content hash -- and the winning side's steward then re-adds the
devices the other side's ring had and its own lacks.  Devices are never
removed automatically: a dead node may come back, and draining one is the
operator's decision (``peerstack-ring remove``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from node.config import Membership
from node.gossip_files import RingRefused, RingStore
from node.log import log_event
from node.membership import RING_TYPES, NodeInfo, newest
from ring.builder import RingBuilder
from ring.devices import Device
from ring.errors import RingError

log = logging.getLogger("peerstack.autojoin")

REBALANCE_CHECK = 300.0
#: balance (percent off target) below which a periodic rebalance is not worth a new ring
GOOD_BALANCE = 1.0


def device_weight(capacity: int) -> float:
    """Ring weight for a device of ``capacity`` bytes: its size in GiB."""
    return max(round(capacity / (1 << 30), 2), 0.01)


def missing_devices(builder: RingBuilder, nodes: list[NodeInfo]) -> list[Device]:
    """Devices of ``nodes`` the builder does not have yet (ids left for the builder)."""
    have = {d.address for d in builder.devices.values()}
    out = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        for dev in node.devices:
            if dev["capacity"] <= 0 or (node.host, node.internal_port, dev["device"]) in have:
                continue
            out.append(Device(id=-1, region=node.region, zone=node.zone, ip=node.host,
                              port=node.internal_port, device=dev["device"],
                              weight=device_weight(dev["capacity"]), node_id=node.node_id))
    return out


def steward_for(ring_type: str, members: list[NodeInfo]) -> str | None:
    """Node id of the steward of ``ring_type`` among ``members`` (alive, self included).

    With no ring anywhere it is the lowest auto-join node id (it bootstraps).
    """
    joiners = [m for m in members if m.auto_join]
    best = newest(m.rings.get(ring_type) for m in joiners)
    if best is None:
        return min((m.node_id for m in joiners), default=None)
    holders = [m.node_id for m in joiners
               if (s := m.rings.get(ring_type)) is not None and s.key == best.key and s.builder]
    return min(holders, default=None)


def extend(builder: RingBuilder, nodes: list[NodeInfo], force_rebalance: bool) -> list[Device]:
    """Add missing devices and rebalance; returns what was added (blocking).

    Raises :class:`ring.errors.RingError` when the builder cannot place the
    replicas yet (too few devices).  Bumps the version when devices were
    added but ``min_part_hours`` let no partition move, so the ring that
    lists them still wins over the one that does not.
    """
    added = [builder.add_device(d) for d in missing_devices(builder, nodes)]
    if not added and not (force_rebalance and builder.assign is not None
                          and builder.get_balance() > GOOD_BALANCE):
        return added
    before = builder.version
    builder.rebalance()
    if added and builder.version == before:
        builder.version += 1
    return added


class Steward:
    """Runs the steward duty for every ring type whenever this node is steward."""

    def __init__(self, settings: Membership, store: RingStore, describe: Callable[[], NodeInfo],
                 alive_peers: Callable[[], list[NodeInfo]], on_published: Callable[[str], None]) -> None:
        self.settings = settings
        self.store = store
        self._describe = describe
        self._alive_peers = alive_peers
        self._on_published = on_published
        self._started = time.monotonic()
        self._next_check: dict[str, float] = {}
        self._waiting: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            await trio.sleep(self.settings.heartbeat_interval)
            await self.tick()

    async def tick(self) -> None:
        me = self._describe()
        members = [me, *self._alive_peers()]
        for ring_type in RING_TYPES:
            if steward_for(ring_type, members) == me.node_id:
                await self._tend(ring_type, me, members)

    async def _tend(self, ring_type: str, me: NodeInfo, members: list[NodeInfo]) -> None:
        joiners = [m for m in members if m.auto_join]
        held = self.store.states.get(ring_type)
        if held is None:
            if time.monotonic() - self._started < self.settings.suspect_after:
                return
            s = self.settings
            builder = RingBuilder(s.part_power, s.replicas, s.min_part_hours)
        else:
            builder = await self.store.load_builder(ring_type)
            if builder is None:
                return
        now = time.monotonic()
        force = now >= self._next_check.get(ring_type, 0.0)
        if force:
            self._next_check[ring_type] = now + REBALANCE_CHECK
        version = builder.version
        try:
            added = await trio.to_thread.run_sync(extend, builder, joiners, force)
        except RingError as exc:
            devices = len(builder.devices)
            if self._waiting.get(ring_type) != devices:
                self._waiting[ring_type] = devices
                log_event(log, "steward.waiting", ring=ring_type, devices=devices, reason=str(exc))
            return
        if builder.version == version:
            return
        try:
            state = await self.store.write_from_builder(ring_type, builder)
        except RingRefused as exc:
            log_event(log, "steward.superseded", ring=ring_type, reason=exc.reason)
            return
        log_event(log, "steward.published", ring=ring_type, version=state.version, hash=state.hash,
                  added=[str(d) for d in added], devices=len(builder.devices))
        self._on_published(ring_type)
