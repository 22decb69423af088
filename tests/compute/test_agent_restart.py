"""A node's process restarts under a running server: the VM keeps running, the agent finds it again."""

from __future__ import annotations

import libvirt
import pytest
import trio

from tools.image_build import MARKER

from tests.compute.test_servers import domain_state

pytestmark = pytest.mark.usefixtures("libvirt_ready")


async def test_running_server_survives_an_agent_restart(cloud, guest_image, cluster):
    image = await cloud.upload_guest(guest_image, "restart")
    server_id = await cloud.create_server("survivor", image["id"], flavor="0")
    host = (await cloud.wait_status(server_id, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
    await cloud.wait_console(server_id, MARKER)
    node = next(n for n in cluster.nodes if n.layout.name == host)
    try:
        await trio.to_thread.run_sync(node.stop)  # SIGTERM: `peerstack node run` exits
        assert node.proc.poll() is not None
        assert domain_state(server_id) == libvirt.VIR_DOMAIN_RUNNING
        await trio.to_thread.run_sync(node.start)
    finally:
        if node.proc is None or node.proc.poll() is not None:
            await trio.to_thread.run_sync(node.start)  # the cluster is shared by the session

    # The new agent serves the server it did not build: its console, then its actions.
    assert MARKER in await cloud.console(server_id)
    assert (await cloud.server(server_id))["status"] == "ACTIVE"
    with trio.fail_after(30):
        while (resp := await cloud.action(server_id, {"os-stop": None})).status_code == 409:
            assert "starting" in resp.text, resp.text  # only while the agent is still recovering
            await trio.sleep(0.5)
    assert resp.status_code == 202, resp.text
    await cloud.wait_status(server_id, "SHUTOFF", timeout=60)
    assert domain_state(server_id) == libvirt.VIR_DOMAIN_SHUTOFF
    assert (await cloud.action(server_id, {"os-start": None})).status_code == 202
    await cloud.wait_status(server_id, "ACTIVE", timeout=60)
    await cloud.wait_console(server_id, MARKER, count=2)
    assert (await cloud.client.delete(f"/v2.1/servers/{server_id}")).status_code == 204
    await cloud.wait_gone(server_id)
    assert domain_state(server_id) is None
