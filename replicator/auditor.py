"""The auditor: find rotten data before a client does, and move it aside.

**Objects.**  Every winning ``.data`` on every local device is read back at
``audit_bytes_per_second`` and checked against its own metadata: the size
against ``Content-Length`` and the MD5 against ``ETag``; unreadable
metadata counts as bad too.  A bad object's directory is moved to
``quarantined/objects/`` (:func:`node.storage.diskfile.quarantine`), which
also invalidates its suffix hash -- so the next REPLICATE from any peer sees
the difference and the peer pushes a good copy back.  Nothing here repairs
anything by itself: the replicator does.

**Databases.**  Every container and account database gets ``PRAGMA
integrity_check``; a damaged one is moved to ``quarantined/containers/``
(or ``accounts/``), and the DB replicator of a peer then finds it missing
and sends a whole copy.

The object walk is resumable across thread hops (about 1 MiB of reading per
hop, a big object spread over many), so pacing applies inside big objects
too and the event loop never waits on the disk.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.request import pathname2url

import trio

from node.log import log_event
from node.storage import diskfile
from node.storage.diskfile import DiskFileError, ObjectLocation, OpenObject
from node.storage.fsutil import makedirs_durable
from replicator.context import Context
from replicator.ratelimit import RateLimiter
from replicator.report import PassReport, PassService
from replicator.walk import DATA_DIRS, databases, objects

log = logging.getLogger("peerstack.auditor")

READ_CHUNK = 1 << 20
#: at most this many small objects per thread hop
BATCH_OBJECTS = 256


class _ObjectCheck:
    """Reading one object back, a piece at a time (blocking)."""

    def __init__(self, loc: ObjectLocation, obj: OpenObject, name: str) -> None:
        self.loc = loc
        self.obj = obj
        # An audit pass reads everything once: large objects skip the page
        # cache rather than evict what readers keep hot there.
        obj.bypass_cache(READ_CHUNK)
        self.name = name
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.pos = 0

    def read(self, budget: int) -> int:
        n = min(budget, self.obj.size - self.pos)
        chunk = self.obj.pread(self.pos, n) if n > 0 else b""
        if n > 0 and len(chunk) != n:
            raise DiskFileError(f"{self.loc.hash_dir / self.name}: short read at {self.pos}")
        self.md5.update(chunk)
        self.pos += n
        return n

    @property
    def done(self) -> bool:
        return self.pos >= self.obj.size

    def verdict(self) -> str | None:
        """Why the object is bad, or None."""
        etag = str(self.obj.metadata.get("ETag", "")).strip('"').lower()
        got = self.md5.hexdigest()
        return None if got == etag else f"md5 {got} != ETag {etag}"


class DeviceAudit:
    """Audits one device's objects, resumably; call :meth:`step` from worker threads."""

    def __init__(self, dev_path: Path) -> None:
        self.dev_path = dev_path
        self._walk: Iterator[tuple[int, Path]] = objects(dev_path)
        self._current: _ObjectCheck | None = None
        self.finished = False
        self.checked = 0
        self.quarantined: list[str] = []

    def step(self, budget: int) -> int:
        """Audit until ``budget`` bytes were read or a batch of objects is done; bytes read."""
        used = 0
        started = self.checked
        while used < budget and self.checked - started < BATCH_OBJECTS:
            if self._current is None:
                self._current = self._open_next()
                if self._current is None:
                    self.finished = True
                    break
            check = self._current
            try:
                used += check.read(budget - used)
                if check.done:
                    self._conclude(check, check.verdict())
            except (DiskFileError, OSError) as exc:
                self._conclude(check, str(exc))
        return used

    def _open_next(self) -> _ObjectCheck | None:
        for part, hash_dir in self._walk:
            loc = ObjectLocation(self.dev_path, part, hash_dir.name)
            state = diskfile.read_state(loc)
            if state.data is None:
                continue
            try:
                obj = diskfile.open_object(loc, state)
            except FileNotFoundError:
                continue  # replaced while we looked
            except DiskFileError as exc:
                self._quarantine(loc, state.data[1], str(exc))
                continue
            return _ObjectCheck(loc, obj, state.data[1])
        return None

    def _conclude(self, check: _ObjectCheck, problem: str | None) -> None:
        check.obj.close()
        self._current = None
        self.checked += 1
        if problem is not None:
            self._quarantine(check.loc, check.name, problem)

    def _quarantine(self, loc: ObjectLocation, name: str, problem: str) -> None:
        current = diskfile.read_state(loc).data
        if current is None or current[1] != name:
            return  # overwritten while we read it: the new file gets its own audit
        dest = diskfile.quarantine(loc)
        self.quarantined.append(str(dest))
        log_event(log, "auditor.quarantined", level=logging.ERROR, object=str(loc.hash_dir / name),
                  problem=problem, moved_to=str(dest))

    def close(self) -> None:
        if self._current is not None:
            self._current.obj.close()
            self._current = None


def check_database(db_file: Path) -> str | None:
    """What is wrong with a database file, or None if SQLite finds it sound (blocking)."""
    try:
        # mode=rw: a database removed meanwhile must not be re-created empty
        conn = sqlite3.connect(f"file:{pathname2url(str(db_file))}?mode=rw", uri=True, timeout=30)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    result = "; ".join(str(r[0]) for r in rows)
    return None if result == "ok" else result


def quarantine_database(dev_path: Path, kind: str, db_file: Path) -> Path:
    """Move a damaged database's directory to ``quarantined/<kind>s/`` (blocking)."""
    qdir = dev_path / "quarantined" / DATA_DIRS[kind]
    makedirs_durable(qdir, dev_path)
    dest = qdir / db_file.parent.name
    n = 0
    while dest.exists():
        n += 1
        dest = qdir / f"{db_file.parent.name}-{n}"
    shutil.move(str(db_file.parent), dest)
    return dest


class Auditor(PassService):
    """One node's auditor service: objects, then databases, every ``audit_interval``."""

    name = "audit"
    log = log

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.limiter = RateLimiter(ctx.config.audit_bytes_per_second)

    def interval(self) -> float:
        return self.ctx.config.audit_interval

    async def work(self, report: PassReport) -> None:
        for device in await trio.to_thread.run_sync(self.ctx.local.mounted):
            dev_path = self.ctx.local.path(device)
            await self._audit_objects(device, dev_path, report)
            await self._audit_databases(device, dev_path, report)

    async def _audit_objects(self, device: str, dev_path: Path, report: PassReport) -> None:
        audit = DeviceAudit(dev_path)
        try:
            while not audit.finished:
                used = await trio.to_thread.run_sync(audit.step, READ_CHUNK)
                report.add(device, bytes_read=used)
                await self.limiter.consume(used)
        finally:
            audit.close()
        report.add(device, objects_checked=audit.checked, objects_quarantined=len(audit.quarantined))

    async def _audit_databases(self, device: str, dev_path: Path, report: PassReport) -> None:
        for kind in ("container", "account"):
            dbs = await trio.to_thread.run_sync(lambda k=kind: list(databases(dev_path, k)))
            for _part, _hash, db_file in dbs:
                problem, size = await trio.to_thread.run_sync(_check_sized, db_file)
                report.add(device, dbs_checked=1, bytes_read=size)
                await self.limiter.consume(size)
                if problem is None:
                    continue
                dest = await trio.to_thread.run_sync(quarantine_database, dev_path, kind, db_file)
                report.add(device, dbs_quarantined=1)
                log_event(log, "auditor.db_quarantined", level=logging.ERROR, db=str(db_file),
                          problem=problem, moved_to=str(dest))


def _check_sized(db_file: Path) -> tuple[str | None, int]:
    try:
        size = db_file.stat().st_size
    except FileNotFoundError:
        return None, 0  # removed meanwhile (a handoff went home)
    problem = check_database(db_file)
    if problem is not None and not db_file.exists():
        return None, 0
    return problem, size
