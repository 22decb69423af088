"""A container's database: one row per object name, newest timestamp wins."""

from __future__ import annotations

import sqlite3
from typing import Any

from node.storage.db import DatabaseBroker

SCHEMA = """
CREATE TABLE object (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    content_type TEXT NOT NULL DEFAULT '',
    etag TEXT NOT NULL DEFAULT '',
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ix_object_deleted_name ON object (deleted, name);
CREATE TABLE info (
    account TEXT, container TEXT, created_at TEXT, put_timestamp TEXT,
    delete_timestamp TEXT, status_changed_at TEXT,
    object_count INTEGER NOT NULL DEFAULT 0, bytes_used INTEGER NOT NULL DEFAULT 0,
    reported_put_timestamp TEXT NOT NULL DEFAULT '0',
    reported_delete_timestamp TEXT NOT NULL DEFAULT '0',
    reported_object_count INTEGER NOT NULL DEFAULT -1,
    reported_bytes_used INTEGER NOT NULL DEFAULT -1,
    -- where to report totals: JSON list of updates.Target, from the container PUT
    account_targets TEXT NOT NULL DEFAULT '[]',
    metadata TEXT, id TEXT
);
"""


class ContainerBroker(DatabaseBroker):
    kind = "container"
    table = "object"
    columns = ("name", "created_at", "size", "content_type", "etag")
    schema = SCHEMA

    def is_deleted(self, info: dict[str, Any]) -> bool:
        return super().is_deleted(info) and not info["object_count"]

    @staticmethod
    def object_row(name: str, created_at: str, size: int, content_type: str, etag: str,
                   deleted: bool) -> dict[str, Any]:
        """One object row as :meth:`merge_rows` takes it."""
        return {"name": name, "created_at": created_at, "size": size,
                "content_type": content_type, "etag": etag, "deleted": int(deleted)}

    def put_object(self, name: str, created_at: str, size: int, content_type: str,
                   etag: str, deleted: bool) -> None:
        self.merge_rows([self.object_row(name, created_at, size, content_type, etag, deleted)])

    def _merge_row(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        old = conn.execute("SELECT created_at, size, deleted FROM object WHERE name = ?",
                           (row["name"],)).fetchone()
        if old is not None and old[0] >= row["created_at"]:
            return
        deleted = int(row["deleted"])
        count = 0 if deleted else 1
        size = 0 if deleted else int(row["size"])
        if old is not None:
            conn.execute("DELETE FROM object WHERE name = ?", (row["name"],))
            if not old[2]:
                count -= 1
                size -= old[1]
        conn.execute("INSERT INTO object (name, created_at, size, content_type, etag, deleted) "
                     "VALUES (?,?,?,?,?,?)",
                     (row["name"], row["created_at"], int(row["size"]), row["content_type"],
                      row["etag"], deleted))
        if count or size:
            conn.execute("UPDATE info SET object_count = object_count + ?, "
                         "bytes_used = bytes_used + ?", (count, size))
