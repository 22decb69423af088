"""A 4 GiB object through the object server with bounded server memory."""

from __future__ import annotations

import os
import shutil
import time
import zlib

import pytest
import trio

from node.http_client import HTTPClient, Timeouts
from tests.integration.storage_fixture import HOST, quote, spawn_storage, write_cluster

SIZE = 4 << 30
BLOCK = 1 << 20
RSS_LIMIT = 100 << 20


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_four_gib_put_get_bounded_memory(tmp_path) -> None:
    root = tmp_path / "node"
    write_cluster(root)
    (root / "d1").mkdir()
    proc, port = await spawn_storage(root)
    client = HTTPClient()
    path = quote("d1", 1, "a", "c", "big")
    timeouts = Timeouts(connect=5, node=60)
    base = os.urandom(BLOCK)
    try:
        crc = 0
        t0 = time.monotonic()
        with trio.fail_after(300):
            async with client.exchange(HOST, port, timeouts=timeouts) as ex:
                early = await ex.start("PUT", path, [("X-Timestamp", "1700000000.00000"),
                                                     ("Content-Type", "application/octet-stream")],
                                       content_length=SIZE, expect_continue=True)
                assert early is None
                for i in range(SIZE // BLOCK):
                    chunk = i.to_bytes(8, "big") + base[8:]  # every block differs
                    crc = zlib.crc32(chunk, crc)
                    await ex.send(chunk)
                resp = await ex.finish()
                await resp.read()
        put_s = time.monotonic() - t0
        assert resp.status == 201
        etag = resp.headers["etag"]

        got = 0
        crc_back = 0
        t0 = time.monotonic()
        with trio.fail_after(300):
            async with client.stream("GET", HOST, port, path, timeouts=timeouts) as resp:
                assert resp.status == 200
                assert resp.headers["content-length"] == str(SIZE)
                assert resp.headers["etag"] == etag
                async for chunk in resp.iter_body():
                    crc_back = zlib.crc32(chunk, crc_back)
                    got += len(chunk)
        get_s = time.monotonic() - t0
        assert got == SIZE and crc_back == crc
        hwm = peak_rss(proc.pid)
        print(f"4 GiB PUT {SIZE / put_s / 1e6:.0f} MB/s, GET {SIZE / get_s / 1e6:.0f} MB/s, "
              f"server VmHWM {hwm / 2**20:.1f} MiB")
        assert hwm < RSS_LIMIT
    finally:
        proc.kill()
        await trio.to_thread.run_sync(proc.wait)
        await client.aclose()
        shutil.rmtree(root / "d1", ignore_errors=True)
