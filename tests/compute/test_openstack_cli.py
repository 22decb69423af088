"""The unmodified ``openstack`` CLI drives images and servers on a live cluster with real VMs.

Credentials are the cluster admin's, through Keystone v3 exactly as an
``openrc`` sets them; the CLI finds Glance and Nova in the service catalog
and discovers their versions itself (Glance's at the node's root, shared
with Keystone's version list).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.compat.test_openstackclient import OPENSTACK, openrc_env
from tests.compute.test_networks import clean_networks  # noqa: F401 (the fixture)
from tools.image_build import IP_MARKER, MARKER

pytestmark = [pytest.mark.usefixtures("libvirt_ready"),
              pytest.mark.skipif(OPENSTACK is None, reason="python-openstackclient not installed")]
CLI_TIMEOUT = 180


class CLI:
    """``openstack ...`` as the cluster admin against one node."""

    def __init__(self, cluster, cwd: Path) -> None:
        admin = cluster.layout.cluster.admin
        self.env = openrc_env(f"{cluster.nodes[0].public_url}/v3", admin.user, admin.password,
                              admin.project)
        self.cwd = cwd

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([OPENSTACK, *args], env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT)

    def ok(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, f"openstack {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, "-f", "json"))

    def wait_for(self, predicate, timeout: float = 120, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(1)


def test_openstack_cli_images_and_servers(cluster, guest_image, tmp_path):
    cli = CLI(cluster, tmp_path)
    kernel = cli.json("image", "create", "--file", str(guest_image.kernel), "--disk-format", "aki",
                      "--container-format", "aki", "cli-kernel")
    ramdisk = cli.json("image", "create", "--file", str(guest_image.initrd), "--disk-format", "ari",
                       "--container-format", "ari", "cli-ramdisk")
    image = cli.json("image", "create", "--file", str(guest_image.qcow2), "--disk-format", "qcow2",
                     "--container-format", "bare", "--property", f"kernel_id={kernel['id']}",
                     "--property", f"ramdisk_id={ramdisk['id']}",
                     "--property", "os_command_line=console=ttyS0 quiet", "cli-guest")
    assert image["status"] == "active" and image["disk_format"] == "qcow2"
    assert image["size"] == guest_image.qcow2.stat().st_size

    shown = cli.json("image", "show", "cli-guest")
    assert shown["id"] == image["id"] and shown["properties"]["kernel_id"] == kernel["id"]
    listed = {row["Name"]: row for row in cli.json("image", "list")}
    assert {"cli-kernel", "cli-ramdisk", "cli-guest"} <= set(listed)
    assert listed["cli-guest"]["Status"] == "active"
    assert "m1.nano" in {row["Name"] for row in cli.json("flavor", "list")}

    server = cli.json("server", "create", "--image", "cli-guest", "--flavor", "m1.nano", "--wait",
                      "cli-vm")
    assert server["status"] == "ACTIVE", server
    rows = {row["Name"]: row for row in cli.json("server", "list")}
    assert rows["cli-vm"]["Status"] == "ACTIVE" and rows["cli-vm"]["Image"] == "cli-guest"
    assert rows["cli-vm"]["Flavor"] == "m1.nano"
    shown = cli.json("server", "show", "cli-vm")
    assert shown["id"] == server["id"]
    assert shown["OS-EXT-SRV-ATTR:host"] in {n.layout.name for n in cluster.nodes}

    def console() -> str:
        return cli.ok("console", "log", "show", "cli-vm")

    cli.wait_for(lambda: IP_MARKER in console(), what="the guest's DHCP address on the console")
    output = console()
    assert MARKER in output
    ip = output.split(IP_MARKER, 1)[1].split()[0]
    cli.wait_for(lambda: ip in json.dumps(cli.json("server", "show", "cli-vm")["addresses"]),
                 timeout=30, what="the guest's address in the server's addresses")

    def status() -> str:
        return cli.json("server", "show", "cli-vm")["status"]

    cli.ok("server", "stop", "cli-vm")
    cli.wait_for(lambda: status() == "SHUTOFF", what="SHUTOFF")
    cli.ok("server", "start", "cli-vm")
    cli.wait_for(lambda: status() == "ACTIVE", what="ACTIVE after start")
    cli.wait_for(lambda: console().count(MARKER) >= 2, what="the second boot's marker")
    cli.ok("server", "reboot", "--wait", "cli-vm")
    cli.wait_for(lambda: console().count(MARKER) >= 3, what="the soft reboot's marker")
    cli.ok("server", "reboot", "--hard", "--wait", "cli-vm")
    assert status() == "ACTIVE"
    cli.wait_for(lambda: console().count(MARKER) >= 4, what="the hard reboot's marker")

    cli.ok("server", "delete", "--wait", "cli-vm")
    assert "cli-vm" not in {row["Name"] for row in cli.json("server", "list")}
    assert cli.run("server", "show", "cli-vm").returncode != 0

    cli.ok("image", "delete", "cli-guest", "cli-kernel", "cli-ramdisk")
    missing = cli.run("image", "show", image["id"])
    assert missing.returncode != 0 and "No Image found" in missing.stderr + missing.stdout


@pytest.mark.usefixtures("clean_networks")
def test_openstack_cli_networks(cluster, guest_image, tmp_path):
    cli = CLI(cluster, tmp_path)
    net = cli.json("network", "create", "cli-net")
    assert net["provider:network_type"] == "vxlan" and net["status"] == "ACTIVE"
    subnet = cli.json("subnet", "create", "--network", "cli-net", "--subnet-range", "10.66.0.0/24",
                      "cli-subnet")
    assert subnet["cidr"] == "10.66.0.0/24" and subnet["gateway_ip"] == "10.66.0.1"
    port = cli.json("port", "create", "--network", "cli-net", "--fixed-ip", "ip-address=10.66.0.50",
                    "cli-port")
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.66.0.50"}]
    assert "cli-net" in {row["Name"] for row in cli.json("network", "list")}
    assert {row["ID"] for row in cli.json("port", "list", "--network", "cli-net")} == {port["id"]}
    assert cli.run("network", "delete", "cli-net").returncode != 0  # the port still uses it

    kernel = cli.json("image", "create", "--file", str(guest_image.kernel), "--disk-format", "aki",
                      "--container-format", "aki", "cli-net-kernel")
    ramdisk = cli.json("image", "create", "--file", str(guest_image.initrd), "--disk-format", "ari",
                       "--container-format", "ari", "cli-net-ramdisk")
    cli.json("image", "create", "--file", str(guest_image.qcow2), "--disk-format", "qcow2",
             "--container-format", "bare", "--property", f"kernel_id={kernel['id']}",
             "--property", f"ramdisk_id={ramdisk['id']}",
             "--property", "os_command_line=console=ttyS0 quiet", "cli-net-guest")
    cli.json("server", "create", "--image", "cli-net-guest", "--flavor", "m1.nano", "--network", "cli-net",
             "--wait", "cli-net-vm")
    row = next(r for r in cli.json("server", "list") if r["Name"] == "cli-net-vm")
    assert row["Networks"] == {"cli-net": ["10.66.0.2"]}, row
    cli.wait_for(lambda: f"{IP_MARKER} 10.66.0.2" in cli.ok("console", "log", "show", "cli-net-vm"),
                 what="a lease from the network's dnsmasq")
    cli.ok("server", "delete", "--wait", "cli-net-vm")
    assert cli.json("port", "list", "--network", "cli-net", "--device-owner", "compute:nova") == []
    cli.ok("image", "delete", "cli-net-guest", "cli-net-kernel", "cli-net-ramdisk")
    cli.ok("port", "delete", "cli-port")
    cli.ok("network", "delete", "cli-net")
    assert cli.run("subnet", "show", subnet["id"]).returncode != 0
