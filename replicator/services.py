"""The background consistency services of one node, and their status.

:class:`Replication` builds the services (object and database replicators,
auditor, updater, expirer) over one shared :class:`~replicator.context.Context`
and serves the ``/replication/`` route of the internal port: the receiving
side of replication (:class:`node.storage.replication_server.ReplicationServer`)
plus ``GET /replication/status``, the per-device status document::

    {"node_id": "node1", "time": 1700000000.0,
     "devices": {"d1": {
        "mounted": true,
        "replication_age": 4.2,          # seconds since the last object pass ended
        "object_replication": {
            "last_pass": {"started": ..., "finished": ..., "seconds": 1.9,
                          "partitions": 91, "handoffs": 3, "files_pushed": 12,
                          "bytes_pushed": 49152, "reverted": 3, ...},
            "since_start": {"partitions": 8017, "files_pushed": 1012, ...}},
        "db_replication": {...}, "audit": {...}, "updater": {...}, "expirer": {...},
        "quarantined": {"objects": 1, "containers": 0, "accounts": 0},
        "async_pending": 0,
        "handoff_partitions": {"object": 0, "container": 0, "account": 0}}}}

``last_pass`` is ``null`` until the service finished its first pass; the
counts under ``quarantined``, ``async_pending`` and ``handoff_partitions``
are read from the disk when asked.
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from node.cluster_rings import RingUnavailable
from node.daemon import Node
from node.http_server import Request, Response
from node.storage.replication_server import ReplicationServer
from node.supervisor import ServiceFn
from replicator.auditor import Auditor
from replicator.context import Context
from replicator.dbs import DBReplicator
from replicator.expirer import Expirer
from replicator.objects import ObjectReplicator
from replicator.report import PassService
from replicator.updater import Updater
from replicator.walk import DATA_DIRS, async_pendings, count_entries, partitions


class Replication:
    """Everything ``replicator/`` runs on one node."""

    def __init__(self, node: Node) -> None:
        self.ctx = Context(node)
        self.objects = ObjectReplicator(self.ctx)
        self.dbs = DBReplicator(self.ctx)
        self.auditor = Auditor(self.ctx)
        self.updater = Updater(self.ctx)
        self.expirer = Expirer(self.ctx)
        self.receiver = ReplicationServer(node.config, node.cluster, self.ctx.pool)
        self.passes: list[PassService] = [self.objects, self.dbs, self.auditor, self.updater,
                                          self.expirer]

    def services(self) -> list[tuple[str, ServiceFn]]:
        return [("object-replicator", self.objects.run), ("db-replicator", self.dbs.run),
                ("auditor", self.auditor.run), ("updater", self.updater.run),
                ("expirer", self.expirer.run)]

    async def route(self, request: Request) -> Response:
        """The ``/replication/...`` handler of the internal port."""
        if request.path.rstrip("/") == "/replication/status" and request.method in ("GET", "HEAD"):
            body = json.dumps(await self.status()).encode()
            return Response(200, [("Content-Type", "application/json")], body)
        return await self.receiver(request)

    async def status(self) -> dict[str, Any]:
        """The status document described in the module docstring."""
        local = self.ctx.local
        disk = await trio.to_thread.run_sync(self._disk_counts)
        now = time.time()
        devices: dict[str, Any] = {}
        for device in local.names:
            counts = disk.get(device)
            entry: dict[str, Any] = {"mounted": counts is not None}
            last = self.objects.last
            entry["replication_age"] = (round(now - last.finished, 3)
                                        if last is not None and last.finished else None)
            for service in self.passes:
                entry[service.name] = service.status(device)
            if counts is not None:
                entry["quarantined"] = counts["quarantined"]
                entry["async_pending"] = counts["async_pending"]
                entry["handoff_partitions"] = self._handoffs(device, counts["partitions"])
            devices[device] = entry
        return {"node_id": self.ctx.node.config.node_id, "time": now, "devices": devices}

    def _disk_counts(self) -> dict[str, dict[str, Any]]:
        local = self.ctx.local
        out = {}
        for device in local.mounted():
            path = local.path(device)
            out[device] = {
                "quarantined": {d: count_entries(path / "quarantined" / d)
                                for d in ("objects", "containers", "accounts")},
                "async_pending": sum(1 for _ in async_pendings(path)),
                "partitions": {kind: partitions(path, kind) for kind in DATA_DIRS},
            }
        return out

    def _handoffs(self, device: str, parts: dict[str, list[int]]) -> dict[str, int | None]:
        """Partitions held on ``device`` that the ring gives to other devices."""
        out: dict[str, int | None] = {}
        for kind, held in parts.items():
            try:
                ring = self.ctx.rings.get(kind)
            except RingUnavailable:
                out[kind] = None
                continue
            out[kind] = sum(1 for p in held if p >= ring.partition_count or not any(
                self.ctx.local.is_me(d, device) for d in ring.get_part_nodes(p)))
        return out
