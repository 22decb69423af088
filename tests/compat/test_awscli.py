"""The ``aws`` CLI (pip ``awscli``), unmodified, against a real 3-node cluster."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.s3.credentials import key_pair
from tests.cluster import running_cluster

AWS = shutil.which("aws", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(AWS is None, reason="awscli is not installed in this environment")
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("awscli"), nodes=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="module")
def aws(cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("awshome")
    (home / "config").write_text("[default]\nregion = us-east-1\ns3 =\n    multipart_threshold = 5MB\n"
                                 "    multipart_chunksize = 5MB\n")
    admin = cluster.layout.cluster.admin
    access, secret = key_pair(cluster.layout.cluster, admin.project, admin.user)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none")}

    def run(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([AWS, "--endpoint-url", cluster.nodes[0].public_url, *args], env=env,
                              capture_output=True, text=True, timeout=180, cwd=cwd)
        if check:
            assert proc.returncode == 0, f"aws {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc
    return run


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cp_multipart_ls_rm(aws, tmp_path):
    aws("s3", "mb", "s3://cli-bucket")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB))
    aws("s3", "cp", str(big), "s3://cli-bucket/data/big.bin")
    head = json.loads(aws("s3api", "head-object", "--bucket", "cli-bucket", "--key", "data/big.bin").stdout)
    assert head["ContentLength"] == 20 * MiB and head["ETag"].endswith('-4"')
    assert "big.bin" in aws("s3", "ls", "s3://cli-bucket/data/").stdout
    aws("s3", "cp", "s3://cli-bucket/data/big.bin", str(tmp_path / "back.bin"))
    assert md5_of(tmp_path / "back.bin") == md5_of(big)
    aws("s3", "rm", "s3://cli-bucket/data/big.bin")
    assert "big.bin" not in aws("s3", "ls", "s3://cli-bucket/data/", check=False).stdout


def test_sync(aws, tmp_path):
    aws("s3", "mb", "s3://sync-bucket")
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (src / name).write_bytes(os.urandom(2000))
    aws("s3", "sync", str(src), "s3://sync-bucket/tree")
    listed = aws("s3", "ls", "--recursive", "s3://sync-bucket/tree").stdout
    assert all(f"tree/{n}" in listed for n in ("a.txt", "b.txt", "sub/c.txt"))
    assert aws("s3", "sync", str(src), "s3://sync-bucket/tree").stdout.strip() == ""  # nothing to do
    (src / "a.txt").write_bytes(b"changed and longer")
    assert "a.txt" in aws("s3", "sync", str(src), "s3://sync-bucket/tree").stdout
    dest = tmp_path / "down"
    aws("s3", "sync", "s3://sync-bucket/tree", str(dest))
    assert (dest / "a.txt").read_bytes() == b"changed and longer"
    assert md5_of(dest / "sub" / "c.txt") == md5_of(src / "sub" / "c.txt")
    aws("s3", "rm", "--recursive", "s3://sync-bucket/tree")
    aws("s3", "rb", "s3://sync-bucket")


def test_s3api_and_errors(aws, tmp_path):
    aws("s3api", "create-bucket", "--bucket", "api-bucket")
    body = tmp_path / "body"
    body.write_bytes(b"s3api body")
    aws("s3api", "put-object", "--bucket", "api-bucket", "--key", "k", "--body", str(body),
        "--metadata", "owner=test")
    head = json.loads(aws("s3api", "head-object", "--bucket", "api-bucket", "--key", "k").stdout)
    assert head["Metadata"] == {"owner": "test"} and head["ContentLength"] == 10
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", "api-bucket").stdout)
    assert [o["Key"] for o in listed["Contents"]] == ["k"]
    missing = aws("s3api", "get-object", "--bucket", "api-bucket", "--key", "nope", str(tmp_path / "x"),
                  check=False)
    assert missing.returncode != 0 and "NoSuchKey" in missing.stderr
    bad = aws("s3api", "create-bucket", "--bucket", "Bad_Name", check=False)
    assert bad.returncode != 0 and "InvalidBucketName" in bad.stderr
    url = aws("s3", "presign", "s3://api-bucket/k", "--expires-in", "60").stdout.strip()
    import httpx
    assert httpx.get(url).content == b"s3api body"
