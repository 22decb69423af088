"""The container server: object listings and totals, one SQLite database per container.

Beyond :mod:`node.storage.db_server`:

* object rows arrive from object servers as ``PUT``/``DELETE
  /<dev>/<part>/<a>/<c>/<o>`` with ``X-Backend-Server: container``,
  ``X-Timestamp`` and (for PUT) ``X-Size``, ``X-Content-Type``, ``X-Etag``;
  201 / 204, 404 if the container does not exist; rows arriving together
  are committed together (:mod:`node.storage.group_commit`);
* a container ``DELETE`` is 409 while it holds objects;
* totals go up to the account servers named by ``X-Account-Host`` /
  ``-Device`` / ``-Partition``: at once after a container PUT or DELETE
  (an account server's 404 turns the PUT into a 404, as in Swift), and,
  after object rows change, from :meth:`ContainerServer.report_loop`, at
  most once per container per :data:`REPORT_INTERVAL`.  The targets are
  remembered in the database from the container PUT.  Undelivered reports
  become async pendings (kind ``account``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import trio

from node.http_server import Request, Response, text_response
from node.log import log_event
from node.storage.container_db import ContainerBroker
from node.storage.db import DatabaseBroker
from node.storage.db_server import DBServer, targets_json
from node.storage.devices import DeviceUnavailable
from node.storage.group_commit import GroupCommit
from node.storage.httputil import HTTPError, parse_timestamp
from node.storage.paths import StoragePath, check_object_name
from node.storage.timestamp import Timestamp
from node.storage.updates import Target, parse_targets

log = logging.getLogger("peerstack.storage")

#: seconds between reports of object-count changes to the account servers
REPORT_INTERVAL = 1.0


#: the largest ``UPDATE`` body taken (a few thousand rows)
MAX_ROW_BATCH_BYTES = 4 << 20


def _object_row(obj: str, header: Callable[[str], str | None], deleted: bool) -> dict[str, Any]:
    """A listing row from a row update's headers (``header`` looks one up); 400 if bad."""
    ts = parse_timestamp(header("x-timestamp"))
    size = 0
    content_type = etag = ""
    if not deleted:
        try:
            size = int(header("x-size") or "")
        except ValueError:
            raise HTTPError(400, "Missing or bad X-Size") from None
        if size < 0:
            raise HTTPError(400, "Missing or bad X-Size")
        content_type = header("x-content-type") or ""
        etag = header("x-etag") or ""
        if not content_type or not etag:
            raise HTTPError(400, "Missing X-Content-Type or X-Etag")
    return ContainerBroker.object_row(obj, ts.internal, size, content_type, etag, deleted)


class ContainerServer(DBServer):
    kind = "container"
    broker_class = ContainerBroker
    extra_meta = frozenset({"x-container-read", "x-container-write", "x-container-sync-to",
                            "x-container-sync-key", "x-versions-location", "x-history-location"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.row_commits: GroupCommit[dict[str, Any]] = GroupCommit()
        #: containers whose totals changed since they were last reported
        self._dirty: dict[tuple[str, int, str, str], str] = {}
        self._wake = trio.Event()

    def db_names(self, sp: StoragePath) -> tuple[str, str | None]:
        return sp.account, sp.container

    def stats_headers(self, info: dict[str, Any]) -> list[tuple[str, str]]:
        return [("X-Container-Object-Count", str(info["object_count"])),
                ("X-Container-Bytes-Used", str(info["bytes_used"]))]

    def row_to_dict(self, row: tuple) -> dict[str, Any]:
        name, created_at, size, content_type, etag = row
        return {"name": name, "hash": etag, "bytes": size, "content_type": content_type,
                "last_modified": Timestamp(created_at).isoformat}

    def check_deletable(self, info: dict[str, Any]) -> None:
        if info["object_count"]:
            raise HTTPError(409, "Conflict: container not empty")

    def after_put(self, broker: DatabaseBroker, request: Request) -> None:
        targets = self._targets(request)
        if targets:
            broker.set_info(account_targets=targets_json(targets))

    @staticmethod
    def _targets(request: Request) -> list[Target]:
        try:
            return parse_targets(request.headers, "account")
        except ValueError as exc:
            raise HTTPError(400, f"Bad account update headers: {exc}") from None

    async def put(self, request: Request, sp: StoragePath) -> Response:
        self._targets(request)  # refuse bad headers before touching the disk
        return await super().put(request, sp)

    async def report_up(self, request: Request, sp: StoragePath,
                        broker: DatabaseBroker) -> Response | None:
        targets = self._targets(request)
        statuses = await self._report(broker, targets, request.request_id)
        if any(status == 404 for status in statuses.values()):
            return text_response(404, "Account not found\n")
        return None

    async def _report(self, broker: DatabaseBroker, targets: list[Target],
                      rid: str) -> dict[Target, int | None]:
        """Send the container's totals to ``targets``; remember them if all took it."""
        if not targets:
            return {}
        info = await self.run(broker.info)
        headers = {"X-Put-Timestamp": info["put_timestamp"],
                   "X-Delete-Timestamp": info["delete_timestamp"],
                   "X-Object-Count": str(info["object_count"]),
                   "X-Bytes-Used": str(info["bytes_used"])}
        newest = max(Timestamp(info["put_timestamp"]), Timestamp(info["delete_timestamp"]))
        statuses = await self.updates.send_or_save(
            "account", "PUT", targets, [info["account"], info["container"]], headers, rid,
            broker.device_path, broker.hash, newest)
        if all(s is not None and 200 <= s < 300 for s in statuses.values()):
            await self.run(lambda: broker.set_info(
                reported_put_timestamp=info["put_timestamp"],
                reported_delete_timestamp=info["delete_timestamp"],
                reported_object_count=info["object_count"],
                reported_bytes_used=info["bytes_used"]))
        return statuses

    # ---- object rows -----------------------------------------------------

    async def put_row(self, request: Request, sp: StoragePath) -> Response:
        return await self._row(request, sp, deleted=False)

    async def delete_row(self, request: Request, sp: StoragePath) -> Response:
        return await self._row(request, sp, deleted=True)

    async def _row(self, request: Request, sp: StoragePath, deleted: bool) -> Response:
        assert sp.obj is not None
        await self._merge(sp, [_object_row(sp.obj, request.headers.get, deleted)], request.request_id)
        if deleted:
            return Response(204, [], b"")
        return text_response(201, "Created\n")

    async def update_rows(self, request: Request, sp: StoragePath) -> Response:
        """``UPDATE``: a JSON batch of object rows, merged in one transaction.

        The body is ``{"rows": [{"method": "PUT"|"DELETE", "obj": name,
        "headers": {...}}, ...]}``, each entry what a single row ``PUT`` or
        ``DELETE`` would have carried.  Object servers send it when rows for
        this container pile up (:class:`node.storage.updates.UpdateSender`);
        one bad entry refuses the whole batch.
        """
        try:
            doc = json.loads(await request.read_body(MAX_ROW_BATCH_BYTES))
            entries = doc["rows"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("no rows")
            rows = []
            for entry in entries:
                method, obj, headers = entry["method"], entry["obj"], entry["headers"]
                if method not in ("PUT", "DELETE") or not isinstance(obj, str) \
                        or not isinstance(headers, dict):
                    raise ValueError("bad row")
                check_object_name(obj)
                lowered = {str(k).lower(): str(v) for k, v in headers.items()}
                rows.append(_object_row(obj, lowered.get, method == "DELETE"))
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPError(400, f"Bad row batch: {exc}") from None
        await self._merge(sp, rows, request.request_id)
        return Response(204, [], b"")

    async def _merge(self, sp: StoragePath, rows: list[dict[str, Any]], rid: str) -> None:
        def commit(batch: list[dict[str, Any]]) -> None:
            self.broker_for_row(sp).merge_rows(batch)

        # Concurrent rows for this container share one transaction (and fsync).
        key = (sp.device, sp.partition, sp.account, sp.container)
        await self.row_commits.submit_many(key, rows, commit)
        self._dirty[(sp.device, sp.partition, sp.account, sp.container or "")] = rid
        self._wake.set()

    async def report_loop(self) -> None:
        """Report changed totals to account servers, debounced; runs forever."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(REPORT_INTERVAL)
            dirty, self._dirty = self._dirty, {}
            for (device, partition, account, container), rid in dirty.items():
                sp = StoragePath(device, partition, account, container)

                def load(sp: StoragePath = sp) -> tuple[DatabaseBroker, list[Target]] | None:
                    broker = self.broker(sp)
                    info = broker.info()
                    unchanged = (info["reported_object_count"] == info["object_count"]
                                 and info["reported_bytes_used"] == info["bytes_used"]
                                 and info["reported_put_timestamp"] == info["put_timestamp"]
                                 and info["reported_delete_timestamp"] == info["delete_timestamp"])
                    if unchanged:
                        return None
                    targets = [Target(**t) for t in json.loads(info["account_targets"])]
                    return broker, targets

                try:
                    found = await self.run(load)
                except (DeviceUnavailable, OSError, sqlite3.Error) as exc:
                    log_event(log, "storage.report_skipped", level=logging.WARNING, rid=rid,
                              container=f"/{account}/{container}", error=str(exc))
                    continue
                if found:
                    await self._report(found[0], found[1], rid)
