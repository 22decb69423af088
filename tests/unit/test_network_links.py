"""A node's network pieces: NIC validation, device names, the domain's bridge NICs, real netlink links."""

from __future__ import annotations

import socket
import uuid
import xml.etree.ElementTree as ET

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from compute_agent.domain_xml import DomainSpec, domain_xml
from compute_agent.network import BROADCAST_MAC, Nic, _ensure_links, device_names, node_tag, remove_links

NIC = {"port_id": "p1", "network_id": "n1", "mac": "FA:16:3E:00:00:01", "ip": "10.9.0.5",
       "cidr": "10.9.0.0/24", "vni": 0xABCDEF, "mtu": 1450, "gateway": "10.9.0.1", "dhcp_ip": "10.9.0.2"}


def test_nic_from_dict_checks_addresses_and_vni():
    nic = Nic.from_dict(NIC)
    assert nic.mac == "fa:16:3e:00:00:01" and nic.vni == 0xABCDEF
    for bad in ({"ip": "10.9.1.5"}, {"dhcp_ip": "192.168.0.2"}, {"vni": 0}, {"vni": 1 << 24},
                {"cidr": "10.9.0.0/33"}):
        with pytest.raises(ValueError):
            Nic.from_dict({**NIC, **bad})


def test_device_names_fit_linux_and_differ_per_node():
    names = {device_names(node_tag(cluster, f"node{i}"), (1 << 24) - 1)
             for i in range(10) for cluster in ("c1", "c2", "c3")}
    assert len(names) == 30
    assert all(len(n) <= 15 for pair in names for n in pair)


def test_domain_with_bridges_has_no_libvirt_network_nic():
    spec = DomainSpec(name="d", uuid=str(uuid.uuid4()), vcpus=1, ram_mb=128, disk="/x", console_log="/c",
                      bridges=(("pbaaaa000001", "fa:16:3e:00:00:01"), ("pbaaaa000002", "fa:16:3e:00:00:02")))
    nics = ET.fromstring(domain_xml(spec)).findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge", "bridge"]
    assert [n.find("source").get("bridge") for n in nics] == ["pbaaaa000001", "pbaaaa000002"]
    assert nics[1].find("mac").get("address") == "fa:16:3e:00:00:02"
    plain = DomainSpec(name="d", uuid=spec.uuid, vcpus=1, ram_mb=128, disk="/x", console_log="/c")
    only = ET.fromstring(domain_xml(plain)).findall("devices/interface")
    assert [(n.get("type"), n.find("source").get("network")) for n in only] == [("network", "default")]


def test_links_are_made_once_and_removed():
    tag = uuid.uuid4().hex[:4]
    nic = Nic.from_dict(NIC)
    peers = [("127.0.0.2", 40001), ("127.0.0.3", 40002)]
    try:
        bridge = _ensure_links(tag, nic, ("127.0.0.1", 40000), peers[:1])
    except NetlinkError as exc:
        pytest.skip(f"no CAP_NET_ADMIN here: {exc}")
    try:
        assert _ensure_links(tag, nic, ("127.0.0.1", 40000), peers) == bridge  # again: adds the new peer
        _, vxlan = device_names(tag, nic.vni)
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=bridge)[0]
            vx = ipr.link_lookup(ifname=vxlan)[0]
            assert ipr.get_links(vx)[0].get_attr("IFLA_MASTER") == br
            addrs = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=br, family=socket.AF_INET)}
            floods = sorted((e.get_attr("NDA_DST"), e.get_attr("NDA_PORT"))
                            for e in ipr.fdb("dump", ifindex=vx) if e.get_attr("NDA_LLADDR") == BROADCAST_MAC)
        assert addrs == {"10.9.0.2"}
        assert floods == peers
    finally:
        assert remove_links(tag) == 2
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=bridge)
