"""s3cmd (pip ``s3cmd``), unmodified, against a real 3-node cluster: SigV4 and SigV2."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.s3.credentials import key_pair
from tests.cluster import running_cluster

S3CMD = shutil.which("s3cmd", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(S3CMD is None, reason="s3cmd is not installed in this environment")
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("s3cmd"), nodes=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="module")
def s3cmd(cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("s3cmdhome")
    admin = cluster.layout.cluster.admin
    access, secret = key_pair(cluster.layout.cluster, admin.project, admin.user)
    host = cluster.nodes[1].public_url.removeprefix("http://")
    config = home / "s3cfg"
    config.write_text(f"[default]\naccess_key = {access}\nsecret_key = {secret}\nhost_base = {host}\n"
                      f"host_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\n")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, S3CMD, "-c", str(config), *args], capture_output=True,
                              text=True, timeout=180)
        if check:
            assert proc.returncode == 0, f"s3cmd {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc
    return run


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("signature", [[], ["--signature-v2"]], ids=["v4", "v2"])
def test_put_get_ls_del(s3cmd, tmp_path, signature):
    bucket = "s3cmd-" + ("v2" if signature else "v4")
    s3cmd(*signature, "mb", f"s3://{bucket}")
    small = tmp_path / "small.txt"
    small.write_bytes(b"small file for s3cmd")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MiB))
    s3cmd(*signature, "put", str(small), f"s3://{bucket}/small.txt")
    s3cmd(*signature, "put", "--multipart-chunk-size-mb=5", str(big), f"s3://{bucket}/big.bin")
    listing = s3cmd(*signature, "ls", f"s3://{bucket}").stdout
    assert f"s3://{bucket}/small.txt" in listing and f"s3://{bucket}/big.bin" in listing
    s3cmd(*signature, "get", f"s3://{bucket}/big.bin", str(tmp_path / "big.out"))
    assert md5_of(tmp_path / "big.out") == md5_of(big)
    s3cmd(*signature, "get", f"s3://{bucket}/small.txt", str(tmp_path / "small.out"))
    assert (tmp_path / "small.out").read_bytes() == small.read_bytes()
    info = s3cmd(*signature, "info", f"s3://{bucket}/small.txt").stdout
    assert "File size: 20" in info
    s3cmd(*signature, "del", f"s3://{bucket}/small.txt", f"s3://{bucket}/big.bin")
    assert s3cmd(*signature, "ls", f"s3://{bucket}").stdout.strip() == ""
    s3cmd(*signature, "rb", f"s3://{bucket}")


def test_sync_and_errors(s3cmd, tmp_path):
    s3cmd("mb", "s3://s3cmd-sync")
    src = tmp_path / "tree"
    (src / "d").mkdir(parents=True)
    for name in ("one", "two", "d/three"):
        (src / name).write_bytes(os.urandom(3000))
    s3cmd("sync", f"{src}/", "s3://s3cmd-sync/tree/")
    listed = s3cmd("ls", "--recursive", "s3://s3cmd-sync/tree/").stdout
    assert all(f"s3://s3cmd-sync/tree/{n}" in listed for n in ("one", "two", "d/three"))
    (src / "two").unlink()
    s3cmd("sync", "--delete-removed", f"{src}/", "s3://s3cmd-sync/tree/")
    assert "tree/two" not in s3cmd("ls", "--recursive", "s3://s3cmd-sync/tree/").stdout
    missing = s3cmd("get", "s3://s3cmd-sync/none", str(tmp_path / "none"), check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
