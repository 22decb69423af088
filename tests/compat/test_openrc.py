"""`source openrc` is all the usual clients need: swift, aws, s3cmd, rclone, openstack.

The demo writes this file (tools.demo.write_openrc); here it is written for a
test cluster and every client is run from a plain shell with no flags, the
way a user would after `./scripts/demo.sh`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import running_cluster
from tools.demo import write_openrc

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def openrc(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("openrc")) as cluster:
        yield write_openrc(cluster.layout)


def shell(openrc: Path, script: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OS_", "ST_", "RCLONE_"))}
    # a CA bundle some machines set globally must not break the clients (openrc unsets it)
    env["AWS_CA_BUNDLE"] = "/etc/ssl/certs/ca-certificates.crt"
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)  # no ~/.s3cfg, ~/.aws or rclone.conf to lean on
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", f"source {openrc}\n{script}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_swift_then_s3_clients_see_the_same_object(openrc, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from swift\n")
    out = shell(openrc, """
        swift upload shared hello.txt >/dev/null
        echo "swift: $(swift list shared)"
        echo "aws: $(aws s3 ls s3://shared/)"
        echo "s3cmd: $(s3cmd ls s3://shared/)"
        echo "rclone: $(rclone ls peerstack:shared)"
        aws s3 cp s3://shared/hello.txt - | sed 's/^/aws-get: /'
    """, tmp_path)
    lines = out.splitlines()
    assert "swift: hello.txt" in lines
    for client in ("aws", "s3cmd", "rclone"):
        line = next(ln for ln in lines if ln.startswith(f"{client}: "))
        assert "hello.txt" in line, out
    assert "aws-get: hello from swift" in lines


def test_openstack_client(openrc, tmp_path):
    if shutil.which("openstack", path=str(BIN)) is None:
        pytest.skip("python-openstackclient is not installed in this venv")
    out = shell(openrc, "openstack token issue -f value -c project_id && openstack catalog list -f value",
                tmp_path)
    assert "object-store" in out and "identity" in out
    # Every API is found through the catalog and its version discovery.
    out = shell(openrc, """
        openstack volume create --size 1 rc-vol -f value -c name
        openstack volume list -f value -c Name
        openstack image list -f value
        openstack server list -f value
        openstack network list -f value
        openstack flavor list -f value -c Name
    """, tmp_path)
    assert out.splitlines()[:2] == ["rc-vol", "rc-vol"] and "m1.tiny" in out
