"""Object replication on disk: what a partition holds, what a peer lacks, taking a pushed file.

The object replicator (``replicator/``) compares partitions with REPLICATE's
per-suffix hashes; for the suffixes that differ it offers the peer an
*inventory* -- for each object hash, the names of the files that count
(the winning ``.data`` or ``.ts`` and a newer ``.meta``; never sidecars,
whose content travels inside the pushed metadata).  The peer answers with
the files it *wants*: those it lacks that :func:`node.storage.diskfile.gather`
would keep next to what it already has, so an older ``.data`` is never
wanted by a peer holding a newer tombstone.  Every wanted file is then
pushed as its metadata plus its bytes and installed durably under its
original name and timestamp (:class:`PushedFile`), exactly as the object
server would have written it.  A pushed ``.data`` whose bytes do not match
its own ``ETag`` and ``Content-Length`` is refused, so a corrupt copy never
spreads.

Everything here blocks; callers use worker threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from node.storage import diskfile
from node.storage.diskfile import ObjectLocation, ObjectWriter, cleanup, gather, list_dir
from node.storage.fsutil import unlink_quietly
from node.storage.hashes import HASHES_FILE
from node.storage.paths import hash_path
from node.storage.timestamp import Timestamp

HASH_RE = re.compile(r"^[0-9a-f]{32}$")
SUFFIX_RE = re.compile(r"^[0-9a-f]{3}$")
#: the largest metadata document a pushed file may carry
MAX_METADATA_BYTES = 256 << 10

Inventory = dict[str, list[str]]


class ReplicationError(ValueError):
    """A replication request is malformed or its content is inconsistent (4xx)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def kept_files(hash_dir: Path) -> list[str]:
    """The files that decide an object's state, after removing obsolete ones."""
    state = cleanup(hash_dir)
    return sorted(f[1] for f in (state.data, state.tombstone, state.meta) if f is not None)


def inventory(part_dir: Path, suffixes: Iterable[str] | None = None) -> Inventory:
    """``{hash: [file names]}`` for the objects in ``suffixes`` (all suffixes if None)."""
    if suffixes is None:
        suffixes = [s for s in list_dir(part_dir) if SUFFIX_RE.match(s)]
    found: Inventory = {}
    for suffix in suffixes:
        for name_hash in list_dir(part_dir / suffix):
            if HASH_RE.match(name_hash):
                files = kept_files(part_dir / suffix / name_hash)
                if files:
                    found[name_hash] = files
    return found


def _check_name(name: str) -> tuple[Timestamp, str]:
    """``<timestamp>.<data|ts|meta>`` in its canonical spelling, else 400."""
    stem, _, kind = name.rpartition(".")
    if kind not in ("data", "ts", "meta"):
        raise ReplicationError(400, f"not an object file name: {name!r}")
    try:
        ts = Timestamp(stem)
    except ValueError:
        raise ReplicationError(400, f"not an object file name: {name!r}") from None
    if ts.internal != stem:
        raise ReplicationError(400, f"not an object file name: {name!r}")
    return ts, kind


def parse_inventory(doc: Any) -> Inventory:
    """Validate an inventory from the wire; raises :class:`ReplicationError`."""
    if not isinstance(doc, dict):
        raise ReplicationError(400, "inventory must be a JSON object")
    for name_hash, names in doc.items():
        if not HASH_RE.match(name_hash) or not isinstance(names, list):
            raise ReplicationError(400, f"bad inventory entry {name_hash!r}")
        for name in names:
            if not isinstance(name, str):
                raise ReplicationError(400, f"bad file name in {name_hash}")
            _check_name(name)
    return doc


def wanted(part_dir: Path, offered: Inventory) -> Inventory:
    """The offered files this partition lacks and would keep."""
    want: Inventory = {}
    for name_hash, names in offered.items():
        local = list_dir(part_dir / name_hash[-3:] / name_hash)
        state = gather(local + names)
        keep = {f[1] for f in (state.data, state.tombstone, state.meta) if f is not None}
        missing = [n for n in names if n not in local and n in keep]
        if missing:
            want[name_hash] = missing
    return want


def remove_reverted(part_dir: Path, synced: Inventory) -> int:
    """Delete files every primary has (a handoff's revert); returns how many went.

    Only the named files are removed, so a write that landed after the
    inventory was taken stays for the next pass.  Emptied directories go,
    and the partition itself once nothing but its hash cache is left.
    """
    removed = 0
    for name_hash, names in synced.items():
        hash_dir = part_dir / name_hash[-3:] / name_hash
        for name in names:
            try:
                os.unlink(hash_dir / name)
                removed += 1
            except FileNotFoundError:
                continue
            unlink_quietly(hash_dir / (name + diskfile.SIDECAR))
        for d in (hash_dir, hash_dir.parent):
            try:
                os.rmdir(d)
            except OSError:
                break  # not empty: something newer arrived
    if not any(SUFFIX_RE.match(n) for n in list_dir(part_dir)):
        for name in (HASHES_FILE, diskfile.INVALID_FILE, diskfile.LOCK_FILE):
            unlink_quietly(part_dir / name)
        try:
            os.rmdir(part_dir)
        except OSError:
            pass  # a write is creating a suffix right now
    else:
        for suffix in {h[-3:] for h in synced}:
            if (part_dir / suffix).is_dir():
                diskfile.invalidate_suffix(part_dir, suffix)
    return removed


def check_metadata(metadata: Any, name_hash: str, ts: Timestamp, kind: str,
                   hash_prefix: str, hash_suffix: str) -> dict[str, Any]:
    """A pushed file's metadata must name an object that hashes to ``name_hash``."""
    if not isinstance(metadata, dict):
        raise ReplicationError(400, "metadata must be a JSON object")
    name = metadata.get("name")
    parts = name.split("/", 3) if isinstance(name, str) else []
    if len(parts) != 4 or parts[0] or not all(parts[1:]):
        raise ReplicationError(400, "metadata has no /account/container/object name")
    if hash_path(hash_prefix, hash_suffix, *parts[1:]) != name_hash:
        raise ReplicationError(400, "object name does not hash to the pushed hash")
    if metadata.get("X-Timestamp") != ts.internal:
        raise ReplicationError(400, "X-Timestamp does not match the file name")
    if kind == "data":
        try:
            int(metadata["Content-Length"])
            str(metadata["ETag"])
        except (KeyError, ValueError, TypeError):
            raise ReplicationError(400, "a .data needs Content-Length and ETag") from None
    return metadata


class PushedFile:
    """One file a peer pushes to us, written to ``tmp/`` and installed on :meth:`commit`.

    ``.ts`` and ``.meta`` files are empty; a ``.data`` streams through
    :meth:`write` and must match its metadata's ``ETag`` and
    ``Content-Length``.  Call every method from a worker thread.
    """

    def __init__(self, loc: ObjectLocation, name: str, metadata: dict[str, Any]) -> None:
        self.loc = loc
        self.name = name
        self.timestamp, self.kind = _check_name(name)
        self.metadata = metadata
        self.writer: ObjectWriter | None = None

    def start(self) -> bool:
        """Open the tmp file; False (and nothing opened) if the file is no longer wanted."""
        if not wanted(self.loc.part_dir, {self.loc.hash: [self.name]}):
            return False
        if self.kind == "data":
            self.writer = ObjectWriter(self.loc)
        return True

    def write(self, chunks: list[bytes]) -> None:
        if self.writer is None:
            if any(chunks):
                raise ReplicationError(400, f"a .{self.kind} file has no body")
            return
        self.writer.write(chunks)
        self.writer.hash(chunks)

    def commit(self) -> None:
        if self.writer is None:
            diskfile.write_marker(self.loc, self.timestamp, self.kind, self.metadata)
            return
        etag = self.writer.etag
        if (self.writer.size != int(self.metadata["Content-Length"])
                or etag != str(self.metadata["ETag"]).strip('"').lower()):
            self.abort()
            raise ReplicationError(422, f"pushed {self.name} does not match its ETag or length")
        self.writer.commit(self.timestamp, self.metadata)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
