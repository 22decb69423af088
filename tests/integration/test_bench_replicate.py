"""``peerstack bench replicate`` at tiny sizes: a smoke test, not a measurement.

Runs the real command (three ``peerstack node run`` processes, a wiped
device, the replicator rebuilding it) and then checks on its own, from the
ring and the files left under ``--dir``, that the device the bench reports
as rebuilt does hold every object it is a primary of.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from node.config import load_cluster_config
from node.storage.paths import hash_path
from ring.lookup import Ring
from tools.bench_replicate import ACCOUNT, CONTAINER, object_name

REPO = Path(__file__).resolve().parents[2]
KiB = 1024


def test_a_wiped_device_is_rebuilt_and_reported(tmp_path):
    size, object_size = 48 * 64 * KiB + 1000, 64 * KiB  # the last object is short
    done = subprocess.run(
        [sys.executable, "-m", "tools.peerstack", "bench", "replicate", "--dir", str(tmp_path / "b"),
         "--size", str(size), "--object-size", str(object_size), "--timeout", "150", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written 49/49 objects" in done.stderr  # progress
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert "rebuild of the wiped device" in done.stdout

    root = tmp_path / "b" / "cluster"
    cluster = load_cluster_config(root / "cluster.toml")
    ring = Ring(str(root / "rings" / "object.ring.gz"), cluster.secret_bytes,
                cluster.hash_prefix.encode(), cluster.hash_suffix.encode())
    r = doc["rebuild"]
    node_root = root / r["node"]
    internal = tomllib.loads((node_root / "node.toml").read_text())["internal"]
    wiped = (internal["host"], internal["port"], r["device"])
    by_address = {}
    for node_file in root.glob("node*/node.toml"):
        listen = tomllib.loads(node_file.read_text())["internal"]
        by_address[(listen["host"], listen["port"])] = node_file.parent
    count = 49
    assert doc["write"]["objects"] == count
    mine, mine_bytes = 0, 0
    for i in range(count):
        name = object_name(i)
        part, primaries = ring.get_nodes(ACCOUNT, CONTAINER, name)
        if wiped not in [(d["ip"], d["port"], d["device"]) for d in primaries]:
            continue
        expected = object_size if i < count - 1 else 1000
        name_hash = hash_path(cluster.hash_prefix, cluster.hash_suffix, ACCOUNT, CONTAINER, name)
        hash_dir = node_root / r["device"] / "objects" / str(part) / name_hash[-3:] / name_hash
        data = [n for n in os.listdir(hash_dir) if n.endswith(".data")]
        assert len(data) == 1, (name, os.listdir(hash_dir))
        body = (hash_dir / data[0]).read_bytes()
        # A copy put back by the replicator is newer than the ones written by the PUT.
        other = next(d for d in primaries if (d["ip"], d["port"], d["device"]) != wiped)
        other_dir = by_address[(other["ip"], other["port"])] / other["device"] / hash_dir.relative_to(
            node_root / r["device"])
        assert (hash_dir / data[0]).stat().st_mtime > (other_dir / data[0]).stat().st_mtime
        assert len(body) == expected and body[:8] == i.to_bytes(8, "big")
        mine += 1
        mine_bytes += expected
    assert mine == r["objects"] > 0
    assert mine_bytes == r["bytes"]
    assert r["seconds"] > 0 and r["mb_per_s"] > 0
    assert abs(r["mb_per_s"] - r["bytes"] / r["seconds"] / 1e6) < 0.1 + r["mb_per_s"] / 100
    assert doc["limits"]["lowest_mb_per_s"] == min(
        v for k, v in doc["limits"].items() if k != "lowest_mb_per_s")
