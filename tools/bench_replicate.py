"""``peerstack bench replicate``: how fast a wiped device is rebuilt by replication.

The scenario an operator lives through after swapping a dead disk:

1. a cluster of 3 nodes x 2 devices, 3 replicas (the demo's layout code,
   :func:`tools.demo.layout_cluster`, and ``peerstack node run`` processes),
   with the ``[replicator]`` pass interval shortened to a second so the
   figure measures copying, not waiting for the next pass;
2. ``--size`` bytes (default 1 GiB) written as ``--object-size`` objects
   (default 4 MiB) through the cluster client -- signed, through the ring,
   the path the proxy takes;
3. the last node stopped, its first device emptied (the directory stays, as
   a fresh disk mounted in its place would), the node started again;
4. the clock runs from that restart until the device again holds a complete
   ``.data`` file for every object the ring makes it a primary of (checked
   on disk, polling).

The figure is the bytes of those objects over those seconds, next to the
machine's limits measured by the same run (loopback TCP, disk write with
fsync, MD5 -- :func:`tools.bench_compare.measure_limits`) and the fraction of
the lowest.  Progress goes to stderr; the table to stdout; ``--json`` adds
one JSON object as the last line.  Every node it started is stopped on the
way out, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from node.cluster_client import ClusterClient
from node.config import NodeConfig
from node.http_client import HTTPClient, Timeouts
from node.signing import RequestSigner
from node.storage.paths import hash_path
from ring.lookup import Ring
from tools.bench_compare import machine, measure_limits, progress, run_and_report
from tools.bench_swift import parse_size
from tools.demo import ClusterLayout, NodeLayout, NodeProcess, free_port, layout_cluster

MiB = 1 << 20
ACCOUNT = "AUTH_bench"
CONTAINER = "rebuild"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="var/bench/replicate", help="where the cluster lives (wiped first)")
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="bytes written in all (default 1GiB)")
    parser.add_argument("--object-size", type=parse_size, default=4 * MiB, help="bytes per object (default 4MiB)")
    parser.add_argument("--concurrency", type=int, default=4, help="objects written at the same time")
    parser.add_argument("--bytes-per-second", type=parse_size, default=None,
                        help="the replicator's per-node push limit (default: the node default)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on the rebuild after this many s")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def object_name(i: int) -> str:
    return f"obj-{i:06d}"


@dataclass
class Expected:
    """One object the wiped device must hold again: where, and how big."""

    hash_dir: Path
    size: int


class Bench:
    """The cluster under test: its layout, node processes, ring and cluster client."""

    def __init__(self, root: Path, replicator: dict) -> None:
        net = random.randrange(100, 250)
        ips = [f"127.{net}.13.{i + 1}" for i in range(3)]
        self.layout: ClusterLayout = layout_cluster(
            root, ips=ips, public_ports=[free_port(ip) for ip in ips],
            internal_ports=[free_port(ip) for ip in ips], devices_per_node=2, replicas=3,
            part_power=10, name="bench",
            extra_config={"replicator": replicator, "membership": {"enabled": False}})
        self.procs = [NodeProcess(node) for node in self.layout.nodes]
        c = self.layout.cluster
        self.ring = Ring(str(self.layout.ring_dir / "object.ring.gz"), c.secret_bytes,
                         c.hash_prefix.encode(), c.hash_suffix.encode())
        self.roots = {(n.ip, n.internal_port): n.root for n in self.layout.nodes}

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def expected_on(self, node: NodeLayout, device: str, sizes: dict[str, int]) -> list[Expected]:
        """The objects of ``sizes`` whose primaries include ``node``'s ``device``."""
        c = self.layout.cluster
        found = []
        for name, size in sizes.items():
            part, primaries = self.ring.get_nodes(ACCOUNT, CONTAINER, name)
            if any((d["ip"], d["port"], d["device"]) == (node.ip, node.internal_port, device) for d in primaries):
                name_hash = hash_path(c.hash_prefix, c.hash_suffix, ACCOUNT, CONTAINER, name)
                found.append(Expected(node.root / device / "objects" / str(part) / name_hash[-3:] / name_hash,
                                      size))
        return found


def present(expected: Expected) -> bool:
    """A complete ``.data`` file is in place (files are installed by rename, so size is enough)."""
    try:
        names = os.listdir(expected.hash_dir)
    except FileNotFoundError:
        return False
    return any(n.endswith(".data") and os.stat(expected.hash_dir / n).st_size == expected.size for n in names)


async def write_objects(layout: ClusterLayout, total: int, object_size: int, concurrency: int) -> dict[str, int]:
    """PUT ``total`` bytes as objects of ``object_size`` through the cluster client; name -> size."""
    c = layout.cluster
    http = HTTPClient(signer=RequestSigner(c.secret_bytes), timeouts=Timeouts(connect=5, node=120))
    client = ClusterClient(NodeConfig(ring_dir=str(layout.ring_dir)), c, http)
    # One random block shared by all objects, each made distinct by its index
    # in the first bytes: no compression or dedup anywhere could shortcut it.
    block = os.urandom(object_size)
    sizes = {object_name(i): min(object_size, total - i * object_size)
             for i in range((total + object_size - 1) // object_size)}
    limit = trio.CapacityLimiter(concurrency)
    done = [0, 0]
    start = last = time.perf_counter()

    async def put(i: int, name: str) -> None:
        nonlocal last
        async with limit:
            size = sizes[name]
            body = i.to_bytes(8, "big") + block[8:size] if size >= 8 else block[:size]
            status, _ = await client.put_object(ACCOUNT, CONTAINER, name,
                                                {"Content-Type": "application/octet-stream"}, body, size)
            if status != 201:
                raise RuntimeError(f"PUT {name} answered {status}")
            done[0] += 1
            done[1] += size
            now = time.perf_counter()
            if now - last >= 2 or done[0] == len(sizes):
                last = now
                progress(f"written {done[0]}/{len(sizes)} objects, {done[1] / MiB:.0f} MiB, "
                         f"{done[1] / (now - start) / 1e6:.1f} MB/s")

    try:
        resp = await client.put_container(ACCOUNT, CONTAINER)
        if resp.status not in (201, 202):
            raise RuntimeError(f"container PUT answered {resp.status}")
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(sizes):
                nursery.start_soon(put, i, name)
    finally:
        await http.aclose()
    return sizes


def wait_rebuilt(expected: list[Expected], proc: NodeProcess, start: float, timeout: float) -> float:
    """Poll the device until every expected object is back; the seconds since ``start``."""
    missing = list(expected)
    total = sum(e.size for e in expected)
    last = 0.0
    while True:
        missing = [e for e in missing if not present(e)]
        now = time.perf_counter()
        if not missing:
            return now - start
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.layout.name} exited with {proc.proc.returncode} during the rebuild")
        if now - start > timeout:
            raise RuntimeError(f"{len(missing)} objects still missing after {timeout:.0f}s")
        if now - last >= 2:
            last = now
            got = total - sum(e.size for e in missing)
            progress(f"rebuilt {len(expected) - len(missing)}/{len(expected)} objects, {got / MiB:.0f} MiB, "
                     f"{got / (now - start) / 1e6:.1f} MB/s")
        time.sleep(0.2)


def wipe(device: Path) -> None:
    """Empty the device but keep its directory: a new disk mounted where the old one was."""
    for entry in device.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def bench(args: argparse.Namespace) -> dict:
    root = Path(args.dir).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    replicator: dict = {"interval": 1.0, "audit_interval": 3600.0, "update_interval": 1.0,
                        "expire_interval": 3600.0}
    if args.bytes_per_second is not None:
        replicator["bytes_per_second"] = args.bytes_per_second
    doc: dict = {"machine": machine(), "settings": {
        "size": args.size, "object_size": args.object_size, "concurrency": args.concurrency,
        "nodes": 3, "devices_per_node": 2, "replicas": 3, "replicator": replicator}}
    progress("measuring the machine's limits")
    doc["limits"] = measure_limits(root, min(args.size, 256 * MiB))
    progress(f"limits: {doc['limits']}")
    progress("starting 3 nodes x 2 devices, 3 replicas")
    with contextlib.redirect_stdout(sys.stderr):  # the ring builder's chatter is progress
        cluster = Bench(root / "cluster", replicator)
    try:
        for proc in cluster.procs:
            proc.start(wait=60)
        progress(f"writing {args.size / MiB:.0f} MiB as {args.object_size / MiB:g} MiB objects")
        t0 = time.perf_counter()
        sizes = trio.run(write_objects, cluster.layout, args.size, args.object_size, args.concurrency)
        doc["write"] = {"objects": len(sizes), "seconds": round(time.perf_counter() - t0, 2)}
        proc = cluster.procs[-1]
        node, device = proc.layout, proc.layout.devices[0]
        expected = cluster.expected_on(node, device, sizes)
        if not expected:
            raise RuntimeError(f"{node.name}/{device} is a primary of none of the objects: write more")
        progress(f"stopping {node.name}, wiping {device} ({len(expected)} objects it is a primary of)")
        proc.stop()
        wipe(node.root / device)
        start = time.perf_counter()
        proc.start(wait=60)
        started = time.perf_counter() - start
        progress(f"{node.name} back after {started:.1f}s; waiting for {device} to be rebuilt")
        seconds = wait_rebuilt(expected, proc, start, args.timeout)
        rebuilt = sum(e.size for e in expected)
        mb_per_s = rebuilt / seconds / 1e6
        doc["rebuild"] = {"node": node.name, "device": device, "objects": len(expected), "bytes": rebuilt,
                          "startup_seconds": round(started, 2), "seconds": round(seconds, 2),
                          "mb_per_s": round(mb_per_s, 1),
                          "fraction_of_lowest_limit": round(mb_per_s / doc["limits"]["lowest_mb_per_s"], 3)}
    finally:
        cluster.stop()
    return doc


def render(doc: dict) -> str:
    limits, r = doc["limits"], doc["rebuild"]
    lowest = limits["lowest_mb_per_s"]
    rows = [("rebuild of the wiped device", r["mb_per_s"]),
            ("loopback TCP", limits["loopback_tcp_mb_per_s"]),
            ("disk write + fsync", limits["disk_write_fsync_mb_per_s"]),
            ("MD5", limits["md5_mb_per_s"])]
    lines = [f"{'':<30}{'MB/s':>10}{'of lowest limit':>18}", "-" * 58]
    lines += [f"{label:<30}{value:>10}{value / lowest:>18.3f}" for label, value in rows]
    lines += ["", f"{r['node']}/{r['device']}: {r['objects']} objects, {r['bytes'] / MiB:.0f} MiB rebuilt in "
              f"{r['seconds']} s from restart (node healthy after {r['startup_seconds']} s); "
              f"{doc['write']['objects']} objects written in {doc['write']['seconds']} s"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.size <= 0 or args.object_size <= 0 or args.concurrency <= 0:
        progress("--size, --object-size and --concurrency must be positive")
        return 2
    return run_and_report(bench, args, render)[0]
