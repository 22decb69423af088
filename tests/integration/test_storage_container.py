"""Container and account servers against real SQLite: rows, listings, totals, metadata."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import trio

from node.storage.container_db import ContainerBroker
from node.storage.paths import parse_storage_path
from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import Store, quote, store  # noqa: F401

CONT = quote("d1", 5, "a", "c")


def ts(offset: float = 0.0) -> str:
    return Timestamp(time.time() + offset).internal


async def put_row(store: Store, name: str, size: int = 1, t: str | None = None,
                  container: str = "c") -> int:
    r = await store.request("PUT", quote("d1", 5, "a", container, name),
                            {"X-Backend-Server": "container", "X-Timestamp": t or ts(),
                             "X-Size": str(size), "X-Content-Type": "text/plain",
                             "X-Etag": "e" * 32})
    return r.status


async def listing(store: Store, query: str = "", path: str = CONT) -> list:
    r = await store.request("GET", path, query="format=json" + (f"&{query}" if query else ""))
    assert r.status == 200, r.body
    return [d.get("name", d.get("subdir")) for d in json.loads(r.body)]


async def test_container_lifecycle(store: Store) -> None:
    assert (await store.request("HEAD", CONT)).status == 404
    t1 = ts()
    r = await store.request("PUT", CONT, {"X-Timestamp": t1, "X-Container-Meta-Color": "red",
                                          "X-Container-Read": ".r:*"})
    assert r.status == 201
    t_put = ts(1)
    assert (await store.request("PUT", CONT, {"X-Timestamp": t_put})).status == 202
    r = await store.request("HEAD", CONT)
    assert r.status == 204
    assert r.headers["x-container-object-count"] == "0"
    assert r.headers["x-container-meta-color"] == "red"
    assert r.headers["x-container-read"] == ".r:*"
    assert r.headers["x-put-timestamp"] == Timestamp(t_put).normal
    r = await store.request("POST", CONT, {"X-Timestamp": ts(2), "X-Container-Meta-Color": "blue",
                                           "X-Remove-Container-Read": "x",
                                           "X-Container-Sysmeta-S": "1"})
    assert r.status == 204
    r = await store.request("HEAD", CONT)
    assert r.headers["x-container-meta-color"] == "blue"
    assert r.headers.get("x-container-read") is None
    assert r.headers["x-container-sysmeta-s"] == "1"
    # an older POST does not undo a newer one
    await store.request("POST", CONT, {"X-Timestamp": t1, "X-Container-Meta-Color": "old"})
    assert (await store.request("HEAD", CONT)).headers["x-container-meta-color"] == "blue"

    assert await put_row(store, "o1", size=10) == 201
    assert await put_row(store, "o2", size=5) == 201
    r = await store.request("HEAD", CONT)
    assert (r.headers["x-container-object-count"], r.headers["x-container-bytes-used"]) == ("2", "15")
    r = await store.request("DELETE", CONT, {"X-Timestamp": ts(3)})
    assert r.status == 409
    for name in ("o1", "o2"):
        r = await store.request("DELETE", quote("d1", 5, "a", "c", name),
                                {"X-Backend-Server": "container", "X-Timestamp": ts(4)})
        assert r.status == 204
    r = await store.request("HEAD", CONT)
    assert (r.headers["x-container-object-count"], r.headers["x-container-bytes-used"]) == ("0", "0")
    assert (await store.request("DELETE", CONT, {"X-Timestamp": ts(5)})).status == 204
    r = await store.request("GET", CONT)
    assert r.status == 404 and "x-backend-delete-timestamp" in r.headers
    assert (await store.request("DELETE", CONT, {"X-Timestamp": ts(6)})).status == 404
    assert (await store.request("POST", CONT, {"X-Timestamp": ts(6)})).status == 404
    # a PUT older than the delete is refused; a newer one brings it back
    assert (await store.request("PUT", CONT, {"X-Timestamp": ts(4.5)})).status == 409
    assert (await store.request("PUT", CONT, {"X-Timestamp": ts(7)})).status == 201
    assert (await store.request("HEAD", CONT)).status == 204


async def test_rows_newest_wins(store: Store) -> None:
    await store.request("PUT", CONT, {"X-Timestamp": ts()})
    base = time.time()
    t1, t2, t3 = (Timestamp(base + d).internal for d in (1, 2, 3))
    assert await put_row(store, "o", size=200, t=t2) == 201
    assert await put_row(store, "o", size=100, t=t1) == 201  # stale: accepted, ignored
    r = await store.request("GET", CONT, query="format=json")
    (row,) = json.loads(r.body)
    assert row["bytes"] == 200 and row["last_modified"] == Timestamp(t2).isoformat
    r = await store.request("DELETE", quote("d1", 5, "a", "c", "o"),
                            {"X-Backend-Server": "container", "X-Timestamp": t1})
    assert json.loads((await store.request("GET", CONT, query="format=json")).body) != []
    await store.request("DELETE", quote("d1", 5, "a", "c", "o"),
                        {"X-Backend-Server": "container", "X-Timestamp": t3})
    assert (await store.request("GET", CONT, query="format=json")).body == b"[]"
    assert (await store.request("GET", CONT)).status == 204  # empty plain listing
    assert await put_row(store, "o", t=t2) == 201  # older than the tombstone row
    assert (await store.request("GET", CONT, query="format=json")).body == b"[]"
    assert await put_row(store, "o", container="nope") == 404


async def test_listing_parameters(store: Store) -> None:
    await store.request("PUT", CONT, {"X-Timestamp": ts()})
    names = ["a", "a/1", "a/2", "a/b/1", "b", "b/", "b/x", "c/d/e", "z", "ç", "éa/1"]  # code point order
    for n in names:
        assert await put_row(store, n) == 201
    assert await listing(store) == names
    assert await listing(store, "limit=3") == names[:3]
    assert await listing(store, "marker=a/2") == names[3:]
    assert await listing(store, "end_marker=b") == names[:4]
    assert await listing(store, "marker=a&end_marker=b/x") == ["a/1", "a/2", "a/b/1", "b", "b/"]
    assert await listing(store, "prefix=a/") == ["a/1", "a/2", "a/b/1"]
    assert await listing(store, "prefix=%C3%A9") == ["éa/1"]
    assert await listing(store, "delimiter=/") == ["a", "a/", "b", "b/", "c/", "z", "ç", "éa/"]
    assert await listing(store, "delimiter=/&prefix=a/") == ["a/1", "a/2", "a/b/"]
    assert await listing(store, "delimiter=/&marker=a/") == ["b", "b/", "c/", "z", "ç", "éa/"]
    assert await listing(store, "delimiter=/&limit=3") == ["a", "a/", "b"]
    assert await listing(store, "path=a") == ["a/1", "a/2"]
    assert await listing(store, "path=b") == ["b/x"]
    assert await listing(store, "reverse=true") == names[::-1]
    assert await listing(store, "reverse=on&marker=b") == ["a/b/1", "a/2", "a/1", "a"]
    assert await listing(store, "reverse=1&marker=b&end_marker=a/1") == ["a/b/1", "a/2"]
    assert await listing(store, "reverse=true&delimiter=/") == ["éa/", "ç", "z", "c/", "b/", "b", "a/", "a"]
    assert await listing(store, "reverse=true&delimiter=/&prefix=a/") == ["a/b/", "a/2", "a/1"]
    assert await listing(store, "delimiter=b") == ["a", "a/1", "a/2", "a/b", "b", "c/d/e", "z", "ç", "éa/1"]

    r = await store.request("GET", CONT, query="limit=10001")
    assert r.status == 412
    assert (await store.request("GET", CONT, query="limit=-1")).status == 412
    assert (await store.request("GET", CONT, query="prefix=%FF")).status == 400

    plain = await store.request("GET", CONT, query="prefix=a/")
    assert plain.body == b"a/1\na/2\na/b/1\n"
    assert plain.headers["content-type"] == "text/plain; charset=utf-8"
    assert plain.headers["x-container-object-count"] == str(len(names))
    x = await store.request("GET", CONT, query="format=xml&delimiter=/&prefix=a/")
    root = ET.fromstring(x.body)
    assert root.tag == "container" and root.get("name") == "c"
    assert [e.findtext("name") for e in root] == ["a/1", "a/2", "a/b/"]
    assert root[0].findtext("hash") == "e" * 32 and root[0].findtext("bytes") == "1"
    assert root[2].tag == "subdir" and root[2].get("name") == "a/b/"
    for accept, ctype in [("application/json", "application/json"), ("text/xml", "application/xml"),
                          ("application/xml;q=0.5, application/json;q=0.9", "application/json"),
                          ("*/*", "text/plain")]:
        r = await store.request("GET", CONT, {"Accept": accept})
        assert r.headers["content-type"].startswith(ctype), accept
    assert (await store.request("GET", CONT, {"Accept": "image/png"})).status == 406


async def test_listing_ten_thousand_rows(store: Store) -> None:
    await store.request("PUT", CONT, {"X-Timestamp": ts()})

    def fill() -> None:
        broker = store.server.containers.broker(parse_storage_path(CONT))
        assert isinstance(broker, ContainerBroker)
        t = ts()
        broker.merge_rows([{"name": f"dir{i % 10}/obj{i:05d}", "created_at": t, "size": i,
                            "content_type": "a/b", "etag": "0" * 32, "deleted": 0}
                           for i in range(12000)])

    await trio.to_thread.run_sync(fill)
    r = await store.request("HEAD", CONT)
    assert r.headers["x-container-object-count"] == "12000"
    assert r.headers["x-container-bytes-used"] == str(sum(range(12000)))
    first = await listing(store)
    assert len(first) == 10000 and first == sorted(first)
    rest = await listing(store, f"marker={first[-1]}")
    assert len(rest) == 2000 and first[-1] < rest[0]
    assert len(set(first + rest)) == 12000
    assert await listing(store, "delimiter=/") == [f"dir{i}/" for i in range(10)]
    assert len(await listing(store, "prefix=dir3/")) == 1200
    back = await listing(store, "reverse=true&limit=5")
    assert back == sorted(first + rest)[-5:][::-1]


async def test_account_server(store: Store) -> None:
    acct = quote("d1", 9, "acct")
    row = quote("d1", 9, "acct", "c1")
    hdrs = {"X-Backend-Server": "account", "X-Put-Timestamp": ts(), "X-Delete-Timestamp": "0",
            "X-Object-Count": "3", "X-Bytes-Used": "30"}
    assert (await store.request("PUT", row, hdrs)).status == 404  # no account yet
    assert (await store.request("PUT", acct, {"X-Timestamp": ts(), "X-Account-Meta-Q": "1"})).status == 201
    assert (await store.request("PUT", acct, {"X-Timestamp": ts(1)})).status == 202
    assert (await store.request("PUT", row, hdrs)).status == 201
    await store.request("PUT", quote("d1", 9, "acct", "c2"),
                        {**hdrs, "X-Object-Count": "1", "X-Bytes-Used": "7"})
    r = await store.request("HEAD", acct)
    assert r.status == 204
    assert (r.headers["x-account-container-count"], r.headers["x-account-object-count"],
            r.headers["x-account-bytes-used"]) == ("2", "4", "37")
    assert r.headers["x-account-meta-q"] == "1"
    r = await store.request("GET", acct, query="format=json")
    assert [(d["name"], d["count"], d["bytes"]) for d in json.loads(r.body)] == [("c1", 3, 30), ("c2", 1, 7)]
    assert "last_modified" in json.loads(r.body)[0]
    x = ET.fromstring((await store.request("GET", acct, query="format=xml")).body)
    assert x.tag == "account" and x[0].tag == "container" and x[0].findtext("count") == "3"
    # newer totals replace; a delete newer than the put removes the row
    await store.request("PUT", row, {**hdrs, "X-Object-Count": "5", "X-Bytes-Used": "50"})
    r = await store.request("HEAD", acct)
    assert (r.headers["x-account-object-count"], r.headers["x-account-bytes-used"]) == ("6", "57")
    r = await store.request("PUT", row, {**hdrs, "X-Delete-Timestamp": ts(2), "X-Object-Count": "0",
                                         "X-Bytes-Used": "0"})
    assert r.status == 204
    r = await store.request("GET", acct)
    assert r.body == b"c2\n" and r.headers["x-account-container-count"] == "1"
    assert (await store.request("POST", acct, {"X-Timestamp": ts(3), "X-Account-Meta-Q": ""})).status == 204
    assert "x-account-meta-q" not in (await store.request("HEAD", acct)).headers
    assert (await store.request("DELETE", acct, {"X-Timestamp": ts(4)})).status == 204
    assert (await store.request("HEAD", acct)).status == 404
    assert (await store.request("PUT", row, hdrs)).status == 404
    # system accounts appear on first use
    sys_row = quote("d1", 9, ".images", "c")
    assert (await store.request("PUT", sys_row, hdrs)).status == 201
    assert (await store.request("GET", quote("d1", 9, ".images"))).body == b"c\n"
