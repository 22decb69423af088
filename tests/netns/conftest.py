"""Network namespaces for membership tests: one per node, joined by a bridge.

Each node gets its own namespace with one veth into a bridge that lives in a
namespace of its own, an address in a private /24 chosen per test, and no
default route -- so mDNS must work on explicitly chosen interfaces, as on a
real LAN without a gateway.  Everything is created by the test and removed
afterwards, processes first, even when the test fails.  Without root or
``ip netns`` the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import dump_toml, load_cluster_config
from tools.cluster_init import init_cluster

REPO = Path(__file__).resolve().parents[2]
STATUS = ("import argparse, sys; import tools.status as s; p = argparse.ArgumentParser(); "
          "s.add_arguments(p); sys.exit(s.run(p.parse_args(sys.argv[1:])))")


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"'ip netns' does not work here: {probe.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class NetNode:
    """One node: its namespace, address, files and process."""

    def __init__(self, lab: NetLab, index: int, ns: str, ip: str, root: Path) -> None:
        self.lab, self.index, self.ns, self.ip, self.root = lab, index, ns, ip, root
        self.node_id = f"node{index}"
        self.proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "node.toml"

    @property
    def rings(self) -> Path:
        return self.root / "rings"

    def configure(self, cluster_file: Path, **membership) -> None:
        for dev in ("d1", "d2"):
            (self.root / dev).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(dump_toml({
            "cluster_file": str(cluster_file), "node_id": self.node_id, "zone": self.index + 1,
            "ring_dir": str(self.rings), "log_file": str(self.root / "node.log"),
            "internal": {"host": self.ip, "port": 6200}, "public": {"host": self.ip, "port": 8080},
            "storage": {"root": str(self.root), "devices": ["d1", "d2"]},
            "membership": {"interfaces": [self.ip], **self.lab.membership, **membership},
        }))

    def start(self) -> None:
        out = open(self.root / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tools.peerstack", "node", "run",
             "--config", str(self.config_path)],
            cwd=REPO, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        out.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def members(self) -> dict | None:
        """``peerstack status --json`` run inside the node's namespace; None if it cannot answer."""
        res = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", STATUS,
             "--config", str(self.config_path), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            return None
        return json.loads(res.stdout)

    def swift(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """A Swift API request to this node's public port as the cluster admin, from its namespace."""
        admin = self.lab.cluster.admin
        script = (
            "import httpx, sys\n"
            f"base = 'http://{self.ip}:8080'\n"
            f"auth = httpx.get(base + '/auth/v1.0', headers={{'X-Auth-User': '{admin.project}:{admin.user}',"
            f" 'X-Auth-Key': '{admin.password}'}}, timeout=30)\n"
            "auth.raise_for_status()\n"
            f"r = httpx.request('{method}', auth.headers['x-storage-url'] + '{path}', content=sys.stdin.buffer.read(),"
            " headers={'X-Auth-Token': auth.headers['x-auth-token']}, timeout=30)\n"
            "sys.stdout.write(f'{r.status_code}\\n'); sys.stdout.flush(); sys.stdout.buffer.write(r.content)\n")
        res = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
                             input=body, capture_output=True, timeout=60)
        if res.returncode != 0:
            return 0, res.stderr
        status, _, content = res.stdout.partition(b"\n")
        return int(status), content

    def log_events(self, event: str) -> list[dict]:
        try:
            lines = (self.root / "node.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [doc for doc in map(json.loads, lines) if doc.get("event") == event]


class NetLab:
    """A bridge namespace plus one namespace per node, all removed by :meth:`close`."""

    def __init__(self, root: Path, membership: dict) -> None:
        self.root = root
        self.membership = membership
        self.tag = secrets.token_hex(2)
        self.subnet = f"10.250.{int(self.tag, 16) % 250 + 1}"
        self.bridge_ns = f"psb-{self.tag}"
        self.namespaces: list[str] = []
        self.nodes: list[NetNode] = []
        self.cluster_file = root / "cluster.toml"
        init_cluster(self.cluster_file, "netns")
        self.cluster = load_cluster_config(self.cluster_file)
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_node(self, cluster_file: Path | None = None, **membership) -> NetNode:
        """A namespace wired to the bridge, with a configured (not started) node."""
        i = len(self.nodes)
        ns = f"psn-{self.tag}-{i}"
        self._add_ns(ns)
        inner, outer = f"ps{self.tag}n{i}", f"ps{self.tag}b{i}"
        _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer,
            "netns", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", outer, "master", "br0")
        _ip("-n", self.bridge_ns, "link", "set", outer, "up")
        ip = f"{self.subnet}.{i + 1}"
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        node = NetNode(self, i, ns, ip, self.root / f"node{i}")
        node.configure(cluster_file or self.cluster_file, **membership)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        for ns in reversed(self.namespaces):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def netlab(tmp_path):
    """Make labs with :func:`make(membership settings)`; all are torn down after the test."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    labs: list[NetLab] = []

    def make(**membership) -> NetLab:
        lab = NetLab(tmp_path / f"lab{len(labs)}", membership)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()

