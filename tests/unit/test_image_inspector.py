"""The format inspector on images made by qemu-img and on crafted headers."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from proxy.image_inspector import ImageRejected, check_declared, inspect

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")


def make(tmp_path, fmt: str, *opts: str, name: str = "img") -> bytes:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, str(path), "16M"], check=True)
    return path.read_bytes()[:1 << 20]


@needs_qemu_img
@pytest.mark.parametrize("fmt,opts", [("qcow2", []), ("qcow2", ["-o", "compat=0.10"]),
                                      ("vmdk", ["-o", "subformat=monolithicSparse"]),
                                      ("vmdk", ["-o", "subformat=streamOptimized"]),
                                      ("vpc", []), ("vhdx", []), ("vdi", [])])
def test_safe_images_match_their_format(tmp_path, fmt, opts):
    declared = {"vpc": "vhd"}.get(fmt, fmt)
    found = check_declared(make(tmp_path, fmt, *opts), declared, "bare")
    assert found.formats == [declared]
    with pytest.raises(ImageRejected):
        check_declared(make(tmp_path, fmt, *opts, name="again"), "raw", "bare")


@needs_qemu_img
def test_qcow2_virtual_size(tmp_path):
    assert inspect(make(tmp_path, "qcow2")).virtual_size == 16 << 20


@needs_qemu_img
@pytest.mark.parametrize("opts,reason", [
    (["-F", "raw", "-b", "/etc/passwd"], "backing file"),
    (["-o", "data_file=DATA"], "data file"),
])
def test_qcow2_that_opens_other_files_is_refused(tmp_path, opts, reason):
    opts = [o.replace("DATA", str(tmp_path / "data.raw")) for o in opts]
    head = make(tmp_path, "qcow2", *opts)
    with pytest.raises(ImageRejected, match=reason):
        check_declared(head, "qcow2", "bare")


@needs_qemu_img
@pytest.mark.parametrize("subformat", ["monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
def test_vmdk_with_extents_is_refused(tmp_path, subformat):
    head = make(tmp_path, "vmdk", "-o", f"subformat={subformat}")
    with pytest.raises(ImageRejected, match="VMDK"):
        check_declared(head, "vmdk", "bare")


def test_raw_and_friends_must_look_like_nothing_else():
    plain = b"\0" * 4096
    for fmt in ("raw", "ami", "aki", "ari"):
        assert check_declared(plain, fmt, "bare").formats == []
    with pytest.raises(ImageRejected, match="not a recognisable image"):
        check_declared(plain, "qcow2", "bare")


def test_iso_that_is_also_qcow2_is_refused():
    head = bytearray(b"QFI\xfb" + struct.pack(">IQI", 3, 0, 0) + b"\0" * 200_000)
    struct.pack_into(">I", head, 100, 104)  # header length: extensions end right after
    head[0x8001:0x8006] = b"CD001"
    with pytest.raises(ImageRejected, match="several formats"):
        check_declared(bytes(head), "iso", "bare")


def test_truncated_and_odd_headers_are_refused_not_crashed():
    for head in (b"QFI\xfb", b"QFI\xfb" + b"\0" * 80, b"KDMV" + b"\xff" * 600, b"QED\0" + b"\0" * 64,
                 b"# Disk DescriptorFile\ncreateType=\"vmfs\"\n"):
        with pytest.raises(ImageRejected):
            check_declared(head, "qcow2", "bare")


def test_archives_are_not_inspected():
    assert check_declared(b"QFI\xfb", "qcow2", "ova").unsafe
