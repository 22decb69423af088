"""Ring gossip: pull the newest ring (and its builder) from whichever peer has it.

Heartbeats carry every peer's ring states, so there is nothing to push: each
node compares what alive peers hold with what it holds and, for each ring
type where a peer is ahead (by :attr:`RingState.key`: version, then content
hash), pulls ``GET /cluster/ring/<type>`` from a peer advertising the newest
one.  :class:`~node.gossip_files.RingStore` verifies the signature and that
it is still newer before installing it atomically, so a peer that lies about
its version, or serves a tampered or foreign file, changes nothing.

Once a node holds the newest ring it also pulls the builder that made it
(``GET /cluster/builder/<type>``) from a peer that has one, so that any node
can take over as steward (``node.autojoin``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from node.gossip_files import MAX_RING_BYTES, RingRefused, RingStore
from node.http_client import BackendError, HTTPClient, Timeouts
from node.log import log_event
from node.membership import RING_TYPES, NodeInfo, newest

log = logging.getLogger("peerstack.gossip")


class RingGossip:
    """Brings this node's rings up to the newest any alive peer holds."""

    def __init__(self, store: RingStore, client: HTTPClient, alive_peers: Callable[[], list[NodeInfo]],
                 interval: float, on_installed: Callable[[str], None]) -> None:
        self.store = store
        self.client = client
        self._alive_peers = alive_peers
        self.interval = interval
        self._on_installed = on_installed
        self._poke = trio.Event()
        self.timeouts = Timeouts(connect=3.0, node=10.0)

    def poke(self) -> None:
        """Look now: a heartbeat showed a peer with a ring we may not have."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.interval):
                await self._poke.wait()
            self._poke = trio.Event()
            await self.sync_once()

    async def sync_once(self) -> None:
        """One pass over the ring types: pull what is newer, then missing builders."""
        peers = self._alive_peers()
        for ring_type in RING_TYPES:
            await self._sync_ring(ring_type, peers)
            await self._sync_builder(ring_type, peers)

    async def _sync_ring(self, ring_type: str, peers: list[NodeInfo]) -> None:
        best = newest(p.rings.get(ring_type) for p in peers)
        held = self.store.states.get(ring_type)
        if best is None or (held is not None and best.key <= held.key):
            return
        for peer in peers:
            state = peer.rings.get(ring_type)
            if state is None or state.key != best.key:
                continue
            data = await self._fetch(peer, f"/cluster/ring/{ring_type}")
            if data is None:
                continue
            try:
                installed = await self.store.install_ring(ring_type, data)
            except RingRefused as exc:
                log_event(log, "ring.refused", level=logging.WARNING, ring=ring_type,
                          peer=peer.node_id, status=exc.status, reason=exc.reason)
                continue
            log_event(log, "ring.installed", ring=ring_type, version=installed.version,
                      hash=installed.hash, peer=peer.node_id)
            self._on_installed(ring_type)
            return

    async def _sync_builder(self, ring_type: str, peers: list[NodeInfo]) -> None:
        held = self.store.states.get(ring_type)
        if held is None or held.builder:
            return
        for peer in peers:
            state = peer.rings.get(ring_type)
            if state is None or state.key != held.key or not state.builder:
                continue
            blob = await self._fetch(peer, f"/cluster/builder/{ring_type}")
            if blob is None:
                continue
            try:
                await self.store.install_builder(ring_type, blob)
            except RingRefused as exc:
                log_event(log, "builder.refused", level=logging.WARNING, ring=ring_type,
                          peer=peer.node_id, status=exc.status, reason=exc.reason)
                continue
            log_event(log, "builder.installed", ring=ring_type, version=held.version,
                      peer=peer.node_id)
            self._on_installed(ring_type)
            return

    async def _fetch(self, peer: NodeInfo, target: str) -> bytes | None:
        try:
            resp = await self.client.request("GET", peer.host, peer.internal_port, target,
                                             timeouts=self.timeouts,
                                             max_response_bytes=MAX_RING_BYTES)
        except BackendError as exc:
            log_event(log, "gossip.fetch_failed", peer=peer.node_id, target=target, error=str(exc))
            return None
        if resp.status != 200:
            log_event(log, "gossip.fetch_failed", peer=peer.node_id, target=target, status=resp.status)
            return None
        return resp.body
