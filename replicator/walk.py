"""Walking a device's on-disk layout (see :mod:`node.storage.diskfile` and :mod:`node.storage.db`).

Every function here blocks on the file system: call them from worker
threads.  Generators are resumable across thread hops, so a walk over a
big device can be spread over many short ``trio.to_thread`` calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from node.storage.diskfile import list_dir

_HASH_RE = re.compile(r"^[0-9a-f]{32}$")
_SUFFIX_RE = re.compile(r"^[0-9a-f]{3}$")

#: directory names on a device, per kind of data
DATA_DIRS = {"object": "objects", "container": "containers", "account": "accounts"}


def partitions(dev_path: Path, kind: str) -> list[int]:
    """Partitions with a directory on the device for ``kind`` (object/container/account)."""
    return sorted(int(n) for n in list_dir(dev_path / DATA_DIRS[kind]) if n.isdigit())


def hash_dirs(part_dir: Path) -> Iterator[Path]:
    """Every ``<suffix>/<hash>`` directory of a partition."""
    for suffix in sorted(list_dir(part_dir)):
        if _SUFFIX_RE.match(suffix):
            for name_hash in sorted(list_dir(part_dir / suffix)):
                if _HASH_RE.match(name_hash):
                    yield part_dir / suffix / name_hash


def objects(dev_path: Path) -> Iterator[tuple[int, Path]]:
    """``(partition, hash_dir)`` for every object directory on the device."""
    for part in partitions(dev_path, "object"):
        for hash_dir in hash_dirs(dev_path / "objects" / str(part)):
            yield part, hash_dir


def databases(dev_path: Path, kind: str) -> Iterator[tuple[int, str, Path]]:
    """``(partition, hash, db_file)`` for every container or account database on the device."""
    for part in partitions(dev_path, kind):
        for hash_dir in hash_dirs(dev_path / DATA_DIRS[kind] / str(part)):
            db_file = hash_dir / f"{hash_dir.name}.db"
            if db_file.is_file():
                yield part, hash_dir.name, db_file


def async_pendings(dev_path: Path) -> Iterator[Path]:
    """Every async pending record on the device (see :mod:`node.storage.updates`)."""
    root = dev_path / "async_pending"
    for suffix in sorted(list_dir(root)):
        if _SUFFIX_RE.match(suffix):
            for name in sorted(list_dir(root / suffix)):
                if _HASH_RE.match(name[:32]) and name[32:33] == "-":
                    yield root / suffix / name


def count_entries(path: Path) -> int:
    return len(list_dir(path))
