"""The config drive: a server's user_data and metadata on a small read-only disk.

Nova's way of handing ``user_data`` to a guest without a metadata service:
an ISO 9660 image labelled ``config-2`` holding ``openstack/latest/
meta_data.json`` and ``openstack/latest/user_data`` (cloud-init's
``ConfigDrive`` data source reads exactly this).  It is made with
``genisoimage`` (Rock Ridge and Joliet, so names keep their case), kept
next to the overlay as ``disk.config`` (Nova's file name), and attached as
a second virtio disk whose serial is ``config-2``, so a guest finds it by
label or by serial.

A server gets one when it has ``user_data`` or asked for ``config_drive``;
the drive is made once at build and reused by every boot after, as Nova
does.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import trio

LABEL = "config-2"
FILE_NAME = "disk.config"
MAKE_TIMEOUT = 60


class ConfigDriveError(Exception):
    """genisoimage is missing or failed."""


def wanted(record: dict[str, Any]) -> bool:
    """Whether the server gets a config drive."""
    return bool(record.get("config_drive")) or record.get("user_data") is not None


def meta_data(record: dict[str, Any]) -> dict[str, Any]:
    """``meta_data.json`` as Nova writes it (the fields a guest without keys needs)."""
    name = str(record.get("name") or record["id"])
    return {"uuid": record["id"], "name": name, "hostname": name.lower().replace(" ", "-"),
            "launch_index": 0, "availability_zone": "nova", "project_id": record.get("project_id"),
            "meta": record.get("metadata") or {}}


def _stage(root: Path, record: dict[str, Any]) -> None:
    latest = root / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(json.dumps(meta_data(record)))
    if record.get("user_data") is not None:
        (latest / "user_data").write_bytes(base64.b64decode(record["user_data"]))


async def make(record: dict[str, Any], dest: Path) -> Path:
    """Write the server's config drive to ``dest`` (an ISO 9660 image) and return it."""
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if tool is None:
        raise ConfigDriveError("genisoimage is not installed (scripts/install-compute.sh)")
    with tempfile.TemporaryDirectory(prefix=".config-drive-", dir=dest.parent) as tmp:
        staged = Path(tmp) / "root"
        await trio.to_thread.run_sync(_stage, staged, record)
        partial = Path(tmp) / FILE_NAME
        with trio.fail_after(MAKE_TIMEOUT):
            proc = await trio.run_process(
                [tool, "-o", str(partial), "-V", LABEL, "-r", "-J", "-quiet", "-allow-lowercase",
                 "-allow-multidot", "-l", str(staged)],
                capture_stdout=True, capture_stderr=True, check=False)
        if proc.returncode != 0:
            raise ConfigDriveError(f"genisoimage failed: {proc.stderr.decode(errors='replace').strip()}")
        await trio.to_thread.run_sync(partial.replace, dest)
    return dest
