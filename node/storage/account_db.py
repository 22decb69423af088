"""An account's database: one row per container with its reported totals."""

from __future__ import annotations

import sqlite3
from typing import Any

from node.storage.db import DatabaseBroker

SCHEMA = """
CREATE TABLE container (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    put_timestamp TEXT NOT NULL DEFAULT '0',
    delete_timestamp TEXT NOT NULL DEFAULT '0',
    object_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ix_container_deleted_name ON container (deleted, name);
CREATE TABLE info (
    account TEXT, container TEXT, created_at TEXT, put_timestamp TEXT,
    delete_timestamp TEXT, status_changed_at TEXT,
    container_count INTEGER NOT NULL DEFAULT 0, object_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0,
    metadata TEXT, id TEXT
);
"""


class AccountBroker(DatabaseBroker):
    kind = "account"
    table = "container"
    columns = ("name", "object_count", "bytes_used", "put_timestamp")
    schema = SCHEMA

    def put_container(self, name: str, put_timestamp: str, delete_timestamp: str,
                      object_count: int, bytes_used: int) -> None:
        self.merge_rows([{"name": name, "put_timestamp": put_timestamp,
                          "delete_timestamp": delete_timestamp, "object_count": object_count,
                          "bytes_used": bytes_used}])

    def _merge_row(self, conn: sqlite3.Connection, row: dict[str, Any]) -> None:
        """Keep the newest put and delete times; totals come with the newer report.

        A container reports its totals with its (unchanged) put timestamp,
        so a report at least as new as the stored one replaces the totals.
        """
        old = conn.execute("SELECT put_timestamp, delete_timestamp, object_count, bytes_used, "
                           "deleted FROM container WHERE name = ?", (row["name"],)).fetchone()
        put_ts, del_ts = row["put_timestamp"], row["delete_timestamp"]
        count, used = int(row["object_count"]), int(row["bytes_used"])
        if old is not None:
            if max(old[0], old[1]) > max(put_ts, del_ts):
                count, used = old[2], old[3]
            put_ts, del_ts = max(put_ts, old[0]), max(del_ts, old[1])
        deleted = int(del_ts > put_ts)
        if deleted:
            count = used = 0
        if old is not None:
            if (old[0], old[1], old[2], old[3], old[4]) == (put_ts, del_ts, count, used, deleted):
                return
            conn.execute("DELETE FROM container WHERE name = ?", (row["name"],))
            if not old[4]:
                conn.execute("UPDATE info SET container_count = container_count - 1, "
                             "object_count = object_count - ?, bytes_used = bytes_used - ?",
                             (old[2], old[3]))
        conn.execute("INSERT INTO container (name, put_timestamp, delete_timestamp, "
                     "object_count, bytes_used, deleted) VALUES (?,?,?,?,?,?)",
                     (row["name"], put_ts, del_ts, count, used, deleted))
        if not deleted:
            conn.execute("UPDATE info SET container_count = container_count + 1, "
                         "object_count = object_count + ?, bytes_used = bytes_used + ?",
                         (count, used))
