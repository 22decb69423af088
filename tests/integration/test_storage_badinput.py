"""Bad input gets a 4xx and changes nothing on disk."""

from __future__ import annotations

import os
import time

import pytest
import trio

from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import HOST, Store, quote, store  # noqa: F401


def ts() -> str:
    return Timestamp(time.time()).internal


def stored_files(store: Store) -> list[str]:
    """Every file under the device except the (empty) tmp dir and hash caches."""
    out = []
    for dirpath, _dirs, files in os.walk(store.device()):
        out.extend(os.path.join(dirpath, f) for f in files
                   if f not in (".lock", "hashes.invalid"))
    return out


async def raw(store: Store, data: bytes, close: bool = False) -> bytes:
    """Send raw bytes; return what the server answers (until it closes or 2 s pass)."""
    stream = await trio.open_tcp_stream(HOST, store.port)
    async with stream:
        await stream.send_all(data)
        if close:
            await stream.send_eof()
        out = b""
        with trio.move_on_after(2):
            while chunk := await stream.receive_some(65536):
                out += chunk
                if b"\r\n\r\n" in out and not close:
                    break
        return out


@pytest.mark.parametrize("path", [
    "/d1/0/a/c/..", "/d1/0/a/../o", "/d1/0/../c/o", "/d1/0/a/c/x/../y", "/d1/0/a/c/.",
    "/d1/0/a/c/o%00x", "/d1/0/a%00/c/o", "/d1/0/a/c/%FF%FE", "/d1/0/a/c%C3/o",
    "/d1/0/a//o", "/d1/x/a/c/o", "/d1/-1/a/c/o", "/../0/a/c/o", "/d%201/0/a/c/o", "/d1/0",
    "/d1/0/a/" + "c" * 257, "/d1/0/a/c/" + "o" * 1025, "/d1/0/" + "a" * 257,
    quote("d1", 0, "a", "c", "é" * 513),
])
async def test_bad_names_are_400(store: Store, path: str) -> None:
    for method in ("PUT", "GET", "DELETE"):
        r = await store.request(method, path, {"X-Timestamp": ts(), "Content-Type": "a/b"}, b"data")
        assert r.status == 400, (method, path, r.status)
    assert stored_files(store) == []


async def test_longest_names_are_fine(store: Store) -> None:
    path = quote("d1", 0, "a" * 256, "c" * 256, "é" * 512)
    r = await store.request("PUT", path, {"X-Timestamp": ts(), "Content-Type": "a/b"}, b"x")
    assert r.status == 201
    assert (await store.request("GET", path)).body == b"x"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e20", "123_zz", "1_", "", "10000000000"])
async def test_bad_timestamps_are_400(store: Store, value: str) -> None:
    for method, path in [("PUT", quote("d1", 0, "a", "c", "o")), ("DELETE", quote("d1", 0, "a", "c", "o")),
                         ("POST", quote("d1", 0, "a", "c", "o")), ("PUT", quote("d1", 0, "a", "c")),
                         ("PUT", quote("d1", 0, "a"))]:
        r = await store.request(method, path, {"X-Timestamp": value, "Content-Type": "a/b"}, b"x")
        assert r.status == 400, (method, path, value)
    r = await store.request("PUT", quote("d1", 0, "a", "c", "o"), {"Content-Type": "a/b"}, b"x")
    assert r.status == 400
    assert stored_files(store) == []


async def test_bad_metadata_is_400(store: Store) -> None:
    path = quote("d1", 0, "a", "c", "o")
    cases = [
        {f"X-Object-Meta-K{i}": "v" for i in range(91)},
        {"X-Object-Meta-" + "k" * 129: "v"},
        {"X-Object-Meta-K": "v" * 257},
        {f"X-Object-Meta-K{i:02d}": "v" * 250 for i in range(17)},  # > 4096 bytes in all
        {"X-Object-Meta-K": "\xff\xfe"},  # the raw bytes are not UTF-8
    ]
    for meta in cases:
        r = await store.request("PUT", path, {"X-Timestamp": ts(), "Content-Type": "a/b", **meta}, b"x")
        assert r.status == 400, list(meta)[:2]
    too_many = {k.replace("Object", "Container"): v for k, v in cases[0].items()}
    r = await store.request("PUT", quote("d1", 0, "a", "c"), {"X-Timestamp": ts(), **too_many})
    assert r.status == 400
    assert stored_files(store) == []


async def test_etag_mismatch_writes_nothing(store: Store) -> None:
    r = await store.request("PUT", quote("d1", 0, "a", "c", "o"),
                            {"X-Timestamp": ts(), "Content-Type": "a/b", "ETag": "f" * 32}, b"x" * 5000)
    assert r.status == 422
    assert stored_files(store) == []
    assert (await store.request("GET", quote("d1", 0, "a", "c", "o"))).status == 404


async def test_lying_content_length_stores_nothing(store: Store) -> None:
    path = quote("d1", 0, "a", "c", "short")
    head = (f"PUT {path} HTTP/1.1\r\nHost: x\r\nX-Timestamp: {ts()}\r\nContent-Type: a/b\r\n"
            f"Content-Length: 3000000\r\n\r\n").encode()
    await raw(store, head + b"z" * 2_500_000, close=True)
    with trio.fail_after(10):  # the abort runs in a worker thread after the disconnect
        while stored_files(store):
            await trio.sleep(0.05)
    assert (await store.request("GET", path)).status == 404
    assert os.listdir(store.device() / "tmp") == []


async def test_malformed_lengths(store: Store) -> None:
    path = quote("d1", 0, "a", "c", "o")
    base = f"PUT {path} HTTP/1.1\r\nHost: x\r\nX-Timestamp: {ts()}\r\nContent-Type: a/b\r\n"
    for bad in ("Content-Length: -5\r\n", "Content-Length: abc\r\n", "Content-Length: 1\r\nContent-Length: 2\r\n"):
        answer = await raw(store, (base + bad + "\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 400"), (bad, answer[:40])
    answer = await raw(store, (base + "\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 411"), answer[:40]
    answer = await raw(store, (base + f"Content-Length: {6 << 30}\r\nExpect: 100-continue\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:40]
    r = await store.request("PUT", path, {"X-Timestamp": ts()}, b"no content type")
    assert r.status == 400
    assert stored_files(store) == []


async def test_unconfigured_or_bad_device_names(store: Store) -> None:
    (store.root / "d2").mkdir()  # exists on disk but is not one of ours
    r = await store.request("PUT", quote("d2", 0, "a", "c", "o"), {"X-Timestamp": ts(), "Content-Type": "a/b"}, b"x")
    assert r.status == 507
    assert os.listdir(store.root / "d2") == []
