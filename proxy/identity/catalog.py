"""The service catalog of this cluster: every API on every node.

Every node serves every API on its public port, so the catalog lists, for
each service type, one endpoint per node and interface (``public``,
``internal`` and ``admin`` all point at the public port: the internal port
speaks only signed RPC).  The node that answers is listed first, so a
client keeps talking to the node it logged in on; the rest are there for
clients that fail over.

Where the other nodes are comes from the membership table when membership
runs (``node.membership_service``), else from the ring's devices, assuming
the same public port as this node (the usual deployment).

The API paths are fixed here, and the APIs mount themselves under them:
``/v3`` (identity), ``/v1/AUTH_<project id>`` (object-store), ``/image``,
``/compute/v2.1``, ``/volume/v3/<project id>``, ``/network``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.cluster_rings import RingSet, RingUnavailable
from proxy.identity.store import stable_id

REGION = "RegionOne"
INTERFACES = ("public", "internal", "admin")

#: (service type, service name, path template); ``{project_id}`` is filled per token
SERVICES: tuple[tuple[str, str, str], ...] = (
    ("identity", "keystone", "/v3"),
    ("object-store", "swift", "/v1/AUTH_{project_id}"),
    ("image", "glance", "/image"),
    ("compute", "nova", "/compute/v2.1"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
    ("block-storage", "cinder", "/volume/v3/{project_id}"),
    ("network", "neutron", "/network"),
)


@dataclass(frozen=True)
class NodeEndpoint:
    node_id: str
    base_url: str


def node_endpoints(node: Any, rings: RingSet) -> list[NodeEndpoint]:
    """This node first, then its peers: from membership if running, else the ring's devices."""
    cfg = node.config
    port = node.public_port or cfg.public.port
    host = cfg.public.host if cfg.public.host not in ("", "0.0.0.0", "::") else cfg.internal.host
    out = [NodeEndpoint(cfg.node_id, f"http://{_host(host)}:{port}")]
    membership = getattr(node, "membership_service", None)
    if membership is not None:
        seen = {cfg.node_id}
        for info in membership.table.alive():
            if info.node_id not in seen:
                seen.add(info.node_id)
                out.append(NodeEndpoint(info.node_id, f"http://{_host(info.public_host)}:{info.public_port}"))
        return out
    try:
        devices = rings.object.devs
    except RingUnavailable:
        return out
    seen_ips = {cfg.internal.host, host}
    for dev in devices:
        if dev and dev["ip"] not in seen_ips:
            seen_ips.add(dev["ip"])
            out.append(NodeEndpoint(dev.get("node_id") or dev["ip"], f"http://{_host(dev['ip'])}:{port}"))
    return out


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
