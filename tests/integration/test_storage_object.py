"""The object server against real files: every verb, conditionals, ranges, timestamps."""

from __future__ import annotations

import email
import hashlib
import json
import os
import time

import trio

from node.http_client import Timeouts
from node.storage.diskfile import XATTR
from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import HOST, Store, quote, store  # noqa: F401

OBJ = quote("d1", 3, "a", "c", "o")


def ts(offset: float = 0.0) -> str:
    return Timestamp(time.time() + offset).internal


async def put(store: Store, body: bytes = b"hello world", path: str = OBJ, t: str | None = None,
              **headers: str) -> tuple[int, str]:
    hdrs = {"X-Timestamp": t or ts(), "Content-Type": "text/plain"}
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    r = await store.request("PUT", path, hdrs, body)
    return r.status, hdrs["X-Timestamp"]


async def test_put_get_head_roundtrip_and_layout(store: Store) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # spans several write batches
    status, t = await put(store, body, X_Object_Meta_Color="blue", Content_Encoding="gzip",
                          X_Object_Sysmeta_Thing="s", Content_Disposition="inline")
    assert status == 201
    r = await store.request("GET", OBJ)
    assert r.status == 200 and r.body == body
    md5 = hashlib.md5(body).hexdigest()
    assert r.headers["etag"] == f'"{md5}"'
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["x-object-meta-color"] == "blue"
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-disposition"] == "inline"
    assert r.headers["x-object-sysmeta-thing"] == "s"
    assert r.headers["x-timestamp"] == Timestamp(t).normal
    assert r.headers["x-backend-timestamp"] == t
    assert r.headers["last-modified"] == Timestamp(t).http_date
    head = await store.request("HEAD", OBJ)
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(body))

    h = store.hash("a", "c", "o")
    hash_dir = store.device() / "objects" / "3" / h[-3:] / h
    assert os.listdir(hash_dir) == [f"{t}.data"]
    meta = json.loads(os.getxattr(hash_dir / f"{t}.data", XATTR))
    assert meta["ETag"] == md5 and meta["name"] == "/a/c/o" and meta["X-Timestamp"] == t
    assert os.listdir(store.device() / "tmp") == []


async def test_chunked_put_and_utf8_names(store: Store) -> None:
    path = quote("d1", 3, "a", "c", "dir/ünïcødé ✓")
    async with store.client.exchange(HOST, store.port, timeouts=Timeouts(5, 30)) as ex:
        await ex.start("PUT", path, [("X-Timestamp", ts()), ("Content-Type", "a/b")],
                       content_length=None)
        for i in range(5):
            await ex.send(bytes([i]) * 300_000)
        resp = await ex.finish()
        await resp.read()
    assert resp.status == 201
    r = await store.request("GET", path)
    assert r.body == b"".join(bytes([i]) * 300_000 for i in range(5))


async def test_newest_timestamp_wins_out_of_order(store: Store) -> None:
    base = time.time()
    t1, t2, t3 = (Timestamp(base + d).internal for d in (1, 2, 3))
    assert (await put(store, b"two", t=t2))[0] == 201
    r = await store.request("PUT", OBJ, {"X-Timestamp": t1, "Content-Type": "x/y"}, b"one")
    assert r.status == 409 and r.headers["x-backend-timestamp"] == t2
    r = await store.request("PUT", OBJ, {"X-Timestamp": t2, "Content-Type": "x/y"}, b"same")
    assert r.status == 409
    assert (await store.request("GET", OBJ)).body == b"two"
    # a delete older than the data is refused; a newer PUT replaces and cleans up
    r = await store.request("DELETE", OBJ, {"X-Timestamp": t1})
    assert r.status == 409 and r.headers["x-backend-timestamp"] == t2
    assert (await put(store, b"three", t=t3))[0] == 201
    assert (await store.request("GET", OBJ)).body == b"three"
    h = store.hash("a", "c", "o")
    assert os.listdir(store.device() / "objects" / "3" / h[-3:] / h) == [f"{t3}.data"]
    # offsets order events at the same instant
    t3_1 = Timestamp(t3, offset=1).internal
    assert (await put(store, b"offset", t=t3_1))[0] == 201
    assert (await store.request("GET", OBJ)).body == b"offset"


async def test_delete_tombstone_and_recreate(store: Store) -> None:
    base = time.time()
    t1, t2, t3, t4 = (Timestamp(base + d).internal for d in (1, 2, 3, 4))
    r = await store.request("DELETE", OBJ, {"X-Timestamp": t1})
    assert r.status == 404  # nothing there, but the tombstone is written
    await put(store, b"data", t=t2)
    r = await store.request("DELETE", OBJ, {"X-Timestamp": t3})
    assert r.status == 204
    for method in ("GET", "HEAD"):
        r = await store.request(method, OBJ)
        assert r.status == 404 and r.headers["x-backend-timestamp"] == t3
    r = await store.request("PUT", OBJ, {"X-Timestamp": t2, "Content-Type": "a/b"}, b"old")
    assert r.status == 409 and r.headers["x-backend-timestamp"] == t3
    h = store.hash("a", "c", "o")
    assert os.listdir(store.device() / "objects" / "3" / h[-3:] / h) == [f"{t3}.ts"]
    await put(store, b"back", t=t4)
    assert (await store.request("GET", OBJ)).body == b"back"


async def test_post_replaces_user_metadata(store: Store) -> None:
    base = time.time()
    t1, t2, t3 = (Timestamp(base + d).internal for d in (1, 2, 3))
    await put(store, b"x", t=t1, X_Object_Meta_A="1", X_Object_Meta_B="2", X_Object_Sysmeta_S="kept")
    r = await store.request("POST", OBJ, {"X-Timestamp": t2, "X-Object-Meta-C": "3"})
    assert r.status == 202
    r = await store.request("HEAD", OBJ)
    assert r.headers.get("x-object-meta-a") is None and r.headers["x-object-meta-c"] == "3"
    assert r.headers["x-object-sysmeta-s"] == "kept"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["x-timestamp"] == Timestamp(t2).normal
    assert r.headers["x-backend-data-timestamp"] == t1
    r = await store.request("POST", OBJ, {"X-Timestamp": t1, "X-Object-Meta-D": "4"})
    assert r.status == 409
    r = await store.request("POST", quote("d1", 3, "a", "c", "missing"), {"X-Timestamp": t3})
    assert r.status == 404
    # a newer PUT drops the .meta
    await put(store, b"y", t=t3)
    r = await store.request("HEAD", OBJ)
    assert r.headers.get("x-object-meta-c") is None


async def test_metadata_too_big_for_xattr_goes_to_sidecar(store: Store) -> None:
    meta = {f"X-Object-Meta-K{i:02d}": "v" * 40 for i in range(90)}  # ~4 KiB, Swift's max
    status, t = await put(store, b"x", **{k.replace("-", "_"): v for k, v in meta.items()})
    assert status == 201
    r = await store.request("GET", OBJ)
    for k, v in meta.items():
        assert r.headers[k] == v
    h = store.hash("a", "c", "o")
    hash_dir = store.device() / "objects" / "3" / h[-3:] / h
    assert sorted(os.listdir(hash_dir)) == [f"{t}.data", f"{t}.data.json"]
    # and a POST with as much metadata
    t2 = ts(1)
    r = await store.request("POST", OBJ, {"X-Timestamp": t2, **meta})
    assert r.status == 202
    r = await store.request("GET", OBJ)
    assert all(r.headers[k] == v for k, v in meta.items())
    assert sorted(os.listdir(hash_dir)) == sorted([f"{t}.data", f"{t}.data.json", f"{t2}.meta",
                                                   f"{t2}.meta.json"])
    # a delete removes data, meta and both sidecars
    t3 = ts(2)
    assert (await store.request("DELETE", OBJ, {"X-Timestamp": t3})).status == 204
    assert os.listdir(hash_dir) == [f"{t3}.ts"]


async def test_conditional_requests(store: Store) -> None:
    _, t = await put(store, b"0123456789")
    etag = hashlib.md5(b"0123456789").hexdigest()
    lm = Timestamp(t).http_date
    past = "Mon, 01 Jan 2001 00:00:00 GMT"
    future = "Fri, 01 Jan 2100 00:00:00 GMT"
    cases = [
        ({"If-Match": f'"{etag}"'}, 200), ({"If-Match": "*"}, 200), ({"If-Match": '"nope"'}, 412),
        ({"If-Match": f'"nope", "{etag}"'}, 200),
        ({"If-None-Match": f'"{etag}"'}, 304), ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"nope"'}, 200),
        ({"If-Modified-Since": lm}, 304), ({"If-Modified-Since": past}, 200),
        ({"If-Modified-Since": "garbage"}, 200),
        ({"If-Unmodified-Since": past}, 412), ({"If-Unmodified-Since": future}, 200),
        # If-None-Match wins over If-Modified-Since, If-Match over If-Unmodified-Since
        ({"If-None-Match": '"nope"', "If-Modified-Since": future}, 200),
        ({"If-Match": f'"{etag}"', "If-Unmodified-Since": past}, 200),
    ]
    for headers, expected in cases:
        for method in ("GET", "HEAD"):
            r = await store.request(method, OBJ, headers)
            assert r.status == expected, (method, headers, r.status)
            if expected == 304:
                assert r.body == b"" and r.headers["etag"] == f'"{etag}"'
    r = await store.request("GET", quote("d1", 3, "a", "c", "missing"), {"If-Match": "*"})
    assert r.status == 412
    r = await store.request("PUT", OBJ, {"X-Timestamp": ts(1), "Content-Type": "a/b",
                                         "If-None-Match": "*"}, b"x")
    assert r.status == 412


async def test_ranges(store: Store) -> None:
    body = bytes(range(256)) * 40  # 10240 bytes
    await put(store, body, Content_Type="application/x-test")
    n = len(body)
    for spec, start, stop in [("0-9", 0, 10), ("100-", 100, n), ("-10", n - 10, n),
                              ("10-5000000", 10, n), ("-999999", 0, n)]:
        r = await store.request("GET", OBJ, {"Range": f"bytes={spec}"})
        assert r.status == 206, spec
        assert r.body == body[start:stop]
        assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{n}"
    for bad in ("bytes=5-1", "items=0-1", "bytes=", "bytes=x-y", "bytes=-0"):
        r = await store.request("GET", OBJ, {"Range": bad})
        assert r.status == 200 and r.body == body, bad
    r = await store.request("GET", OBJ, {"Range": f"bytes={n}-"})
    assert r.status == 416 and r.headers["content-range"] == f"bytes */{n}"
    r = await store.request("GET", OBJ, {"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(51))})
    assert r.status == 416
    head = await store.request("HEAD", OBJ, {"Range": "bytes=0-9"})
    assert head.status == 206 and head.headers["content-length"] == "10"

    r = await store.request("GET", OBJ, {"Range": "bytes=0-9,20-29,-5"})
    assert r.status == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges;boundary=")
    assert int(r.headers["content-length"]) == len(r.body)
    msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + r.body)
    parts = msg.get_payload()
    assert [p.get_payload(decode=True) for p in parts] == [body[0:10], body[20:30], body[-5:]]
    assert [p["Content-Range"] for p in parts] == [
        f"bytes 0-9/{n}", f"bytes 20-29/{n}", f"bytes {n - 5}-{n - 1}/{n}"]
    assert all(p["Content-Type"] == "application/x-test" for p in parts)


async def test_delete_at_expiry(store: Store) -> None:
    at = int(time.time()) + 2
    status, t = await put(store, b"short-lived", X_Delete_At=str(at))
    assert status == 201
    r = await store.request("HEAD", OBJ)
    assert r.status == 200 and r.headers["x-delete-at"] == str(at)
    with trio.fail_after(10):
        while time.time() < at + 0.05:
            await trio.sleep(0.1)
    r = await store.request("GET", OBJ)
    assert r.status == 404 and r.headers["x-backend-timestamp"] == t
    assert (await store.request("POST", OBJ, {"X-Timestamp": ts()})).status == 404
    # the replicator still sees it
    r = await store.request("GET", OBJ, {"X-Backend-Replication": "true"})
    assert r.status == 200 and r.body == b"short-lived"
    # X-Delete-After becomes X-Delete-At
    before = int(time.time())
    status, _ = await put(store, b"x", t=ts(1), X_Delete_After="100")
    r = await store.request("HEAD", OBJ)
    assert before + 100 <= int(r.headers["x-delete-at"]) <= int(time.time()) + 100
    assert r.headers.get("x-delete-after") is None
    for bad in ({"X-Delete-At": "1"}, {"X-Delete-At": "soon"}, {"X-Delete-After": "-1"}):
        r = await store.request("PUT", OBJ, {"X-Timestamp": ts(2), "Content-Type": "a/b", **bad}, b"")
        assert r.status == 400, bad
    r = await store.request("DELETE", OBJ, {"X-Timestamp": ts(3), "X-If-Delete-At": "12"})
    assert r.status == 412


async def test_etag_header_checked(store: Store) -> None:
    body = b"checked body"
    status, _ = await put(store, body, ETag=hashlib.md5(body).hexdigest())
    assert status == 201
    status, _ = await put(store, body, t=ts(1), ETag='"0123456789abcdef0123456789abcdef"')
    assert status == 422
    assert (await store.request("GET", OBJ)).status == 200
    assert os.listdir(store.device() / "tmp") == []


async def test_empty_object_and_range(store: Store) -> None:
    await put(store, b"")
    r = await store.request("GET", OBJ, {"Range": "bytes=0-10"})
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "0"
    assert r.headers["etag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


async def test_replicate_suffix_hashes(store: Store) -> None:
    assert json.loads((await store.request("REPLICATE", quote("d1", 3))).body) == {}
    names = [f"obj{i}" for i in range(20)]
    t = ts()
    for name in names:
        await put(store, b"x", path=quote("d1", 3, "a", "c", name), t=t)
    first = json.loads((await store.request("REPLICATE", quote("d1", 3))).body)
    suffixes = {store.hash("a", "c", n)[-3:] for n in names}
    assert set(first) == suffixes
    part_dir = store.device() / "objects" / "3"
    assert json.loads((part_dir / "hashes.json").read_text()) == first
    # a write changes exactly its suffix's hash
    victim = names[0]
    sfx = store.hash("a", "c", victim)[-3:]
    await store.request("DELETE", quote("d1", 3, "a", "c", victim), {"X-Timestamp": ts(1)})
    second = json.loads((await store.request("REPLICATE", quote("d1", 3))).body)
    assert second[sfx] != first[sfx]
    assert {k: v for k, v in second.items() if k != sfx} == {k: v for k, v in first.items() if k != sfx}
    # the same files give the same hash; recalculation on request agrees with the cache
    other = sorted(suffixes - {sfx})[:2]
    third = json.loads((await store.request("REPLICATE", quote("d1", 3, "-".join(other)))).body)
    assert third == second
    assert (await store.request("REPLICATE", quote("d1", 3, "zzz"))).status == 400
    assert (await store.request("REPLICATE", quote("d9", 3))).status == 507


async def test_missing_device_is_507_and_nothing_written(store: Store) -> None:
    (store.root / "d1").rmdir()
    r = await store.request("PUT", OBJ, {"X-Timestamp": ts(), "Content-Type": "a/b"}, b"x")
    assert r.status == 507
    assert sorted(os.listdir(store.root)) == ["cluster.toml"]
    for method in ("GET", "HEAD", "DELETE", "POST"):
        r = await store.request(method, OBJ, {"X-Timestamp": ts()})
        assert r.status == 507, method
    (store.root / "d1").write_text("not a directory")
    assert (await store.request("GET", OBJ)).status == 507
    assert (await store.request("PUT", quote("d1", 3, "a", "c"), {"X-Timestamp": ts()})).status == 507
    assert (await store.request("GET", quote("other", 3, "a", "c", "o"))).status == 507


async def test_etag_footer_from_the_proxy(store: Store) -> None:
    """With X-Backend-Etag-Footer the body ends in the proxy's MD5 and XXH3-64: the object
    server stores that MD5 as the ETag once the XXH3-64 of the bytes it got matches, and
    refuses the PUT (422, nothing stored) when it does not, or when the footer is not one."""
    from node.etag_footer import FOOTER_BYTES, FOOTER_HEADER, BodyChecksums

    def with_footer(data: bytes, corrupt: bool = False) -> bytes:
        sums = BodyChecksums()
        sums.update(data)
        sent = bytearray(data)
        if corrupt:
            sent[len(sent) // 2] ^= 1  # the bytes change after the proxy hashed them
        return bytes(sent) + sums.footer()

    footer = {FOOTER_HEADER.replace("-", "_"): str(FOOTER_BYTES)}
    for size in (0, 1000, 3 * 1024 * 1024 + 5):  # small path, and batches split at the footer
        data = os.urandom(size)
        path = quote("d1", 3, "a", "c", f"f{size}")
        assert (await put(store, with_footer(data), path, **footer))[0] == 201
        r = await store.request("GET", path)
        assert r.status == 200 and r.body == data
        assert r.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'

        bad = quote("d1", 3, "a", "c", f"bad{size}")
        if size:
            assert (await put(store, with_footer(data, corrupt=True), bad, **footer))[0] == 422
            assert (await store.request("GET", bad)).status == 404
        assert (await put(store, with_footer(data), bad, ETag="0" * 32, **footer))[0] == 422
        assert (await store.request("GET", bad)).status == 404
    data = os.urandom(100_000)
    good = with_footer(data)
    md5, check = good[-64:-32], good[-32:]
    other_md5 = b"0" * 32 if md5 != b"0" * 32 else b"1" * 32
    # The MD5 is the proxy's to vouch for (stored as sent); the check is verified.
    path = quote("d1", 3, "a", "c", "vouched")
    assert (await put(store, data + other_md5 + check, path, **footer))[0] == 201
    assert (await store.request("HEAD", path)).headers["etag"] == f'"{other_md5.decode()}"'
    for i, bad_footer in enumerate((md5 + b"0" * 16 + b" " * 16,      # wrong check
                                    md5 + b"g" * 16 + b" " * 16,      # not hex
                                    md5 + check[:8] + b" " * 24,      # a CRC-32-sized check
                                    b" " * 64)):
        path = quote("d1", 3, "a", "c", f"badfooter{i}")
        assert (await put(store, data + bad_footer, path, **footer))[0] == 422, bad_footer
        assert (await store.request("HEAD", path)).status == 404
    assert (await put(store, b"short", quote("d1", 3, "a", "c", "x"), **footer))[0] == 400
    assert (await put(store, b"x" * 100, quote("d1", 3, "a", "c", "x"),
                      X_Backend_Etag_Footer="32"))[0] == 400


def _cached_bytes(path: os.PathLike) -> int:
    """How much of ``path`` sits in the page cache (util-linux ``fincore``)."""
    import subprocess
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


async def test_large_objects_bypass_the_page_cache(store: Store) -> None:
    """Objects of DIRECT_MIN bytes and more are written and read with O_DIRECT: unaligned
    sizes, ranges and the ETag footer all come out byte-exact, and the page cache holds
    at most the last partial block of the file."""
    from node.etag_footer import FOOTER_BYTES, FOOTER_HEADER, BodyChecksums
    from node.storage.direct_io import ALIGN, DIRECT_MIN

    for size, footer in ((DIRECT_MIN + 12345, False), (DIRECT_MIN + 3 * ALIGN, True)):
        data = os.urandom(size)
        name = f"big{size}"
        path = quote("d1", 3, "a", "c", name)
        body, headers = data, {}
        if footer:
            sums = BodyChecksums()
            sums.update(data)
            body = data + sums.footer()
            headers = {FOOTER_HEADER.replace("-", "_"): str(FOOTER_BYTES)}
        status, t = await put(store, body, path, **headers)
        assert status == 201
        h = store.hash("a", "c", name)
        stored = store.device() / "objects" / "3" / h[-3:] / h / f"{t}.data"
        cached = _cached_bytes(stored)
        assert cached <= ALIGN, f"{cached} bytes of a {size}-byte object in the page cache"
        assert stored.read_bytes() == data

        r = await store.request("GET", path)
        assert r.status == 200 and r.body == data
        assert r.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
        for start, stop in [(0, 1), (1, ALIGN + 1), (ALIGN - 1, 3 << 20), (size - 1, size),
                            ((1 << 20) - 7, (2 << 20) + 9), (size - ALIGN - 5, size)]:
            r = await store.request("GET", path, {"Range": f"bytes={start}-{stop - 1}"})
            assert r.status == 206 and r.body == data[start:stop], (start, stop)
        r = await store.request("GET", path, {"Range": "bytes=5-9,-3"})
        assert r.status == 206 and data[5:10] in r.body and data[-3:] in r.body
