"""`peerstack node run` as a real process: both ports, signed internal RPC, clean stop."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from node.config import dump_toml, load_cluster_config
from node.signing import RequestSigner
from tools import peerstack
from tools.demo import free_port


@pytest.fixture
def node_files(tmp_path):
    cluster_file = tmp_path / "cluster.toml"
    assert peerstack.main(["cluster", "init", "--out", str(cluster_file)]) == 0
    public, internal = free_port("127.0.0.1"), free_port("127.0.0.1")
    (tmp_path / "d1").mkdir()
    config = tmp_path / "node.toml"
    config.write_text(dump_toml({
        "cluster_file": "cluster.toml", "node_id": "n1", "log_file": "node.log",
        "public": {"port": public}, "internal": {"port": internal},
        "storage": {"root": str(tmp_path), "devices": ["d1"]},
    }))
    return tmp_path, config, public, internal


def wait_healthy(url, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"node exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never became healthy")


def test_node_serves_both_ports_and_stops_cleanly(node_files):
    root, config, public, internal = node_files
    proc = subprocess.Popen([sys.executable, "-m", "tools.peerstack", "node", "run",
                             "--config", str(config)], stderr=subprocess.PIPE)
    try:
        wait_healthy(f"http://127.0.0.1:{public}/healthcheck", proc)
        assert httpx.get(f"http://127.0.0.1:{internal}/healthcheck").text == "OK"
        # every thread of the node, workers included, runs under SCHED_BATCH (node/scheduling.py)
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) > 1
        names = {t: open(f"/proc/{proc.pid}/task/{t}/comm").read().strip() for t in tids}
        assert {names[t]: os.sched_getscheduler(t) for t in tids} == {names[t]: os.SCHED_BATCH for t in tids}

        # The internal port refuses anything unsigned, and replays of a signed request.
        assert httpx.get(f"http://127.0.0.1:{internal}/d1/0/a").status_code == 401
        secret = load_cluster_config(root / "cluster.toml").secret_bytes
        signed = dict(RequestSigner(secret)("HEAD", "/d1/0/a"))
        first = httpx.head(f"http://127.0.0.1:{internal}/d1/0/a", headers=signed)
        assert first.status_code != 401
        again = httpx.head(f"http://127.0.0.1:{internal}/d1/0/a", headers=signed)
        assert again.status_code == 401
        forged = dict(RequestSigner(b"x" * 32)("HEAD", "/d1/0/a"))
        assert httpx.head(f"http://127.0.0.1:{internal}/d1/0/a", headers=forged).status_code == 401

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in (root / "node.log").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert "node.started" in names and names[-1] == "node.stopped"
    requests = [e for e in events if e["event"] == "http.request"]
    assert requests and all(e["rid"].startswith("tx") for e in requests)
    assert any(e["event"] == "internal.reject" and e["reason"] == "replayed request" for e in events)


def test_node_run_rejects_bad_config(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("nonsense = true\n")
    proc = subprocess.run([sys.executable, "-m", "tools.peerstack", "node", "run",
                           "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unknown option 'nonsense'" in proc.stderr
