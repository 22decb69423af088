"""Objects on disk: one directory per object, one file per event.

Layout on a device (``hash`` = :func:`node.storage.paths.hash_path`)::

    objects/<part>/<hash[-3:]>/<hash>/<timestamp>.data   the bytes (+ metadata)
                                      <timestamp>.ts     a tombstone (DELETE)
                                      <timestamp>.meta   metadata from a POST
    tmp/                                                 files being written
    quarantined/objects/<hash>/                          corrupt objects, moved aside

The newest ``.data`` or ``.ts`` decides whether the object exists; a
``.meta`` newer than it replaces the user metadata.  Older files are removed
after a newer one lands.  A file only appears under its final name once its
bytes are fsynced (written in ``tmp/``, renamed, directory fsynced), so a
crash leaves either the old state or the new one, never a torn ``.data``.

**Metadata** is JSON in the xattr ``user.peerstack.meta`` of each file:
header-style keys (``Content-Type``, ``ETag``, ``Content-Length``,
``X-Timestamp``, ``X-Object-Meta-*``, ...) plus ``name`` (``/a/c/o``).  ext4
gives all xattrs of a file about 4 KiB together, less than Swift's metadata
limits allow, so when the JSON is bigger than :data:`XATTR_LIMIT` it goes to a
*sidecar* ``<file>.json`` (e.g. ``<ts>.data.json``) and the xattr holds just
``{"_sidecar": 1}``.  The sidecar is renamed into the object directory before
its owner, and both renames are covered by the same directory fsync.  A
sidecar is removed with its owner, or when a newer event makes it obsolete.

Everything here blocks; the object server calls it through
``trio.to_thread.run_sync`` in batches of about 1 MiB.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.etag_footer import FooterError, body_check, check_footer
from node.storage.direct_io import DIRECT_MIN, AlignedReader, StagedWriter
from node.storage.fsutil import fsync_dir, makedirs_durable, unlink_quietly
from node.storage.timestamp import Timestamp

XATTR = "user.peerstack.meta"
#: metadata JSON up to this size lives in the xattr, larger goes to a sidecar
XATTR_LIMIT = 3072
SIDECAR = ".json"
_KINDS = ("data", "ts", "meta")
#: suffixes written since the last REPLICATE (see node.storage.hashes)
INVALID_FILE = "hashes.invalid"
LOCK_FILE = ".lock"
#: a write batch at least this big starts its own writeback (small objects
#: are flushed by the commit's fsync alone)
WRITEBACK_MIN = 512 * 1024


class DiskFileError(Exception):
    """An object's files are unreadable or inconsistent (it gets quarantined)."""


@dataclass(frozen=True)
class ObjectLocation:
    """Where one object lives on one device."""

    device_path: Path
    partition: int
    hash: str

    # Cached: a small PUT asks for these paths a dozen times, and every
    # pathlib join re-parses its parts.
    @functools.cached_property
    def suffix(self) -> str:
        return self.hash[-3:]

    @functools.cached_property
    def part_dir(self) -> Path:
        return self.device_path / "objects" / str(self.partition)

    @functools.cached_property
    def hash_dir(self) -> Path:
        return self.part_dir / self.suffix / self.hash

    @functools.cached_property
    def tmp_dir(self) -> Path:
        return self.device_path / "tmp"


@dataclass
class ObjectState:
    """What an object directory says: the winning files and what is obsolete."""

    data: tuple[Timestamp, str] | None = None
    tombstone: tuple[Timestamp, str] | None = None
    meta: tuple[Timestamp, str] | None = None
    obsolete: list[str] = field(default_factory=list)

    @property
    def newest(self) -> Timestamp | None:
        """Timestamp of the winning ``.data`` or ``.ts``."""
        winner = self.data or self.tombstone
        return winner[0] if winner else None


def _parse_name(name: str) -> tuple[Timestamp, str, bool] | None:
    """``<ts>.<kind>[.json]`` -> (timestamp, kind, is_sidecar); None for strangers."""
    sidecar = name.endswith(SIDECAR)
    base = name[: -len(SIDECAR)] if sidecar else name
    stem, _, kind = base.rpartition(".")
    if kind not in _KINDS:
        return None
    try:
        return Timestamp(stem), kind, sidecar
    except ValueError:
        return None


def gather(names: list[str]) -> ObjectState:
    """Decide from a directory listing which files count.

    The newest ``.data``/``.ts`` wins; the newest ``.meta`` newer than it
    applies.  Everything older, and any sidecar whose owner is not kept, is
    obsolete.  A sidecar newer than every owner is left alone: its owner may
    be about to be renamed in by a write still in flight.
    """
    parsed = []
    for name in names:
        p = _parse_name(name)
        if p is not None:
            parsed.append((p[0], p[1], p[2], name))
    # newest first; at equal timestamps a .data/.ts sorts before a .meta
    parsed.sort(key=lambda t: (t[0], t[1] != "meta"), reverse=True)
    state = ObjectState()
    kept: set[str] = set()
    for ts, kind, sidecar, name in parsed:
        if sidecar:
            continue
        undecided = state.newest is None
        if kind == "meta" and undecided and state.meta is None:
            state.meta = (ts, name)  # newer than any .data/.ts still to come
        elif kind == "data" and undecided:
            state.data = (ts, name)
        elif kind == "ts" and undecided:
            state.tombstone = (ts, name)
        else:
            state.obsolete.append(name)
            continue
        kept.add(name)
    if state.meta is not None and state.tombstone is not None:
        state.obsolete.append(state.meta[1])
        kept.discard(state.meta[1])
        state.meta = None
    decided = state.newest
    for ts, kind, sidecar, name in parsed:
        if not sidecar:
            continue
        owner = name[: -len(SIDECAR)]
        if owner in kept:
            continue
        if decided is not None and ts <= decided or owner in state.obsolete:
            state.obsolete.append(name)
    return state


def list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_state(loc: ObjectLocation) -> ObjectState:
    return gather(list_dir(loc.hash_dir))


def cleanup(hash_dir: Path) -> ObjectState:
    """Remove obsolete files; remove the directory if nothing is left."""
    names = list_dir(hash_dir)
    state = gather(names)
    for name in state.obsolete:
        unlink_quietly(hash_dir / name)
    if names and len(state.obsolete) == len(names):
        try:
            os.rmdir(hash_dir)
        except OSError:
            pass  # a new file arrived meanwhile
    return state


def read_metadata(path: Path, fd: int | None = None) -> dict[str, Any]:
    """Metadata of one object file (from its xattr, or its sidecar)."""
    try:
        raw = os.getxattr(fd if fd is not None else path, XATTR)
        doc = json.loads(raw)
        if doc.get("_sidecar"):
            doc = json.loads(Path(str(path) + SIDECAR).read_bytes())
    except (OSError, ValueError) as exc:
        raise DiskFileError(f"{path}: unreadable metadata: {exc}") from exc
    if not isinstance(doc, dict):
        raise DiskFileError(f"{path}: metadata is not an object")
    return doc


@contextmanager
def partition_lock(part_dir: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the partition, for its hash cache files."""
    fd = os.open(part_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def invalidate_suffix(part_dir: Path, suffix: str) -> None:
    """Note that ``suffix`` changed, for the next REPLICATE to recalculate."""
    with partition_lock(part_dir):
        fd = os.open(part_dir / INVALID_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{suffix}\n".encode())
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _set_metadata(fd: int, final_path: Path, metadata: dict[str, Any], tmp_dir: Path) -> None:
    """Attach ``metadata`` to the file open as ``fd``, spilling to a sidecar if big.

    The sidecar (if any) is fsynced and renamed to ``<final_path>.json``
    before the caller renames the file itself.
    """
    raw = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(raw) <= XATTR_LIMIT:
        os.setxattr(fd, XATTR, raw)
        return
    sfd, stmp = tempfile.mkstemp(dir=tmp_dir, prefix=".side-")
    try:
        _write_all(sfd, raw)
        os.fsync(sfd)
    except BaseException:
        os.close(sfd)
        unlink_quietly(stmp)
        raise
    os.close(sfd)
    os.setxattr(fd, XATTR, b'{"_sidecar":1}')
    os.replace(stmp, str(final_path) + SIDECAR)


def _install(loc: ObjectLocation, fd: int, tmp_path: str, final_name: str,
             metadata: dict[str, Any]) -> ObjectState:
    """Make a written tmp file the object's ``final_name``, durably; then clean up
    (nothing to clean in a directory this call created: a write racing ours
    into it does its own cleanup, and readers take the newest file anyway)."""
    created = makedirs_durable(loc.hash_dir, loc.device_path)
    final = loc.hash_dir / final_name
    _set_metadata(fd, final, metadata, loc.tmp_dir)
    os.fsync(fd)
    os.rename(tmp_path, final)
    fsync_dir(loc.hash_dir)
    state = gather([final_name]) if created else cleanup(loc.hash_dir)
    invalidate_suffix(loc.part_dir, loc.suffix)
    return state


def new_tmp_file(loc: ObjectLocation) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=loc.tmp_dir, prefix=".obj-")
    except FileNotFoundError:  # the device's first write (or its tmp/ was removed)
        makedirs_durable(loc.tmp_dir, loc.device_path)
        return tempfile.mkstemp(dir=loc.tmp_dir, prefix=".obj-")


class ObjectWriter:
    """Streams a new ``.data`` into ``tmp/``; :meth:`commit` makes it the object.

    Call every method from a worker thread.  Until :meth:`commit` nothing is
    visible; :meth:`abort` (or a crash) leaves only a tmp file behind.
    """

    def __init__(self, loc: ObjectLocation, *, footer: bool = False,
                 size: int | None = None) -> None:
        """``footer``: the ETag arrives after the body (:mod:`node.etag_footer`), so
        the body is checked with the footer's cheap check instead of being hashed
        with MD5 here.
        ``size``: the body's length if known; a large body is written past the
        page cache (:mod:`node.storage.direct_io`), as :meth:`OpenObject.bypass_cache`
        reads it."""
        self.loc = loc
        self.fd, self.tmp_path = new_tmp_file(loc)
        large = size is not None and size >= DIRECT_MIN
        self._direct = StagedWriter.open(self.fd) if large else None
        self.md5 = None if footer else hashlib.md5(usedforsecurity=False)
        self.check = body_check() if footer else None
        self._footer_etag: str | None = None
        self.size = 0

    def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` to the file (not hashed: see :meth:`hash`).

        Each batch's dirty pages are handed to the disk right away
        (``POSIX_FADV_DONTNEED`` starts their writeback without waiting for
        it), so the one ``fsync`` in :meth:`commit` finds little left to do
        instead of flushing the whole object after the last byte arrived.  A
        ``direct`` writer skips the page cache altogether.
        """
        if self._direct is not None:
            for chunk in chunks:
                self._direct.write(chunk)
                self.size += len(chunk)
            return
        start = self.size
        for chunk in chunks:
            _write_all(self.fd, chunk)
            self.size += len(chunk)
        if self.size - start >= WRITEBACK_MIN:
            os.posix_fadvise(self.fd, start, self.size - start, os.POSIX_FADV_DONTNEED)

    def hash(self, chunks: list[bytes]) -> None:
        """Feed ``chunks`` to the MD5 (or the footer's check, with a footer to come);
        may run in another thread while :meth:`write` does."""
        digest = self.md5 if self.check is None else self.check
        for chunk in chunks:
            digest.update(chunk)

    @property
    def hash_is_cheap(self) -> bool:
        """True when :meth:`hash` is only the footer's check (microseconds per MiB):
        not worth a thread of its own beside :meth:`write`."""
        return self.check is not None

    def take_footer(self, raw: bytes) -> None:
        """Check the body against the footer's check and take its MD5 as the ETag;
        :class:`node.etag_footer.FooterError` if they do not match."""
        assert self.check is not None
        self._footer_etag = check_footer(raw, self.check)

    @property
    def etag(self) -> str:
        """The body's MD5 (hex), computed here or taken from the footer."""
        if self.md5 is not None:
            return self.md5.hexdigest()
        if self._footer_etag is None:
            raise FooterError("the body's ETag footer never arrived")
        return self._footer_etag

    def commit(self, timestamp: Timestamp, metadata: dict[str, Any]) -> ObjectState:
        try:
            if self._direct is not None:
                self._direct.finish()
            return _install(self.loc, self.fd, self.tmp_path, f"{timestamp.internal}.data", metadata)
        except BaseException:
            self.abort()
            raise
        finally:
            self._close()

    def abort(self) -> None:
        self._close()
        unlink_quietly(self.tmp_path)

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_marker(loc: ObjectLocation, timestamp: Timestamp, kind: str,
                 metadata: dict[str, Any]) -> ObjectState:
    """Write an empty ``.ts`` (tombstone) or ``.meta`` file carrying ``metadata``."""
    fd, tmp = new_tmp_file(loc)
    try:
        return _install(loc, fd, tmp, f"{timestamp.internal}.{kind}", metadata)
    except BaseException:
        unlink_quietly(tmp)
        raise
    finally:
        os.close(fd)


class OpenObject:
    """An open ``.data`` file with its merged metadata.

    Holding the descriptor means a concurrent overwrite (which unlinks the
    old file) cannot change the bytes we are serving.
    """

    def __init__(self, fd: int, metadata: dict[str, Any], size: int, data_ts: Timestamp) -> None:
        self.fd = fd
        self.metadata = metadata
        self.size = size
        self.data_timestamp = data_ts
        #: the whole file, when :meth:`read_ahead` read it
        self.content: bytes | None = None
        self._direct: AlignedReader | None = None

    def pread(self, offset: int, length: int) -> bytes:
        if self._direct is not None:
            return self._direct.pread(offset, length)
        return os.pread(self.fd, length, offset)

    def bypass_cache(self, max_read: int) -> None:
        """From now on read a large object past the page cache
        (:mod:`node.storage.direct_io`), in reads of at most ``max_read`` bytes."""
        if self.size >= DIRECT_MIN and self._direct is None and self.fd >= 0:
            self._direct = AlignedReader.open(self.fd, max_read)

    def read_ahead(self) -> None:
        """Read the whole (small) file now, saving the body its own thread hop.

        The bytes are checked against the stored ETag first: a corrupt small
        object raises :class:`DiskFileError` and is never served.
        """
        content = os.pread(self.fd, self.size, 0)
        if len(content) != self.size:
            raise DiskFileError(f"short read: {len(content)} of {self.size} bytes")
        expected = self.metadata.get("ETag")
        if expected and hashlib.md5(content).hexdigest() != expected:
            raise DiskFileError(f"MD5 of the data != ETag {expected}")
        self.content = content

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_post_metadata(key: str) -> bool:
    """Whether a POST replaces ``key``; everything else stays as the PUT wrote it."""
    k = key.lower()
    return (k.startswith("x-object-meta-") or k.startswith("x-object-transient-sysmeta-")
            or k in POST_HEADERS)


POST_HEADERS = frozenset({"content-disposition", "content-encoding", "content-language",
                          "cache-control", "expires", "x-robots-tag", "x-delete-at",
                          "x-object-manifest", "x-static-large-object"})


def merge_meta(data_meta: dict[str, Any], post_meta: dict[str, Any]) -> dict[str, Any]:
    """Data-file metadata with a newer POST's metadata applied over it."""
    merged = {k: v for k, v in data_meta.items() if not is_post_metadata(k)}
    merged.update(post_meta)
    return merged


def open_object(loc: ObjectLocation, state: ObjectState) -> OpenObject:
    """Open the winning ``.data`` of ``state``; raises DiskFileError if it is corrupt."""
    assert state.data is not None
    data_ts, name = state.data
    path = loc.hash_dir / name
    fd = os.open(path, os.O_RDONLY)
    try:
        metadata = read_metadata(path, fd)
        size = os.fstat(fd).st_size
        if str(size) != str(metadata.get("Content-Length")):
            raise DiskFileError(f"{path}: size {size} != Content-Length "
                                f"{metadata.get('Content-Length')}")
        if state.meta is not None:
            metadata = merge_meta(metadata, read_metadata(loc.hash_dir / state.meta[1]))
    except BaseException:
        os.close(fd)
        raise
    return OpenObject(fd, metadata, size, data_ts)


def quarantine(loc: ObjectLocation) -> Path:
    """Move a bad object directory aside so nothing serves it; returns where."""
    qdir = loc.device_path / "quarantined" / "objects"
    makedirs_durable(qdir, loc.device_path)
    dest = qdir / loc.hash
    n = 0
    while dest.exists():
        n += 1
        dest = qdir / f"{loc.hash}-{n}"
    shutil.move(str(loc.hash_dir), dest)
    invalidate_suffix(loc.part_dir, loc.suffix)
    return dest
