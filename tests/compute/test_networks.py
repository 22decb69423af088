"""Neutron networks for real: two VMs on two nodes, one network, DHCP from our dnsmasq, ping over VXLAN.

The nodes of the test cluster share one kernel, so each node's bridge and
VXLAN device carry the node's tag and its own UDP port; the guests' traffic
still goes bridge -> VXLAN (UDP over loopback) -> the other node's bridge.
The guests are booted with ``peerstack.ping=<a>,<b>`` and print whether
each address answered (``tools.image_build.PING_MARKER``).
"""

from __future__ import annotations

import ipaddress
import json
import random

import pytest
import trio
from pyroute2 import IPRoute

from compute_agent.network import NodeNetworks, device_names, node_tag
from tools.image_build import IP_MARKER, PING_MARKER

pytestmark = pytest.mark.usefixtures("libvirt_ready")
NET = "/network/v2.0"


def _teardown_networks(cluster) -> None:
    """Stop every node's dnsmasqs and remove its bridges and tunnels."""
    for node in cluster.nodes:
        NodeNetworks(node.layout.root / "compute" / "networks", cluster.layout.cluster.cluster_id,
                     node.layout.name, lambda: ("", 0), list).stop_all()


def _links_named(names: list[str]) -> list[str]:
    with IPRoute() as ipr:
        return [n for n in names if ipr.link_lookup(ifname=n)]


@pytest.fixture
def clean_networks(cluster):
    try:
        yield
    finally:
        _teardown_networks(cluster)


async def test_neutron_api_shapes_and_errors(cloud):
    c = cloud.client
    versions = (await c.get("/network")).json()["versions"]
    assert versions[0]["id"] == "v2.0"
    resp = await c.post(f"{NET}/networks", json={"network": {"name": "shapes"}})
    assert resp.status_code == 201, resp.text
    net = resp.json()["network"]
    assert net["provider:network_type"] == "vxlan" and 0 < net["provider:segmentation_id"] < 1 << 24
    assert net["status"] == "ACTIVE" and net["subnets"] == []

    bad = await c.post(f"{NET}/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.1.2.300/24",
                                                           "ip_version": 4}})
    assert bad.status_code == 400 and "NeutronError" in bad.json()
    for wrong in ({"gateway_ip": "10.9.9.1"}, {"gateway_ip": "nope"}, {"ip_version": "x"},
                  {"allocation_pools": [{"start": "10.1.2.5", "end": "10.1.2.3"}]}):
        resp = await c.post(f"{NET}/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.1.2.0/29",
                                                               **wrong}})
        assert resp.status_code == 400, (wrong, resp.text)
    subnet = (await c.post(f"{NET}/subnets", json={"subnet": {
        "network_id": net["id"], "cidr": "10.1.2.0/29", "ip_version": 4}})).json()["subnet"]
    assert subnet["gateway_ip"] == "10.1.2.1"
    assert subnet["allocation_pools"] == [{"start": "10.1.2.2", "end": "10.1.2.6"}]

    ports = []
    for _ in range(5):
        resp = await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"]}})
        assert resp.status_code == 201, resp.text
        ports.append(resp.json()["port"])
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in ports) == [f"10.1.2.{i}" for i in range(2, 7)]
    assert all(p["mac_address"].startswith("fa:16:3e:") for p in ports)
    full = await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"]}})
    assert full.status_code == 409, full.text
    taken = await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"],
                                                        "fixed_ips": [{"ip_address": "10.1.2.3"}]}})
    assert taken.status_code == 409

    listed = (await c.get(f"{NET}/ports", params={"network_id": net["id"]})).json()["ports"]
    assert {p["id"] for p in listed} == {p["id"] for p in ports}
    assert (await c.get(f"{NET}/networks/{net['id']}")).json()["network"]["subnets"] == [subnet["id"]]
    assert (await c.get(f"{NET}/networks/not-a-uuid")).status_code == 404
    in_use = await c.delete(f"{NET}/networks/{net['id']}")
    assert in_use.status_code == 409
    for port in ports:
        assert (await c.delete(f"{NET}/ports/{port['id']}")).status_code == 204
    assert (await c.delete(f"{NET}/networks/{net['id']}")).status_code == 204
    assert (await c.get(f"{NET}/subnets/{subnet['id']}")).status_code == 404


async def test_two_nodes_one_network_dhcp_and_ping(cloud, guest_image, cluster, clean_networks):
    c = cloud.client
    net = (await c.post(f"{NET}/networks", json={"network": {"name": "vx"}})).json()["network"]
    cidr = ipaddress.ip_network(f"10.{random.randrange(100, 200)}.{random.randrange(256)}.0/24")
    resp = await c.post(f"{NET}/subnets", json={"subnet": {"network_id": net["id"], "cidr": str(cidr),
                                                            "ip_version": 4}})
    assert resp.status_code == 201, resp.text
    ports = []
    for name in ("a", "b"):
        resp = await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"], "name": name}})
        ports.append(resp.json()["port"])
    ips = [p["fixed_ips"][0]["ip_address"] for p in ports]

    kernel = await cloud.upload_image(guest_image.kernel, "aki", "net-kernel", container_format="aki")
    ramdisk = await cloud.upload_image(guest_image.initrd, "ari", "net-ramdisk", container_format="ari")
    image = await cloud.upload_image(guest_image.qcow2, "qcow2", "net-guest", kernel_id=kernel["id"],
                                     ramdisk_id=ramdisk["id"],
                                     os_command_line=f"console=ttyS0 quiet peerstack.ping={','.join(ips)}")
    servers = []
    for name, port in zip(("net-a", "net-b"), ports):
        resp = await c.post("/v2.1/servers", json={"server": {
            "name": name, "imageRef": image["id"], "flavorRef": "0", "networks": [{"port": port["id"]}]}})
        assert resp.status_code == 202, resp.text
        servers.append(resp.json()["server"]["id"])
        # one at a time: the scheduler then sees the first one's RAM taken and picks another node
        await cloud.wait_status(servers[-1], "ACTIVE")
    shown = [await cloud.server(s) for s in servers]
    hosts = [s["OS-EXT-SRV-ATTR:host"] for s in shown]
    assert hosts[0] != hosts[1], hosts
    for server, ip, port in zip(shown, ips, ports):
        assert server["addresses"] == {"vx": [{"version": 4, "addr": ip, "OS-EXT-IPS:type": "fixed",
                                               "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]}
        bound = (await c.get(f"{NET}/ports/{port['id']}")).json()["port"]
        assert bound["device_id"] == server["id"] and bound["device_owner"] == "compute:nova"

    for sid, ip in zip(servers, ips):
        await cloud.wait_console(sid, f"{IP_MARKER} {ip}", timeout=120)
    for sid, other in zip(servers, reversed(ips)):
        with trio.fail_after(150):
            while f"{PING_MARKER} {other} " not in (out := await cloud.console(sid)):
                await trio.sleep(1)
        assert f"{PING_MARKER} {other} ok" in out, out[-2000:]
    # one DHCP port per node that has a server on the network, each node's dnsmasq its own address
    dhcp = [p for p in (await c.get(f"{NET}/ports", params={"network_id": net["id"]})).json()["ports"]
            if p["device_owner"] == "network:dhcp"]
    assert sorted(p["device_id"] for p in dhcp) == sorted(f"dhcp-{h}" for h in hosts)
    leases = [(n.layout.root / "compute" / "networks" / net["id"] / "leases").read_text()
              for n in cluster.nodes if n.layout.name in hosts]
    assert all(any(ip in lease for ip in ips) for lease in leases), leases
    print(json.dumps({"figure": "vxlan_nodes", "value": len(set(hosts)),
                      "tags": sorted(node_tag(cluster.layout.cluster.cluster_id, h) for h in hosts)}))

    for sid in servers:
        assert (await c.delete(f"/v2.1/servers/{sid}")).status_code == 204
    for sid in servers:
        await cloud.wait_gone(sid)
    vni = net["provider:segmentation_id"]
    names = [n for h in hosts for n in device_names(node_tag(cluster.layout.cluster.cluster_id, h), vni)]
    with trio.fail_after(30):  # the last server on a node takes the network's bridge and tunnel along
        while any(await trio.to_thread.run_sync(_links_named, names)):
            await trio.sleep(0.5)
    for port in ports:  # handed to the servers, so kept (and freed) when they went
        kept = (await c.get(f"{NET}/ports/{port['id']}")).json()["port"]
        assert kept["device_id"] == ""
        assert (await c.delete(f"{NET}/ports/{port['id']}")).status_code == 204
    assert (await c.delete(f"{NET}/networks/{net['id']}")).status_code == 204
