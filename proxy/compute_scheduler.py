"""Choosing the node a new server boots on.

Candidates are the cluster's nodes: those holding a device in the object
ring, plus members the membership table (``GET /cluster/members`` on this
node's internal port) calls alive, minus those it calls suspect or dead,
plus this node.  Each candidate's compute agent is asked for its
free resources (``GET /compute/resources``; the agent counts what its own
servers hold, which the membership's host-level numbers cannot); nodes
that do not answer in time, or run no agent, drop out.  Of the nodes where
the flavor fits (vCPUs, RAM, disk), the one with the most free RAM wins,
then the most free vCPUs -- Nova's default RAM weigher, which spreads
servers over the cluster.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.daemon import Node
from node.http_client import BackendError, Timeouts
from node.log import log_event

log = logging.getLogger("peerstack.proxy.scheduler")

ASK_TIMEOUTS = Timeouts(connect=1.0, node=3.0)


@dataclass(frozen=True)
class Host:
    """A node's compute agent, and what it has free."""

    node_id: str
    ip: str
    port: int
    resources: dict[str, Any]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def fits(self, flavor: dict[str, Any]) -> bool:
        r = self.resources
        return (int(flavor["vcpus"]) <= int(r.get("vcpus_free", 0))
                and int(flavor["ram"]) <= int(r.get("memory_mb_free", 0))
                and int(flavor["disk"]) <= int(r.get("disk_gb_free", 0)))


class Scheduler:
    def __init__(self, node: Node, cc: ClusterClient) -> None:
        self.node = node
        self.cc = cc

    @property
    def local(self) -> tuple[str, int]:
        return self.node.config.internal.host, self.node.internal_port or self.node.config.internal.port

    async def candidates(self) -> set[tuple[str, int]]:
        """Internal addresses of the nodes that might take a server.

        The object ring names the cluster's nodes; the membership table adds
        nodes not in the ring yet and removes those it knows are down.
        """
        found: set[tuple[str, int]] = set()
        down: set[tuple[str, int]] = set()
        host, port = self.local
        try:
            resp = await self.node.client.request("GET", host, port, "/cluster/members", [],
                                                  timeouts=ASK_TIMEOUTS)
            if resp.status == 200:
                for member in json.loads(resp.body).get("members", []):
                    address = (str(member["host"]), int(member["internal_port"]))
                    (found if member.get("state") == "alive" else down).add(address)
        except (BackendError, ValueError, KeyError, TypeError) as exc:
            log_event(log, "scheduler.no_membership", error=str(exc))
        try:
            found |= {(d["ip"], int(d["port"])) for d in self.cc.rings.object.devs if d} - down
        except RingUnavailable:
            pass
        found.add(self.local)
        return found

    async def hosts(self) -> list[Host]:
        """Every candidate whose agent answered, with its free resources."""
        hosts: list[Host] = []

        async def ask(ip: str, port: int) -> None:
            try:
                resp = await self.node.client.request("GET", ip, port, "/compute/resources", [],
                                                      timeouts=ASK_TIMEOUTS)
                if resp.status != 200:
                    return
                doc = json.loads(resp.body)
                hosts.append(Host(str(doc["node_id"]), ip, port, doc))
            except (BackendError, ValueError, KeyError, TypeError) as exc:
                log_event(log, "scheduler.host_unreachable", host=f"{ip}:{port}", error=str(exc))

        async with trio.open_nursery() as nursery:
            for ip, port in await self.candidates():
                nursery.start_soon(ask, ip, port)
        return hosts

    async def select(self, flavor: dict[str, Any]) -> list[Host]:
        """Hosts where ``flavor`` fits, best first (empty: no valid host)."""
        hosts = [h for h in await self.hosts() if h.fits(flavor)]
        hosts.sort(key=lambda h: (-int(h.resources.get("memory_mb_free", 0)),
                                  -int(h.resources.get("vcpus_free", 0)), h.node_id))
        return hosts
