"""Volumes and snapshots for real: sparse files, libvirt hot-plug, chunks in the ring.

The guest (``tools.image_build``) labels a blank volume it sees hot-plugged
with ``written-by-<its uuid>`` and counts every attach on the volume
itself, printing both on its console: that is the data the tests follow
through snapshot, volume delete, node loss and restore elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from compute_agent.volumes import CHUNK_SIZE, CHUNKS, SNAPSHOT_ACCOUNT
from node.cluster_client import ClusterClient
from node.config import load_cluster_config, load_node_config
from node.http_client import HTTPClient, Timeouts
from node.signing import RequestSigner
from tools.image_build import VOLUME_MARKER

from tests.compute.conftest import Cloud, agent_cluster

pytestmark = pytest.mark.usefixtures("libvirt_ready")

MiB = 1 << 20
V3 = "/volume/v3"


async def wait_for(cloud: Cloud, path: str, key: str, status: str, timeout: float = 120) -> dict:
    with trio.fail_after(timeout):
        while True:
            resp = await cloud.client.get(path)
            assert resp.status_code == 200, resp.text
            doc = resp.json()[key]
            if doc["status"] == status:
                return doc
            assert "error" not in doc["status"], doc
            await trio.sleep(0.3)


async def wait_404(cloud: Cloud, path: str, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while (await cloud.client.get(path)).status_code != 404:
            await trio.sleep(0.3)


async def create_volume(cloud: Cloud, size: int = 1, server: str | None = None, **fields) -> dict:
    body: dict = {"volume": {"size": size, **fields}}
    if server:
        body["OS-SCH-HNT:scheduler_hints"] = {"local_to_instance": server}
    resp = await cloud.client.post(f"{V3}/volumes", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["volume"]["status"] == "creating"
    return await wait_for(cloud, f"{V3}/volumes/{resp.json()['volume']['id']}", "volume", "available")


async def take_snapshot(cloud: Cloud, volume_id: str, force: bool = False) -> dict:
    resp = await cloud.client.post(f"{V3}/snapshots", json={"snapshot": {
        "volume_id": volume_id, "name": "s", "force": force}})
    assert resp.status_code == 202, resp.text
    return await wait_for(cloud, f"{V3}/snapshots/{resp.json()['snapshot']['id']}", "snapshot", "available")


def volume_file(cluster, volume: dict) -> Path:
    node = next(n for n in cluster.nodes if n.layout.name == volume["os-vol-host-attr:host"])
    return node.layout.root / "compute" / "volumes" / volume["id"]


async def chunk_names(cluster) -> set[str]:
    """Every chunk object in the ``.snapshots`` account, straight from the ring."""
    config = load_node_config(cluster.nodes[0].layout.config_path)
    secrets = load_cluster_config(cluster.cluster_file)
    http = HTTPClient(signer=RequestSigner(secrets.secret_bytes))
    cc = ClusterClient(config, secrets, http, timeouts=Timeouts(connect=2.0, node=20.0))
    try:
        resp = await cc.get_container(SNAPSHOT_ACCOUNT, CHUNKS, {"format": "json", "limit": "10000"})
    finally:
        await http.aclose()
    if resp.status == 404:
        return set()
    assert resp.status == 200, resp.status
    return {row["name"] for row in json.loads(resp.body)}


def chunk_digests(path: Path, start: int, end: int) -> set[str]:
    out = set()
    with open(path, "rb") as f:
        for offset in range(start, end, CHUNK_SIZE):
            f.seek(offset)
            out.add(hashlib.sha256(f.read(CHUNK_SIZE)).hexdigest())
    return out


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


async def test_volume_data_survives_snapshot_delete_and_node_loss(guest_image, tmp_path):
    """The must-show path: guest writes, snapshot, volume gone, its node gone, restored elsewhere."""
    with agent_cluster(tmp_path / "cluster") as cluster:
        clouds = [await trio.to_thread.run_sync(Cloud, cluster, i) for i in range(len(cluster.nodes))]
        try:
            cloud = clouds[0]
            image = await cloud.upload_guest(guest_image, "vol-guest")
            first = await cloud.create_server("vol-writer", image["id"], flavor="0")
            host_a = (await cloud.wait_status(first, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
            volume = await create_volume(cloud, 1, server=first, name="v1")
            stranded = await create_volume(cloud, 1, server=first, name="stays-on-a")
            assert volume["os-vol-host-attr:host"] == host_a and volume["size"] == 1
            path = volume_file(cluster, volume)
            assert path.stat().st_size == 1 << 30 and path.stat().st_blocks == 0

            resp = await cloud.client.post(f"/v2.1/servers/{first}/os-volume_attachments",
                                           json={"volumeAttachment": {"volumeId": volume["id"]}})
            assert resp.status_code == 200, resp.text
            assert resp.json()["volumeAttachment"]["device"] == "/dev/vdb"
            shown = (await cloud.client.get(f"{V3}/volumes/{volume['id']}")).json()["volume"]
            assert shown["status"] == "in-use" and shown["attachments"][0]["server_id"] == first
            attached = (await cloud.server(first))["os-extended-volumes:volumes_attached"]
            assert attached == [{"id": volume["id"], "delete_on_termination": False}]
            await cloud.wait_console(first, f"{VOLUME_MARKER} vdb written-by-")
            line = (await cloud.console(first)).split(VOLUME_MARKER, 1)[1].splitlines()[0].split()
            label = line[1]
            assert line[2] == "attaches=1" and label.startswith("written-by-")

            resp = await cloud.client.delete(f"{V3}/volumes/{volume['id']}")
            assert resp.status_code == 400 and "badRequest" in resp.json(), resp.text
            resp = await cloud.client.post(f"{V3}/snapshots", json={"snapshot": {"volume_id": volume["id"]}})
            assert resp.status_code == 400 and "in-use" in resp.json()["badRequest"]["message"]
            started = time.monotonic()
            snapshot = await take_snapshot(cloud, volume["id"], force=True)
            print(json.dumps({"figure": "attached_snapshot_seconds",
                              "value": round(time.monotonic() - started, 2)}))
            await cloud.wait_status(first, "ACTIVE")  # the brief suspend is over

            resp = await cloud.client.delete(f"/v2.1/servers/{first}/os-volume_attachments/{volume['id']}")
            assert resp.status_code == 202, resp.text
            await wait_for(cloud, f"{V3}/volumes/{volume['id']}", "volume", "available")
            assert (await cloud.client.delete(f"{V3}/volumes/{volume['id']}")).status_code == 202
            await wait_404(cloud, f"{V3}/volumes/{volume['id']}")
            assert not path.exists()

            index_a = next(i for i, n in enumerate(cluster.nodes) if n.layout.name == host_a)
            await trio.to_thread.run_sync(cluster.nodes[index_a].stop)
            cloud = clouds[(index_a + 1) % len(clouds)]
            second = await cloud.create_server("vol-reader", image["id"], flavor="0")
            host_b = (await cloud.wait_status(second, "ACTIVE", timeout=180))["OS-EXT-SRV-ATTR:host"]
            assert host_b != host_a
            resp = await cloud.client.delete(f"{V3}/volumes/{stranded['id']}")
            assert resp.status_code == 503 and "serviceUnavailable" in resp.json(), resp.text
            resp = await cloud.client.post(f"{V3}/volumes/{stranded['id']}/action",
                                           json={"os-force_delete": {}})
            assert resp.status_code == 202, resp.text
            await wait_404(cloud, f"{V3}/volumes/{stranded['id']}")
            restored = await create_volume(cloud, 1, server=second, snapshot_id=snapshot["id"])
            assert restored["os-vol-host-attr:host"] == host_b and restored["snapshot_id"] == snapshot["id"]
            resp = await cloud.client.post(f"/v2.1/servers/{second}/os-volume_attachments",
                                           json={"volumeAttachment": {"volumeId": restored["id"]}})
            assert resp.status_code == 200, resp.text
            await cloud.wait_console(second, f"{VOLUME_MARKER} vdb {label} attaches=2")
        finally:
            for c in clouds:
                await c.aclose()


async def test_snapshots_are_incremental_and_share_chunks(cloud, cluster):
    """Only changed chunks are stored again; deleting a snapshot keeps what another one uses."""
    volume = await create_volume(cloud, 1, name="incremental")
    path = volume_file(cluster, volume)
    before = await chunk_names(cluster)
    await trio.to_thread.run_sync(write_at, path, 100 * MiB, os.urandom(40 * MiB))
    first_digests = await trio.to_thread.run_sync(chunk_digests, path, 100 * MiB, 140 * MiB)
    started = time.monotonic()
    first = await take_snapshot(cloud, volume["id"])
    seconds = time.monotonic() - started
    after_first = await chunk_names(cluster)
    assert after_first - before == first_digests and len(first_digests) == 10
    print(json.dumps({"figure": "snapshot_40MiB_of_1GiB_MBps", "value": round(40 / seconds, 1)}))

    await trio.to_thread.run_sync(write_at, path, 102 * MiB, os.urandom(10 * MiB))
    second_digests = await trio.to_thread.run_sync(chunk_digests, path, 100 * MiB, 140 * MiB)
    second = await take_snapshot(cloud, volume["id"])
    new = await chunk_names(cluster) - after_first
    assert new == second_digests - first_digests and len(new) * CHUNK_SIZE <= 20 * MiB

    assert (await cloud.client.delete(f"{V3}/snapshots/{first['id']}")).status_code == 202
    await wait_404(cloud, f"{V3}/snapshots/{first['id']}")
    left = await chunk_names(cluster)
    assert second_digests <= left
    assert not (first_digests - second_digests) & left

    started = time.monotonic()
    restored = await create_volume(cloud, 2, snapshot_id=second["id"])
    print(json.dumps({"figure": "restore_40MiB_of_1GiB_MBps",
                      "value": round(40 / (time.monotonic() - started), 1)}))
    assert restored["size"] == 2
    copy = volume_file(cluster, restored)
    assert copy.stat().st_size == 2 << 30
    for start in range(0, 1 << 30, 64 * MiB):
        assert await trio.to_thread.run_sync(_same, path, copy, start, 64 * MiB), start
    assert copy.stat().st_blocks * 512 < 100 * MiB  # zeros stayed holes

    for item in (f"volumes/{volume['id']}", f"volumes/{restored['id']}", f"snapshots/{second['id']}"):
        assert (await cloud.client.delete(f"{V3}/{item}")).status_code == 202
        await wait_404(cloud, f"{V3}/{item}")
    assert not second_digests & await chunk_names(cluster)


def _same(a: Path, b: Path, offset: int, length: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(offset)
        fb.seek(offset)
        return fa.read(length) == fb.read(length)


async def test_refusals_and_quotas(cloud, cluster):
    """Client mistakes get Cinder's error shape and a 4xx; over quota is 413 overLimit."""
    project = cluster.layout.cluster.admin.project
    missing = "00000000-0000-0000-0000-000000000000"
    resp = await cloud.client.post(f"{V3}/{project}/snapshots", json={"snapshot": {"volume_id": missing}})
    assert resp.status_code == 404 and "itemNotFound" in resp.json()
    for size in (0, -1, "x", None, 1.5):
        resp = await cloud.client.post(f"{V3}/volumes", json={"volume": {"size": size}})
        assert resp.status_code == 400 and "badRequest" in resp.json(), (size, resp.text)
    resp = await cloud.client.post(f"{V3}/volumes", content=b"{not json")
    assert resp.status_code == 400
    resp = await cloud.client.post(f"{V3}/volumes", json={"volume": {"size": 5000}})
    assert resp.status_code == 413, resp.text
    assert "gigabytes quota" in resp.json()["overLimit"]["message"]
    resp = await cloud.client.post(f"{V3}/volumes", json={"volume": {"size": 1, "snapshot_id": missing}})
    assert resp.status_code == 404
    resp = await cloud.client.get(f"{V3}/volumes/{missing}")
    assert resp.status_code == 404 and "itemNotFound" in resp.json()

    volume = await create_volume(cloud, 1, name="quota")
    resp = await cloud.client.put(f"{V3}/{project}/os-quota-sets/{project}",
                                  json={"quota_set": {"snapshots": 0}})
    assert resp.status_code == 200 and resp.json()["quota_set"]["snapshots"] == 0
    try:
        resp = await cloud.client.post(f"{V3}/snapshots", json={"snapshot": {"volume_id": volume["id"]}})
        assert resp.status_code == 413 and "overLimit" in resp.json(), resp.text
        quota = (await cloud.client.get(f"{V3}/{project}/os-quota-sets/{project}?usage=True")).json()
        assert quota["quota_set"]["volumes"]["in_use"] >= 1
    finally:
        resp = await cloud.client.put(f"{V3}/{project}/os-quota-sets/{project}",
                                      json={"quota_set": {"snapshots": 10}})
        assert resp.status_code == 200
    resp = await cloud.client.post(f"{V3}/volumes/{volume['id']}/action", json={"os-extend": {"new_size": 1}})
    assert resp.status_code == 400
    resp = await cloud.client.post(f"{V3}/volumes/{volume['id']}/action", json={"os-extend": {"new_size": 3}})
    assert resp.status_code == 202, resp.text
    extended = await wait_for(cloud, f"{V3}/volumes/{volume['id']}", "volume", "available")
    assert extended["size"] == 3 and volume_file(cluster, extended).stat().st_size == 3 << 30
    resp = await cloud.client.post(f"{V3}/volumes/{volume['id']}/action",
                                   json={"os-reset_status": {"status": "sideways"}})
    assert resp.status_code == 400
    resp = await cloud.client.post(f"{V3}/volumes/{volume['id']}/action",
                                   json={"os-reset_status": {"status": "error"}})
    assert resp.status_code == 202, resp.text
    assert (await cloud.client.get(f"{V3}/volumes/{volume['id']}")).json()["volume"]["status"] == "error"
    types = (await cloud.client.get(f"{V3}/{project}/types")).json()["volume_types"]
    assert [t["name"] for t in types] == ["__DEFAULT__"]
    assert (await cloud.client.delete(f"{V3}/volumes/{volume['id']}")).status_code == 202
    await wait_404(cloud, f"{V3}/volumes/{volume['id']}")
    assert not volume_file(cluster, extended).exists()


async def test_volume_from_image(cloud, cluster, guest_image):
    """A volume made from an image holds the image's data (raw), the rest of it sparse."""
    image = await cloud.upload_image(guest_image.qcow2, "qcow2", "vol-src")
    resp = await cloud.client.post(f"{V3}/volumes", json={"volume": {"size": 1, "imageRef": "nope"}})
    assert resp.status_code == 400 and "badRequest" in resp.json()
    volume = await create_volume(cloud, 1, imageRef=image["id"], name="from-image")
    assert volume["bootable"] == "true" and volume["volume_image_metadata"]["image_id"] == image["id"]
    path = volume_file(cluster, volume)
    raw = guest_image.raw.read_bytes()
    with open(path, "rb") as f:
        assert f.read(len(raw)) == raw
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks * 512 < 64 * MiB
    assert (await cloud.client.delete(f"{V3}/volumes/{volume['id']}")).status_code == 202
    await wait_404(cloud, f"{V3}/volumes/{volume['id']}")


OPENSTACK = shutil.which("openstack", path=str(Path(sys.executable).parent)) or shutil.which("openstack")


@pytest.mark.skipif(OPENSTACK is None, reason="python-openstackclient is not installed")
async def test_openstack_cli_volumes(cloud, cluster, guest_image, tmp_path):
    """``openstack volume ...`` and ``server add volume`` find Cinder and Nova through the catalog."""
    admin = cluster.layout.cluster.admin
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=f"{cluster.nodes[0].public_url}/v3", OS_USERNAME=admin.user,
               OS_PASSWORD=admin.password, OS_PROJECT_NAME=admin.project, OS_USER_DOMAIN_NAME="Default",
               OS_PROJECT_DOMAIN_NAME="Default", OS_IDENTITY_API_VERSION="3", OS_AUTH_TYPE="password")

    def run(*args: str, output: bool = True):
        proc = subprocess.run([OPENSTACK, *args, *(["-f", "json"] if output else [])], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout) if output else None

    async def osc(*args: str, output: bool = True):
        return await trio.to_thread.run_sync(lambda: run(*args, output=output))

    async def until(status: str, *show: str) -> dict:
        with trio.fail_after(90):
            while (shown := await osc(*show))["status"] != status:
                assert "error" not in shown["status"], shown
                await trio.sleep(0.5)
        return shown

    image = await cloud.upload_guest(guest_image, "cli-guest")
    server = await cloud.create_server("cli-vm", image["id"], flavor="0")
    await cloud.wait_status(server, "ACTIVE")
    created = await osc("volume", "create", "--size", "1", "--hint", f"local_to_instance={server}", "cli-vol")
    assert created["name"] == "cli-vol" and created["size"] == 1
    await until("available", "volume", "show", "cli-vol")
    assert "cli-vol" in {v["Name"] for v in await osc("volume", "list")}
    await osc("server", "add", "volume", server, "cli-vol", output=False)
    await until("in-use", "volume", "show", "cli-vol")
    await cloud.wait_console(server, f"{VOLUME_MARKER} vdb written-by-")
    label = (await cloud.console(server)).split(VOLUME_MARKER, 1)[1].split()[1]

    snap = await osc("volume", "snapshot", "create", "--force", "--volume", "cli-vol", "cli-snap")
    await until("available", "volume", "snapshot", "show", snap["id"])
    assert "cli-snap" in {s["Name"] for s in await osc("volume", "snapshot", "list")}
    await osc("server", "remove", "volume", server, "cli-vol", output=False)
    await until("available", "volume", "show", "cli-vol")
    await osc("volume", "delete", "cli-vol", output=False)
    restored = await osc("volume", "create", "--snapshot", "cli-snap", "--hint",
                         f"local_to_instance={server}", "cli-restored")
    assert restored["size"] == 1
    await until("available", "volume", "show", "cli-restored")
    await osc("server", "add", "volume", server, "cli-restored", output=False)
    await cloud.wait_console(server, f"{VOLUME_MARKER} vdb {label} attaches=2")

    assert (await cloud.client.delete(f"/v2.1/servers/{server}")).status_code == 204
    await cloud.wait_gone(server)
    await until("available", "volume", "show", "cli-restored")
    await osc("volume", "snapshot", "delete", snap["id"], output=False)
    await osc("volume", "delete", "cli-restored", output=False)
    with trio.fail_after(60):
        while {"cli-snap"} & {s["Name"] for s in await osc("volume", "snapshot", "list")} or \
                {"cli-vol", "cli-restored"} & {v["Name"] for v in await osc("volume", "list")}:
            await trio.sleep(0.5)
