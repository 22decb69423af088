"""What is really inside an uploaded disk image, and whether it is safe to boot.

A hypervisor handed an image file by a user must never be tricked into
opening *another* file: a qcow2 whose backing file is ``/etc/passwd``, a
qcow2 with an external data file, a VMDK descriptor whose extents name
host paths.  And the declared ``disk_format`` must be what the bytes are: an
image declared ``raw`` that is really qcow2 would be interpreted as qcow2 by
anything that probes (the classic Nova/Glance hole).

:func:`inspect` looks at the first :data:`INSPECT_BYTES` of the stream
(every header and descriptor these formats have lives there; the ISO 9660
volume descriptor is at 32 KiB) and returns an :class:`Inspection`:
the formats the bytes match and, if any, why the image is refused.
:func:`check_declared` applies the upload rule:

* a format with a recognisable header (qcow2, vmdk, vhd, vhdx, vdi, iso)
  must match what was declared, and only one such format may match (an ISO
  that is also a qcow2 is refused -- different readers would see different
  disks);
* ``raw``, ``ami`` (a raw machine disk), ``aki`` (a kernel) and ``ari``
  (a ramdisk) have no header: they are accepted only if the bytes match no
  other format;
* formats qemu would open together with another file are refused whatever
  was declared: qcow2 with a backing file or a data file, VMDK other than
  a single-file ``monolithicSparse``/``streamOptimized``, QED (always has
  the backing-file machinery), and LUKS (opens through a key secret).

Only ``container_format`` ``bare`` is inspected; ``ovf``/``ova`` are archives
that no hypervisor here boots directly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

INSPECT_BYTES = 1 << 20

DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "aki", "ari", "ploop")
CONTAINER_FORMATS = ("bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed")
#: declared formats that have no header of their own
HEADERLESS = frozenset({"raw", "ami", "aki", "ari"})

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_SAFE_TYPES = frozenset({"monolithicSparse", "streamOptimized"})
ISO_OFFSETS = (0x8001, 0x8801, 0x9001)


class ImageRejected(Exception):
    """The image is unsafe or not what it was declared to be (a ``400`` to the uploader)."""


@dataclass
class Inspection:
    """What the first bytes of an image say."""

    formats: list[str] = field(default_factory=list)
    #: reasons this image must never reach a hypervisor
    unsafe: list[str] = field(default_factory=list)
    virtual_size: int | None = None


def _qcow2(head: bytes, out: Inspection) -> None:
    if len(head) < 72:
        out.unsafe.append("qcow2 header is truncated")
        return
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    out.virtual_size = struct.unpack_from(">Q", head, 24)[0]
    if version not in (2, 3):
        out.unsafe.append(f"qcow2 version {version} is not supported")
        return
    if backing_offset or backing_size:
        out.unsafe.append("qcow2 image has a backing file")
    header_length = 72
    if version == 3:
        if len(head) < 104:
            out.unsafe.append("qcow2 v3 header is truncated")
            return
        incompatible = struct.unpack_from(">Q", head, 72)[0]
        header_length = struct.unpack_from(">I", head, 100)[0]
        if incompatible & QCOW2_INCOMPAT_DATA_FILE:
            out.unsafe.append("qcow2 image has an external data file")
    _qcow2_extensions(head, header_length, out)


def _qcow2_extensions(head: bytes, offset: int, out: Inspection) -> None:
    """Walk the header extensions (type, length, data padded to 8) up to the end marker."""
    while True:
        if offset + 8 > len(head):
            out.unsafe.append("qcow2 header extensions run past the inspected bytes")
            return
        ext_type, length = struct.unpack_from(">II", head, offset)
        if ext_type == 0:
            return
        if ext_type == QCOW2_EXT_DATA_FILE:
            out.unsafe.append("qcow2 image names an external data file")
        offset += 8 + length + (-length % 8)


def _vmdk_descriptor_problems(text: str) -> list[str]:
    """Problems of a VMDK descriptor: only a single-file sparse disk is safe."""
    problems = []
    found = re.search(r'^\s*createType\s*=\s*"([^"]*)"', text, re.MULTILINE)
    create_type = found.group(1) if found else None
    if create_type not in VMDK_SAFE_TYPES:
        problems.append(f"VMDK createType {create_type!r} refers to other files")
    extents = re.findall(r'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)(.*)$', text, re.MULTILINE)
    if len(extents) > 1:
        problems.append("VMDK has more than one extent")
    for _, kind, _rest in extents:
        if kind.upper() not in ("SPARSE",):
            problems.append(f"VMDK extent of type {kind} refers to another file")
    return problems


def _vmdk_sparse(head: bytes, out: Inspection) -> None:
    if len(head) < 512:
        out.unsafe.append("VMDK header is truncated")
        return
    capacity, _grain, desc_offset, desc_size = struct.unpack_from("<QQQQ", head, 12)
    out.virtual_size = capacity * 512
    if not desc_offset:
        out.unsafe.append("VMDK has no embedded descriptor")
        return
    start, end = desc_offset * 512, (desc_offset + desc_size) * 512
    if end > len(head):
        out.unsafe.append("VMDK descriptor lies past the inspected bytes")
        return
    text = head[start:end].split(b"\0", 1)[0].decode("latin-1")
    out.unsafe.extend(_vmdk_descriptor_problems(text))


def inspect(head: bytes) -> Inspection:
    """Identify ``head`` (the first bytes of an image) and find what makes it unsafe."""
    out = Inspection()
    if head.startswith(QCOW2_MAGIC):
        out.formats.append("qcow2")
        _qcow2(head, out)
    if head.startswith(VMDK_SPARSE_MAGIC):
        out.formats.append("vmdk")
        _vmdk_sparse(head, out)
    elif head.lstrip().startswith(b"# Disk DescriptorFile"):
        out.formats.append("vmdk")
        out.unsafe.append("VMDK descriptor file: its extents are other files")
    if head.startswith(b"conectix"):
        out.formats.append("vhd")
    if head.startswith(b"vhdxfile"):
        out.formats.append("vhdx")
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == 0xBEDA107F:
        out.formats.append("vdi")
    if any(head[o:o + 5] == b"CD001" for o in ISO_OFFSETS):
        out.formats.append("iso")
    if head.startswith(b"QED\0"):
        out.formats.append("qed")
        out.unsafe.append("QED images are not accepted (backing file machinery)")
    if head.startswith(b"LUKS\xba\xbe"):
        out.formats.append("luks")
        out.unsafe.append("LUKS images are not accepted")
    if head.startswith(b"WithoutFreeSpace") or head.startswith(b"WithouFreSpacExt"):
        out.formats.append("ploop")
    return out


def check_declared(head: bytes, disk_format: str, container_format: str) -> Inspection:
    """Raise :class:`ImageRejected` unless ``head`` is a safe ``disk_format`` image."""
    found = inspect(head)
    if container_format != "bare":
        return found
    if found.unsafe:
        raise ImageRejected("; ".join(found.unsafe))
    if len(found.formats) > 1:
        raise ImageRejected(f"image data matches several formats ({', '.join(found.formats)})")
    if disk_format in HEADERLESS:
        if found.formats:
            raise ImageRejected(f"image data is {found.formats[0]}, not {disk_format}")
        return found
    if found.formats != [disk_format]:
        what = found.formats[0] if found.formats else "not a recognisable image"
        raise ImageRejected(f"image data is {what}, declared disk_format is {disk_format}")
    return found
