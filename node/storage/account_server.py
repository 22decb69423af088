"""The account server: container listings and totals, one SQLite database per account.

Beyond :mod:`node.storage.db_server`: container rows arrive from container
servers as ``PUT /<dev>/<part>/<a>/<c>`` with ``X-Backend-Server: account``
and ``X-Put-Timestamp``, ``X-Delete-Timestamp``, ``X-Object-Count``,
``X-Bytes-Used``; 201 (204 when the row says the container is deleted),
404 if the account does not exist or is deleted.
"""

from __future__ import annotations

from typing import Any

from node.http_server import Request, Response, text_response
from node.storage.account_db import AccountBroker
from node.storage.db_server import DBServer
from node.storage.httputil import HTTPError, require_timestamp
from node.storage.paths import StoragePath
from node.storage.timestamp import ZERO, Timestamp


class AccountServer(DBServer):
    kind = "account"
    broker_class = AccountBroker

    def db_names(self, sp: StoragePath) -> tuple[str, str | None]:
        return sp.account, None

    def stats_headers(self, info: dict[str, Any]) -> list[tuple[str, str]]:
        return [("X-Account-Container-Count", str(info["container_count"])),
                ("X-Account-Object-Count", str(info["object_count"])),
                ("X-Account-Bytes-Used", str(info["bytes_used"]))]

    def row_to_dict(self, row: tuple) -> dict[str, Any]:
        name, count, used, put_ts = row
        return {"name": name, "count": count, "bytes": used,
                "last_modified": Timestamp(put_ts).isoformat}

    async def put_row(self, request: Request, sp: StoragePath) -> Response:
        headers = request.headers
        put_ts = require_timestamp(request, "x-put-timestamp")
        del_ts = ZERO
        if headers.get("x-delete-timestamp") is not None:
            del_ts = require_timestamp(request, "x-delete-timestamp")
        try:
            count = int(headers.get("x-object-count") or "0")
            used = int(headers.get("x-bytes-used") or "0")
        except ValueError:
            raise HTTPError(400, "Bad X-Object-Count or X-Bytes-Used") from None
        assert sp.container is not None

        def apply() -> None:
            broker = self.broker_for_row(sp)
            if broker.is_deleted(broker.info()):
                raise HTTPError(404, "Not Found")
            broker.put_container(sp.container, put_ts.internal, del_ts.internal, count, used)

        await self.run(apply)
        if del_ts > put_ts:
            return Response(204, [], b"")
        return text_response(201, "Created\n")

    async def delete_row(self, request: Request, sp: StoragePath) -> Response:
        raise HTTPError(405, "Container rows are deleted with a PUT carrying X-Delete-Timestamp")
