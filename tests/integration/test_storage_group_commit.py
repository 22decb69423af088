"""Group commit of container rows: concurrent rows share transactions and lose nothing."""

from __future__ import annotations

import json
import random
import time

import trio

from node.http_client import BackendError, HTTPClient, Timeouts
from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import HOST, Store, quote, spawn_storage, store, write_cluster  # noqa: F401

CONT = quote("d1", 5, "a", "c")


def row_headers(t: float, size: int) -> dict[str, str]:
    return {"X-Backend-Server": "container", "X-Timestamp": Timestamp(t).internal,
            "X-Size": str(size), "X-Content-Type": "text/plain", "X-Etag": "e" * 32}


async def make_container(store: Store) -> None:
    r = await store.request("PUT", CONT, {"X-Timestamp": Timestamp(time.time()).internal})
    assert r.status == 201


async def rows(store: Store) -> dict[str, int]:
    r = await store.request("GET", CONT, query="format=json")
    assert r.status == 200
    return {d["name"]: d["bytes"] for d in json.loads(r.body)}


async def test_many_concurrent_rows_all_land_in_fewer_transactions(store: Store) -> None:
    await make_container(store)
    names = [f"o{i:04d}" for i in range(300)]
    now = time.time()

    async def put(i: int, name: str) -> None:
        r = await store.request("PUT", quote("d1", 5, "a", "c", name), row_headers(now + i * 1e-5, i))
        assert r.status == 201

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(put, i, name)
    assert await rows(store) == {name: i for i, name in enumerate(names)}
    head = await store.request("HEAD", CONT)
    assert head.headers["x-container-object-count"] == "300"
    assert head.headers["x-container-bytes-used"] == str(sum(range(300)))
    commits = store.server.containers.row_commits
    assert commits.items == 300
    assert commits.batches < 300  # rows that arrived together were committed together


async def test_newest_row_wins_whatever_the_arrival_order(store: Store) -> None:
    await make_container(store)
    rng = random.Random(7)
    base = time.time()
    # Five names, each written 40 times (some as deletes) in shuffled order.
    updates = [(name, base + k * 1e-3, k, k % 7 == 3) for name in "abcde" for k in range(40)]
    rng.shuffle(updates)

    async def send(name: str, t: float, size: int, deleted: bool) -> None:
        method = "DELETE" if deleted else "PUT"
        headers = row_headers(t, size)
        if deleted:
            headers = {"X-Backend-Server": "container", "X-Timestamp": Timestamp(t).internal}
        r = await store.request(method, quote("d1", 5, "a", "c", name), headers)
        assert r.status in (201, 204)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for update in updates:
                nursery.start_soon(send, *update)
    newest = {}
    for name, t, size, deleted in updates:
        if name not in newest or t > newest[name][0]:
            newest[name] = (t, size, deleted)
    expected = {name: size for name, (t, size, deleted) in newest.items() if not deleted}
    assert await rows(store) == expected
    head = await store.request("HEAD", CONT)
    assert head.headers["x-container-object-count"] == str(len(expected))
    assert head.headers["x-container-bytes-used"] == str(sum(expected.values()))


async def test_rows_for_a_missing_container_all_fail_alike(store: Store) -> None:
    async def put(name: str, statuses: list[int]) -> None:
        r = await store.request("PUT", quote("d1", 5, "a", "nope", name), row_headers(time.time(), 1))
        statuses.append(r.status)

    statuses: list[int] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(put, f"o{i}", statuses)
    assert statuses == [404] * 20


async def test_sigkill_mid_batch_loses_no_acknowledged_row(tmp_path) -> None:
    root = tmp_path / "node"
    write_cluster(root)
    (root / "d1").mkdir()
    acked: set[str] = set()
    started = 0
    for round_no in range(2):
        proc, port = await spawn_storage(root)
        client = HTTPClient()
        if round_no == 0:
            r = await client.request("PUT", HOST, port, CONT, [("X-Timestamp", Timestamp(time.time()).internal)])
            assert r.status == 201

        async def writer(w: int) -> None:
            nonlocal started
            i = 0
            while True:
                name = f"r{round_no}-w{w}-{i}"
                started += 1
                try:
                    r = await client.request("PUT", HOST, port, quote("d1", 5, "a", "c", name),
                                             list(row_headers(time.time(), i).items()),
                                             timeouts=Timeouts(connect=2, node=10))
                except BackendError:
                    return  # the server died under us
                assert r.status == 201
                acked.add(name)
                i += 1

        try:
            async with trio.open_nursery() as nursery:
                for w in range(24):
                    nursery.start_soon(writer, w)
                goal = len(acked) + 200
                with trio.fail_after(60):
                    while len(acked) < goal:
                        await trio.sleep(0.005)
                proc.kill()  # SIGKILL while rows are queued and committing
        finally:
            proc.kill()
            await trio.to_thread.run_sync(proc.wait)
            await client.aclose()
    assert started > len(acked)  # some rows were cut off unacknowledged
    proc, port = await spawn_storage(root)
    client = HTTPClient()
    try:
        r = await client.request("GET", HOST, port, CONT + "?format=json")
        assert r.status == 200
        listed = {d["name"] for d in json.loads(r.body)}
    finally:
        proc.kill()
        await trio.to_thread.run_sync(proc.wait)
        await client.aclose()
    assert acked <= listed
