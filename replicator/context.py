"""What every background service of a node shares: config, rings, local devices, clients."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from node.cluster_client import ClusterClient
from node.cluster_rings import RingSet
from node.config import Replicator
from node.daemon import Node
from node.http_client import HTTPClient, Timeouts
from node.storage import StorageServer
from node.storage.db import ConnectionPool


class LocalDevices:
    """Which devices of the ring are this node's, and where they are on disk.

    A ring device is ours if it names one of our configured devices and
    either our node id or our internal address (the ring builder defaults a
    device's node id to ``ip:port``).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        storage = node.config.storage
        self.root = node.config.resolve(storage.root)
        self.names = list(storage.devices)

    def path(self, device: str) -> Path:
        return self.root / device

    def mounted(self) -> list[str]:
        """Configured devices whose directory exists (blocking)."""
        return [d for d in self.names if self.path(d).is_dir()]

    def is_local(self, dev: dict[str, Any]) -> bool:
        if dev["device"] not in self.names:
            return False
        cfg = self.node.config
        if dev.get("node_id") == cfg.node_id:
            return True
        port = self.node.internal_port or cfg.internal.port
        return dev["ip"] == cfg.internal.host and dev["port"] == port

    def is_me(self, dev: dict[str, Any], device: str) -> bool:
        """``dev`` is the local device named ``device``."""
        return dev["device"] == device and self.is_local(dev)


class Context:
    """Shared by the services of one node (one instance per node)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config: Replicator = node.config.replicator
        self.rings = RingSet(node.config.rings_path, node.cluster)
        self.local = LocalDevices(node)
        storage = node.internal_default
        # Share the storage server's open databases, so both sides see one connection per file.
        self.pool = storage.pool if isinstance(storage, StorageServer) else ConnectionPool()
        self.timeouts = Timeouts(connect=self.config.connect_timeout, node=self.config.node_timeout)

    @property
    def client(self) -> HTTPClient:
        """The node's signed client: peers refuse unsigned internal requests."""
        return self.node.client

    @cached_property
    def cluster(self) -> ClusterClient:
        return ClusterClient(self.node.config, self.node.cluster, self.node.client,
                             timeouts=self.timeouts, rings=self.rings, health=self.node.health)
