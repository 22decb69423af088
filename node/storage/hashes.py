"""Per-suffix hashes of a partition: how replicas find out what differs.

``REPLICATE /<device>/<part>`` answers ``{suffix: md5}`` where each md5
covers the names of every file in that suffix's object directories (after
removing obsolete ones), so two replicas holding the same events agree
without reading any object.  As in Swift, the answer is cached in
``objects/<part>/hashes.json``; a write appends its suffix to
``objects/<part>/hashes.invalid`` (cheap, no rewrite of the cache) and the
next REPLICATE recalculates only those suffixes.  Both files are guarded by
an ``flock`` on ``objects/<part>/.lock`` so a write can never slip between
reading and truncating the invalid list.

The cache is only a cache: it is rewritten without fsync, and a torn or
missing one just means every suffix is recalculated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from node.storage.diskfile import INVALID_FILE, cleanup, partition_lock

HASHES_FILE = "hashes.json"
_SUFFIX_RE = re.compile(r"^[0-9a-f]{3}$")


def hash_suffix(suffix_dir: Path) -> str | None:
    """md5 over the file names of every object in the suffix; None if it is empty.

    Cleans obsolete files first, and removes directories left empty.
    """
    md5 = hashlib.md5(usedforsecurity=False)
    found = False
    for name in sorted(_listdir(suffix_dir)):
        hash_dir = suffix_dir / name
        cleanup(hash_dir)
        files = sorted(_listdir(hash_dir))
        for f in files:
            md5.update(f.encode("utf-8"))
            found = True
    if not found:
        try:
            os.rmdir(suffix_dir)
        except OSError:
            pass
        return None
    return md5.hexdigest()


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def get_hashes(part_dir: Path, recalculate: Iterable[str] = ()) -> dict[str, str]:
    """``{suffix: md5}`` for a partition, recalculating invalid suffixes and ``recalculate``."""
    if not part_dir.is_dir():
        return {}
    with partition_lock(part_dir):
        try:
            cached = json.loads((part_dir / HASHES_FILE).read_bytes())
            if not isinstance(cached, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError):
            cached = {}
        stale = set(recalculate)
        try:
            invalid = (part_dir / INVALID_FILE).read_text().split()
        except FileNotFoundError:
            invalid = []
        stale.update(invalid)
        present = {n for n in _listdir(part_dir) if _SUFFIX_RE.match(n)}
        hashes: dict[str, str] = {}
        for suffix in sorted(present):
            value = cached.get(suffix)
            if suffix in stale or not isinstance(value, str):
                value = hash_suffix(part_dir / suffix)
            if value is not None:
                hashes[suffix] = value
        # A replicator asks about every partition on every pass; most have
        # not changed, and rewriting their caches would be most of its I/O.
        if hashes != cached:
            fd, tmp = tempfile.mkstemp(dir=part_dir, prefix=".hashes-")
            with os.fdopen(fd, "w") as f:
                json.dump(hashes, f)
            os.replace(tmp, part_dir / HASHES_FILE)
        if invalid:
            os.truncate(part_dir / INVALID_FILE, 0)
    return hashes
