"""The libvirt domain document and the guest image's pieces (cpio, module order)."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET

from compute_agent.domain_xml import DomainSpec, domain_xml
from tools.image_build import Cpio, module_depends


def spec(**kw) -> DomainSpec:
    base = dict(name="peerstack-x", uuid="0f8fad5b-d9cb-469f-a165-70867728950e", vcpus=2,
                ram_mb=256, disk="/srv/i/disk", console_log="/srv/i/console.log")
    return DomainSpec(**{**base, **kw})


def test_direct_kernel_boot_domain():
    dom = ET.fromstring(domain_xml(spec(kernel="/k", initrd="/i", cmdline="console=ttyS0 quiet")))
    assert dom.get("type") == "qemu"
    assert dom.findtext("os/kernel") == "/k" and dom.findtext("os/initrd") == "/i"
    assert dom.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert dom.find("features/acpi") is not None
    assert dom.find("devices/disk/driver").get("type") == "qcow2"
    assert dom.find("devices/disk/target").get("bus") == "virtio"
    assert dom.find("devices/serial/source").get("path") == "/srv/i/console.log"
    assert dom.find("devices/interface/source").get("network") == "default"
    assert dom.findtext("memory") == "256" and dom.findtext("vcpu") == "2"


def test_disk_boot_and_escaping():
    dom = ET.fromstring(domain_xml(spec(description="a <b> & c", virt_type="kvm", network=None)))
    assert dom.find("os/boot").get("dev") == "hd" and dom.find("os/kernel") is None
    assert dom.findtext("description") == "a <b> & c"
    assert dom.find("cpu").get("mode") == "host-passthrough"
    assert dom.find("devices/interface") is None


def test_cpio_newc_layout():
    cpio = Cpio()
    cpio.dir("bin")
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    cpio.chardev("dev/console", 5, 1)
    data = cpio.finish()
    entries = []
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        entries.append((name, fields[1], body, fields[9:11]))
        if name == "TRAILER!!!":
            break
    assert entries[1] == ("init", 0o100755, b"#!/bin/sh\n", [0, 0])
    assert entries[2][1] == 0o020600 and entries[2][3] == [5, 1]
    assert gzip.decompress(gzip.compress(data)) == data


def test_module_depends_reads_modinfo():
    assert module_depends(b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0vermagic=6.1\0") == [
        "virtio", "virtio_ring"]
    assert module_depends(b"\0depends=\0") == []
    assert module_depends(b"no modinfo here") == []
