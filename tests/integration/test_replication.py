"""Object and database replication on a real three-node cluster on loopback.

The nodes are ``peerstack node run`` processes (``tests/cluster.py``) with
the ``[replicator]`` intervals shortened to about a second; the test writes
through the cluster client (signed, through the ring, exactly the path the
proxy uses) and then looks at the devices' files directly.

The helpers here are shared by the auditor, updater and expirer tests.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.config import NodeConfig
from node.http_client import BackendError, HTTPClient, Timeouts
from node.signing import RequestSigner
from node.storage.paths import hash_path
from ring.lookup import Ring
from tests.cluster import ClusterNode, RunningCluster, running_cluster

ACCOUNT = "AUTH_test"
#: replication every second; the other services only where a test asks for them
FAST = {"interval": 1.0, "audit_interval": 3600.0, "update_interval": 1.0,
        "expire_interval": 3600.0}


def replication_cluster(tmp_path: Path, *, nodes: int = 3,
                        replicator: dict[str, Any] | None = None) -> ContextManager[RunningCluster]:
    """``tests.cluster.running_cluster`` with a fast ``[replicator]`` table in every node file."""
    return running_cluster(tmp_path, nodes=nodes, config={
        "replicator": {**FAST, **(replicator or {})},
        "membership": {"enabled": False},  # not needed here; spares the two cores
    })


class Harness:
    """A signed client, the rings, and where each ring device lives on disk."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        secret = cluster.layout.cluster.secret_bytes
        self.http = HTTPClient(signer=RequestSigner(secret), timeouts=Timeouts(connect=2, node=20))
        config = NodeConfig(ring_dir=str(cluster.layout.ring_dir))
        self.client = ClusterClient(config, cluster.layout.cluster, self.http)
        c = cluster.layout.cluster
        self.prefix, self.suffix = c.hash_prefix, c.hash_suffix
        self.rings = {kind: Ring(str(cluster.layout.ring_dir / f"{kind}.ring.gz"), secret,
                                 c.hash_prefix.encode(), c.hash_suffix.encode())
                      for kind in ("account", "container", "object")}
        self.roots = {(n.ip, n.internal_port): n.root for n in cluster.layout.nodes}

    def dev_path(self, dev: dict[str, Any]) -> Path:
        return self.roots[(dev["ip"], dev["port"])] / dev["device"]

    def object_dirs(self, container: str, obj: str) -> list[Path]:
        """The object's directory on each of its primaries."""
        part, primaries = self.rings["object"].get_nodes(ACCOUNT, container, obj)
        name_hash = hash_path(self.prefix, self.suffix, ACCOUNT, container, obj)
        return [self.dev_path(d) / "objects" / str(part) / name_hash[-3:] / name_hash
                for d in primaries]

    def misplaced(self, kind: str) -> list[Path]:
        """Partitions holding data on a device the ring does not give them to."""
        ring = self.rings[kind]
        found = []
        for node in self.cluster.layout.nodes:
            for device in node.devices:
                base = node.root / device / f"{kind}s"
                for part in (os.listdir(base) if base.is_dir() else []):
                    primary = any((d["ip"], d["port"], d["device"]) == (node.ip, node.internal_port, device)
                                  for d in ring.get_part_nodes(int(part)))
                    suffixes = [s for s in os.listdir(base / part) if len(s) == 3]
                    if not primary and any(os.listdir(base / part / s) for s in suffixes):
                        found.append(base / part)
        return found

    async def status(self, node: ClusterNode) -> dict[str, Any]:
        resp = await self.http.request("GET", node.internal_host, node.internal_port,
                                       "/replication/status")
        assert resp.status == 200, resp.body
        return json.loads(resp.body)

    async def passes_since(self, since: float, services: tuple[str, ...],
                           nodes: list[ClusterNode] | None = None) -> None:
        """Wait until every device of every node finished a pass of each service started after ``since``."""
        for node in nodes or self.cluster.nodes:
            while True:
                try:
                    doc = await self.status(node)
                except BackendError:
                    await trio.sleep(0.2)
                    continue
                passes = [dev[s]["last_pass"] for dev in doc["devices"].values() for s in services]
                if all(p and p["started"] >= since and p["finished"] for p in passes):
                    break
                await trio.sleep(0.2)

    def node_of(self, dev: dict[str, Any]) -> ClusterNode:
        return next(n for n in self.cluster.nodes
                    if (n.internal_host, n.internal_port) == (dev["ip"], dev["port"]))

    async def replica(self, method: str, dev: dict[str, Any], path: str):
        """A signed request to one device's storage server (``path`` after ``/<dev>``)."""
        try:
            return await self.http.request(method, dev["ip"], dev["port"], f"/{dev['device']}{path}")
        except BackendError:
            return None

    async def put(self, container: str, obj: str, body: bytes,
                  headers: dict[str, str] | None = None) -> None:
        status, _ = await self.client.put_object(
            ACCOUNT, container, obj, {"Content-Type": "application/octet-stream", **(headers or {})},
            body, len(body))
        assert status == 201, (obj, status)

    async def aclose(self) -> None:
        await self.http.aclose()


def data_files(hash_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(hash_dir) if n.endswith(".data")) if hash_dir.is_dir() else []


async def put_many(h: Harness, container: str, count: int, concurrency: int = 16) -> dict[str, bytes]:
    bodies = {f"obj-{i:04d}": f"object {i} ".encode() * (1 + i % 7) for i in range(count)}
    limit = trio.CapacityLimiter(concurrency)

    async def one(name: str) -> None:
        async with limit:
            await h.put(container, name, bodies[name])

    async with trio.open_nursery() as nursery:
        for name in bodies:
            nursery.start_soon(one, name)
    return bodies


async def test_a_node_that_was_down_gets_every_object_back_in_one_pass(tmp_path):
    with replication_cluster(tmp_path) as cluster:
        h = Harness(cluster)
        try:
            with trio.fail_after(150):
                assert (await h.client.put_container(ACCOUNT, "photos")).status in (201, 202)
                down = cluster.nodes[2]
                down.stop()
                bodies = await put_many(h, "photos", 1000)
                # While the node is down its replicas went to handoff devices.
                assert h.misplaced("object"), "no handoff partitions while a node was down"
                down.start()
                back = time.time()  # passes from now on find the node up
                await h.passes_since(back, ("object_replication", "db_replication"))

            for name, body in bodies.items():
                for hash_dir in h.object_dirs("photos", name):
                    files = data_files(hash_dir)
                    assert len(files) == 1, (name, hash_dir, files)
                    assert (hash_dir / files[0]).read_bytes() == body
            assert h.misplaced("object") == []
            assert h.misplaced("container") == []
            assert h.misplaced("account") == []
            statuses = [await h.status(n) for n in cluster.nodes]
            pushed = sum(d["object_replication"]["since_start"].get("files_pushed", 0)
                         for s in statuses for d in s["devices"].values())
            assert pushed >= 1000  # the returning node's copies were pushed, not rewritten
        finally:
            await h.aclose()


async def test_a_delete_missed_by_a_down_node_wins_and_a_wiped_device_is_rebuilt(tmp_path):
    with replication_cluster(tmp_path) as cluster:
        h = Harness(cluster)
        try:
            with trio.fail_after(120):
                assert (await h.client.put_container(ACCOUNT, "c")).status in (201, 202)
                bodies = await put_many(h, "c", 40)
                down = cluster.nodes[2]
                down.stop()
                deleted = sorted(bodies)[:10]
                for name in deleted:
                    assert (await h.client.delete_object(ACCOUNT, "c", name)).status == 204
                wiped_node = cluster.layout.nodes[0]
                wiped = wiped_node.root / "d1"
                # The disk was replaced: an empty device. The node keeps running and its
                # replicator may be writing into the device right now, so the old contents
                # leave in one rename each (as an unmount would take them), not file by file.
                old_disk = tmp_path / "old-disk"
                old_disk.mkdir()
                for entry in list(wiped.iterdir()):
                    entry.rename(old_disk / entry.name)
                down.start()
                back = time.time()
                await h.passes_since(back, ("object_replication",))

            for name in bodies:
                for hash_dir in h.object_dirs("c", name):
                    names = os.listdir(hash_dir)
                    if name in deleted:  # the returning node's old .data lost to the tombstone
                        assert len(names) == 1 and names[0].endswith(".ts"), (name, hash_dir, names)
                    else:
                        assert (hash_dir / data_files(hash_dir)[0]).read_bytes() == bodies[name]
            on_wiped = [n for n in bodies
                        if any(p.is_relative_to(wiped) for p in h.object_dirs("c", n))]
            assert on_wiped, "the wiped device held none of the objects"
        finally:
            await h.aclose()
