"""Real VMs under libvirt: the guest image, a 3-node cluster with compute agents, API helpers.

Everything here is real: QEMU (TCG where KVM does not work), libvirtd, the
default NAT network, node processes on loopback.  The tests skip, with the
reason, only where libvirt or QEMU cannot run at all (no libvirt-python, no
libvirtd answering, no qemu-img, no Debian packages to build the guest).

The guest (``tools.image_build``) is built once and cached under
``var/test-images/guest`` at the top of the repository.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from tests.cluster import RunningCluster, running_cluster
from tools import image_build

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "var" / "test-images" / "guest"


def _libvirt_problem() -> str | None:
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed (scripts/install-compute.sh)"
    if shutil.which("qemu-img") is None or shutil.which("qemu-system-x86_64") is None:
        return "QEMU is not installed (scripts/install-compute.sh)"
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        return f"libvirtd is not answering on qemu:///system: {exc}"
    try:
        if not conn.networkLookupByName("default").isActive():
            return "libvirt's default network is not active"
    except libvirt.libvirtError as exc:
        return f"libvirt's default network is missing: {exc}"
    finally:
        conn.close()
    return None


@pytest.fixture(scope="session")
def libvirt_ready() -> None:
    problem = _libvirt_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def guest_image(libvirt_ready) -> image_build.GuestImage:
    try:
        return image_build.build(IMAGE_DIR)
    except image_build.BuildError as exc:
        pytest.skip(f"cannot build the test guest from Debian packages: {exc}")


def destroy_domains_under(root: Path) -> None:
    """Remove every libvirt domain whose disk lives under ``root`` (test cleanup)."""
    import libvirt
    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains():
            if not dom.name().startswith("peerstack-") or str(root) not in dom.XMLDesc():
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    finally:
        conn.close()


@contextmanager
def agent_cluster(root: Path, nodes: int = 3) -> Iterator[RunningCluster]:
    """A cluster whose nodes run the compute agent; their VMs are removed afterwards."""
    with running_cluster(root, nodes=nodes, replicas=3, devices_per_node=1, part_power=6) as running:
        try:
            yield running
        finally:
            destroy_domains_under(running.root)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, libvirt_ready) -> Iterator[RunningCluster]:
    with agent_cluster(tmp_path_factory.mktemp("compute") / "cluster") as running:
        yield running


class Cloud:
    """httpx against one node's public port, as an admin with a token from ``/auth/v1.0``."""

    def __init__(self, cluster: RunningCluster, node: int = 0) -> None:
        self.cluster = cluster
        self.base = cluster.nodes[node].public_url
        with httpx.Client(timeout=30) as client:
            resp = client.get(f"{self.base}/auth/v1.0", headers={"X-Auth-User": cluster.admin_user,
                                                                 "X-Auth-Key": cluster.admin_key})
            resp.raise_for_status()
        self.token = resp.headers["x-auth-token"]
        self.client = httpx.AsyncClient(base_url=self.base, timeout=120,
                                        headers={"X-Auth-Token": self.token})

    async def aclose(self) -> None:
        await self.client.aclose()

    async def upload_image(self, path: Path, disk_format: str, name: str, **props) -> dict:
        resp = await self.client.post("/v2/images", json={
            "name": name, "disk_format": disk_format,
            "container_format": props.pop("container_format", "bare"), **props})
        assert resp.status_code == 201, resp.text
        image = resp.json()
        resp = await self.client.put(f"/v2/images/{image['id']}/file", content=path.read_bytes(),
                                     headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 204, resp.text
        return (await self.client.get(f"/v2/images/{image['id']}")).json()

    async def upload_guest(self, guest: image_build.GuestImage, name: str = "guest",
                           disk: str = "qcow2") -> dict:
        kernel = await self.upload_image(guest.kernel, "aki", f"{name}-kernel", container_format="aki")
        ramdisk = await self.upload_image(guest.initrd, "ari", f"{name}-ramdisk", container_format="ari")
        return await self.upload_image(guest.qcow2 if disk == "qcow2" else guest.raw, disk, name,
                                       kernel_id=kernel["id"], ramdisk_id=ramdisk["id"],
                                       os_command_line="console=ttyS0 quiet")

    async def server(self, server_id: str) -> dict:
        resp = await self.client.get(f"/v2.1/servers/{server_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()["server"]

    async def create_server(self, name: str, image_id: str, flavor: str = "1") -> str:
        resp = await self.client.post("/v2.1/servers", json={"server": {
            "name": name, "imageRef": image_id, "flavorRef": flavor, "networks": "auto"}})
        assert resp.status_code == 202, resp.text
        return resp.json()["server"]["id"]

    async def wait_status(self, server_id: str, status: str, timeout: float = 120) -> dict:
        with trio.fail_after(timeout):
            while True:
                server = await self.server(server_id)
                if server["status"] == status and not server["OS-EXT-STS:task_state"]:
                    return server
                assert server["status"] != "ERROR" or status == "ERROR", server.get("fault")
                await trio.sleep(0.5)

    async def action(self, server_id: str, body: dict) -> httpx.Response:
        return await self.client.post(f"/v2.1/servers/{server_id}/action", json=body)

    async def console(self, server_id: str) -> str:
        resp = await self.action(server_id, {"os-getConsoleOutput": {"length": None}})
        assert resp.status_code == 200, resp.text
        return resp.json()["output"]

    async def wait_console(self, server_id: str, text: str, count: int = 1,
                           timeout: float = 120) -> float:
        """Seconds until ``text`` shows ``count`` times on the console."""
        started = time.monotonic()
        with trio.fail_after(timeout):
            while (await self.console(server_id)).count(text) < count:
                await trio.sleep(0.5)
        return time.monotonic() - started

    async def wait_gone(self, server_id: str, timeout: float = 60) -> None:
        with trio.fail_after(timeout):
            while (await self.client.get(f"/v2.1/servers/{server_id}")).status_code != 404:
                await trio.sleep(0.5)


@pytest.fixture
async def cloud(cluster) -> Cloud:
    cloud = await trio.to_thread.run_sync(Cloud, cluster)
    try:
        yield cloud
    finally:
        await cloud.aclose()
