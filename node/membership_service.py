"""Membership, heartbeats, ring gossip and auto-join, mounted on a :class:`Node`.

:func:`install` wires one :class:`MembershipService` into a node:

* the internal route ``/cluster/...`` (every request signed, as all internal
  ones):

  ========================  ==================================================
  ``POST /cluster/heartbeat``   a peer's :class:`NodeInfo`; the reply is ours,
                                MAC'd over the asker's challenge
  ``GET  /cluster/members``     the membership table as JSON
  ``GET  /cluster/ring/<t>``    the signed ring file held (404 if none)
  ``POST /cluster/ring/<t>``    push a ring: 201 installed, 409 not newer,
                                422 unsigned/tampered/foreign
  ``GET  /cluster/builder/<t>`` the framed builder behind the held ring
  ``POST /cluster/builder/<t>`` push a framed builder for the held ring
  ========================  ==================================================

* background services: ``membership.heartbeat`` (every
  ``heartbeat_interval``, a signed heartbeat to every known address),
  ``membership.discovery`` (mDNS, unless ``zeroconf = false``),
  ``membership.refresh`` (re-read ring files, device sizes, free resources),
  ``ring.gossip`` and, with ``auto_join``, ``ring.steward``.

Addresses to heartbeat come from ``seeds``, mDNS, and the peers each
heartbeat names; only a peer that answers (or sends) an authenticated
heartbeat of our cluster becomes a member.  A peer whose replies fail the
signature check -- another secret -- is logged once and never admitted.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import trio

from node.autojoin import Steward
from node.config import Membership
from node.daemon import Node
from node.discovery import Discovery
from node.gossip import RingGossip
from node.gossip_files import MAX_RING_BYTES, RingRefused, RingStore
from node.http_client import BackendError, Timeouts
from node.http_server import BadRequest, Request, Response, text_response
from node.log import log_event
from node.membership import (
    DEAD, REPLY_MAC_HEADER, RING_TYPES, MembershipTable, NodeInfo, check_membership_config,
    check_reply_mac, cluster_hash, device_capacities, free_resources, local_info, parse_hostport,
    reply_mac,
)

log = logging.getLogger("peerstack.membership")

MAX_HEARTBEAT_BYTES = 256 << 10
#: addresses that never answered are dropped after this long (seeds never are)
FORGET_ADDRESS_AFTER = 3600.0


def _json_response(status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json"), *(headers or [])], body)


class MembershipService:
    """This node's view of the cluster and the tasks that keep it current."""

    def __init__(self, node: Node) -> None:
        check_membership_config(node.config.membership)
        self.node = node
        self.settings: Membership = node.config.membership
        self.cluster = cluster_hash(node.cluster.cluster_id)
        s = self.settings
        self.table = MembershipTable(node.config.node_id, s.suspect_after, s.dead_after)
        self.store = RingStore(node.config.rings_path, node.secret)
        #: returns ``(free vCPUs, free RAM bytes)``; the compute agent may replace it
        self.resources = free_resources
        self._resources = (0, 0)
        self._devices: list[dict[str, Any]] = []
        self.started = time.time()
        self.seeds = {parse_hostport(seed) for seed in s.seeds}
        #: address -> when it was last learned or last answered
        self._addresses: dict[tuple[str, int], float] = {a: time.monotonic() for a in self.seeds}
        self._logged_strangers: set[tuple[str, int]] = set()
        self._states: dict[str, str] = {}
        self.gossip = RingGossip(self.store, node.client, self.table.alive, s.heartbeat_interval,
                                 self._rings_changed)
        self.steward = Steward(s, self.store, self.describe, self.table.alive, self._rings_changed)
        self.discovery: Discovery | None = None
        if s.zeroconf:
            interfaces = s.interfaces or [node.config.internal.host]
            self.discovery = Discovery(self.describe, self._peer_found, interfaces,
                                       s.announce_interval)
        self.timeouts = Timeouts(connect=s.heartbeat_interval, node=s.heartbeat_interval)

    # -- who we are ----------------------------------------------------------------

    def describe(self) -> NodeInfo:
        """This node as peers see it, from the latest refresh."""
        return local_info(self.node.config, self.node.cluster,
                          internal_port=self.node.internal_port or self.node.config.internal.port,
                          public_port=self.node.public_port or self.node.config.public.port,
                          devices=self._devices, rings=self.store.states,
                          resources=self._resources, started=self.started)

    async def refresh(self) -> None:
        """Re-read ring files, device sizes and free resources (all blocking, one thread hop each)."""
        changed = await self.store.refresh()
        self._devices = await trio.to_thread.run_sync(device_capacities, self.node.config)
        self._resources = await trio.to_thread.run_sync(self.resources)
        if changed:
            log_event(log, "rings.local_change", rings=changed,
                      versions={t: s.version for t, s in self.store.states.items()})
            self._rings_changed(changed[0])

    def _rings_changed(self, ring_type: str) -> None:
        if self.discovery is not None:
            self.discovery.announce_soon()

    # -- services ------------------------------------------------------------------

    def install(self) -> None:
        node = self.node
        node.internal_routes["cluster"] = self.handle
        node.add_service("membership.refresh", self._refresh_loop)
        node.add_service("membership.heartbeat", self._heartbeat_loop)
        node.add_service("ring.gossip", self._gossip_loop)
        if self.discovery is not None:
            node.add_service("membership.discovery", self.discovery.run)
        if self.settings.auto_join:
            node.add_service("ring.steward", self.steward.run)

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh()
            await trio.sleep(max(self.settings.heartbeat_interval, 1.0))

    async def _gossip_loop(self) -> None:
        await self.refresh()
        await self.gossip.run()

    async def _heartbeat_loop(self) -> None:
        await self.refresh()
        interval = self.settings.heartbeat_interval
        while True:
            deadline = trio.current_time() + interval
            await self.heartbeat_all()
            self._log_state_changes()
            await trio.sleep_until(deadline)

    def _peer_found(self, node_id: str, address: tuple[str, int]) -> None:
        self._learn(address)

    def _learn(self, address: tuple[str, int]) -> None:
        me = self.describe()
        if address != me.address:
            self._addresses.setdefault(address, time.monotonic())

    # -- heartbeats ----------------------------------------------------------------

    def _peer_addresses(self) -> list[list[Any]]:
        return [[m.info.host, m.info.internal_port] for m, state in self.table.members()
                if state != DEAD]

    async def heartbeat_all(self) -> None:
        """One round: a heartbeat to every known address, concurrently."""
        now = time.monotonic()
        for address, seen in list(self._addresses.items()):
            if address not in self.seeds and now - seen > FORGET_ADDRESS_AFTER:
                del self._addresses[address]
        for address in self.table.addresses():
            self._addresses.setdefault(address, now)
        me = self.describe().address
        async with trio.open_nursery() as nursery:
            for address in list(self._addresses):
                if address != me:
                    nursery.start_soon(self._heartbeat, address)

    async def _heartbeat(self, address: tuple[str, int]) -> None:
        challenge = secrets.token_hex(16)
        body = json.dumps({"from": self.describe().to_json(), "peers": self._peer_addresses(),
                           "challenge": challenge}, separators=(",", ":")).encode()
        try:
            resp = await self.node.client.request(
                "POST", address[0], address[1], "/cluster/heartbeat",
                [("Content-Type", "application/json")], body, timeouts=self.timeouts,
                max_response_bytes=MAX_HEARTBEAT_BYTES)
        except BackendError:
            return  # silence is what the table measures
        if resp.status != 200:
            self._stranger(address, f"heartbeat answered {resp.status}")
            return
        if not check_reply_mac(self.node.secret, challenge, resp.body,
                               resp.headers.get(REPLY_MAC_HEADER)):
            self._stranger(address, "reply not signed with the cluster secret")
            return
        try:
            doc = json.loads(resp.body)
            info = NodeInfo.from_json(doc["from"])
        except (ValueError, KeyError, TypeError) as exc:
            self._stranger(address, f"bad heartbeat reply: {exc}")
            return
        if info.cluster != self.cluster:
            self._stranger(address, f"peer of cluster {info.cluster}")
            return
        self._addresses[address] = time.monotonic()
        self._heard(info, doc.get("peers"))

    def _heard(self, info: NodeInfo, peers: Any) -> None:
        if info.node_id == self.node.config.node_id:
            return
        if self.table.heard(info):
            log_event(log, "membership.alive", peer=info.node_id,
                      address=f"{info.host}:{info.internal_port}")
            self.node.health.peer_alive(info.host, info.internal_port)
        self._learn(info.address)
        if isinstance(peers, list):
            for peer in peers[:1024]:
                try:
                    self._learn((str(peer[0]), int(peer[1])))
                except (TypeError, ValueError, IndexError):
                    continue
        held = self.store.states
        for t in RING_TYPES:
            theirs = info.rings.get(t)
            if theirs is not None and (t not in held or theirs.key > held[t].key
                                       or (theirs.key == held[t].key and theirs.builder
                                           and not held[t].builder)):
                self.gossip.poke()
                break

    def _stranger(self, address: tuple[str, int], reason: str) -> None:
        if address not in self._logged_strangers:
            self._logged_strangers.add(address)
            log_event(log, "membership.stranger", level=logging.WARNING,
                      address=f"{address[0]}:{address[1]}", reason=reason)

    def _log_state_changes(self) -> None:
        for member, state in self.table.members():
            node_id = member.info.node_id
            if self._states.get(node_id) != state:
                if node_id in self._states:
                    log_event(log, f"membership.{state}", peer=node_id,
                              was=self._states[node_id])
                self._states[node_id] = state

    # -- the internal route ---------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        what = parts[1] if len(parts) > 1 else ""
        if what == "heartbeat" and len(parts) == 2:
            request.context["quiet"] = True  # one a second from every peer: debug, not info
            if request.method != "POST":
                return text_response(405, "use POST\n")
            return await self._on_heartbeat(request)
        if what == "members" and len(parts) == 2:
            if request.method not in ("GET", "HEAD"):
                return text_response(405, "use GET\n")
            return _json_response(200, self.members_document())
        if what in ("ring", "builder") and len(parts) == 3 and parts[2] in RING_TYPES:
            if request.method in ("GET", "HEAD"):
                return await self._serve_file(what, parts[2])
            if request.method in ("POST", "PUT"):
                return await self._receive_file(request, what, parts[2])
            return text_response(405, "use GET or POST\n")
        return text_response(404, "Not Found\n")

    def members_document(self) -> dict[str, Any]:
        me = self.describe()
        return {"node_id": me.node_id, "cluster": me.cluster, "members": self.table.snapshot(me)}

    async def _on_heartbeat(self, request: Request) -> Response:
        try:
            doc = json.loads(await request.read_body(MAX_HEARTBEAT_BYTES))
            info = NodeInfo.from_json(doc["from"])
            challenge = str(doc["challenge"])
        except (BadRequest, ValueError, KeyError, TypeError) as exc:
            return text_response(400, f"bad heartbeat: {exc}\n")
        if info.cluster != self.cluster:
            self._stranger(info.address, f"heartbeat from cluster {info.cluster}")
            return text_response(409, "another cluster\n")
        self._heard(info, doc.get("peers"))
        body = json.dumps({"from": self.describe().to_json(), "peers": self._peer_addresses()},
                          separators=(",", ":")).encode()
        return Response(200, [("Content-Type", "application/json"),
                              (REPLY_MAC_HEADER, reply_mac(self.node.secret, challenge, body))], body)

    async def _serve_file(self, what: str, ring_type: str) -> Response:
        if what == "ring":
            data = await self.store.read_ring(ring_type)
        else:
            data = await self.store.read_builder(ring_type)
        state = self.store.states.get(ring_type)
        if data is None or state is None:
            return text_response(404, f"no {ring_type} {what} here\n")
        return Response(200, [("Content-Type", "application/octet-stream"),
                              ("X-Ring-Version", str(state.version)), ("X-Ring-Hash", state.hash)],
                        data)

    async def _receive_file(self, request: Request, what: str, ring_type: str) -> Response:
        try:
            data = await request.read_body(MAX_RING_BYTES)
            if what == "ring":
                state = await self.store.install_ring(ring_type, data)
            else:
                await self.store.install_builder(ring_type, data)
                state = self.store.states[ring_type]
        except BadRequest as exc:
            return text_response(413, f"{exc}\n")
        except RingRefused as exc:
            log_event(log, f"{what}.push_refused", rid=request.request_id, ring=ring_type,
                      status=exc.status, reason=exc.reason, client=request.client)
            return text_response(exc.status, f"{exc.reason}\n")
        log_event(log, f"{what}.pushed", rid=request.request_id, ring=ring_type,
                  version=state.version, hash=state.hash, client=request.client)
        self._rings_changed(ring_type)
        return _json_response(201, {"ring": ring_type, **state.to_json()})


def install(node: Node) -> MembershipService | None:
    """Mount membership on ``node`` (before ``node.run``); None when disabled."""
    if not node.config.membership.enabled:
        return None
    service = MembershipService(node)
    service.install()
    return service
