"""Updates between real storage servers: object -> container -> account, and async pendings."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import trio

from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import HOST, Store, quote, start_storage


def ts(offset: float = 0.0) -> str:
    return Timestamp(time.time() + offset).internal


def dead_port() -> int:
    """A loopback port nothing listens on."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def update_headers(kind: str, target: Store | int, partition: int, device: str = "d1") -> dict[str, str]:
    port = target if isinstance(target, int) else target.port
    return {f"X-{kind}-Host": f"{HOST}:{port}", f"X-{kind}-Device": device,
            f"X-{kind}-Partition": str(partition)}


def pendings(store: Store) -> list[dict]:
    root = store.device() / "async_pending"
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/*"))] if root.exists() else []


async def test_object_updates_reach_container_and_account(nursery: trio.Nursery, tmp_path) -> None:
    objs = await start_storage(nursery, tmp_path / "objs")
    dbs = await start_storage(nursery, tmp_path / "dbs", cluster=objs.cluster)
    assert (await dbs.request("PUT", quote("d1", 7, "a"), {"X-Timestamp": ts()})).status == 201
    r = await dbs.request("PUT", quote("d1", 5, "a", "c"),
                          {"X-Timestamp": ts(), **update_headers("Account", dbs, 7)})
    assert r.status == 201
    assert (await dbs.request("GET", quote("d1", 7, "a"))).body == b"c\n"

    body = b"payload" * 100
    r = await objs.request("PUT", quote("d1", 3, "a", "c", "o"),
                           {"X-Timestamp": ts(), "Content-Type": "text/x",
                            **update_headers("Container", dbs, 5)}, body)
    assert r.status == 201
    (row,) = json.loads((await dbs.request("GET", quote("d1", 5, "a", "c"), query="format=json")).body)
    assert (row["name"], row["bytes"], row["content_type"], row["hash"]) == (
        "o", len(body), "text/x", hashlib.md5(body).hexdigest())
    assert pendings(objs) == []

    async def account_objects() -> str:
        return (await dbs.request("HEAD", quote("d1", 7, "a"))).headers["x-account-object-count"]

    with trio.fail_after(15):  # the container reports totals debounced
        while await account_objects() != "1":
            await trio.sleep(0.1)
    r = await dbs.request("HEAD", quote("d1", 7, "a"))
    assert r.headers["x-account-bytes-used"] == str(len(body))

    r = await objs.request("DELETE", quote("d1", 3, "a", "c", "o"),
                           {"X-Timestamp": ts(1), **update_headers("Container", dbs, 5)})
    assert r.status == 204
    assert (await dbs.request("GET", quote("d1", 5, "a", "c"), query="format=json")).body == b"[]"
    with trio.fail_after(15):
        while await account_objects() != "0":
            await trio.sleep(0.1)

    # deleting the container removes it from the account listing at once
    r = await dbs.request("DELETE", quote("d1", 5, "a", "c"),
                          {"X-Timestamp": ts(2), **update_headers("Account", dbs, 7)})
    assert r.status == 204
    r = await dbs.request("GET", quote("d1", 7, "a"))
    assert r.status == 204 and r.headers["x-account-container-count"] == "0"


async def test_container_down_writes_async_pending(nursery: trio.Nursery, tmp_path) -> None:
    objs = await start_storage(nursery, tmp_path / "objs")
    port = dead_port()
    t = ts()
    hdrs = {"X-Timestamp": t, "Content-Type": "text/x", **update_headers("Container", port, 5)}
    hdrs["X-Container-Host"] += f",{HOST}:{port}"
    hdrs["X-Container-Device"] = "d1,d2"
    r = await objs.request("PUT", quote("d1", 3, "a", "c", "o"), hdrs, b"abc")
    assert r.status == 201  # the object is stored; the listing catches up later
    assert (await objs.request("GET", quote("d1", 3, "a", "c", "o"))).body == b"abc"
    h = objs.hash("a", "c", "o")
    path = objs.device() / "async_pending" / h[-3:] / f"{h}-{t}"
    record = json.loads(path.read_text())
    assert record["kind"] == "container" and record["op"] == "PUT"
    assert (record["account"], record["container"], record["obj"]) == ("a", "c", "o")
    assert record["headers"]["X-Size"] == "3" and record["headers"]["X-Timestamp"] == t
    assert record["headers"]["X-Etag"] == hashlib.md5(b"abc").hexdigest()
    assert sorted((x["device"], x["port"], x["partition"]) for x in record["targets"]) == [
        ("d1", port, 5), ("d2", port, 5)]
    assert list((objs.device() / "tmp").iterdir()) == []

    # a container server that answers 404 (no such container) also leaves a pending
    dbs = await start_storage(nursery, tmp_path / "dbs", cluster=objs.cluster)
    t2 = ts(1)
    r = await objs.request("DELETE", quote("d1", 3, "a", "c", "o"),
                           {"X-Timestamp": t2, **update_headers("Container", dbs, 5)})
    assert r.status == 204
    record = json.loads((objs.device() / "async_pending" / h[-3:] / f"{h}-{t2}").read_text())
    assert record["op"] == "DELETE" and record["targets"][0]["port"] == dbs.port


async def test_account_missing_or_down(nursery: trio.Nursery, tmp_path) -> None:
    dbs = await start_storage(nursery, tmp_path / "dbs")
    # the account server says 404: the container PUT says 404 too, as in Swift
    r = await dbs.request("PUT", quote("d1", 5, "a", "c"),
                          {"X-Timestamp": ts(), **update_headers("Account", dbs, 7)})
    assert r.status == 404
    # the account server is down: the container exists, the report waits as a pending
    t = ts(1)
    r = await dbs.request("PUT", quote("d1", 5, "a", "c2"),
                          {"X-Timestamp": t, **update_headers("Account", dead_port(), 7)})
    assert r.status == 201
    (record,) = [p for p in pendings(dbs) if p["container"] == "c2"]
    assert record["kind"] == "account" and record["obj"] is None
    assert record["headers"]["X-Put-Timestamp"] == t and record["headers"]["X-Object-Count"] == "0"
    r = await dbs.request("PUT", quote("d1", 5, "a", "c3"),
                          {"X-Timestamp": ts(), "X-Account-Host": "h:1,h:2", "X-Account-Device": "d1",
                           "X-Account-Partition": "7"})
    assert r.status == 400


async def test_concurrent_rows_for_one_container_go_out_together(nursery: trio.Nursery, tmp_path,
                                                                  caplog) -> None:
    """Sixty-four PUTs and then DELETEs at once: the rows reach the container replica in
    fewer requests than rows (UPDATE batches), and the listing ends up exactly right."""
    caplog.set_level("INFO", logger="peerstack.http")
    objs = await start_storage(nursery, tmp_path / "objs")
    dbs = await start_storage(nursery, tmp_path / "dbs", cluster=objs.cluster)
    assert (await dbs.request("PUT", quote("d1", 5, "a", "c"), {"X-Timestamp": ts()})).status == 201
    names = [f"o{i:03d}" for i in range(64)]

    async def put(name: str) -> None:
        r = await objs.request("PUT", quote("d1", 3, "a", "c", name),
                               {"X-Timestamp": ts(), "Content-Type": "text/x",
                                **update_headers("Container", dbs, 5)}, name.encode())
        assert r.status == 201

    async def delete(name: str) -> None:
        r = await objs.request("DELETE", quote("d1", 3, "a", "c", name),
                               {"X-Timestamp": ts(), **update_headers("Container", dbs, 5)})
        assert r.status == 204

    async def listing() -> list[str]:
        body = (await dbs.request("GET", quote("d1", 5, "a", "c"), query="format=json")).body
        return [row["name"] for row in json.loads(body)]

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            for name in names:
                inner.start_soon(put, name)
        assert await listing() == names
        async with trio.open_nursery() as inner:
            for name in names[::2]:
                inner.start_soon(delete, name)
        assert await listing() == names[1::2]
    assert pendings(objs) == []
    row_requests = [r for r in caplog.records if getattr(r, "fields", {}).get("server") == "internal"
                    and r.fields["path"].startswith("/d1/5/a/c")
                    and r.fields["method"] in ("PUT", "DELETE", "UPDATE")]
    updates = [r for r in row_requests if r.fields["method"] == "UPDATE"]
    assert updates and all(r.fields["status"] == 204 for r in row_requests if r.fields["method"] != "PUT")
    assert len(row_requests) < 96 + 1  # 96 rows (and the container PUT) in fewer requests


async def test_bad_row_batches_are_refused_whole(nursery: trio.Nursery, tmp_path) -> None:
    dbs = await start_storage(nursery, tmp_path / "dbs")
    path = quote("d1", 5, "a", "c")
    assert (await dbs.request("PUT", path, {"X-Timestamp": ts()})).status == 201
    good = {"method": "PUT", "obj": "fine", "headers": {"X-Timestamp": ts(), "X-Size": "1",
                                                        "X-Content-Type": "a/b", "X-Etag": "e"}}
    headers = {"X-Backend-Server": "container", "Content-Type": "application/json"}
    for bad in (b"not json", b"[]", b'{"rows": []}', b'{"rows": [1]}',
                json.dumps({"rows": [good, {**good, "obj": "../x"}]}).encode(),
                json.dumps({"rows": [good, {**good, "method": "POST"}]}).encode(),
                json.dumps({"rows": [good, {**good, "headers": {"X-Timestamp": "soon"}}]}).encode()):
        r = await dbs.request("UPDATE", path, headers, bad)
        assert r.status == 400, bad
    assert json.loads((await dbs.request("GET", path, query="format=json")).body) == []
    r = await dbs.request("UPDATE", path, headers, json.dumps({"rows": [good]}).encode())
    assert r.status == 204
    assert [row["name"] for row in json.loads((await dbs.request("GET", path, query="format=json")).body)] == ["fine"]
    r = await dbs.request("UPDATE", quote("d1", 5, "a", "missing"), headers,
                          json.dumps({"rows": [good]}).encode())
    assert r.status == 404
    r = await dbs.request("UPDATE", quote("d1", 7, "a"), {}, b"{}")
    assert r.status == 405
