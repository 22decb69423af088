"""user_data reaches the guest on a config drive (ISO 9660, label config-2), as Nova delivers it."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from compute_agent import config_drive
from tools.image_build import MARKER, USER_DATA_MARKER

from tests.compute.test_servers import instance_dir

pytestmark = pytest.mark.usefixtures("libvirt_ready")


async def test_user_data_on_the_config_drive(cloud, guest_image, cluster):
    image = await cloud.upload_guest(guest_image, "userdata")
    user_data = "#!/bin/sh peerstack says hello\r\necho second line\n"
    resp = await cloud.client.post("/v2.1/servers", json={"server": {
        "name": "with-user-data", "imageRef": image["id"], "flavorRef": "0",
        "user_data": base64.b64encode(user_data.encode()).decode(), "metadata": {"role": "test"}}})
    assert resp.status_code == 202, resp.text
    server_id = resp.json()["server"]["id"]
    server = await cloud.wait_status(server_id, "ACTIVE")
    assert server["config_drive"] == "True"
    await cloud.wait_console(server_id, f"{USER_DATA_MARKER} #!/bin/sh peerstack says hello\n")
    console = await cloud.console(server_id)
    assert "second line" not in console and MARKER in console

    drive = instance_dir(cluster, server["OS-EXT-SRV-ATTR:host"], server_id) / config_drive.FILE_NAME
    listing = subprocess.run(["isoinfo", "-d", "-i", str(drive)], capture_output=True, text=True,
                             check=True)
    assert "Volume id: config-2" in listing.stdout
    meta = subprocess.run(["isoinfo", "-R", "-x", "/openstack/latest/meta_data.json", "-i", str(drive)],
                          capture_output=True, check=True).stdout
    assert json.loads(meta)["uuid"] == server_id and json.loads(meta)["meta"] == {"role": "test"}

    assert (await cloud.client.delete(f"/v2.1/servers/{server_id}")).status_code == 204
    await cloud.wait_gone(server_id)
    assert not drive.exists()

    for field, bad in (("user_data", "not base64!"), ("user_data", 12), ("config_drive", "yes")):
        resp = await cloud.client.post("/v2.1/servers", json={"server": {
            "name": "refused", "imageRef": image["id"], "flavorRef": "0", field: bad}})
        assert resp.status_code == 400, resp.text
        assert ("base 64" if field == "user_data" else field) in resp.json()["badRequest"]["message"]
