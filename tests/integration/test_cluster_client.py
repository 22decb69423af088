"""The cluster client used directly against a real 3-node cluster: quorum, handoffs, resume."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest
import trio

from node.cluster_client import ClusterClient
from node.config import load_cluster_config, load_node_config
from node.http_client import HTTPClient, Timeouts
from node.signing import RequestSigner
from tests.cluster import running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cc"), nodes=3, replicas=3) as c:
        yield c


def make_client(cluster) -> tuple[ClusterClient, HTTPClient]:
    config = load_node_config(cluster.nodes[0].layout.config_path)
    secrets = load_cluster_config(cluster.cluster_file)
    http = HTTPClient(signer=RequestSigner(secrets.secret_bytes))
    return ClusterClient(config, secrets, http, timeouts=Timeouts(connect=1.0, node=5.0)), http


def node_of(cluster, dev: dict):
    return next(n for n in cluster.nodes
                if n.internal_host == dev["ip"] and n.internal_port == dev["port"])


async def chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(cc: ClusterClient, *path: str) -> tuple[int, bytes]:
    async with cc.get_object(*path) as resp:
        return resp.status, b"".join([c async for c in resp])


async def test_put_get_head_delete_through_the_ring(cluster):
    cc, http = make_client(cluster)
    with trio.fail_after(60):
        assert (await cc.put_container("AUTH_cc", "c")).status == 201
        data = os.urandom(300_000)
        status, headers = await cc.put_object("AUTH_cc", "c", "o", {"Content-Type": "application/x-test"},
                                              chunks(data), len(data))
        assert status == 201 and headers["etag"].strip('"') == hashlib.md5(data).hexdigest()
        assert await read_all(cc, "AUTH_cc", "c", "o") == (200, data)
        head = await cc.head_object("AUTH_cc", "c", "o", newest=True)
        assert head.status == 200 and head.headers["content-type"] == "application/x-test"
        # chunked (no length) works too
        status, _ = await cc.put_object("AUTH_cc", "c", "chunked", {"Content-Type": "x/y"}, chunks(data), None)
        assert status == 201 and (await read_all(cc, "AUTH_cc", "c", "chunked"))[1] == data
        assert (await cc.delete_object("AUTH_cc", "c", "o")).status == 204
        assert (await read_all(cc, "AUTH_cc", "c", "o"))[0] == 404
        listing = await cc.get_container("AUTH_cc", "c", {"format": "json"})
        assert listing.status == 200 and b'"chunked"' in listing.body and b'"o"' not in listing.body
    await http.aclose()


async def test_failed_body_stores_nothing(cluster):
    cc, http = make_client(cluster)

    async def broken():
        yield b"x" * 100_000
        raise ConnectionError("client went away")

    with trio.fail_after(60):
        await cc.put_container("AUTH_cc", "partial")
        with pytest.raises(ConnectionError):
            await cc.put_object("AUTH_cc", "partial", "o", {"Content-Type": "x/y"}, broken(), 200_000)
        assert (await cc.head_object("AUTH_cc", "partial", "o", newest=True)).status == 404
    await http.aclose()


async def test_handoffs_and_error_limiting_with_a_node_down(cluster):
    cc, http = make_client(cluster)
    ring = cc.rings.object
    part, primaries = ring.get_nodes("AUTH_cc", "down", "o")
    victim = node_of(cluster, primaries[0])
    await cc.put_container("AUTH_cc", "down")
    victim.stop()
    try:
        with trio.fail_after(60):
            data = os.urandom(50_000)
            status, _ = await cc.put_object("AUTH_cc", "down", "o", {"Content-Type": "x/y"}, chunks(data),
                                            len(data))
            assert status == 201
            assert cc.health.is_limited(primaries[0])
            assert await read_all(cc, "AUTH_cc", "down", "o") == (200, data)
    finally:
        victim.start()
    with trio.fail_after(60):
        fresh, http2 = make_client(cluster)
        assert await read_all(fresh, "AUTH_cc", "down", "o") == (200, data)
        await http2.aclose()
    await http.aclose()


async def test_deleted_container_outranks_an_older_handoff_copy(cluster):
    """A container created while a primary was down lives on a handoff too; deleting it
    (quorum of primaries) must make reads say 404, though the handoff copy is still live."""
    cc, http = make_client(cluster)
    part, primaries = cc.rings.container.get_nodes("AUTH_cc", "moved")
    victim = node_of(cluster, primaries[0])
    victim.stop()
    try:
        with trio.fail_after(60):
            assert (await cc.put_container("AUTH_cc", "moved")).status == 201
    finally:
        victim.start()
    with trio.fail_after(60):
        fresh, http2 = make_client(cluster)
        assert (await fresh.delete_container("AUTH_cc", "moved")).status == 204
        live_handoffs = []
        for node in cc.rings.container.get_more_nodes(part):
            resp = await fresh._request(node, "HEAD", f"/{part}/AUTH_cc/moved", [])
            if resp is not None and resp.status == 204:
                live_handoffs.append(node)
        assert live_handoffs, "the container should still be live on the handoff it was written to"
        assert (await fresh.head_container("AUTH_cc", "moved")).status == 404
        assert (await fresh.get_container("AUTH_cc", "moved")).status == 404
        await http2.aclose()
    await http.aclose()


async def test_get_resumes_on_another_node_when_the_server_dies(cluster, caplog):
    caplog.set_level(logging.INFO, logger="peerstack.cluster")
    cc, http = make_client(cluster)
    data = os.urandom(48 << 20)
    with trio.fail_after(120):
        await cc.put_container("AUTH_cc", "resume")
        status, _ = await cc.put_object("AUTH_cc", "resume", "big", {"Content-Type": "x/y"},
                                        chunks(data, 1 << 20), len(data))
        assert status == 201
        resp = await cc.open_object("AUTH_cc", "resume", "big")
        try:
            assert resp.status == 200
            serving = node_of(cluster, resp._node)
            got = bytearray()
            body = resp.iter_body()
            got += await body.__anext__()
            serving.kill()
            async for chunk in body:
                got += chunk
        finally:
            await resp.aclose()
            if serving.proc is not None and serving.proc.poll() is not None:
                serving.start()
        assert hashlib.md5(got).hexdigest() == hashlib.md5(data).hexdigest()
    assert any(getattr(r, "event", None) == "cluster.get_resumed" for r in caplog.records)
    await http.aclose()
