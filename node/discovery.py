"""Finding peers on the LAN with mDNS / DNS-SD (python-zeroconf).

Each node registers ``<instance>._peerstack._tcp.local.`` pointing at its
internal port, with a TXT record describing it (:func:`txt_record`), and
browses for the same type.  Discovery only says where a peer *might* be:
what it reports is handed to the heartbeat loop, which admits the peer once
it answers a signed heartbeat.  Records from another cluster (a different
cluster-id hash) are ignored and logged once.

python-zeroconf runs its own thread and event loop.  The bridge to trio is
narrow: every blocking call (construct, register, update, resolve, close)
goes through ``trio.to_thread.run_sync``; the browser's callback, which runs
on zeroconf's thread, only posts ``(name, change)`` into a trio channel with
``trio.from_thread.run_sync``.

Interfaces are always explicit -- a network namespace without a default
route has no "default" interface, and ``InterfaceChoice.Default`` then fails
with ``OSError 19``.  mDNS is no failure detector and browsers do not find a
peer again after a partition heals until it re-announces, so the record is
re-announced every ``announce_interval`` seconds and whenever it changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Callable

import trio
from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from node.log import log_event
from node.membership import RING_TYPES, NodeInfo

log = logging.getLogger("peerstack.discovery")

SERVICE_TYPE = "_peerstack._tcp.local."
_RESOLVE_TIMEOUT_MS = 3000

#: called with (node_id, (host, internal port)) for every peer of our cluster found
PeerFound = Callable[[str, tuple[str, int]], None]


def instance_name(node_id: str, cluster: str) -> str:
    """A DNS-safe instance label for a node id such as ``10.0.0.7:6200``.

    Unique on the LAN, not just in the cluster: two clusters may both have a
    ``node1``, and mDNS refuses a second registration of the same name.
    """
    label = re.sub(r"[^A-Za-z0-9-]+", "-", node_id).strip("-")[:40] or "node"
    return f"{label}-{hashlib.sha256(f'{cluster}/{node_id}'.encode()).hexdigest()[:8]}"


def txt_record(info: NodeInfo) -> dict[str, str]:
    """The TXT properties: short keys, each well under DNS's 255-byte string limit."""
    txt = {
        "c": info.cluster, "id": info.node_id, "ip": str(info.internal_port),
        "pp": str(info.public_port), "r": str(info.region), "z": str(info.zone),
        "cap": str(info.capacity), "cpu": str(info.vcpus_free), "ram": str(info.ram_free),
    }
    for t in RING_TYPES:
        state = info.rings.get(t)
        if state is not None:
            txt[f"ring.{t}"] = f"{state.version}:{state.hash[:16]}:{int(state.builder)}"
    return txt


def _decode_txt(props: dict[bytes, bytes | None]) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")
            for k, v in props.items()}


class Discovery:
    """Advertise this node and report peers of the same cluster to ``on_peer``."""

    def __init__(self, describe: Callable[[], NodeInfo], on_peer: PeerFound,
                 interfaces: list[str], announce_interval: float) -> None:
        self._describe = describe
        self._on_peer = on_peer
        self._interfaces = interfaces
        self.announce_interval = announce_interval
        self._changed = trio.Event()
        self._strangers: set[str] = set()
        #: peers reported so far, by node id (for status and tests)
        self.found: dict[str, tuple[str, int]] = {}

    def announce_soon(self) -> None:
        """Re-announce now rather than at the next interval (the record changed)."""
        self._changed.set()

    def _zeroconf_interfaces(self):
        if any(ip in ("0.0.0.0", "") for ip in self._interfaces):
            return InterfaceChoice.All
        return list(self._interfaces)

    def _service_info(self) -> ServiceInfo:
        info = self._describe()
        name = instance_name(info.node_id, info.cluster)
        return ServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}",
                           addresses=[socket.inet_aton(info.host)], port=info.internal_port,
                           properties=txt_record(info), server=f"{name}.local.")

    async def run(self) -> None:
        """Register, browse and re-announce until cancelled; always unregisters."""
        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[tuple[str, ServiceStateChange]](1024)

        def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                      state_change: ServiceStateChange) -> None:
            try:
                trio.from_thread.run_sync(send.send_nowait, (name, state_change), trio_token=token)
            except (trio.WouldBlock, trio.RunFinishedError, trio.BrokenResourceError,
                    trio.ClosedResourceError):
                pass  # the next announcement brings it again

        interfaces = self._zeroconf_interfaces()
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only))
        browser: ServiceBrowser | None = None
        try:
            await trio.to_thread.run_sync(zc.register_service, self._service_info())
            log_event(log, "discovery.registered", interfaces=str(interfaces))
            browser = await trio.to_thread.run_sync(
                lambda: ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change]))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._announce_loop, zc)
                async for name, change in recv:
                    if change is not ServiceStateChange.Removed:
                        nursery.start_soon(self._resolve, zc, name)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if browser is not None:
                    await trio.to_thread.run_sync(browser.cancel)
                await trio.to_thread.run_sync(zc.close)

    async def _announce_loop(self, zc: Zeroconf) -> None:
        while True:
            with trio.move_on_after(self.announce_interval):
                await self._changed.wait()
            self._changed = trio.Event()
            await trio.to_thread.run_sync(zc.update_service, self._service_info())

    async def _resolve(self, zc: Zeroconf, name: str) -> None:
        info = await trio.to_thread.run_sync(zc.get_service_info, SERVICE_TYPE, name,
                                             _RESOLVE_TIMEOUT_MS, abandon_on_cancel=True)
        if info is None:
            return
        me = self._describe()
        txt = _decode_txt(info.properties)
        if txt.get("c") != me.cluster:
            if name not in self._strangers:
                self._strangers.add(name)
                log_event(log, "discovery.stranger", name=name, cluster=txt.get("c", ""))
            return
        node_id = txt.get("id", "")
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not node_id or node_id == me.node_id or not addresses or not info.port:
            return
        address = (addresses[0], int(info.port))
        if self.found.get(node_id) != address:
            self.found[node_id] = address
            log_event(log, "discovery.peer", peer=node_id, address=f"{address[0]}:{address[1]}")
        self._on_peer(node_id, address)
