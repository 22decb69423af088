"""The libvirt domain description of one server.

One disk (the server's qcow2 overlay, virtio), the config drive when the
server has one (:mod:`compute_agent.config_drive`: a read-only virtio disk
with serial ``config-2``, target ``vdz`` so it never takes the name the
proxy gives the first volume), NICs (virtio: a tap on each
of the server's network bridges, :mod:`compute_agent.network`, or for a
server without networks one NIC on libvirt's ``default`` NAT network), the
serial console written to a file (``append='on'``, so output survives
stop/start and reboots, like Nova's console log), ACPI (a graceful stop
presses the power button), and either direct kernel boot
(``<kernel>``/``<initrd>``/``<cmdline>``, from the image's ``kernel_id``
and ``ramdisk_id``) or a BIOS boot from the disk.

``virt_type`` is ``kvm`` where hardware virtualisation works and ``qemu``
(TCG, pure emulation) elsewhere: see :func:`compute_agent.hypervisor.virt_type`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass
class DomainSpec:
    name: str
    uuid: str
    vcpus: int
    ram_mb: int
    disk: str
    console_log: str
    virt_type: str = "qemu"
    disk_format: str = "qcow2"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    network: str | None = "default"
    mac: str | None = None
    #: ``(bridge, mac)`` per port on peerstack networks; when given, ``network`` is not used
    bridges: tuple[tuple[str, str], ...] = ()
    #: the config drive (an ISO 9660 file), if the server has one
    config_drive: str | None = None
    #: server metadata worth seeing in ``virsh dumpxml`` (name, project)
    description: str = ""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(spec: DomainSpec) -> str:
    """The ``<domain>`` document for :meth:`virConnect.defineXML`."""
    dom = ET.Element("domain", {"type": spec.virt_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    if spec.description:
        _sub(dom, "description", spec.description)
    _sub(dom, "memory", str(spec.ram_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        _sub(os_el, "cmdline", spec.cmdline or "console=ttyS0")
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.virt_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format)
    _sub(disk, "source", file=spec.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.config_drive:
        drive = _sub(devices, "disk", type="file", device="disk")
        _sub(drive, "driver", name="qemu", type="raw")
        _sub(drive, "source", file=spec.config_drive)
        _sub(drive, "target", dev="vdz", bus="virtio")
        _sub(drive, "serial", "config-2")
        _sub(drive, "readonly")
    for bridge, mac in spec.bridges:
        nic = _sub(devices, "interface", type="bridge")
        _sub(nic, "source", bridge=bridge)
        _sub(nic, "mac", address=mac)
        _sub(nic, "model", type="virtio")
    if spec.network and not spec.bridges:
        nic = _sub(devices, "interface", type="network")
        _sub(nic, "source", network=spec.network)
        if spec.mac:
            _sub(nic, "mac", address=spec.mac)
        _sub(nic, "model", type="virtio")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console_log, append="on")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def volume_disk_xml(path: str, device: str, volume_id: str) -> str:
    """The ``<disk>`` of a volume (a raw file) for ``attachDeviceFlags``.

    ``cache='none'`` keeps the guest's writes out of the host's page cache,
    so what a snapshot reads after the domain is suspended is what the guest
    wrote; the serial (the first 20 characters of the volume id, as Nova
    sets it) shows up in the guest as ``/dev/disk/by-id/virtio-<serial>``.
    """
    disk = ET.Element("disk", {"type": "file", "device": "disk"})
    _sub(disk, "driver", name="qemu", type="raw", cache="none")
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=device, bus="virtio")
    _sub(disk, "serial", volume_id[:20])
    return ET.tostring(disk, encoding="unicode")
