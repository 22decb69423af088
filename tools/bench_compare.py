"""``peerstack bench compare``: peerstack and OpenStack Swift side by side, in one run.

Starts two clusters of the same shape on loopback, both up for the whole
run, and runs the same workloads (:mod:`tools.bench_swift`) against each,
phase by phase, the clusters taking turns (:func:`bench_targets`):

* **peerstack**: 4 nodes, one device each, 3 replicas (the demo's layout
  code, :func:`tools.demo.layout_cluster`, and ``peerstack node run``
  processes);
* **OpenStack Swift**: the ``swift`` package from PyPI in its own virtualenv
  (``var/bench/swift-venv``, made on first use), configured as a
  4-storage-node all-in-one: per node an account, a container and an object
  server, one proxy with tempauth and s3api, memcached for tokens, rings
  built with ``swift-ring-builder`` (part power 10, 3 replicas), devices as
  plain directories (``mount_check = false``), one worker per server.

Workloads: 4 KiB PUT/GET/HEAD/DELETE at concurrency 32 (ops/s, p50, p99),
256 MiB PUT and GET (MB/s, and the peak RSS of the process serving the
proxy; ``--large-rounds`` alternating rounds, the best counts), listing a 10,000-object container, and 1000 small objects through
S3 (boto3; Swift's through its s3api).  Neither cluster runs background
consistency daemons during the bench (Swift's replicators need rsync and
are not started; peerstack's ``[replicator]`` is switched off), so both
spend the machine on the same work.

The machine's own limits are measured by the same run -- loopback TCP
throughput, disk write throughput including the fsync, MD5 throughput --
and the large PUT/GET are reported as a fraction of the lowest of them.

Prints progress, then a table with ratios (``x better``: > 1 means
peerstack wins); ``--json`` adds one JSON object as the last line.  Every
process it started is stopped on the way out, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from node.config import dump_toml
from node.http_client import HTTPClient, Timeouts
from tools import bench_swift
from tools.bench_swift import parse_size
from tools.demo import NodeProcess, free_port, layout_cluster

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="var/bench/compare", help="where both clusters live (their data is removed when the run ends)")
    parser.add_argument("--swift-venv", default="var/bench/swift-venv",
                        help="virtualenv holding OpenStack Swift (created if missing)")
    parser.add_argument("--no-swift", action="store_true", help="bench peerstack only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--count", type=int, default=2000, help="4 KiB objects per verb")
    parser.add_argument("--large-size", type=parse_size, default=256 * MiB)
    parser.add_argument("--list-count", type=int, default=10000)
    parser.add_argument("--s3-count", type=int, default=1000)
    parser.add_argument("--large-rounds", type=int, default=3,
                        help="large PUT/GET rounds per side, alternating; the best counts")
    parser.add_argument("--workers", type=int, default=1,
                        help="peerstack public-port worker processes per node")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# -- the machine's limits ---------------------------------------------------------


def loopback_mb_per_s(total: int) -> float:
    """One TCP stream over 127.0.0.1, 1 MiB sends and receives."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def send() -> None:
            block = b"\0" * MiB
            with socket.create_connection(("127.0.0.1", port)) as s:
                for _ in range(total // MiB):
                    s.sendall(block)

        sender = threading.Thread(target=send)
        start = time.perf_counter()
        sender.start()
        conn, _ = server.accept()
        buf = memoryview(bytearray(MiB))
        got = 0
        with conn:
            while n := conn.recv_into(buf):
                got += n
        sender.join()
        return got / (time.perf_counter() - start) / 1e6


def disk_mb_per_s(directory: Path, total: int) -> float:
    """Sequential 1 MiB writes to a new file, fsync included in the time."""
    path = directory / f".disk-probe-{secrets.token_hex(4)}"
    block = os.urandom(MiB)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(total // MiB):
            os.write(fd, block)
        os.fsync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return total / elapsed / 1e6


def md5_mb_per_s(total: int) -> float:
    block = os.urandom(MiB)
    md5 = hashlib.md5(usedforsecurity=False)
    start = time.perf_counter()
    for _ in range(total // MiB):
        md5.update(block)
    return total / (time.perf_counter() - start) / 1e6


def measure_limits(directory: Path, total: int) -> dict:
    limits = {"loopback_tcp_mb_per_s": round(loopback_mb_per_s(4 * total), 1),
              "disk_write_fsync_mb_per_s": round(disk_mb_per_s(directory, total), 1),
              "md5_mb_per_s": round(md5_mb_per_s(total), 1)}
    limits["lowest_mb_per_s"] = min(limits.values())
    return limits


def machine() -> dict:
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "memory_gib": round(mem / (1 << 30), 1), "python": platform.python_version(),
            "kernel": platform.release(), "load_1min_at_start": load}


# -- processes -------------------------------------------------------------------


def _tree(pid: int) -> Iterator[int]:
    """``pid`` and all its descendants that are still there."""
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        yield p
        stack.extend(int(c) for c in children)


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 once they are gone)."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cluster_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, every thread) used so far by the trees of ``pids``."""
    ticks = 0
    for root in pids:
        for p in _tree(root):
            with contextlib.suppress(OSError):
                # the fields after the parenthesised command name; utime and stime are 14 and 15
                fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_cpu() -> float:
    """CPU seconds all cores have spent busy (neither idle nor waiting for I/O) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class ProcessGroup:
    """Child processes each in their own session, stopped (TERM, then KILL) together."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def wait_for(check: Callable[[], bool], what: str, timeout: float, group: ProcessGroup | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group is not None:
            group.check_alive()
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


# -- the two clusters ------------------------------------------------------------


@dataclass
class Target:
    """A running cluster the workloads can drive."""

    name: str
    auth_url: str
    user: str
    key: str
    s3_endpoint: str
    s3_keys: tuple[str, str]
    #: the pid whose process tree serves the public API (its RSS is reported)
    proxy_pid: int
    processes: int
    #: roots of every process tree of the cluster (their CPU time is reported)
    pids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _set_node_options(config_path: Path, workers: int) -> None:
    """Bench settings on top of the demo layout: no replicators, ``workers`` on the public port."""
    doc = tomllib.loads(config_path.read_text())
    doc["public"]["workers"] = workers
    doc["replicator"] = {"enabled": False}
    doc["log_level"] = "info"
    config_path.write_text(dump_toml(doc))


@contextlib.contextmanager
def peerstack_cluster(root: Path, workers: int) -> Iterator[Target]:
    from proxy.s3.credentials import key_pair

    ips = [f"127.0.11.{i + 1}" for i in range(4)]
    with contextlib.redirect_stdout(sys.stderr):  # the ring builder's chatter is progress
        layout = layout_cluster(root, ips=ips, public_ports=[free_port(ip) for ip in ips],
                                internal_ports=[free_port(ip) for ip in ips], devices_per_node=1,
                                replicas=3, part_power=10, name="bench")
    for node in layout.nodes:
        _set_node_options(node.config_path, workers)
    procs = [NodeProcess(node) for node in layout.nodes]
    try:
        for proc in procs:
            proc.start(wait=60)
        admin = layout.cluster.admin
        first = layout.nodes[0]
        assert procs[0].proc is not None
        yield Target("peerstack", f"{first.public_url}/auth/v1.0", f"{admin.project}:{admin.user}",
                     admin.password, first.public_url,
                     key_pair(layout.cluster, admin.project, admin.user), procs[0].proc.pid,
                     processes=len(procs) * workers,
                     pids=[p.proc.pid for p in procs if p.proc is not None])
    finally:
        for proc in procs:
            proc.stop()


def ensure_swift(venv: Path) -> Path:
    """The venv's bin directory, installing OpenStack Swift into it if needed."""
    bin_dir = venv / "bin"
    if (bin_dir / "swift-proxy-server").exists():
        return bin_dir
    progress(f"installing OpenStack Swift into {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "swift"], check=True)
    return bin_dir


_SERVER_CONF = """\
[DEFAULT]
devices = {devices}
mount_check = false
bind_ip = {ip}
bind_port = {port}
workers = 1
user = {user}
swift_dir = {swift_dir}
log_level = INFO

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
"""

_PROXY_CONF = """\
[DEFAULT]
bind_ip = {ip}
bind_port = {port}
workers = 1
user = {user}
swift_dir = {swift_dir}
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_bench_bench = {key} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache_port}

[filter:s3api]
use = egg:swift#s3api

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def swift_cluster(root: Path, venv: Path) -> Iterator[Target]:
    bin_dir = ensure_swift(venv)
    memcached = shutil.which("memcached")
    if memcached is None:
        raise RuntimeError("memcached is not installed (apt-get install memcached): "
                           "Swift's tempauth keeps its tokens there")
    swift_dir = root / "etc"
    swift_dir.mkdir(parents=True)
    (swift_dir / "swift.conf").write_text(
        "[swift-hash]\n"
        f"swift_hash_path_prefix = {secrets.token_hex(8)}\n"
        f"swift_hash_path_suffix = {secrets.token_hex(8)}\n\n"
        "[storage-policy:0]\nname = gold\ndefault = yes\n")
    ips = [f"127.0.12.{i + 1}" for i in range(4)]
    ports = {(kind, ip): free_port(ip) for ip in ips for kind in ("account", "container", "object")}
    user = os.environ.get("USER") or "root"
    for kind in ("account", "container", "object"):
        builder = str(swift_dir / f"{kind}.builder")
        steps = [["create", "10", "3", "1"]]
        steps += [["add", f"r1z{i + 1}-{ip}:{ports[(kind, ip)]}/d1", "100"] for i, ip in enumerate(ips)]
        steps.append(["rebalance"])
        for step in steps:
            done = subprocess.run([str(bin_dir / "swift-ring-builder"), builder, *step],
                                  capture_output=True, text=True)
            if done.returncode not in (0, 1):  # 1: a warning (e.g. balance)
                raise RuntimeError(f"swift-ring-builder {' '.join(step)}: {done.stdout}{done.stderr}")
    group = ProcessGroup()
    key = secrets.token_hex(8)
    try:
        memcache_port = free_port("127.0.0.1")
        group.spawn([memcached, "-l", "127.0.0.1", "-p", str(memcache_port), "-U", "0", "-m", "64",
                     "-u", user], root / "memcached.log")
        for i, ip in enumerate(ips):
            node_dir = root / f"node{i + 1}"
            (node_dir / "d1").mkdir(parents=True)
            for kind in ("account", "container", "object"):
                conf = root / f"{kind}-server-{i + 1}.conf"
                conf.write_text(_SERVER_CONF.format(devices=node_dir, ip=ip, port=ports[(kind, ip)],
                                                    user=user, swift_dir=swift_dir, kind=kind))
                group.spawn([str(bin_dir / f"swift-{kind}-server"), str(conf)], root / f"{kind}-{i + 1}.log")
        proxy_ip, proxy_port = ips[0], free_port(ips[0])
        conf = root / "proxy-server.conf"
        conf.write_text(_PROXY_CONF.format(ip=proxy_ip, port=proxy_port, user=user, swift_dir=swift_dir,
                                           key=key, memcache_port=memcache_port))
        proxy = group.spawn([str(bin_dir / "swift-proxy-server"), str(conf)], root / "proxy.log")
        for (kind, ip), port in ports.items():
            wait_for(lambda ip=ip, port=port: _port_open(ip, port), f"swift {kind} server {ip}:{port}",
                     60, group)
        url = f"http://{proxy_ip}:{proxy_port}"
        wait_for(lambda: http_ok(f"{url}/healthcheck"), "swift proxy", 60, group)
        wait_for(lambda: http_ok(f"{url}/auth/v1.0", {"X-Auth-User": "bench:bench", "X-Auth-Key": key}),
                 "swift tempauth (memcached)", 30, group)
        yield Target("swift", f"{url}/auth/v1.0", "bench:bench", key, url, ("bench:bench", key),
                     proxy.pid, processes=len(group.procs) + 13,  # + each server's forked worker
                     pids=[p.pid for p in group.procs])
    finally:
        group.stop()


# -- workloads ---------------------------------------------------------------------


async def _sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], tree_rss(pid))
        await trio.sleep(0.1)


async def _in_container(target: Target, args: argparse.Namespace, work: Callable,
                        cpu_key: str) -> dict:
    """Log in, make a fresh container, ``await work(ep, container, report)``, empty it.

    The result also says, as ``cpu_key``, how many CPU seconds the whole
    cluster spent on ``work``: throughput on a shared two-core machine is
    partly luck, CPU per operation much less so.  ``<cpu_key>_machine`` is
    what the whole machine spent meanwhile (the cluster, the bench client,
    the kernel's work for them, and whatever else ran): the difference is
    the share the cluster did not decide.
    """
    def report(line: str) -> None:
        progress(f"{target.name}: {line}")

    client = HTTPClient(timeouts=Timeouts(connect=5, node=120), max_idle_per_peer=args.concurrency * 2)
    try:
        ep = await bench_swift.login(client, target.auth_url, target.user, target.key)
        container = f"bench-{secrets.token_hex(4)}"
        resp = await ep.call("PUT", container)
        if resp.status // 100 != 2:
            raise RuntimeError(f"{target.name}: container PUT answered {resp.status}")
        cpu_before, machine_before = cluster_cpu(target.pids), machine_busy_cpu()
        result = await work(ep, container, report)
        result[cpu_key] = round(cluster_cpu(target.pids) - cpu_before, 2)
        result[f"{cpu_key}_machine"] = round(machine_busy_cpu() - machine_before, 2)
        report(f"{cpu_key}: {result[cpu_key]} (the whole machine: {result[f'{cpu_key}_machine']})")
        await bench_swift.empty_containers(ep, [container], args.concurrency)
    finally:
        await client.aclose()
    return result


def small_phase(target: Target, args: argparse.Namespace) -> dict:
    async def work(ep, container, report) -> dict:
        return await bench_swift.small_objects(ep, container, args.count, args.concurrency, report,
                                               cpu=lambda: cluster_cpu(target.pids))
    return trio.run(_in_container, target, args, work, "cpu_s_small")


def large_phase(target: Target, args: argparse.Namespace) -> dict:
    """One 256 MiB PUT and GET, with the peak RSS of the proxy's processes meanwhile."""
    async def work(ep, container, report) -> dict:
        peak = [0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample_rss, target.proxy_pid, peak)
            result = await bench_swift.large_object(ep, container, args.large_size, report)
            nursery.cancel_scope.cancel()
        result["proxy_peak_rss_mb"] = round(peak[0] / 1e6, 1)
        report(f"peak RSS of the proxy's processes during the large transfers: "
               f"{result['proxy_peak_rss_mb']} MB")
        return result
    return trio.run(_in_container, target, args, work, "cpu_s_large")


def listing_phase(target: Target, args: argparse.Namespace) -> dict:
    async def work(ep, container, report) -> dict:
        return {"listing": await bench_swift.listing(ep, container, args.list_count,
                                                     args.concurrency, report)}
    return trio.run(_in_container, target, args, work, "cpu_s_listing")


def best_large(rounds: list[dict]) -> dict:
    """The best PUT and GET over the rounds, the worst peak RSS, the mean CPU per round."""
    best: dict = {"large_rounds": rounds}
    for key in ("put_large", "get_large"):
        best[key] = max((r[key] for r in rounds), key=lambda m: m["mb_per_s"])
    best["proxy_peak_rss_mb"] = max(r["proxy_peak_rss_mb"] for r in rounds)
    best["cpu_s_large"] = round(sum(r["cpu_s_large"] for r in rounds) / len(rounds), 2)
    return best


def s3_workload(target: Target, count: int, concurrency: int) -> dict:
    """PUT then GET ``count`` 4 KiB objects with boto3 from ``concurrency`` threads."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=target.s3_endpoint, aws_access_key_id=target.s3_keys[0],
                      aws_secret_access_key=target.s3_keys[1], region_name="us-east-1",
                      config=Config(max_pool_connections=concurrency, retries={"max_attempts": 1},
                                    s3={"addressing_style": "path"}))
    bucket = f"bench-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    payload = os.urandom(bench_swift.SMALL)
    keys = [f"obj-{i:06d}" for i in range(count)]

    def timed(op: Callable[[str], bool]) -> dict:
        def one(key: str) -> tuple[float, bool]:
            t0 = time.perf_counter()
            try:
                ok = op(key)
            except Exception:  # an S3 error of any kind is counted, not fatal
                ok = False
            return time.perf_counter() - t0, ok

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            done = list(pool.map(one, keys))
        secs = time.perf_counter() - start
        return bench_swift.op_stats(count, secs, [d for d, _ in done], sum(not ok for _, ok in done))

    def put(key: str) -> bool:
        return s3.put_object(Bucket=bucket, Key=key, Body=payload)["ResponseMetadata"]["HTTPStatusCode"] == 200

    def get(key: str) -> bool:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read() == payload

    def delete(key: str) -> bool:
        return s3.delete_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPStatusCode"] == 204

    result = {"s3_put_4k": timed(put)}
    progress(f"{target.name}: s3_put_4k: {result['s3_put_4k']}")
    result["s3_get_4k"] = timed(get)
    progress(f"{target.name}: s3_get_4k: {result['s3_get_4k']}")
    timed(delete)
    s3.delete_bucket(Bucket=bucket)
    return result


def s3_phase(target: Target, args: argparse.Namespace) -> dict:
    try:
        return s3_workload(target, args.s3_count, args.concurrency)
    except Exception as exc:  # S3 is optional on either side: say why it was skipped
        note = f"S3 workload skipped: {type(exc).__name__}: {exc}"
        progress(f"{target.name}: {note}")
        target.notes.append(note)
        return {}


def bench_targets(targets: list[Target], args: argparse.Namespace) -> dict[str, dict]:
    """Every workload against every target, phase by phase, the targets taking turns.

    Both clusters are up for the whole run, so each phase meets the same
    machine on both sides.  The large transfers, which swing most with the
    disk's state, run ``--large-rounds`` times per side, the order flipping
    every round (A B, B A, ...); each side's best round counts.
    """
    results: dict[str, dict] = {t.name: {} for t in targets}
    for t in targets:
        progress(f"{t.name}: small objects ({t.processes} processes)")
        results[t.name].update(small_phase(t, args))
    rounds: dict[str, list[dict]] = {t.name: [] for t in targets}
    for i in range(args.large_rounds):
        for t in targets if i % 2 == 0 else targets[::-1]:
            rounds[t.name].append(large_phase(t, args))
    for t in targets:
        results[t.name].update(best_large(rounds[t.name]))
        results[t.name].update(listing_phase(t, args))
    for t in targets:
        results[t.name].update(s3_phase(t, args))
        results[t.name]["processes"] = t.processes
        results[t.name]["notes"] = t.notes
    return results


# -- the report --------------------------------------------------------------------

#: (label, key path, higher is better)
ROWS = [
    ("4 KiB PUT ops/s", ("put_4k", "ops_per_s"), True),
    ("4 KiB PUT p50 ms", ("put_4k", "p50_ms"), False),
    ("4 KiB PUT p99 ms", ("put_4k", "p99_ms"), False),
    ("4 KiB GET ops/s", ("get_4k", "ops_per_s"), True),
    ("4 KiB GET p50 ms", ("get_4k", "p50_ms"), False),
    ("4 KiB GET p99 ms", ("get_4k", "p99_ms"), False),
    ("4 KiB HEAD ops/s", ("head_4k", "ops_per_s"), True),
    ("4 KiB HEAD p99 ms", ("head_4k", "p99_ms"), False),
    ("4 KiB DELETE ops/s", ("delete_4k", "ops_per_s"), True),
    ("4 KiB DELETE p99 ms", ("delete_4k", "p99_ms"), False),
    ("large PUT MB/s", ("put_large", "mb_per_s"), True),
    ("large GET MB/s", ("get_large", "mb_per_s"), True),
    ("proxy peak RSS MB", ("proxy_peak_rss_mb",), False),
    ("listing s", ("listing", "seconds"), False),
    ("S3 4 KiB PUT ops/s", ("s3_put_4k", "ops_per_s"), True),
    ("S3 4 KiB GET ops/s", ("s3_get_4k", "ops_per_s"), True),
    ("CPU s, 4 KiB verbs", ("cpu_s_small",), False),
    ("CPU ms per 4 KiB PUT", ("put_4k", "cpu_ms"), False),
    ("CPU ms per 4 KiB GET", ("get_4k", "cpu_ms"), False),
    ("CPU s, large PUT+GET", ("cpu_s_large",), False),
]


def _get(doc: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc if isinstance(doc, (int, float)) else None


def ratios(ours: dict, theirs: dict) -> dict:
    """How many times better peerstack is, per metric (> 1: peerstack wins)."""
    out = {}
    for label, path, higher in ROWS:
        a, b = _get(ours, path), _get(theirs, path)
        if a and b:
            out[label] = round(a / b if higher else b / a, 2)
    return out


def targets_met(ours: dict, theirs: dict, limits: dict) -> dict:
    """The goals of the performance issue, each true or false."""
    def ratio(path: tuple[str, ...], higher: bool = True) -> float:
        a, b = _get(ours, path), _get(theirs, path)
        if not a or not b:
            return 0.0
        return a / b if higher else b / a

    lowest = limits["lowest_mb_per_s"]
    return {
        "put_4k_ops_2x": ratio(("put_4k", "ops_per_s")) >= 2,
        "get_4k_ops_2x": ratio(("get_4k", "ops_per_s")) >= 2,
        "put_4k_p99_not_worse": ratio(("put_4k", "p99_ms"), False) >= 1,
        "get_4k_p99_not_worse": ratio(("get_4k", "p99_ms"), False) >= 1,
        "get_large_1.5x": ratio(("get_large", "mb_per_s")) >= 1.5,
        "get_large_half_of_lowest_limit": (_get(ours, ("get_large", "mb_per_s")) or 0) >= lowest / 2,
        "put_large_1.5x": ratio(("put_large", "mb_per_s")) >= 1.5,
        "listing_2x": ratio(("listing", "seconds"), False) >= 2,
        "proxy_rss_under_150mb": (_get(ours, ("proxy_peak_rss_mb",)) or 1e9) < 150,
    }


def render(doc: dict) -> str:
    ours, theirs = doc["peerstack"], doc.get("swift") or {}
    lines = [f"{'metric':<22}{'peerstack':>12}{'swift':>12}{'x better':>10}",
             "-" * 56]
    for label, path, _ in ROWS:
        a, b = _get(ours, path), _get(theirs, path)
        if a is None and b is None:
            continue
        ratio = doc["ratios"].get(label)
        lines.append(f"{label:<22}{'' if a is None else a:>12}{'' if b is None else b:>12}"
                     f"{'' if ratio is None else ratio:>10}")
    limits = doc["limits"]
    lines += ["", "machine limits (MB/s): " + ", ".join(
        f"{k.removesuffix('_mb_per_s')} {v}" for k, v in limits.items()),
        "peerstack large PUT / GET as a fraction of the lowest limit: "
        f"{doc['fraction_of_lowest_limit']['put']} / {doc['fraction_of_lowest_limit']['get']}"]
    if doc.get("targets"):
        lines.append("targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in doc["targets"].items()))
    for side in ("peerstack", "swift"):
        for note in (doc.get(side) or {}).get("notes", []):
            lines.append(f"{side}: {note}")
    return "\n".join(lines)


def _apply_quick(args: argparse.Namespace) -> None:
    args.count = min(args.count, 64)
    args.large_size = min(args.large_size, 4 * MiB)
    args.list_count = min(args.list_count, 200)
    args.s3_count = min(args.s3_count, 20)
    args.concurrency = min(args.concurrency, 8)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def remove_stored_data(root: Path) -> None:
    """Delete what both clusters stored once they have stopped (logs and configs stay).

    Here and not only at the start of the next run: on ext4 without a journal
    (this machine's), a new inode skips, one by one, every free inode of its
    group freed in the last minute (five while the inode table is dirty), so a
    run's ~250,000 files deleted just before the next run's 4 KiB PUTs cost
    that run's first cluster ~10% of the machine's CPU (``perf``:
    ``recently_deleted`` under ``__ext4_new_inode``).
    """
    devices = sorted(d for d in root.glob("*/node*/d*") if d.is_dir())
    progress(f"removing the data the clusters stored ({len(devices)} devices)")
    for device in devices:
        shutil.rmtree(device)


def compare(args: argparse.Namespace) -> dict:
    root = Path(args.dir).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    doc: dict = {"machine": machine(), "settings": {
        "concurrency": args.concurrency, "count": args.count, "large_size": args.large_size,
        "list_count": args.list_count, "s3_count": args.s3_count, "large_rounds": args.large_rounds,
        "peerstack_workers": args.workers}}
    progress("measuring the machine's limits")
    doc["limits"] = measure_limits(root, min(args.large_size, 256 * MiB) if not args.quick else 16 * MiB)
    progress(f"limits: {doc['limits']}")
    with contextlib.ExitStack() as stack:
        progress("starting peerstack (4 nodes, 3 replicas)")
        targets = [stack.enter_context(peerstack_cluster(root / "peerstack", args.workers))]
        if not args.no_swift:
            progress("starting OpenStack Swift (4 storage nodes, 3 replicas)")
            targets.append(stack.enter_context(swift_cluster(root / "swift",
                                                             Path(args.swift_venv).resolve())))
        results = bench_targets(targets, args)
    remove_stored_data(root)
    doc["peerstack"], doc["swift"] = results["peerstack"], results.get("swift")
    ours, theirs = doc["peerstack"], doc["swift"] or {}
    doc["ratios"] = ratios(ours, theirs)
    lowest = doc["limits"]["lowest_mb_per_s"]
    doc["fraction_of_lowest_limit"] = {
        kind: round((_get(ours, (f"{kind}_large", "mb_per_s")) or 0) / lowest, 2) for kind in ("put", "get")}
    doc["targets"] = targets_met(ours, theirs, doc["limits"]) if theirs else {}
    return doc


def run_and_report(bench: Callable[[argparse.Namespace], dict], args: argparse.Namespace,
                   render_doc: Callable[[dict], str]) -> tuple[int, dict | None]:
    """Run a bench that stops what it started on exit; print its table and, with
    ``--json``, one JSON object as the last line.  SIGTERM counts as Ctrl-C.

    Returns the exit code (0, 1 failed, 130 interrupted) and the document.
    """
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        doc = bench(args)
    except KeyboardInterrupt:
        progress("interrupted; everything started was stopped")
        return 130, None
    except RuntimeError as exc:
        progress(f"failed: {exc}")
        return 1, None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render_doc(doc))
    if args.json:
        print(json.dumps(doc))
    return 0, doc


def run(args: argparse.Namespace) -> int:
    if args.quick:
        _apply_quick(args)
    code, doc = run_and_report(compare, args, render)
    if doc is None:
        return code
    errors = sum((_get(doc[side] or {}, (k, "errors")) or 0)
                 for side in ("peerstack",) for k in ("put_4k", "get_4k", "head_4k", "delete_4k"))
    return 1 if errors else 0
