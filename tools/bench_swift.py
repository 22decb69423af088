"""``peerstack bench swift``: a Swift v1 workload against any Swift endpoint.

Measures, against whatever ``--auth-url`` points at (peerstack or OpenStack
Swift, so the two can be run side by side):

* 4 KiB object PUT, GET, HEAD and DELETE: ops/s and p50/p99 latency at
  ``--concurrency``;
* one ``--large-size`` object PUT and GET: MB/s (the body is streamed from a
  1 MiB buffer, never held whole);
* listing a container of ``--list-count`` objects: seconds for the whole
  listing (pages of 10,000).

Everything it creates lives in containers named ``bench-<random>`` and is
deleted at the end unless ``--keep``.  ``--json`` prints one JSON object as
the last line.  Uses the HTTP core's pooled client, unsigned.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable

import trio

from node.http_client import BackendError, HTTPClient, Timeouts

SMALL = 4096
#: where a workload reports each finished step (a line of text)
Report = Callable[[str], None]
CHUNK = 1 << 20


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib").rstrip("b") if text[-1:].lower() == "b" else text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth-url", required=True, help="e.g. http://127.0.0.1:8080/auth/v1.0")
    parser.add_argument("--user", required=True, help="project:user")
    parser.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--count", type=int, default=2000, help="4 KiB objects to PUT, GET, HEAD, DELETE")
    parser.add_argument("--large-size", type=parse_size, default=256 << 20, help="e.g. 256M")
    parser.add_argument("--list-count", type=int, default=10000, help="objects in the listed container")
    parser.add_argument("--keep", action="store_true", help="leave the bench containers in place")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Endpoint:
    """The storage URL and token from a v1 login, plus a pooled client."""

    def __init__(self, client: HTTPClient, storage_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(storage_url)
        self.client = client
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.token = token

    def target(self, *names: str, query: str = "") -> str:
        path = self.base + "".join("/" + urllib.parse.quote(n) for n in names)
        return f"{path}?{query}" if query else path

    async def call(self, method: str, *names: str, body: bytes = b"", query: str = "",
                   headers: list[tuple[str, str]] | None = None):
        return await self.client.request(method, self.host, self.port, self.target(*names, query=query),
                                         [("X-Auth-Token", self.token), *(headers or [])], body)


async def login(client: HTTPClient, auth_url: str, user: str, key: str) -> Endpoint:
    parts = urllib.parse.urlsplit(auth_url)
    resp = await client.request("GET", parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/",
                                [("X-Auth-User", user), ("X-Auth-Key", key)])
    if resp.status // 100 != 2:
        raise SystemExit(f"bench swift: login failed with {resp.status}")
    return Endpoint(client, resp.headers["x-storage-url"], resp.headers["x-auth-token"])


async def run_ops(ep: Endpoint, concurrency: int, names: list[str], op) -> tuple[float, list[float], int]:
    """Run ``op(name)`` for every name with ``concurrency`` workers: (seconds, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    queue = iter(names)

    async def worker() -> None:
        nonlocal errors
        for name in queue:
            t0 = time.perf_counter()
            try:
                ok = await op(name)
            except BackendError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start, latencies, errors


async def put_large(ep: Endpoint, container: str, name: str, size: int) -> float:
    block = os.urandom(CHUNK)
    start = time.perf_counter()
    async with ep.client.exchange(ep.host, ep.port, timeouts=Timeouts(connect=5, node=120)) as ex:
        early = await ex.start("PUT", ep.target(container, name), [("X-Auth-Token", ep.token)],
                               content_length=size, expect_continue=True)
        if early is not None:
            raise SystemExit(f"bench swift: large PUT refused with {early.status}")
        sent = 0
        while sent < size:
            piece = block[:min(CHUNK, size - sent)]
            await ex.send(piece)
            sent += len(piece)
        resp = await ex.finish()
        await resp.read()
    if resp.status != 201:
        raise SystemExit(f"bench swift: large PUT answered {resp.status}")
    return time.perf_counter() - start


async def get_large(ep: Endpoint, container: str, name: str) -> tuple[float, int]:
    start = time.perf_counter()
    got = 0
    async with ep.client.stream("GET", ep.host, ep.port, ep.target(container, name),
                                [("X-Auth-Token", ep.token)], timeouts=Timeouts(connect=5, node=120)) as resp:
        async for chunk in resp.iter_body():
            got += len(chunk)
    return time.perf_counter() - start, got


async def list_all(ep: Endpoint, container: str) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    marker = ""
    while True:
        query = urllib.parse.urlencode({"format": "json", "limit": "10000", "marker": marker})
        resp = await ep.call("GET", container, query=query)
        rows = json.loads(resp.body) if resp.status == 200 else []
        total += len(rows)
        if len(rows) < 10000:
            break
        marker = rows[-1]["name"]
    return time.perf_counter() - start, total


def op_stats(count: int, secs: float, latencies: list[float], errors: int) -> dict:
    """ops/s and p50/p99 latency (ms) of one :func:`run_ops` run."""
    return {"ops_per_s": round(count / secs, 1) if secs else 0.0,
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2), "errors": errors}


async def small_objects(ep: Endpoint, container: str, count: int, concurrency: int,
                        report: Report = print, cpu: Callable[[], float] | None = None) -> dict:
    """PUT, GET, HEAD, then DELETE ``count`` 4 KiB objects; stats per verb.

    ``cpu``, if given, reads the CPU seconds the servers have used so far:
    each verb's stats then say how many milliseconds of it one request took.
    """
    payload = os.urandom(SMALL)
    names = [f"obj-{i:07d}" for i in range(count)]

    async def put(name: str) -> bool:
        return (await ep.call("PUT", container, name, body=payload)).status == 201

    async def get(name: str) -> bool:
        resp = await ep.call("GET", container, name)
        return resp.status == 200 and resp.body == payload

    async def head(name: str) -> bool:
        resp = await ep.call("HEAD", container, name)
        return resp.status == 200 and resp.headers.get("content-length") == str(SMALL)

    async def delete(name: str) -> bool:
        return (await ep.call("DELETE", container, name)).status == 204

    result = {}
    for label, op in (("put_4k", put), ("get_4k", get), ("head_4k", head), ("delete_4k", delete)):
        before = cpu() if cpu else 0.0
        result[label] = op_stats(count, *await run_ops(ep, concurrency, names, op))
        if cpu:
            result[label]["cpu_ms"] = round((cpu() - before) * 1000 / count, 2)
        report(f"{label}: {result[label]}")
    return result


async def large_object(ep: Endpoint, container: str, size: int, report: Report = print) -> dict:
    """PUT then GET one ``size``-byte object (streamed both ways); MB/s each."""
    result = {}
    secs = await put_large(ep, container, "large", size)
    result["put_large"] = {"bytes": size, "mb_per_s": round(size / secs / 1e6, 1)}
    report(f"put_large: {result['put_large']}")
    secs, got = await get_large(ep, container, "large")
    if got != size:
        raise SystemExit(f"bench swift: large GET returned {got} of {size} bytes")
    result["get_large"] = {"bytes": got, "mb_per_s": round(got / secs / 1e6, 1)}
    report(f"get_large: {result['get_large']}")
    await ep.call("DELETE", container, "large")
    return result


async def listing(ep: Endpoint, container: str, count: int, concurrency: int, report: Report = print) -> dict:
    """Fill ``container`` with ``count`` empty objects, then time listing all of them."""
    names = [f"item-{i:07d}" for i in range(count)]

    async def put_empty(name: str) -> bool:
        return (await ep.call("PUT", container, name, body=b"")).status == 201

    _, _, errors = await run_ops(ep, concurrency, names, put_empty)
    secs, listed = await list_all(ep, container)
    result = {"objects": listed, "seconds": round(secs, 3), "fill_errors": errors}
    report(f"listing: {result}")
    return result


async def empty_containers(ep: Endpoint, containers: list[str], concurrency: int) -> None:
    """Delete every object left in ``containers``, then the containers."""
    for container in containers:
        while True:
            resp = await ep.call("GET", container, query="format=json&limit=10000")
            rows = json.loads(resp.body) if resp.status == 200 else []
            if not rows:
                break

            async def delete(name: str, container: str = container) -> bool:
                return (await ep.call("DELETE", container, name)).status in (204, 404)

            await run_ops(ep, concurrency, [r["name"] for r in rows], delete)
        await ep.call("DELETE", container)


async def bench(args: argparse.Namespace) -> dict:
    client = HTTPClient(timeouts=Timeouts(connect=5, node=60), max_idle_per_peer=args.concurrency * 2)
    ep = await login(client, args.auth_url, args.user, args.key)
    tag = secrets.token_hex(4)
    small_c, large_c, list_c = f"bench-{tag}-small", f"bench-{tag}-large", f"bench-{tag}-list"
    for c in (small_c, large_c, list_c):
        await ep.call("PUT", c)
    result: dict = {"endpoint": args.auth_url, "concurrency": args.concurrency}
    report = functools.partial(print, flush=True)
    result.update(await small_objects(ep, small_c, args.count, args.concurrency, report))
    result.update(await large_object(ep, large_c, args.large_size, report))
    result["listing"] = await listing(ep, list_c, args.list_count, args.concurrency, report)
    if not args.keep:
        await empty_containers(ep, [small_c, large_c, list_c], args.concurrency)
    await client.aclose()
    return result


def run(args: argparse.Namespace) -> int:
    result = trio.run(bench, args)
    if args.json:
        print(json.dumps(result))
    bad = sum(result[k]["errors"] for k in ("put_4k", "get_4k", "head_4k", "delete_4k"))
    if bad:
        print(f"bench swift: {bad} small operations failed", file=sys.stderr)
        return 1
    return 0
