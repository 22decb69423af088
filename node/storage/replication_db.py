"""Database replication on disk: sync points, merging rows, and whole copies.

Container and account databases replicate as Swift's do.  Rows are never
updated in place (see :mod:`node.storage.db`), so "the rows with ``ROWID``
above *n*" is exactly what changed since *n*.  Each database has an ``id``
(a uuid in ``info``); a receiver remembers, per sender id, the highest
sender ``ROWID`` it has merged -- its *incoming sync point* -- in a table
this module adds to every database it touches::

    CREATE TABLE incoming_sync (remote_id TEXT PRIMARY KEY, sync_point INTEGER NOT NULL)

A sync is then: the sender says who it is (:func:`local_state`: id, highest
``ROWID``, put/delete timestamps, metadata); the receiver merges the
timestamps and metadata and answers its point for that id
(:func:`receive_sync`); the sender sends the rows after the point in batches
(:func:`receive_rows`), each batch raising the point.  The point only moves
after the rows are committed, so a crash in between just resends rows, and
merging a row twice changes nothing (the newest timestamp per name wins).

A receiver that lacks the database, or lags more rows than are worth
sending one by one, gets a whole copy instead: a consistent snapshot made
with SQLite's backup API (:func:`snapshot`), streamed over, checked with
``PRAGMA integrity_check`` and then either installed with a fresh id (its
point for the sender set to the copy's highest ``ROWID``) or, if a database
appeared meanwhile, merged into it row by row (:func:`receive_copy`).

Everything here blocks; callers use worker threads.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from node.storage.account_db import AccountBroker
from node.storage.container_db import ContainerBroker
from node.storage.db import ConnectionPool, DatabaseBroker, transaction
from node.storage.paths import hash_path
from node.storage.replication_objects import ReplicationError
from node.storage.timestamp import Timestamp

BROKERS: dict[str, type[DatabaseBroker]] = {"container": ContainerBroker, "account": AccountBroker}
SYNC_SCHEMA = ("CREATE TABLE IF NOT EXISTS incoming_sync "
               "(remote_id TEXT PRIMARY KEY, sync_point INTEGER NOT NULL)")
#: rows per batch, for sending and for merging a copy
BATCH_ROWS = 1000

#: what each kind's rows must carry, and their types
ROW_FIELDS: dict[str, dict[str, type]] = {
    "container": {"name": str, "created_at": str, "size": int, "content_type": str,
                  "etag": str, "deleted": int},
    "account": {"name": str, "put_timestamp": str, "delete_timestamp": str,
                "object_count": int, "bytes_used": int, "deleted": int},
}


def make_broker(kind: str, pool: ConnectionPool, device_path: Path, partition: int,
                name_hash: str) -> DatabaseBroker:
    return BROKERS[kind](pool, device_path, partition, name_hash)


def _max_row(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute(f"SELECT COALESCE(MAX(ROWID), 0) FROM {table}").fetchone()[0]


def local_state(broker: DatabaseBroker) -> dict[str, Any]:
    """What a sender tells a receiver about its database."""
    with broker.pool.connection(broker.db_file) as conn:
        db_id, put_ts, del_ts, meta = conn.execute(
            "SELECT id, put_timestamp, delete_timestamp, metadata FROM info").fetchone()
        return {"id": db_id, "max_row": _max_row(conn, broker.table), "put_timestamp": put_ts,
                "delete_timestamp": del_ts, "metadata": json.loads(meta or "{}")}


def parse_state(doc: Any) -> dict[str, Any]:
    """Validate a sender's :func:`local_state` from the wire."""
    try:
        if not isinstance(doc["id"], str) or not doc["id"]:
            raise ValueError("id")
        int(doc["max_row"])
        Timestamp(doc["put_timestamp"])
        Timestamp(doc["delete_timestamp"])
        meta = doc["metadata"]
        if not isinstance(meta, dict) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                for v in meta.values()):
            raise ValueError("metadata")
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplicationError(400, f"bad database state: {exc}") from None
    return doc


def incoming_point(conn: sqlite3.Connection, remote_id: str) -> int:
    conn.execute(SYNC_SCHEMA)
    row = conn.execute("SELECT sync_point FROM incoming_sync WHERE remote_id = ?",
                       (remote_id,)).fetchone()
    return row[0] if row else 0


def _raise_point(conn: sqlite3.Connection, remote_id: str, point: int) -> None:
    conn.execute(SYNC_SCHEMA)
    conn.execute("INSERT INTO incoming_sync (remote_id, sync_point) VALUES (?, ?) "
                 "ON CONFLICT(remote_id) DO UPDATE SET sync_point = MAX(sync_point, excluded.sync_point)",
                 (remote_id, point))


def _merge_info(broker: DatabaseBroker, state: dict[str, Any]) -> None:
    """Take the newer put/delete timestamps and, per key, the newer metadata."""
    broker.update_put_timestamp(Timestamp(state["put_timestamp"]))
    broker.mark_deleted(Timestamp(state["delete_timestamp"]))
    with broker.pool.connection(broker.db_file) as conn, transaction(conn):
        (raw,) = conn.execute("SELECT metadata FROM info").fetchone()
        meta = json.loads(raw or "{}")
        changed = False
        for key, (value, ts) in state["metadata"].items():
            if key not in meta or meta[key][1] < ts:
                meta[key] = [value, ts]
                changed = True
        if changed:
            conn.execute("UPDATE info SET metadata = ?", (json.dumps(meta),))


def receive_sync(broker: DatabaseBroker, state: dict[str, Any]) -> dict[str, Any]:
    """Merge a sender's info; answer ``{"point", "id", "max_row"}`` for the sender to work from."""
    _merge_info(broker, state)
    with broker.pool.connection(broker.db_file) as conn, transaction(conn):
        point = incoming_point(conn, state["id"])
        db_id = conn.execute("SELECT id FROM info").fetchone()[0]
        return {"point": point, "id": db_id, "max_row": _max_row(conn, broker.table)}


def parse_rows(kind: str, rows: Any) -> list[dict[str, Any]]:
    """Validate rows from the wire against :data:`ROW_FIELDS`."""
    fields = ROW_FIELDS[kind]
    if not isinstance(rows, list):
        raise ReplicationError(400, "rows must be a list")
    for row in rows:
        if not isinstance(row, dict):
            raise ReplicationError(400, "a row must be an object")
        for key, typ in fields.items():
            if not isinstance(row.get(key), typ) or isinstance(row.get(key), bool):
                raise ReplicationError(400, f"row field {key!r} missing or not {typ.__name__}")
        for key in ("created_at", "put_timestamp", "delete_timestamp"):
            if key in fields:
                try:
                    Timestamp(row[key])
                except ValueError:
                    raise ReplicationError(400, f"row field {key!r} is not a timestamp") from None
    return rows


def receive_rows(broker: DatabaseBroker, remote_id: str, rows: list[dict[str, Any]],
                 point: int) -> None:
    """Merge a batch of a sender's rows, then remember how far we got."""
    broker.merge_rows(rows)
    with broker.pool.connection(broker.db_file) as conn, transaction(conn):
        _raise_point(conn, remote_id, point)


def snapshot(broker: DatabaseBroker, dest: Path) -> int:
    """A consistent copy of the database at ``dest``; returns its highest ``ROWID``."""
    src = sqlite3.connect(str(broker.db_file), timeout=30)
    try:
        dst = sqlite3.connect(str(dest))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            max_row = _max_row(dst, broker.table)
        finally:
            dst.close()
    finally:
        src.close()
    return max_row


def _check_copy(kind: str, path: Path, name_hash: str, hash_prefix: str, hash_suffix: str) -> None:
    """The copy must be a sound database of ``kind`` for the object named by ``name_hash``."""
    try:
        conn = sqlite3.connect(str(path))
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise ReplicationError(422, f"copied database is damaged: {result}")
            account, container = conn.execute("SELECT account, container FROM info").fetchone()
            conn.execute(f"SELECT ROWID FROM {BROKERS[kind].table} LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ReplicationError(422, f"copied database is unusable: {exc}") from None
    if hash_path(hash_prefix, hash_suffix, account, container) != name_hash:
        raise ReplicationError(400, "copied database belongs to another name")


def receive_copy(broker: DatabaseBroker, tmp: Path, sender_id: str, max_row: int,
                 hash_prefix: str, hash_suffix: str) -> str:
    """Install a whole copy sent by ``sender_id`` (``"installed"``) or merge it (``"merged"``).

    ``tmp`` is an fsynced file on the same device; it is consumed.
    """
    _check_copy(broker.kind, tmp, broker.hash, hash_prefix, hash_suffix)
    if not broker.exists():
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            # A copy keeps the sender's incoming points (it holds those rows) but
            # needs an id of its own, and knows it has every sender row to max_row.
            conn.execute("UPDATE info SET id = ?", (str(uuid.uuid4()),))
            _raise_point(conn, sender_id, max_row)
        finally:
            conn.close()
        if broker.install(tmp):
            return "installed"
        # created meanwhile: merge into it below
    pool = ConnectionPool(size=1)
    copy = BROKERS[broker.kind](pool, broker.device_path, 0, broker.hash)
    copy.db_file = tmp  # read the copy through the same broker code as the original
    try:
        point = 0
        while rows := copy.rows_since(point, BATCH_ROWS):
            broker.merge_rows(rows)
            point = rows[-1]["ROWID"]
        state = local_state(copy)
    finally:
        pool.close_all()
    _merge_info(broker, state)
    with broker.pool.connection(broker.db_file) as conn, transaction(conn):
        _raise_point(conn, sender_id, max_row)
    return "merged"
