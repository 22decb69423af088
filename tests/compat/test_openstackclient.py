"""python-openstackclient and python-swiftclient (Keystone v3 auth) against a live 3-node cluster.

The clients run unmodified from their packages, configured only by the
``OS_*`` variables an ``openrc`` file exports (:func:`openrc_env`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import running_cluster

BIN = Path(sys.executable).parent
OPENSTACK = shutil.which("openstack", path=str(BIN)) or shutil.which("openstack")
SWIFT = shutil.which("swift", path=str(BIN)) or shutil.which("swift")
pytestmark = pytest.mark.skipif(OPENSTACK is None or SWIFT is None,
                                reason="python-openstackclient / python-swiftclient not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("osc"), nodes=3, replicas=3) as c:
        yield c


def openrc_env(auth_url: str, user: str, password: str, project: str) -> dict[str, str]:
    """What ``source openrc`` sets: Keystone v3, password auth, default domain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}
    env.update(OS_AUTH_URL=auth_url, OS_USERNAME=user, OS_PASSWORD=password, OS_PROJECT_NAME=project,
               OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
               OS_IDENTITY_API_VERSION="3", OS_AUTH_TYPE="password")
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def admin_env(cluster):
    a = cluster.layout.cluster.admin
    return openrc_env(f"{cluster.nodes[0].public_url}/v3", a.user, a.password, a.project)


def osc(env: dict[str, str], cwd: Path, *args: str, output: bool = True):
    """``openstack <args>`` that must succeed; with ``output``, its ``-f json`` answer."""
    proc = run([OPENSTACK, *args, *(["-f", "json"] if output else [])], env, cwd)
    return json.loads(proc.stdout) if output else None


def test_openstack_cli_identity_commands(cluster, admin_env, tmp_path):
    token = osc(admin_env, tmp_path, "token", "issue")
    assert token["id"].startswith("gAAAAA") and token["project_id"] and token["user_id"]

    project = osc(admin_env, tmp_path, "project", "create", "--description", "compat", "demo")
    assert project["name"] == "demo" and project["enabled"] is True
    assert "demo" in {p["Name"] for p in osc(admin_env, tmp_path, "project", "list")}

    alice = osc(admin_env, tmp_path, "user", "create", "--password", "alice-pw", "--project", "demo", "alice")
    osc(admin_env, tmp_path, "user", "create", "--password", "bob-pw", "bob")
    osc(admin_env, tmp_path, "user", "create", "--password", "rita-pw", "rita")

    osc(admin_env, tmp_path, "role", "add", "--project", "demo", "--user", "alice", "member", output=False)
    osc(admin_env, tmp_path, "role", "add", "--project", "demo", "--user", "rita", "reader", output=False)
    rows = osc(admin_env, tmp_path, "role", "assignment", "list", "--project", "demo", "--names")
    assert {(r["User"], r["Role"]) for r in rows} == {("alice@Default", "member"), ("rita@Default", "reader")}

    osc(admin_env, tmp_path, "user", "set", "--disable", "bob", output=False)
    users = {u["Name"]: u for u in osc(admin_env, tmp_path, "user", "list", "--long")}
    assert {"alice", "bob", "rita", "admin"} <= set(users)
    assert users["bob"]["Enabled"] is False and users["alice"]["Enabled"] is True
    bob_env = openrc_env(admin_env["OS_AUTH_URL"], "bob", "bob-pw", "demo")
    assert run([OPENSTACK, "token", "issue"], bob_env, tmp_path, check=False).returncode != 0

    # alice's own EC2 keys, made with her own credentials against node 2.
    alice_env = openrc_env(f"{cluster.nodes[1].public_url}/v3", "alice", "alice-pw", "demo")
    cred = osc(alice_env, tmp_path, "ec2", "credentials", "create")
    assert cred["project_id"] == project["id"] and cred["user_id"] == alice["id"] and cred["secret"]
    listed = osc(alice_env, tmp_path, "ec2", "credentials", "list")
    assert [c["Access"] for c in listed] == [cred["access"]]
    # ... and she may not list the users of the cloud.
    assert run([OPENSTACK, "user", "list"], alice_env, tmp_path, check=False).returncode != 0

    # Every node's own public port is listed: membership tells each node where its peers are.
    deadline = time.monotonic() + 30
    while True:
        catalog = {row["Type"]: row for row in osc(admin_env, tmp_path, "catalog", "list")}
        text = json.dumps(catalog["object-store"]["Endpoints"])
        if all(node.public_url in text for node in cluster.nodes) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {"identity", "object-store", "image", "compute", "volumev3", "network"} <= set(catalog)
    assert all(f"{node.public_url}/v1/AUTH_" in text for node in cluster.nodes), text
    assert f"{cluster.nodes[0].public_url}/v1/AUTH_{token['project_id']}" in text


def test_swift_cli_with_keystone_v3(cluster, admin_env, tmp_path):
    osc(admin_env, tmp_path, "project", "create", "swiftproj", output=False)
    osc(admin_env, tmp_path, "user", "create", "--password", "w-pw", "writer", output=False)
    osc(admin_env, tmp_path, "user", "create", "--password", "r-pw", "looker", output=False)
    osc(admin_env, tmp_path, "role", "add", "--project", "swiftproj", "--user", "writer", "member", output=False)
    osc(admin_env, tmp_path, "role", "add", "--project", "swiftproj", "--user", "looker", "reader", output=False)
    (tmp_path / "hello.txt").write_text("hello from keystone v3\n")

    def swift(user: str, password: str, *args: str, node: int = 2, check: bool = True):
        env = openrc_env(f"{cluster.nodes[node].public_url}/v3", user, password, "swiftproj")
        return run([SWIFT, "--auth-version", "3", *args], env, tmp_path, check)

    swift("writer", "w-pw", "upload", "docs", "hello.txt")
    assert swift("writer", "w-pw", "list", "docs", node=0).stdout.split() == ["hello.txt"]
    stat = swift("looker", "r-pw", "stat", node=1).stdout
    project_id = osc(admin_env, tmp_path, "project", "show", "swiftproj")["id"]
    assert f"AUTH_{project_id}" in stat
    out = tmp_path / "down"
    out.mkdir()
    swift("looker", "r-pw", "download", "docs", "hello.txt", "-o", str(out / "h.txt"))
    assert (out / "h.txt").read_text() == "hello from keystone v3\n"
    refused = swift("looker", "r-pw", "upload", "docs", "hello.txt", check=False)
    assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr
    # The swift CLI's v3 flags work as well as the OS_* variables.
    proc = run([SWIFT, "--os-auth-url", f"{cluster.nodes[1].public_url}/v3", "--auth-version", "3",
                "--os-username", "writer", "--os-password", "w-pw", "--os-project-name", "swiftproj",
                "--os-user-domain-name", "Default", "--os-project-domain-name", "Default", "list"],
               {k: v for k, v in os.environ.items() if not k.startswith("OS_")}, tmp_path)
    assert proc.stdout.split() == ["docs"]
