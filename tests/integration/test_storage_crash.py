"""SIGKILL a storage server in the middle of PUTs: nothing acknowledged is lost, nothing torn is served."""

from __future__ import annotations

import hashlib
import os
import random

import trio

from node.http_client import BackendError, HTTPClient, Timeouts
from node.storage.diskfile import read_metadata
from tests.integration.storage_fixture import HOST, quote, spawn_storage, start_storage, write_cluster

ROUNDS = 3
WRITERS = 6


async def _put_until_killed(root, acked: dict[str, str], round_no: int) -> None:
    proc, port = await spawn_storage(root)
    client = HTTPClient()
    rng = random.Random(round_no)
    started = 0
    before = len(acked)

    async def writer(w: int) -> None:
        nonlocal started
        i = 0
        while True:
            name = f"r{round_no}-w{w}-{i}"
            body = os.urandom(rng.choice([0, 100, 70_000, 1_500_000, 3_000_000]))
            headers = [("X-Timestamp", f"{1700000000 + round_no}.{i:05d}"), ("Content-Type", "a/b")]
            started += 1
            try:
                r = await client.request("PUT", HOST, port, quote("d1", w, "a", "c", name), headers,
                                         body, timeouts=Timeouts(connect=2, node=10))
            except BackendError:
                return  # the server died under us
            assert r.status == 201
            acked[name] = hashlib.md5(body).hexdigest()
            i += 1

    try:
        async with trio.open_nursery() as nursery:
            for w in range(WRITERS):
                nursery.start_soon(writer, w)
            goal = len(acked) + 30
            with trio.fail_after(60):
                while len(acked) < goal:
                    await trio.sleep(0.01)
            proc.kill()  # SIGKILL, with every writer mid-request
    finally:
        proc.kill()
        await trio.to_thread.run_sync(proc.wait)
        await client.aclose()
    assert started > len(acked) - before  # some PUTs were cut off


async def test_sigkill_during_puts(tmp_path) -> None:
    root = tmp_path / "node"
    cluster = write_cluster(root)
    (root / "d1").mkdir()
    acked: dict[str, str] = {}
    for round_no in range(ROUNDS):
        await _put_until_killed(root, acked, round_no)

    # every .data file that made it to its final name is whole
    datas = list((root / "d1" / "objects").glob("*/*/*/*.data"))
    assert len(datas) >= len(acked)
    for path in datas:
        meta = read_metadata(path)
        body = path.read_bytes()
        assert str(len(body)) == meta["Content-Length"], path
        assert hashlib.md5(body).hexdigest() == meta["ETag"], path

    async with trio.open_nursery() as nursery:
        store = await start_storage(nursery, root, cluster=cluster, background=False)
        for name, md5 in acked.items():
            part = int(name.split("-w")[1].split("-")[0])
            r = await store.request("GET", quote("d1", part, "a", "c", name))
            assert r.status == 200, name
            assert hashlib.md5(r.body).hexdigest() == md5, name
            assert r.headers["etag"] == f'"{md5}"'
        nursery.cancel_scope.cancel()
