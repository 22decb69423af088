"""``peerstack bench http``: our HTTP core against hypercorn, side by side.

Both servers run the same minimal app in their own process (one worker,
no access log):

* ``GET /``           -> 200 ``hello``
* ``PUT /<any>``      -> reads and drops the body, 201
* ``GET /big?size=N`` -> N bytes streamed from one preallocated 1 MiB buffer

and get the same load, from separate processes so the load generator's CPU
is not the server's:

* small GETs over 64 concurrent keep-alive connections, by ``wrk`` when it
  is installed (C, a few percent of a core at these rates), otherwise by a
  raw-socket generator in two processes (which understates both servers);
* one connection streaming a ``--size`` MiB PUT and then a GET, with plain
  blocking sockets and a reused 1 MiB buffer; the server's peak RSS during
  these transfers is read from ``VmHWM`` after resetting it through
  ``/proc/<pid>/clear_refs``.

Rounds alternate between the servers (``--rounds`` each, every round on a
fresh server process) and each figure's best round counts -- except peak
RSS, where the worst does -- so a burst of noise from other processes on the
box hits both sides alike.  The server's CPU time per small GET is reported
too: unlike throughput it hardly moves when other processes compete for the
two CPUs.  A second table measures our pooled client
(:class:`node.http_client.HTTPClient`) against httpx on the same server.
GB/s means 10^9 bytes per second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

HOST = "127.0.0.1"
BLOCK = 1 << 20
SMALL_BODY = b"hello"
#: what both servers stream for GET /big, allocated once
PAYLOAD = bytes(BLOCK)

#: the issue's targets for our server
TARGET_RATIO = 4.0
TARGET_GET_GBS = 1.5
TARGET_PUT_GBS = 0.5
TARGET_RSS_MB = 100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``peerstack bench http``."""
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds per small-GET run (default 5)")
    parser.add_argument("--size", type=int, default=256,
                        help="MiB per large PUT and GET (default 256)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per server (small GETs, then the transfers), alternating "
                             "between the servers; the best round counts, the worst peak RSS "
                             "(default 2)")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent keep-alive connections for small GETs (default 64)")
    parser.add_argument("--no-client", action="store_true",
                        help="skip the client table (HTTPClient vs httpx)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON object on the last line")


# -- the servers (child processes) ---------------------------------------------

def _serve_ours() -> None:
    import trio

    from node.http_server import HTTPServer, Request, Response

    async def handler(request: Request) -> Response:
        if request.method == "PUT":
            async for _ in request.iter_body():
                pass
            return Response(201, [], b"")
        if request.path == "/big":
            size = int(request.query.get("size", BLOCK))
            return Response(200, [("Content-Type", "application/octet-stream")],
                            _blocks(size), content_length=size)
        return Response(200, [("Content-Type", "text/plain")], SMALL_BODY)

    async def main() -> None:
        server = HTTPServer(handler, HOST, 0, name="bench")
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            print(f"PORT {port}", flush=True)

    trio.run(main)


def _blocks(size: int) -> Iterator[bytes | memoryview]:
    """``size`` bytes as slices of :data:`PAYLOAD`: no allocation per chunk."""
    view = memoryview(PAYLOAD)
    while size > 0:
        n = min(size, BLOCK)
        yield PAYLOAD if n == BLOCK else view[:n]
        size -= n


async def _asgi_app(scope: dict, receive, send) -> None:
    """The same app for hypercorn, as ASGI."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "PUT":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/big":
        qs = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        size = int(qs.get("size", BLOCK))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size).encode())]})
        for chunk in _blocks(size):
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(SMALL_BODY)).encode())]})
    await send({"type": "http.response.body", "body": SMALL_BODY})


def _serve_hypercorn() -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{HOST}:0"]
    config.accesslog = None
    config.errorlog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, _asgi_app, config)
            print(f"PORT {binds[0].rsplit(':', 1)[1]}", flush=True)

    trio.run(main)


# -- load generators (child processes) --------------------------------------------

def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, int]:
    """Read one response head from ``sock``; returns (status, content length)
    and leaves any body bytes already received in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).lower()
    del buf[:end]
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    return int(head.split(b" ", 2)[1]), int(match.group(1)) if match else 0


def _load_big(port: int, size: int, method: str) -> float:
    """One connection: PUT ``size`` bytes, or GET them; returns the seconds taken."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    block = memoryview(bytearray(BLOCK))
    buf = bytearray()
    start = time.perf_counter()
    if method == "PUT":
        sock.sendall(b"PUT /big HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
        left = size
        while left:
            n = min(left, BLOCK)
            sock.sendall(block[:n])
            left -= n
        status, length = _read_response(sock, buf)
        if status != 201:
            raise RuntimeError(f"PUT answered {status}")
    else:
        sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size)
        status, length = _read_response(sock, buf)
        if status != 200 or length != size:
            raise RuntimeError(f"GET answered {status} with {length} bytes")
    _drain(sock, buf, length, block)
    seconds = time.perf_counter() - start
    sock.close()
    return seconds


def _drain(sock: socket.socket, buf: bytearray, length: int, scratch: memoryview) -> None:
    """Receive and drop ``length`` body bytes (some may already sit in ``buf``)."""
    take = min(length, len(buf))
    del buf[:take]
    length -= take
    while length:
        n = sock.recv_into(scratch, min(length, len(scratch)))
        if not n:
            raise ConnectionError("server closed mid-body")
        length -= n


def _load_small(port: int, connections: int, duration: float) -> dict[str, float]:
    """Keep ``connections`` GETs in flight for ``duration`` seconds; count answers."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytearray] = {}
    for _ in range(connections):
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        bufs[sock] = bytearray()
        sock.send(request)
    done = errors = 0
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        for key, _ in sel.select(0.5):
            sock = key.fileobj
            buf = bufs[sock]
            data = sock.recv(65536)
            if not data:
                errors += 1
                sel.unregister(sock)
                continue
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", bytes(buf[:end]))
                total = end + 4 + (int(match.group(1)) if match else 0)
                if len(buf) < total:
                    break
                del buf[:total]
                done += 1
                sock.send(request)
    return {"requests": done, "errors": errors, "seconds": duration}


def _run_client_bench(port: int, size: int, duration: float, connections: int) -> dict[str, Any]:
    """Our HTTPClient and httpx against the same server, small GETs and big bodies."""
    import trio

    from node.http_client import HTTPClient

    results: dict[str, Any] = {}

    async def count_loop(fn, seconds: float, counter: list[int]) -> None:
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            await fn()
            counter[0] += 1

    async def rate(fn, tasks: int, seconds: float) -> float:
        counter = [0]
        await fn()  # warm the pool / connection
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(count_loop, fn, seconds, counter)
        return counter[0] / (trio.current_time() - start)

    async def ours() -> None:
        client = HTTPClient()

        async def one() -> None:
            resp = await client.request("GET", HOST, port, "/")
            assert resp.status == 200
        results["ours_seq_rps"] = await rate(one, 1, duration / 2)
        results["ours_conc_rps"] = await rate(one, connections, duration / 2)
        start = trio.current_time()
        async with client.exchange(HOST, port) as ex:
            await ex.start("PUT", "/big", content_length=size)
            for chunk in _blocks(size):
                await ex.send(chunk)
            resp = await ex.finish()
            await resp.read()
        results["ours_put_gbs"] = size / (trio.current_time() - start) / 1e9
        start = trio.current_time()
        got = 0
        async with client.stream("GET", HOST, port, f"/big?size={size}") as resp:
            async for chunk in resp.iter_body():
                got += len(chunk)
        assert got == size
        results["ours_get_gbs"] = size / (trio.current_time() - start) / 1e9
        await client.aclose()

    async def httpx_side() -> None:
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:
            url = f"http://{HOST}:{port}/"

            async def one() -> None:
                resp = await client.get(url)
                assert resp.status_code == 200
            results["httpx_seq_rps"] = await rate(one, 1, duration / 2)
            results["httpx_conc_rps"] = await rate(one, connections, duration / 2)

    trio.run(ours)
    try:
        trio.run(httpx_side)
    except ImportError:
        pass
    return results


def _child_main(argv: list[str]) -> int:
    """Entry for the processes this benchmark starts: ``ROLE [ARGS...]``."""
    role = argv[0]
    if role == "serve-ours":
        _serve_ours()
    elif role == "serve-hypercorn":
        _serve_hypercorn()
    elif role == "big":
        print(json.dumps({"seconds": _load_big(int(argv[1]), int(argv[2]), argv[3])}), flush=True)
    elif role == "small":
        print(json.dumps(_load_small(int(argv[1]), int(argv[2]), float(argv[3]))), flush=True)
    elif role == "client":
        print(json.dumps(_run_client_bench(int(argv[1]), int(argv[2]), float(argv[3]),
                                           int(argv[4]))), flush=True)
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


# -- orchestration ----------------------------------------------------------------

class _Server:
    """A server child process: start it, learn its port, read its memory, stop it."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench_http", role], stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL, cwd=_repo_root(), env=_child_env())
        self.port = self._wait_for_port(30.0)

    def _wait_for_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.stop()
            raise RuntimeError(f"{self.role} did not start within {timeout:.0f}s")
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{self.role} failed to start: {line!r}")
        return int(line.split()[1])

    def status(self, field: str) -> float:
        """A ``/proc/<pid>/status`` memory figure (``VmRSS``, ``VmHWM``) in MB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
        raise KeyError(field)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> None:
        """Make VmHWM start again from the current RSS (Linux ``clear_refs`` 5).

        Where that is not allowed the peak covers the server's whole life,
        which can only overstate the peak during the transfers.
        """
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _repo_root() + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run a load-generator child to completion; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, "-m", "tools.bench_http", *args], cwd=_repo_root(),
                         env=_child_env(), capture_output=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator {args[0]} failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def _small_gets(port: int, connections: int, duration: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
                              f"http://{HOST}:{port}/"], capture_output=True, text=True,
                             timeout=duration + 60, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        count = int(re.search(r"(\d+) requests in", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        return {"rps": rps, "requests": count, "generator": "wrk",
                "errors": (int(bad.group(1)) if bad else 0)
                + (sum(int(x) for x in errors.groups()) if errors else 0)}
    # Two processes so the generator gets both cores' worth of slack.
    half = connections // 2
    procs = [subprocess.Popen([sys.executable, "-m", "tools.bench_http", "small", str(port),
                               str(n), str(duration)], stdout=subprocess.PIPE,
                              cwd=_repo_root(), env=_child_env())
             for n in (half, connections - half)]
    try:
        parts = [json.loads(p.communicate(timeout=duration + 60)[0].decode().splitlines()[-1])
                 for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    count = sum(p["requests"] for p in parts)
    return {"rps": count / duration, "requests": count, "generator": "python",
            "errors": sum(p["errors"] for p in parts)}


def _measure_server(role: str, args: argparse.Namespace) -> dict[str, Any]:
    """Small GETs against a fresh server, then the large transfers.

    Besides requests per second, the server's own CPU time per request is
    recorded: unlike throughput it hardly moves when other processes
    compete for the CPUs.
    """
    server = _Server(role)
    try:
        cpu_before = server.cpu_seconds()
        small = _small_gets(server.port, args.connections, args.duration)
        cpu = server.cpu_seconds() - cpu_before
        result = {"rps": small["rps"], "cpu_us_per_req": cpu / max(small["requests"], 1) * 1e6,
                  "generator": small["generator"], "errors": small["errors"],
                  "rss_idle_mb": server.status("VmRSS")}
        size = args.size << 20
        server.reset_peak()
        for method in ("PUT", "GET"):
            cpu_before = server.cpu_seconds()
            seconds = _child(["big", str(server.port), str(size), method], timeout=600)["seconds"]
            key = method.lower()
            result[f"{key}_gbs"] = size / seconds / 1e9
            result[f"{key}_cpu_s"] = server.cpu_seconds() - cpu_before
        result["rss_peak_mb"] = server.status("VmHWM")
        return result
    finally:
        server.stop()


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best throughput and CPU cost over the rounds, but the worst peak RSS."""
    if not runs:
        return {}
    best: dict[str, Any] = {k: max(r[k] for r in runs) for k in ("rps", "put_gbs", "get_gbs")}
    for key in ("cpu_us_per_req", "put_cpu_s", "get_cpu_s"):
        best[key] = min(r[key] for r in runs)
    best["rss_peak_mb"] = max(r["rss_peak_mb"] for r in runs)
    best["rss_idle_mb"] = max(r["rss_idle_mb"] for r in runs)
    best["errors"] = sum(r["errors"] for r in runs)
    best["generator"] = runs[0]["generator"]
    return best


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if digits == 0 else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints the tables (and JSON with ``--json``)."""
    servers = ["serve-ours"] + (["serve-hypercorn"] if _has_module("hypercorn") else [])
    runs: dict[str, list[dict[str, Any]]] = {role: [] for role in servers}
    for _ in range(max(args.rounds, 1)):
        for role in servers:
            runs[role].append(_measure_server(role, args))
    ours = _best(runs["serve-ours"])
    hyper = _best(runs.get("serve-hypercorn", []))
    ours_runs = [r["rps"] for r in runs["serve-ours"]]
    hyper_runs = [r["rps"] for r in runs.get("serve-hypercorn", [])]

    client: dict[str, Any] = {}
    if not args.no_client:
        server = _Server("serve-ours")
        try:
            client = _child(["client", str(server.port), str(args.size << 20),
                             str(args.duration), str(args.connections)], timeout=900)
        finally:
            server.stop()

    ratio = ours["rps"] / hyper["rps"] if hyper.get("rps") else None
    checks = {
        "small_get_ratio": ratio is not None and ratio >= TARGET_RATIO,
        "get_gbs": ours["get_gbs"] >= TARGET_GET_GBS,
        "put_gbs": ours["put_gbs"] >= TARGET_PUT_GBS,
        "rss_mb": ours["rss_peak_mb"] < TARGET_RSS_MB,
    }
    size = args.size
    rows = [
        (f"small GET req/s ({args.connections} conns)", _fmt(ours["rps"], 0),
         _fmt(hyper.get("rps"), 0), _ratio(ours["rps"], hyper.get("rps")), f">= {TARGET_RATIO:g}x"),
        ("server CPU us per small GET", _fmt(ours["cpu_us_per_req"], 0),
         _fmt(hyper.get("cpu_us_per_req"), 0),
         _ratio(hyper.get("cpu_us_per_req"), ours["cpu_us_per_req"]), "(ratio: hypercorn/ours)"),
        (f"{size} MiB PUT GB/s (1 conn)", _fmt(ours["put_gbs"]), _fmt(hyper.get("put_gbs")),
         _ratio(ours["put_gbs"], hyper.get("put_gbs")), f">= {TARGET_PUT_GBS} GB/s"),
        (f"{size} MiB GET GB/s (1 conn)", _fmt(ours["get_gbs"]), _fmt(hyper.get("get_gbs")),
         _ratio(ours["get_gbs"], hyper.get("get_gbs")), f">= {TARGET_GET_GBS} GB/s"),
        (f"server CPU s per {size} MiB PUT", _fmt(ours["put_cpu_s"]), _fmt(hyper.get("put_cpu_s")),
         _ratio(hyper.get("put_cpu_s"), ours["put_cpu_s"]), "(ratio: hypercorn/ours)"),
        (f"server CPU s per {size} MiB GET", _fmt(ours["get_cpu_s"]), _fmt(hyper.get("get_cpu_s")),
         _ratio(hyper.get("get_cpu_s"), ours["get_cpu_s"]), "(ratio: hypercorn/ours)"),
        ("server peak RSS MB (transfers)", _fmt(ours["rss_peak_mb"], 1),
         _fmt(hyper.get("rss_peak_mb"), 1), "", f"< {TARGET_RSS_MB:g} MB"),
        ("server RSS MB before transfers", _fmt(ours["rss_idle_mb"], 1),
         _fmt(hyper.get("rss_idle_mb"), 1), "", ""),
    ]
    print(f"HTTP core: peerstack vs hypercorn (trio worker); one server process each, "
          f"{os.cpu_count()} CPUs, load by {ours['generator']}")
    print(f"best of {len(ours_runs)} alternating rounds per server ({args.duration:g}s of small GETs, "
          f"then the transfers); small GET req/s per round: "
          f"peerstack {', '.join(_fmt(r, 0) for r in ours_runs)}; "
          f"hypercorn {', '.join(_fmt(r, 0) for r in hyper_runs) or '-'}")
    _table(("", "peerstack", "hypercorn", "ratio", "target"), rows)
    if ours.get("errors") or hyper.get("errors"):
        print(f"load errors: peerstack {ours.get('errors')}, hypercorn {hyper.get('errors')}")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in checks.items()))
    if client:
        print()
        print("client: node.http_client.HTTPClient vs httpx.AsyncClient, both on trio, "
              "against the peerstack server (one process each)")
        _table(("", "HTTPClient", "httpx", "ratio"), [
            ("small GET req/s, 1 task", _fmt(client["ours_seq_rps"], 0),
             _fmt(client.get("httpx_seq_rps"), 0),
             _ratio(client["ours_seq_rps"], client.get("httpx_seq_rps"))),
            (f"small GET req/s, {args.connections} tasks", _fmt(client["ours_conc_rps"], 0),
             _fmt(client.get("httpx_conc_rps"), 0),
             _ratio(client["ours_conc_rps"], client.get("httpx_conc_rps"))),
            (f"{size} MiB PUT GB/s", _fmt(client["ours_put_gbs"]), "-", ""),
            (f"{size} MiB GET GB/s", _fmt(client["ours_get_gbs"]), "-", ""),
        ])
    if args.json:
        print(json.dumps({"bench": "http", "size_mib": size, "connections": args.connections,
                          "duration_s": args.duration, "cpus": os.cpu_count(),
                          "peerstack": ours, "hypercorn": hyper,
                          "small_get_runs": {"peerstack": ours_runs, "hypercorn": hyper_runs},
                          "runs": {"peerstack": runs["serve-ours"],
                                   "hypercorn": runs.get("serve-hypercorn", [])},
                          "small_get_ratio": ratio, "targets_met": checks, "client": client}))
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
