"""Disk files with ``qemu-img``: checking bases, per-server overlays, snapshots.

Every call names both formats explicitly (``-f`` for the file itself, ``-F``
for a backing file): a format qemu has to *guess* is how a guest that writes
a qcow2 header into its raw disk gets to read host files on the next boot.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

QEMU_IMG_TIMEOUT = 600


class DiskError(Exception):
    """qemu-img failed, or an image is not what it must be."""


async def qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    with trio.fail_after(timeout):
        proc = await trio.run_process(["qemu-img", *args], capture_stdout=True, capture_stderr=True,
                                      check=False)
    if proc.returncode != 0:
        raise DiskError(f"qemu-img {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


async def info(path: Path, fmt: str) -> dict:
    """``qemu-img info`` of ``path`` read as ``fmt`` (never probed)."""
    return json.loads(await qemu_img("info", "-f", fmt, "--output=json", str(path)))


async def check_base(path: Path, fmt: str) -> int:
    """Refuse a cached image that would make qemu open another file; return its virtual size.

    The upload already passed the format inspector; this is the same rule
    applied by qemu itself, just before the file becomes a backing file.
    """
    doc = await info(path, fmt)
    if doc.get("backing-filename") or doc.get("full-backing-filename"):
        raise DiskError("image has a backing file")
    data = (doc.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise DiskError("image has an external data file")
    return int(doc.get("virtual-size") or 0)


async def create_overlay(base: Path, base_format: str, overlay: Path, size_bytes: int | None) -> None:
    """A qcow2 overlay on ``base``: the server writes here, the base stays shared and intact."""
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base), str(overlay)]
    if size_bytes:
        args.append(str(size_bytes))
    await qemu_img(*args)


async def flatten(overlay: Path, out: Path) -> None:
    """A standalone qcow2 of the server's disk (overlay + base), for ``createImage``."""
    await qemu_img("convert", "-f", "qcow2", "-O", "qcow2", str(overlay), str(out))
