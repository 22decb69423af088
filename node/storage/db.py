"""SQLite databases for containers and accounts, one file each.

A container's database holds one row per object (name, timestamp, size,
content type, etag, deleted flag); an account's holds one row per container.
Rows are never updated in place: a newer row for a name deletes the old one
and is inserted again, so ``ROWID`` (AUTOINCREMENT) only grows and
"rows since ROWID n" is exactly what changed -- the sync point the DB
replicator works from (:meth:`DatabaseBroker.rows_since`,
:meth:`merge_rows`).  Deleted rows stay, flagged, as tombstones.

Files: ``<device>/<containers|accounts>/<part>/<hash[-3:]>/<hash>/<hash>.db``.
A new database is built in ``tmp/``, fsynced, and hard-linked into place
(so two creators race safely), then opened in WAL mode with
``synchronous=FULL``: a committed row is on disk before we answer.

Every method blocks; servers call them through ``trio.to_thread.run_sync``.
Connections are cached per file in a small LRU (:class:`ConnectionPool`),
each with a lock, because one sqlite connection must not be used by two
threads at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.storage.fsutil import fsync_dir, makedirs_durable, unlink_quietly
from node.storage.timestamp import ZERO, Timestamp

#: highest code point: a marker after every name with a given prefix
_LAST = "\U0010ffff"


class _Slot:
    __slots__ = ("conn", "lock", "evicted", "inode")

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()
        self.evicted = False
        #: (st_dev, st_ino) of the file the connection has open
        self.inode: tuple[int, int] | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ConnectionPool:
    """Open sqlite connections, least recently used closed first.

    A connection evicted while a thread uses it is closed by that thread
    when it is done, so eviction never waits on a busy database.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._slots: OrderedDict[str, _Slot] = OrderedDict()

    @contextmanager
    def connection(self, path: Path) -> Iterator[sqlite3.Connection]:
        """The connection for ``path``, held exclusively for the ``with`` block."""
        key = str(path)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            while len(self._slots) > self.size:
                self._evict(self._slots.popitem(last=False)[1])
        with slot.lock:
            try:
                # The replicator may have removed this database (a reverted
                # handoff) or the auditor quarantined it since the connection
                # was opened: writing through the old descriptor would land in
                # a file nobody reads again.
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    slot.close()
                    raise
                inode = (st.st_dev, st.st_ino)
                if slot.conn is not None and slot.inode != inode:
                    slot.close()
                if slot.conn is None:
                    slot.conn = _open(path)
                    slot.inode = inode
                yield slot.conn
            finally:
                if slot.evicted:
                    slot.close()

    @staticmethod
    def _evict(slot: _Slot) -> None:
        slot.evicted = True
        if slot.lock.acquire(blocking=False):
            try:
                slot.close()
            finally:
                slot.lock.release()

    def close_all(self) -> None:
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            self._evict(slot)


def _open(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass
class ListingQuery:
    """Listing parameters, as Swift's container and account GETs take them."""

    limit: int = 10000
    marker: str = ""
    end_marker: str = ""
    prefix: str = ""
    delimiter: str = ""
    reverse: bool = False
    path: str | None = None


def _after_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    last = prefix[-1]
    if last == _LAST:
        return None
    return prefix[:-1] + chr(ord(last) + 1)


class DatabaseBroker:
    """What container and account databases share: info, metadata, listing, sync.

    Subclasses set ``table`` (the row table), ``columns`` (what a listing
    returns, ``name`` first), ``schema`` and the info columns they keep.
    """

    kind = ""
    table = ""
    columns: tuple[str, ...] = ()
    schema = ""

    def __init__(self, pool: ConnectionPool, device_path: Path, partition: int,
                 name_hash: str) -> None:
        self.pool = pool
        self.device_path = device_path
        self.hash = name_hash
        self.db_dir = device_path / f"{self.kind}s" / str(partition) / name_hash[-3:] / name_hash
        self.db_file = self.db_dir / f"{name_hash}.db"

    def exists(self) -> bool:
        return self.db_file.exists()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        with self.pool.connection(self.db_file) as conn:
            yield conn

    def install(self, tmp: str | Path) -> bool:
        """Durably make the finished database file ``tmp`` this broker's database.

        A hard link, not a rename: if another writer installed one first, that
        one stays and this returns False (the caller still removes ``tmp``).
        """
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        makedirs_durable(self.db_dir, self.device_path)
        try:
            os.link(tmp, self.db_file)
        except FileExistsError:
            return False
        fsync_dir(self.db_dir)
        return True

    def create(self, account: str, container: str | None, put_timestamp: Timestamp) -> bool:
        """Create the database durably; False if it already existed."""
        if self.exists():
            return False
        tmp_dir = self.device_path / "tmp"
        makedirs_durable(tmp_dir, self.device_path)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".db-", suffix=".db")
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript(self.schema)
                now = Timestamp.now().internal
                conn.execute(
                    "INSERT INTO info (account, container, created_at, put_timestamp, "
                    "delete_timestamp, status_changed_at, metadata, id) VALUES (?,?,?,?,?,?,?,?)",
                    (account, container, now, put_timestamp.internal, ZERO.internal, now, "{}",
                     str(uuid.uuid4())))
            finally:
                conn.close()
            return self.install(tmp)
        finally:
            unlink_quietly(tmp)

    def info(self) -> dict[str, Any]:
        with self._conn() as conn:
            cur = conn.execute("SELECT * FROM info")
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        info = dict(zip(names, row))
        info["metadata"] = json.loads(info["metadata"] or "{}")
        return info

    def is_deleted(self, info: dict[str, Any]) -> bool:
        return info["delete_timestamp"] > info["put_timestamp"]

    def update_put_timestamp(self, ts: Timestamp) -> None:
        with self._conn() as conn, transaction(conn):
            conn.execute("UPDATE info SET put_timestamp = ?, status_changed_at = ? "
                         "WHERE put_timestamp < ?", (ts.internal, Timestamp.now().internal, ts.internal))

    def mark_deleted(self, ts: Timestamp) -> None:
        with self._conn() as conn, transaction(conn):
            conn.execute("UPDATE info SET delete_timestamp = ?, status_changed_at = ? "
                         "WHERE delete_timestamp < ?", (ts.internal, Timestamp.now().internal, ts.internal))

    def update_metadata(self, updates: dict[str, str], ts: Timestamp) -> None:
        """Set each header to its value unless the stored one is newer ("" removes)."""
        if not updates:
            return
        with self._conn() as conn, transaction(conn):
            (raw,) = conn.execute("SELECT metadata FROM info").fetchone()
            meta = json.loads(raw or "{}")
            for key, value in updates.items():
                old = meta.get(key)
                if old is None or old[1] < ts.internal:
                    meta[key] = [value, ts.internal]
            conn.execute("UPDATE info SET metadata = ?", (json.dumps(meta),))

    def set_info(self, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._conn() as conn, transaction(conn):
            conn.execute(f"UPDATE info SET {cols}", tuple(values.values()))

    # ---- rows --------------------------------------------------------------

    def _merge_row(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def merge_rows(self, rows: list[dict[str, Any]]) -> None:
        """Apply rows (newest wins per name) in one transaction."""
        with self._conn() as conn, transaction(conn):
            for row in rows:
                self._merge_row(conn, row)

    def rows_since(self, rowid: int, count: int = 1000) -> list[dict[str, Any]]:
        """Rows (deleted ones too) with ``ROWID > rowid``, oldest first."""
        with self._conn() as conn:
            cur = conn.execute(f"SELECT ROWID, * FROM {self.table} WHERE ROWID > ? "
                               f"ORDER BY ROWID LIMIT ?", (rowid, count))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def list(self, q: ListingQuery) -> list[tuple]:
        """Listing rows (``self.columns``) and subdirectories (``(name,)`` 1-tuples).

        As Swift: with a delimiter, names sharing ``prefix + ... + delimiter``
        fold into one subdir entry, found by re-querying past the whole
        subtree, so each query walks the name index and no more rows than
        the page needs are read.
        """
        prefix, delimiter, marker, end_marker = q.prefix, q.delimiter, q.marker, q.end_marker
        if q.path is not None:
            prefix = q.path.rstrip("/") + "/" if q.path else ""
            delimiter = "/"
        cols = ", ".join(self.columns)
        order = "DESC" if q.reverse else "ASC"
        upper = _after_prefix(prefix) if prefix else None
        results: list[tuple] = []
        with self._conn() as conn:
            while len(results) < q.limit:
                sql = f"SELECT {cols} FROM {self.table} WHERE deleted = 0"
                args: list[Any] = []
                lo, hi = (end_marker, marker) if q.reverse else (marker, end_marker)
                if lo:
                    sql += " AND name > ?"
                    args.append(lo)
                if hi:
                    sql += " AND name < ?"
                    args.append(hi)
                if prefix:
                    sql += " AND name >= ?"
                    args.append(prefix)
                    if upper is not None:
                        sql += " AND name < ?"
                        args.append(upper)
                sql += f" ORDER BY name {order} LIMIT ?"
                args.append(q.limit - len(results))
                # iterate the cursor lazily: after a subdir we re-query, and
                # rows never stepped over are never read
                seen = 0
                requery = False
                for row in conn.execute(sql, args):
                    seen += 1
                    name = row[0]
                    marker = name
                    if q.path is not None and name == prefix:
                        continue  # the directory marker itself is not its own child
                    end = name.find(delimiter, len(prefix)) if delimiter else -1
                    if end < 0:
                        results.append(row)
                        continue
                    subdir = name[:end + len(delimiter)]
                    if q.path is not None and len(name) == len(subdir):
                        results.append(row)  # "dir/" itself is an object in path mode
                        continue
                    marker = subdir if q.reverse else (
                        name[:end] + delimiter[:-1] + chr(ord(delimiter[-1]) + 1))
                    if q.path is None and subdir != q.marker:
                        results.append((subdir,))
                    requery = True
                    break
                if not requery and seen < args[-1]:
                    break
        return results[:q.limit]
