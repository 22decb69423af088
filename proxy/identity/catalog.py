"""The service catalog of this cluster: every API on every node.

Every node serves every API on its public port, so the catalog lists, for
each service type, one endpoint per node and interface (``public``,
``internal`` and ``admin`` all point at the public port: the internal port
speaks only signed RPC).  The node that answers is listed first, so a
client keeps talking to the node it logged in on; the rest are there for
clients that fail over.

Where the other nodes are comes from membership (:class:`ClusterNodes`),
else from the ring's devices, assuming the same public port as this node
(the usual deployment).

The paths below are where the APIs are mounted (:mod:`proxy.compute_routes`
serves images at ``/v2/images`` under the node's root, compute at
``/v2.1``); a new API adds its row to :data:`SERVICES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from node.cluster_rings import RingSet, RingUnavailable
from proxy.identity.store import stable_id

REGION = "RegionOne"
#: seconds between refreshes of the node list
REFRESH_INTERVAL = 5.0
INTERFACES = ("public", "internal", "admin")

#: (service type, service name, path template); ``{project_id}`` is filled per token
SERVICES: tuple[tuple[str, str, str], ...] = (
    ("identity", "keystone", "/v3"),
    ("object-store", "swift", "/v1/AUTH_{project_id}"),
    ("image", "glance", ""),
    ("compute", "nova", "/v2.1"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
    ("block-storage", "cinder", "/volume/v3/{project_id}"),
    ("network", "neutron", "/network"),
)


@dataclass(frozen=True)
class NodeEndpoint:
    node_id: str
    base_url: str


class ClusterNodes:
    """Where every node's public API is, refreshed in the background.

    The node's membership table (``node.membership_service``) says where
    the peers' public ports are; where membership is off or knows no peer
    yet, the ring's devices are used with this node's public port.  This
    node always comes first.
    """

    def __init__(self, node: Any, rings: RingSet, interval: float = REFRESH_INTERVAL) -> None:
        self.node = node
        self.rings = rings
        self.interval = interval
        self._peers: list[NodeEndpoint] = []

    def me(self) -> NodeEndpoint:
        cfg = self.node.config
        port = self.node.public_port or cfg.public.port
        host = cfg.public.host if cfg.public.host not in ("", "0.0.0.0", "::") else cfg.internal.host
        return NodeEndpoint(cfg.node_id, f"http://{_host(host)}:{port}")

    def current(self) -> list[NodeEndpoint]:
        me = self.me()
        return [me, *(p for p in self._peers if p.node_id != me.node_id and p.base_url != me.base_url)]

    async def refresh(self) -> None:
        membership = self.node.membership_service
        rows = [info.to_json() for info in membership.table.alive()] if membership else []
        peers = [NodeEndpoint(r["node_id"], f"http://{_host(r['public_host'])}:{r['public_port']}")
                 for r in rows if r.get("state", "alive") == "alive" and not r.get("self")]
        # Membership that knows no peer (yet) is no evidence of being alone: the ring says more.
        self._peers = peers or self._from_ring()

    def _from_ring(self) -> list[NodeEndpoint]:
        me = self.me()
        port = me.base_url.rsplit(":", 1)[1]
        try:
            devices = self.rings.object.devs
        except RingUnavailable:
            return []
        out: dict[str, NodeEndpoint] = {}
        for dev in devices:
            if dev and dev["ip"] != self.node.config.internal.host:
                out.setdefault(dev["ip"], NodeEndpoint(dev.get("node_id") or dev["ip"],
                                                       f"http://{_host(dev['ip'])}:{port}"))
        return list(out.values())

    async def run(self) -> None:
        """The background service: refresh forever."""
        while True:
            await self.refresh()
            await trio.sleep(self.interval)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Catalog:
    """Builds Keystone's catalog document from a source of node endpoints."""

    def __init__(self, cluster_id: str, nodes: Callable[[], list[NodeEndpoint]]) -> None:
        self.cluster_id = cluster_id
        self.nodes = nodes

    def services(self) -> list[dict[str, Any]]:
        """``/v3/services`` rows."""
        return [{"id": stable_id(self.cluster_id, "service", stype), "type": stype, "name": name,
                 "enabled": True, "description": f"peerstack {stype}"} for stype, name, _ in SERVICES]

    def endpoints(self, project_id: str | None) -> list[tuple[str, dict[str, Any]]]:
        """``(service type, endpoint)`` for every service, node and interface."""
        out = []
        for node in self.nodes():
            for stype, _, template in SERVICES:
                if "{project_id}" in template and not project_id:
                    path = template.split("{project_id}")[0].rstrip("/").removesuffix("/AUTH_")
                else:
                    path = template.format(project_id=project_id or "")
                for interface in INTERFACES:
                    out.append((stype, {
                        "id": stable_id(self.cluster_id, "endpoint", node.node_id, stype, interface),
                        "interface": interface, "region": REGION, "region_id": REGION,
                        "url": node.base_url + path,
                        "service_id": stable_id(self.cluster_id, "service", stype)}))
        return out

    def document(self, project_id: str | None) -> list[dict[str, Any]]:
        """The ``catalog`` of a token scoped to ``project_id`` (``None``: unscoped)."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for stype, endpoint in self.endpoints(project_id):
            by_type.setdefault(stype, []).append(
                {k: endpoint[k] for k in ("id", "interface", "region", "region_id", "url")})
        return [{"id": svc["id"], "type": svc["type"], "name": svc["name"],
                 "endpoints": by_type.get(svc["type"], [])} for svc in self.services()]
