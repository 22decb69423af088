"""A real multi-node cluster on loopback for integration and compat tests.

Each node is a ``peerstack node run`` subprocess with its own loopback
address (127.<k>.<k>.N, a /8 every Linux routes to lo), real sockets, real
files and real SQLite; the layout is the demo's (``tools.demo``).
"""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from node.http_client import BackendError, HTTPClient, Timeouts
from node.signing import RequestSigner
from tools.demo import ClusterLayout, NodeProcess, free_port, layout_cluster
from tools.status import fetch_members


@dataclass
class RunningCluster:
    layout: ClusterLayout
    nodes: list[NodeProcess]

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def cluster_file(self) -> Path:
        return self.layout.cluster_file

    @property
    def admin_user(self) -> str:
        admin = self.layout.cluster.admin
        return f"{admin.project}:{admin.user}"

    @property
    def admin_key(self) -> str:
        return self.layout.cluster.admin.password

    @property
    def auth_url(self) -> str:
        return f"{self.nodes[0].public_url}/auth/v1.0"

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()


class ClusterNode(NodeProcess):
    """A node process plus the addresses tests poke at directly."""

    @property
    def public_url(self) -> str:
        return self.layout.public_url

    @property
    def internal_host(self) -> str:
        return self.layout.ip

    @property
    def internal_port(self) -> int:
        return self.layout.internal_port


@contextmanager
def running_cluster(tmp_path: Path, *, nodes: int = 3, replicas: int = 3,
                    devices_per_node: int = 2, part_power: int = 8,
                    config: dict[str, dict] | None = None) -> Iterator[RunningCluster]:
    """Build and start a cluster under ``tmp_path``; stop every node on exit.

    ``config`` adds tables to every node's file, e.g. ``{"replicator": {"interval": 1}}``.
    """
    net = random.randrange(100, 250)
    ips = [f"127.{net}.{net}.{i + 1}" for i in range(nodes)]
    layout = layout_cluster(tmp_path / "cluster", ips=ips,
                            public_ports=[free_port(ip) for ip in ips],
                            internal_ports=[free_port(ip) for ip in ips],
                            devices_per_node=devices_per_node, replicas=replicas,
                            part_power=part_power, name="test", extra_config=config)
    procs = [ClusterNode(node) for node in layout.nodes]
    cluster = RunningCluster(layout, procs)
    try:
        for proc in procs:
            proc.start()
        if ((config or {}).get("membership") or {}).get("enabled", True):
            wait_formed(cluster)
        yield cluster
    finally:
        for proc in procs:
            proc.stop()


def wait_formed(cluster: RunningCluster, timeout: float = 30.0) -> None:
    """Return once every node's membership table holds every node alive.

    Until then a proxy may still be skipping a peer it found refusing
    connections while that peer started, and put a new container's replicas
    on handoffs: correct, but a test that then deletes it within the
    replicators' interval would see the primaries answer 404.
    """
    want = len(cluster.nodes)

    async def alive_everywhere(client: HTTPClient) -> bool:
        for node in cluster.nodes:
            try:
                doc = await fetch_members(client, node.internal_host, node.internal_port)
            except BackendError:
                return False
            if sum(m["state"] == "alive" for m in doc["members"]) < want:
                return False
        return True

    async def poll() -> None:
        client = HTTPClient(signer=RequestSigner(cluster.layout.cluster.secret_bytes),
                            timeouts=Timeouts(connect=1.0, node=5.0))
        try:
            deadline = time.monotonic() + timeout
            while not await alive_everywhere(client):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"membership did not see all {want} nodes alive in {timeout}s")
                await trio.sleep(0.1)
        finally:
            await client.aclose()

    # Its own thread: callers may be inside a trio run already (async tests).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(trio.run, poll).result()
