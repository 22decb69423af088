"""Tenant networks on one node: a Linux bridge per network, VXLAN to the other nodes, dnsmasq.

A network (``proxy.networks``) has a VXLAN id (VNI).  On every node that
runs a server on it there is

- a bridge, with the node's DHCP port address of the network on it;
- a VXLAN device on the bridge (VNI, this node's tunnel end as ``local``)
  with one all-zeros forwarding entry per other node: every frame the
  bridge sends into the tunnel goes to every other node (head-end
  replication) and each node's bridge keeps what is not for its guests to
  itself.  The VXLAN device does not learn remote addresses: it would learn
  a sender's address but not its UDP port, and nodes that share one kernel
  need their own ports (below);
- one dnsmasq serving DHCP on the bridge, answering only the MACs of this
  node's ports (``static`` range, ``mac,ip`` lines in its hosts file);
  another node's guests are answered by their own node's dnsmasq;
- the servers' taps (libvirt ``<interface type='bridge'>``).

A node's tunnel end is its internal address with its internal port
number as the UDP port: every node knows every other's from the ring's
devices, and nodes that share one kernel (a test cluster on loopback
addresses) still get one VXLAN socket each.  Device names carry a short
tag of the cluster and node ids for the same reason (and stay within 15 characters).

Links are made with pyroute2 in a worker thread (netlink calls block).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node.log import log_event

log = logging.getLogger("peerstack.compute.network")

BROADCAST_MAC = "00:00:00:00:00:00"
DNSMASQ_TIMEOUT = 10.0
EEXIST = 17


class NetworkSetupError(Exception):
    """The bridge, tunnel or DHCP server of a network could not be set up."""


@dataclass(frozen=True)
class Nic:
    """One server port as the agent needs it (the proxy sends these in the build request)."""

    port_id: str
    network_id: str
    mac: str
    ip: str
    cidr: str
    vni: int
    mtu: int
    gateway: str | None
    dhcp_ip: str

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Nic:
        vni = int(doc["vni"])
        if not 0 < vni < 1 << 24:
            raise ValueError(f"VNI out of range: {vni}")
        net = ipaddress.ip_network(str(doc["cidr"]))
        for key in ("ip", "dhcp_ip"):
            if ipaddress.ip_address(str(doc[key])) not in net:
                raise ValueError(f"{key} {doc[key]} is not in {net}")
        return cls(port_id=str(doc["port_id"]), network_id=str(doc["network_id"]),
                   mac=str(doc["mac"]).lower(), ip=str(doc["ip"]), cidr=str(net), vni=vni,
                   mtu=int(doc.get("mtu") or 1450), gateway=doc.get("gateway") or None,
                   dhcp_ip=str(doc["dhcp_ip"]))


def node_tag(cluster_id: str, node_id: str) -> str:
    """Four hex digits naming this node's devices apart from other nodes' (of any cluster)."""
    return hashlib.sha1(f"{cluster_id}/{node_id}".encode()).hexdigest()[:4]


def device_names(tag: str, vni: int) -> tuple[str, str]:
    """(bridge, vxlan) interface names of network ``vni`` on the node tagged ``tag``."""
    return f"pb{tag}{vni:06x}", f"pv{tag}{vni:06x}"


def _ensure_links(tag: str, nic: Nic, local: tuple[str, int],
                  peers: list[tuple[str, int]]) -> str:
    """Bridge + VXLAN of ``nic``'s network with forwarding entries to ``peers`` (idempotent)."""
    bridge, vxlan = device_names(tag, nic.vni)
    prefix = ipaddress.ip_network(nic.cidr).prefixlen
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=bridge):
            ipr.link("add", ifname=bridge, kind="bridge")
        br = ipr.link_lookup(ifname=bridge)[0]
        if not ipr.link_lookup(ifname=vxlan):
            ipr.link("add", ifname=vxlan, kind="vxlan", vxlan_id=nic.vni, vxlan_local=local[0],
                     vxlan_port=local[1], vxlan_learning=0)
        vx = ipr.link_lookup(ifname=vxlan)[0]
        ipr.link("set", index=vx, master=br, state="up")
        ipr.link("set", index=br, state="up", mtu=nic.mtu)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=br)}
        if nic.dhcp_ip not in have:
            ipr.addr("add", index=br, address=nic.dhcp_ip, prefixlen=prefix)
        known = {(e.get_attr("NDA_DST"), e.get_attr("NDA_PORT"))
                 for e in ipr.fdb("dump", ifindex=vx) if e.get_attr("NDA_LLADDR") == BROADCAST_MAC}
        for ip, port in peers:
            if (ip, port) not in known:
                ipr.fdb("append", ifindex=vx, lladdr=BROADCAST_MAC, dst=ip, port=port)
    return bridge


def remove_links(tag: str) -> int:
    """Delete every bridge and VXLAN device of the node tagged ``tag``; how many went."""
    removed = 0
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith((f"pb{tag}", f"pv{tag}")):
                try:
                    ipr.link("del", index=link["index"])
                    removed += 1
                except NetlinkError:
                    pass  # gone meanwhile (a bridge takes its ports with it)
    return removed


def _remove_network_links(tag: str, vni: int) -> None:
    with IPRoute() as ipr:
        for name in device_names(tag, vni):
            for index in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=index)
                except NetlinkError:
                    pass  # the bridge took its VXLAN port with it


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


class NodeNetworks:
    """The networks of this node's servers (see the module docstring)."""

    def __init__(self, root: Path, cluster_id: str, node_id: str,
                 local: Callable[[], tuple[str, int]],
                 peers: Callable[[], list[tuple[str, int]]]) -> None:
        """``local`` and ``peers`` give tunnel ends (address, UDP port), asked at each plug."""
        self.root = root
        self.tag = node_tag(cluster_id, node_id)
        self.local = local
        self.peers = peers
        self._lock = trio.Lock()

    def _dir(self, nic: Nic) -> Path:
        return self.root / nic.network_id

    async def plug(self, nic: Nic) -> str:
        """Make the network ready for ``nic`` (links, DHCP entry); the bridge to attach its tap to."""
        async with self._lock:
            local = self.local()
            peers = [p for p in self.peers() if p != local]
            try:
                bridge = await trio.to_thread.run_sync(_ensure_links, self.tag, nic, local, peers)
            except (NetlinkError, OSError) as exc:
                raise NetworkSetupError(f"network {nic.network_id}: {exc}") from exc
            await self._set_host(nic, present=True)
            await self._ensure_dnsmasq(nic, bridge)
        log_event(log, "network.plugged", network=nic.network_id, port=nic.port_id, bridge=bridge,
                  peers=len(peers))
        return bridge

    async def unplug(self, nic: Nic) -> None:
        """Forget ``nic``'s DHCP entry (the tap goes with the domain); the last port takes the
        network's dnsmasq, bridge and tunnel with it."""
        async with self._lock:
            if not await self._set_host(nic, present=False):
                return
            d = self._dir(nic)
            pid = await trio.to_thread.run_sync(_alive, d / "dnsmasq.pid")
            if (await trio.to_thread.run_sync((d / "hosts").read_text)).strip():
                if pid:
                    os.kill(pid, signal.SIGHUP)
                return
            if pid:
                os.kill(pid, signal.SIGTERM)
            await trio.to_thread.run_sync(_remove_network_links, self.tag, nic.vni)
        log_event(log, "network.removed", network=nic.network_id, vni=nic.vni)

    async def _set_host(self, nic: Nic, *, present: bool) -> bool:
        """Add or drop ``nic``'s ``mac,ip`` line in the hosts file; whether it changed."""
        def update() -> bool:
            path = self._dir(nic) / "hosts"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = path.read_text().splitlines() if path.exists() else []
            line = f"{nic.mac},{nic.ip}"
            kept = [entry for entry in lines if not entry.startswith(nic.mac + ",")]
            new = kept + [line] if present else kept
            if new == lines:
                return False
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.write("".join(entry + "\n" for entry in new))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return True
        return await trio.to_thread.run_sync(update)

    async def _ensure_dnsmasq(self, nic: Nic, bridge: str) -> None:
        """Start the network's dnsmasq, or make the running one re-read its hosts file."""
        d = self._dir(nic)
        pid = await trio.to_thread.run_sync(_alive, d / "dnsmasq.pid")
        if pid:
            os.kill(pid, signal.SIGHUP)
            return
        net = ipaddress.ip_network(nic.cidr)
        args = ["dnsmasq", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--port=0",
                "--bind-interfaces", f"--interface={bridge}", "--except-interface=lo",
                "--user=root", "--group=root",
                f"--dhcp-range={net.network_address},static,{net.netmask},12h",
                f"--dhcp-hostsfile={d / 'hosts'}", f"--dhcp-leasefile={d / 'leases'}",
                f"--pid-file={d / 'dnsmasq.pid'}", f"--log-facility={d / 'dnsmasq.log'}",
                "--log-dhcp", f"--dhcp-option=option:mtu,{nic.mtu}"]
        args.append(f"--dhcp-option=option:router,{nic.gateway}" if nic.gateway
                    else "--dhcp-option=option:router")
        try:
            with trio.fail_after(DNSMASQ_TIMEOUT):
                # dnsmasq forks into the background once it listens; this waits for that
                await trio.run_process(args, capture_stdout=True, capture_stderr=True)
        except (OSError, trio.TooSlowError) as exc:
            raise NetworkSetupError(f"dnsmasq for {nic.network_id}: {exc}") from exc
        except trio.CalledProcessError as exc:
            raise NetworkSetupError(f"dnsmasq for {nic.network_id}: "
                                    f"{exc.stderr.decode(errors='replace').strip()}") from exc

    def stop_all(self) -> None:
        """Stop this node's dnsmasqs and remove its bridges and tunnels (node removal, tests)."""
        if self.root.exists():
            for pid_file in self.root.glob("*/dnsmasq.pid"):
                pid = _alive(pid_file)
                if pid:
                    os.kill(pid, signal.SIGTERM)
        remove_links(self.tag)
