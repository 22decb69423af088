"""Real storage servers on loopback for the storage tests.

``start_storage`` writes a cluster file and a node config under a directory,
creates the device directories, and serves :class:`StorageServer` with a
plain :class:`HTTPServer` (no signing: these tests talk to the storage layer
directly).  :class:`Store` wraps the pooled client with path quoting.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from node.config import ClusterConfig, NodeConfig, Storage, cluster_to_toml, new_cluster, write_private
from node.http_client import ClientResponse, HTTPClient, Timeouts
from node.http_server import HTTPServer
from node.storage import StorageServer
from node.storage.paths import hash_path

HOST = "127.0.0.1"


def quote(*names: str | int) -> str:
    return "/" + "/".join(urllib.parse.quote(str(n), safe="") for n in names)


@dataclass
class Store:
    """One running storage server and a client for it."""

    root: Path
    config: NodeConfig
    cluster: ClusterConfig
    server: StorageServer
    http: HTTPServer
    port: int
    client: HTTPClient

    def device(self, name: str = "d1") -> Path:
        return self.root / name

    def hash(self, *names: str) -> str:
        return hash_path(self.cluster.hash_prefix, self.cluster.hash_suffix, *names)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"", query: str = "") -> ClientResponse:
        target = path + (f"?{query}" if query else "")
        return await self.client.request(method, HOST, self.port, target,
                                         list((headers or {}).items()), body,
                                         timeouts=Timeouts(connect=5, node=30))

    def targets(self, device: str = "d1", partition: int = 0) -> dict[str, str]:
        """Headers that make an update go to this server."""
        return {"Host": f"{HOST}:{self.port}", "Device": device, "Partition": str(partition)}


def write_cluster(root: Path, cluster: ClusterConfig | None = None) -> ClusterConfig:
    root.mkdir(parents=True, exist_ok=True)
    cluster = cluster or new_cluster("test")
    write_private(root / "cluster.toml", cluster_to_toml(cluster))
    return cluster


async def start_storage(nursery: trio.Nursery, root: Path, devices: tuple[str, ...] = ("d1",),
                        cluster: ClusterConfig | None = None, make_devices: bool = True,
                        background: bool = True) -> Store:
    """Serve storage for ``root`` (a new cluster unless ``cluster`` is given)."""
    cluster = write_cluster(root, cluster)
    config = NodeConfig(cluster_file="cluster.toml", storage=Storage(root=str(root), devices=list(devices),
                                                                     reserve_bytes=0),
                        source=str(root / "node.toml"))
    if make_devices:
        for d in devices:
            (root / d).mkdir(exist_ok=True)
    client = HTTPClient()
    server = StorageServer(config, client)
    http = HTTPServer(server, HOST, 0, name="internal")
    port = await nursery.start(http.serve)
    if background:
        nursery.start_soon(server.run_background)
    return Store(root, config, cluster, server, http, port, client)


@pytest.fixture
async def store(nursery: trio.Nursery, tmp_path: Path) -> Store:
    return await start_storage(nursery, tmp_path / "n1")


REPO = Path(__file__).resolve().parents[2]


async def spawn_storage(root: Path) -> tuple[subprocess.Popen, int]:
    """Run a storage server for ``root`` in a child process; returns it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.storage_fixture", str(root)],
                            cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with trio.fail_after(30):
        line = await trio.to_thread.run_sync(proc.stdout.readline)
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"storage server did not start (exit {proc.wait()})")
    return proc, int(line)


async def _serve_forever(root: Path, devices: list[str]) -> None:
    config = NodeConfig(cluster_file="cluster.toml",
                        storage=Storage(root=str(root), devices=devices, reserve_bytes=0),
                        source=str(root / "node.toml"))
    server = StorageServer(config, HTTPClient())
    http = HTTPServer(server, HOST, 0, name="internal")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(http.serve)
        print(port, flush=True)


def main() -> None:
    """``python -m tests.integration.storage_fixture <root> [device...]``: serve, print the port.

    ``<root>/cluster.toml`` must exist; the crash and big-object tests run
    the server this way so they can kill it or measure its memory.
    """
    root = Path(sys.argv[1])
    trio.run(_serve_forever, root, sys.argv[2:] or ["d1"])


if __name__ == "__main__":
    main()
