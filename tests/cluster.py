"""A real multi-node cluster on loopback for integration and compat tests.

Each node is a ``peerstack node run`` subprocess with its own loopback
address (127.<k>.<k>.N, a /8 every Linux routes to lo), real sockets, real
files and real SQLite; the layout is the demo's (``tools.demo``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.demo import ClusterLayout, NodeProcess, free_port, layout_cluster


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
        yield cluster
    finally:
        for proc in procs:
            proc.stop()
