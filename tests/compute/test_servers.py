"""Servers booted for real: build, console, stop/start/reboot, snapshot, delete, scheduling."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest

from tools.image_build import DISK_MARKER, MARKER

pytestmark = pytest.mark.usefixtures("libvirt_ready")


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
