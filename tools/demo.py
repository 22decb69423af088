"""``peerstack demo``: a whole cluster on one machine, for trying things out.

Three nodes on loopback addresses (127.0.0.1-3), each with two devices under
``./var/demo``, a 3-replica ring built with ``peerstack-ring``, every node a
``peerstack node run`` process in the background.  Re-running it is safe: what
exists is reused and nodes already serving are left alone.  ``--stop`` stops
the nodes; the data stays.

The same layout code builds the clusters of the integration tests
(``tests/cluster.py``), so the demo is what the tests run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from node.config import ClusterConfig, dump_toml, load_cluster_config
from proxy.s3.credentials import key_pair
from tools import ring_builder
from tools.cluster_init import init_cluster

RING_TYPES = ("account", "container", "object")


@dataclass
class NodeLayout:
    """Where one node of a local cluster listens and keeps its files."""

    name: str
    ip: str
    public_port: int
    internal_port: int
    root: Path
    devices: list[str]
    zone: int

    @property
    def config_path(self) -> Path:
        return self.root / "node.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "node.log"

    @property
    def public_url(self) -> str:
        return f"http://{self.ip}:{self.public_port}"


@dataclass
class ClusterLayout:
    root: Path
    cluster_file: Path
    cluster: ClusterConfig
    nodes: list[NodeLayout] = field(default_factory=list)

    @property
    def ring_dir(self) -> Path:
        return self.root / "rings"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _write_node_config(node: NodeLayout, cluster_file: Path, ring_dir: Path,
                       extra: dict[str, dict] | None = None) -> None:
    node.root.mkdir(parents=True, exist_ok=True)
    for dev in node.devices:
        (node.root / dev).mkdir(exist_ok=True)
    node.config_path.write_text(dump_toml({
        "cluster_file": str(cluster_file),
        "node_id": node.name,
        "region": 1,
        "zone": node.zone,
        "ring_dir": str(ring_dir),
        "log_file": str(node.log_path),
        "public": {"host": node.ip, "port": node.public_port},
        "internal": {"host": node.ip, "port": node.internal_port},
        "storage": {"root": str(node.root), "devices": node.devices},
        **(extra or {}),
    }))


def _build_rings(layout: ClusterLayout, replicas: int, part_power: int) -> None:
    """Make the three rings with ``peerstack-ring``, exactly as an operator would."""
    layout.ring_dir.mkdir(parents=True, exist_ok=True)
    for kind in RING_TYPES:
        builder = str(layout.ring_dir / f"{kind}.builder")
        if (layout.ring_dir / f"{kind}.ring.gz").exists():
            continue
        steps = [["create", str(part_power), str(replicas), "1"]]
        for node in layout.nodes:
            for dev in node.devices:
                steps.append(["add", f"r1z{node.zone}-{node.ip}:{node.internal_port}/{dev}", "100"])
        steps.append(["rebalance", "--seed", "1"])
        steps.append(["write_ring", "--secret-file", str(layout.cluster_file)])
        for step in steps:
            code = ring_builder.main([builder, *step])
            if code not in (0, 1):
                raise RuntimeError(f"peerstack-ring {builder} {' '.join(step)} failed ({code})")


def layout_cluster(root: Path, *, ips: list[str], public_ports: list[int],
                   internal_ports: list[int], devices_per_node: int = 2, replicas: int = 3,
                   part_power: int = 10, name: str = "demo",
                   extra_config: dict[str, dict] | None = None) -> ClusterLayout:
    """Create (or reuse) a cluster file, node configs, devices and rings under ``root``.

    ``extra_config`` adds tables to every node file (``{"replicator": {...}}``).
    """
    root = root.resolve()
    cluster_file = root / "cluster.toml"
    init_cluster(cluster_file, name)
    layout = ClusterLayout(root, cluster_file, load_cluster_config(cluster_file))
    for i, ip in enumerate(ips):
        node = NodeLayout(name=f"node{i + 1}", ip=ip, public_port=public_ports[i],
                          internal_port=internal_ports[i], root=root / f"node{i + 1}",
                          devices=[f"d{j + 1}" for j in range(devices_per_node)], zone=i + 1)
        _write_node_config(node, cluster_file, layout.ring_dir, extra_config)
        layout.nodes.append(node)
    _build_rings(layout, replicas, part_power)
    return layout


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class NodeProcess:
    """A ``peerstack node run`` child process for one :class:`NodeLayout`."""

    def __init__(self, layout: NodeLayout, *, detach: bool = False) -> None:
        self.layout = layout
        self.detach = detach
        self.proc: subprocess.Popen | None = None

    @property
    def pid_path(self) -> Path:
        return self.layout.root / "node.pid"

    def start(self, wait: float = 30.0) -> None:
        out = open(self.layout.root / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.peerstack", "node", "run",
             "--config", str(self.layout.config_path)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=self.detach,
            cwd=Path(__file__).resolve().parent.parent)
        out.close()
        self.pid_path.write_text(str(self.proc.pid))
        self.wait_healthy(wait)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.layout.name} exited with {self.proc.returncode}; "
                                   f"see {self.layout.root / 'stderr.log'}")
            if healthy(self.layout.public_url, 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.layout.name} not healthy after {timeout}s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pid_alive(pid_path: Path) -> int | None:
    try:
        pid = int(pid_path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


DEMO_IPS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="var/demo", help="where the demo keeps everything")
    parser.add_argument("--public-port", type=int, default=8080)
    parser.add_argument("--internal-port", type=int, default=6200)
    parser.add_argument("--stop", action="store_true", help="stop the demo's nodes")


def write_openrc(layout: ClusterLayout) -> Path:
    """Shell exports so every usual client works after ``source openrc``, with no flags.

    swift, openstack and aws read environment variables; s3cmd gets a config
    file named by ``S3CMD_CONFIG``; rclone gets a remote called ``peerstack``
    from ``RCLONE_CONFIG_PEERSTACK_*`` (``rclone ls peerstack:bucket``).
    """
    admin = layout.cluster.admin
    first = layout.nodes[0]
    access, secret = key_pair(layout.cluster, admin.project, admin.user)
    host = urllib.parse.urlsplit(first.public_url).netloc
    s3cfg = layout.root / "s3cfg"
    s3cfg.write_text("\n".join([
        "[default]", f"access_key = {access}", f"secret_key = {secret}",
        f"host_base = {host}", f"host_bucket = {host}", "use_https = False", ""]))
    os.chmod(s3cfg, 0o600)
    exports = {
        "OS_AUTH_URL": f"{first.public_url}/v3",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": admin.user,
        "OS_PASSWORD": admin.password,
        "OS_PROJECT_NAME": admin.project,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        # swift would otherwise follow OS_IDENTITY_API_VERSION to ST_AUTH + /v3
        "ST_AUTH_VERSION": "1.0",
        "ST_AUTH": f"{first.public_url}/auth/v1.0",
        "ST_USER": f"{admin.project}:{admin.user}",
        "ST_KEY": admin.password,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": first.public_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3CMD_CONFIG": str(s3cfg),
        "RCLONE_CONFIG_PEERSTACK_TYPE": "s3",
        "RCLONE_CONFIG_PEERSTACK_PROVIDER": "Other",
        "RCLONE_CONFIG_PEERSTACK_ENDPOINT": first.public_url,
        "RCLONE_CONFIG_PEERSTACK_ACCESS_KEY_ID": access,
        "RCLONE_CONFIG_PEERSTACK_SECRET_ACCESS_KEY": secret,
    }
    lines = ["# peerstack: source this file; then openstack, swift, aws, s3cmd and rclone",
             "# (remote 'peerstack:') talk to this cluster with no other flags."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    # The endpoints are plain HTTP, so a CA bundle has nothing to verify -- and rclone's S3
    # SDK refuses to start with one set ("LoadCustomCABundleError").
    lines.append("unset AWS_CA_BUNDLE")
    path = layout.root / "openrc"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    n = len(DEMO_IPS)
    layout = layout_cluster(root, ips=DEMO_IPS, public_ports=[args.public_port] * n,
                            internal_ports=[args.internal_port] * n)
    for node in layout.nodes:
        proc = NodeProcess(node, detach=True)
        pid = _pid_alive(proc.pid_path)
        if args.stop:
            if pid:
                os.kill(pid, signal.SIGTERM)
                print(f"{node.name}: stopping (pid {pid})")
            continue
        if pid and healthy(node.public_url):
            print(f"{node.name}: already running (pid {pid})")
            continue
        proc.start()
        print(f"{node.name}: started (pid {proc.proc.pid})  public {node.public_url}  "
              f"internal http://{node.ip}:{node.internal_port}  logs {node.log_path}")
    if args.stop:
        return 0
    openrc = write_openrc(layout)
    admin = layout.cluster.admin
    print()
    print(f"endpoints:   {', '.join(n.public_url for n in layout.nodes)}")
    print(f"admin:       {admin.project}:{admin.user} / {admin.password}")
    print(f"credentials: source {openrc}")
    print(f"try:         source {openrc}")
    print("             swift upload photos README.md && swift list photos")
    print("             aws s3 ls s3://photos && s3cmd ls && rclone ls peerstack:photos")
    print("             openstack token issue && openstack catalog list")
    return 0
