"""Servers booted for real: build, console, stop/start/reboot, snapshot, delete, scheduling."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest
import trio

from tools.image_build import DISK_MARKER, IP_MARKER, MARKER

from tests.compute.conftest import Cloud

pytestmark = pytest.mark.usefixtures("libvirt_ready")
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def domain_state(server_id: str) -> int | None:
    conn = libvirt.open("qemu:///system")
    try:
        return conn.lookupByUUIDString(server_id).state()[0]
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def instance_dir(cluster, host: str, server_id: str) -> Path:
    node = next(n for n in cluster.nodes if n.layout.name == host)
    return node.layout.root / "compute" / "instances" / server_id


async def test_server_lifecycle(cloud, guest_image, cluster):
    image = await cloud.upload_guest(guest_image, "lifecycle")
    assert image["status"] == "active"
    server_id = await cloud.create_server("vm1", image["id"])
    server = await cloud.server(server_id)
    assert server["status"] in ("BUILD", "ACTIVE")
    server = await cloud.wait_status(server_id, "ACTIVE")
    host = server["OS-EXT-SRV-ATTR:host"]
    assert domain_state(server_id) == libvirt.VIR_DOMAIN_RUNNING
    boot_seconds = await cloud.wait_console(server_id, MARKER)
    await cloud.wait_console(server_id, f"{DISK_MARKER} peerstack-test-disk boots=1")
    print(json.dumps({"figure": "active_to_marker_seconds", "value": round(boot_seconds, 2)}))
    await cloud.wait_console(server_id, IP_MARKER)
    ip = (await cloud.console(server_id)).split(IP_MARKER, 1)[1].split()[0]
    with trio.fail_after(30):
        while ip not in json.dumps((await cloud.server(server_id))["addresses"]):
            await trio.sleep(0.5)

    assert (await cloud.action(server_id, {"os-stop": None})).status_code == 202
    await cloud.wait_status(server_id, "SHUTOFF", timeout=60)
    assert domain_state(server_id) == libvirt.VIR_DOMAIN_SHUTOFF
    again = await cloud.action(server_id, {"os-stop": None})
    assert again.status_code == 409, again.text

    assert (await cloud.action(server_id, {"os-start": None})).status_code == 202
    await cloud.wait_status(server_id, "ACTIVE", timeout=60)
    await cloud.wait_console(server_id, MARKER, count=2)

    assert (await cloud.action(server_id, {"reboot": {"type": "SOFT"}})).status_code == 202
    await cloud.wait_status(server_id, "ACTIVE", timeout=90)
    await cloud.wait_console(server_id, f"{DISK_MARKER} peerstack-test-disk boots=3")
    assert (await cloud.action(server_id, {"reboot": {"type": "HARD"}})).status_code == 202
    await cloud.wait_status(server_id, "ACTIVE", timeout=90)
    await cloud.wait_console(server_id, MARKER, count=4)

    overlay = instance_dir(cluster, host, server_id) / "disk"
    assert overlay.exists()
    resp = await cloud.client.delete(f"/v2.1/servers/{server_id}")
    assert resp.status_code == 204
    await cloud.wait_gone(server_id)
    assert domain_state(server_id) is None
    assert not overlay.exists()


async def test_create_image_boots_again_elsewhere(cloud, guest_image, cluster):
    """createImage stores the disk in the ring; a server from it boots with the disk's state."""
    image = await cloud.upload_guest(guest_image, "snapsrc", disk="raw")
    first = await cloud.create_server("snap-source", image["id"], flavor="0")
    await cloud.wait_status(first, "ACTIVE")
    await cloud.wait_console(first, f"{DISK_MARKER} peerstack-test-disk boots=1")
    resp = await cloud.action(first, {"createImage": {"name": "snap1", "metadata": {"purpose": "test"}}})
    assert resp.status_code == 202, resp.text
    snap_id = resp.json()["image_id"]
    assert resp.headers["location"].endswith(snap_id)
    with trio.fail_after(120):
        while (snap := (await cloud.client.get(f"/v2/images/{snap_id}")).json())["status"] != "active":
            assert snap["status"] in ("queued", "saving"), snap
            await trio.sleep(0.5)
    assert snap["disk_format"] == "qcow2" and snap["purpose"] == "test"
    assert snap["kernel_id"] == image["kernel_id"] and snap["instance_uuid"] == first
    # the source keeps running after the cold snapshot
    await cloud.wait_status(first, "ACTIVE")

    second = await cloud.create_server("from-snap", snap_id, flavor="0")
    await cloud.wait_status(second, "ACTIVE")
    await cloud.wait_console(second, f"{DISK_MARKER} peerstack-test-disk boots=2")
    for sid in (first, second):
        assert (await cloud.client.delete(f"/v2.1/servers/{sid}")).status_code == 204
    for sid in (first, second):
        await cloud.wait_gone(sid)


async def test_scheduler_spreads_servers_over_nodes(cloud, guest_image, cluster):
    """Each server goes to the node with the most free RAM: two in a row land on two nodes."""
    image = await cloud.upload_guest(guest_image, "spread")
    resp = await cloud.client.get("/v2.1/servers/detail")
    busy = {s["OS-EXT-SRV-ATTR:host"] for s in resp.json()["servers"]}
    a = await cloud.create_server("spread-a", image["id"], flavor="0")
    b = await cloud.create_server("spread-b", image["id"], flavor="0")
    hosts = [(await cloud.wait_status(s, "ACTIVE"))["OS-EXT-SRV-ATTR:host"] for s in (a, b)]
    assert hosts[0] != hosts[1]
    assert not busy & set(hosts)
    assert set(hosts) <= {n.layout.name for n in cluster.nodes}
    for sid in (a, b):
        assert (await cloud.client.delete(f"/v2.1/servers/{sid}")).status_code == 204
    for sid in (a, b):
        await cloud.wait_gone(sid)


async def test_refusals(cloud, guest_image, tmp_path):
    """Unsafe or mismatched images, impossible flavors and bad references: OpenStack errors, no VM."""
    import subprocess
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd",
                    str(backed)], check=True)
    resp = await cloud.client.post("/v2/images", json={"name": "evil", "disk_format": "qcow2",
                                                       "container_format": "bare"})
    evil = resp.json()
    resp = await cloud.client.put(f"/v2/images/{evil['id']}/file", content=backed.read_bytes())
    assert resp.status_code == 400 and "backing file" in resp.text
    assert (await cloud.client.get(f"/v2/images/{evil['id']}")).json()["status"] == "queued"

    resp = await cloud.client.post("/v2/images", json={"name": "liar", "disk_format": "raw",
                                                       "container_format": "bare"})
    liar = resp.json()
    resp = await cloud.client.put(f"/v2/images/{liar['id']}/file", content=guest_image.qcow2.read_bytes())
    assert resp.status_code == 400 and "qcow2" in resp.text

    image = await cloud.upload_guest(guest_image, "refusals")
    resp = await cloud.client.post("/v2.1/servers", json={"server": {
        "name": "bad-image", "imageRef": evil["id"], "flavorRef": "1"}})
    assert resp.status_code == 400 and "not active" in resp.json()["badRequest"]["message"]
    resp = await cloud.client.post("/v2.1/servers", json={"server": {
        "name": "no-image", "imageRef": "00000000-0000-0000-0000-000000000000", "flavorRef": "1"}})
    assert resp.status_code == 400 and "could not be found" in resp.json()["badRequest"]["message"]

    resp = await cloud.client.post("/v2.1/flavors", json={"flavor": {
        "name": "enormous", "vcpus": 1, "ram": 64 << 20, "disk": 1}})
    assert resp.status_code == 200, resp.text
    huge = resp.json()["flavor"]["id"]
    server_id = await cloud.create_server("too-big", image["id"], flavor=huge)
    server = await cloud.wait_status(server_id, "ERROR", timeout=30)
    assert "No valid host" in server["fault"]["message"]
    assert domain_state(server_id) is None
    assert (await cloud.client.delete(f"/v2.1/servers/{server_id}")).status_code == 204
    await cloud.wait_gone(server_id)


async def test_image_survives_the_node_that_took_it(guest_image, cluster):
    """The image lives in the ring: with the uploading node stopped, a server still boots from it."""
    first = await trio.to_thread.run_sync(Cloud, cluster, 0)
    try:
        image = await first.upload_guest(guest_image, "ring-image")
    finally:
        await first.aclose()
    stopped = cluster.nodes[0]
    other = await trio.to_thread.run_sync(Cloud, cluster, 1)
    try:
        await trio.to_thread.run_sync(stopped.stop)
        server_id = await other.create_server("from-ring", image["id"], flavor="0")
        server = await other.wait_status(server_id, "ACTIVE")
        assert server["OS-EXT-SRV-ATTR:host"] != stopped.layout.name
        await other.wait_console(server_id, MARKER)
        assert (await other.client.delete(f"/v2.1/servers/{server_id}")).status_code == 204
        await other.wait_gone(server_id)
    finally:
        await other.aclose()
        # the cluster is shared by the session: bring the node back (start waits until healthy)
        await trio.to_thread.run_sync(stopped.start)
