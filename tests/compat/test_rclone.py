"""rclone (Debian package ``rclone``), unmodified, against a real 3-node cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proxy.s3.credentials import key_pair
from tests.cluster import running_cluster

RCLONE = shutil.which("rclone")
pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone is not installed (apt-get install rclone)")
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("rclone"), nodes=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="module")
def rclone(cluster, tmp_path_factory):
    admin = cluster.layout.cluster.admin
    access, secret = key_pair(cluster.layout.cluster, admin.project, admin.user)
    # rclone's AWS SDK cannot use a custom CA bundle over its own transport (and needs none here).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**inherited, "RCLONE_CONFIG": str(tmp_path_factory.mktemp("rc") / "none.conf"),
           "RCLONE_CONFIG_PS_TYPE": "s3", "RCLONE_CONFIG_PS_PROVIDER": "Other",
           "RCLONE_CONFIG_PS_ACCESS_KEY_ID": access, "RCLONE_CONFIG_PS_SECRET_ACCESS_KEY": secret,
           "RCLONE_CONFIG_PS_ENDPOINT": cluster.nodes[2].public_url, "RCLONE_CONFIG_PS_REGION": "us-east-1"}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([RCLONE, *args], env=env, capture_output=True, text=True, timeout=180)
        if check:
            assert proc.returncode == 0, f"rclone {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc
    return run


def test_copy_check_sync_ls(rclone, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, size in (("a.bin", 1000), ("b.bin", 70_000), ("sub/c.bin", 10), ("big.bin", 12 * MiB)):
        (src / name).write_bytes(os.urandom(size))
    rclone("mkdir", "ps:rclone-bucket")
    rclone("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(src), "ps:rclone-bucket/tree")
    listed = rclone("ls", "ps:rclone-bucket/tree").stdout
    assert "12582912 big.bin" in listed and "10 sub/c.bin" in listed
    rclone("check", str(src), "ps:rclone-bucket/tree")
    (src / "a.bin").write_bytes(b"new content")
    (src / "b.bin").unlink()
    rclone("sync", str(src), "ps:rclone-bucket/tree")
    rclone("check", str(src), "ps:rclone-bucket/tree")
    assert "b.bin" not in rclone("ls", "ps:rclone-bucket/tree").stdout
    out = tmp_path / "out"
    rclone("copy", "ps:rclone-bucket/tree", str(out))
    assert (out / "a.bin").read_bytes() == b"new content"
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    (src / "sub" / "c.bin").write_bytes(b"x" * 10)  # same size, other bytes: check must notice
    assert rclone("check", str(src), "ps:rclone-bucket/tree", check=False).returncode != 0
    rclone("purge", "ps:rclone-bucket")
    assert "rclone-bucket" not in rclone("lsd", "ps:").stdout
