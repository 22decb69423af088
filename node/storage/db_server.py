"""What the container and account servers share: a database per name, served over HTTP.

Verbs on the database itself (``/<dev>/<part>/<a>`` for accounts,
``/<dev>/<part>/<a>/<c>`` for containers), as Swift answers them:

* ``PUT`` creates it (201) or refreshes its put timestamp and metadata
  (202); a PUT older than the stored DELETE is 409;
* ``HEAD`` (204) / ``GET`` (a listing: 200, or 204 when a plain-text listing
  is empty) report totals, timestamps and metadata; 404 when missing or
  deleted;
* ``POST`` updates metadata (204);
* ``DELETE`` marks it deleted (204, 404 if it was not there).

Rows one level down (objects in a container, containers in an account) are
written by the servers below with ``PUT``/``DELETE`` and
``X-Backend-Server: container`` (or ``account``) -- see
:mod:`node.storage.server`.  Subclasses say how.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from node.http_server import Request, Response, text_response
from node.storage.db import ConnectionPool, DatabaseBroker
from node.storage.devices import Devices, DeviceUnavailable
from node.storage.httputil import HTTPError, require_timestamp
from node.storage.listing import ListingError, content_type_for, parse_listing_query, render
from node.storage.metadata import MetadataError, check_metadata, header_case
from node.storage.paths import StoragePath, hash_path
from node.storage.timestamp import Timestamp
from node.storage.updates import Target, UpdateSender

T = TypeVar("T")


class DBServer:
    kind = ""  # "container" or "account"
    broker_class: type[DatabaseBroker] = DatabaseBroker
    #: metadata headers besides X-<Kind>-Meta-* and X-<Kind>-Sysmeta-*
    extra_meta: frozenset[str] = frozenset()

    def __init__(self, devices: Devices, hash_prefix: str, hash_suffix: str,
                 pool: ConnectionPool, updates: UpdateSender) -> None:
        self.devices = devices
        self.hash_prefix = hash_prefix
        self.hash_suffix = hash_suffix
        self.pool = pool
        self.updates = updates

    # ---- plumbing ------------------------------------------------------------

    def db_names(self, sp: StoragePath) -> tuple[str, str | None]:
        """(account, container) naming this request's database."""
        raise NotImplementedError

    def broker(self, sp: StoragePath) -> DatabaseBroker:
        """Blocking: check the device, name the database."""
        account, container = self.db_names(sp)
        device_path = self.devices.path(sp.device)
        name_hash = hash_path(self.hash_prefix, self.hash_suffix, account, container)
        return self.broker_class(self.pool, device_path, sp.partition, name_hash)

    async def run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    async def handle(self, request: Request, sp: StoragePath, row: bool) -> Response:
        """``row``: the request writes a row into the database, not the database itself."""
        if row:
            handlers = {"PUT": self.put_row, "DELETE": self.delete_row}
        else:
            handlers = {"PUT": self.put, "GET": self.get, "HEAD": self.get,
                        "POST": self.post, "DELETE": self.delete, "UPDATE": self.update_rows}
        handler = handlers.get(request.method)
        if handler is None:
            return text_response(405, "Method Not Allowed\n", [("Allow", ", ".join(sorted(handlers)))])
        try:
            return await handler(request, sp)
        except HTTPError as exc:
            return exc.response
        except DeviceUnavailable as exc:
            return text_response(507, f"{exc}\n")

    def metadata_updates(self, request: Request) -> dict[str, str]:
        """Metadata headers of this request (``X-Remove-*`` as empty values); 400 if over limits."""
        try:
            check_metadata(request.headers, self.kind)
        except MetadataError as exc:
            raise HTTPError(400, str(exc)) from None
        prefixes = (f"x-{self.kind}-meta-", f"x-{self.kind}-sysmeta-")
        removal = f"x-remove-{self.kind}-"
        out = {}
        for key, value in request.headers.items():
            if key.startswith(prefixes) or key in self.extra_meta:
                out[header_case(key)] = value
            elif key.startswith(removal):
                out[header_case(f"x-{self.kind}-" + key[len(removal):])] = ""
        return out

    def info_headers(self, info: dict[str, Any]) -> list[tuple[str, str]]:
        """Headers every HEAD/GET of a live database carries."""
        headers = [
            ("X-Timestamp", Timestamp(info["created_at"]).normal),
            ("X-PUT-Timestamp", Timestamp(info["put_timestamp"]).normal),
            ("X-Backend-Timestamp", Timestamp(info["created_at"]).internal),
            ("X-Backend-PUT-Timestamp", Timestamp(info["put_timestamp"]).internal),
            ("X-Backend-DELETE-Timestamp", Timestamp(info["delete_timestamp"]).internal),
            ("X-Backend-Status-Changed-At", Timestamp(info["status_changed_at"]).internal),
        ]
        headers.extend((k, v[0]) for k, v in info["metadata"].items() if v[0] != "")
        return headers

    def stats_headers(self, info: dict[str, Any]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def row_to_dict(self, row: tuple) -> dict[str, Any]:
        raise NotImplementedError

    # ---- verbs on the database ----------------------------------------------

    async def put(self, request: Request, sp: StoragePath) -> Response:
        ts = require_timestamp(request)
        meta = self.metadata_updates(request)
        account, container = self.db_names(sp)

        def apply() -> tuple[DatabaseBroker, bool]:
            broker = self.broker(sp)
            created = broker.create(account, container, ts)
            if not created:
                was_deleted = broker.is_deleted(broker.info())
                broker.update_put_timestamp(ts)
                if broker.is_deleted(broker.info()):
                    raise HTTPError(409, "Conflict")
                created = was_deleted
            broker.update_metadata(meta, ts)
            self.after_put(broker, request)
            return broker, created

        broker, created = await self.run(apply)
        refused = await self.report_up(request, sp, broker)
        if refused is not None:
            return refused
        return text_response(201 if created else 202, "Created\n" if created else "Accepted\n")

    def after_put(self, broker: DatabaseBroker, request: Request) -> None:
        """Blocking hook after a PUT of the database."""

    async def report_up(self, request: Request, sp: StoragePath,
                        broker: DatabaseBroker) -> Response | None:
        """Tell the level above about a change; a response to return instead, if any."""
        return None

    async def get(self, request: Request, sp: StoragePath) -> Response:
        query = None
        content_type = ""
        if request.method == "GET":
            try:
                query, params = parse_listing_query(request.query_string)
                content_type = content_type_for(params, request.headers.get("accept"))
            except ListingError as exc:
                return text_response(exc.status, f"{exc}\n")

        def read() -> tuple[dict[str, Any] | None, list[tuple]]:
            broker = self.broker(sp)
            if not broker.exists():
                return None, []
            info = broker.info()
            if broker.is_deleted(info):
                raise HTTPError(404, "Not Found", self.info_headers(info)[2:6])
            return info, broker.list(query) if query is not None else []

        info, rows = await self.run(read)
        if info is None:
            return text_response(404, "Not Found\n")
        headers = self.info_headers(info) + self.stats_headers(info)
        if query is None:
            return Response(204, headers, b"")
        if not rows and content_type == "text/plain":
            return Response(204, headers, b"")
        name = info["container"] if self.kind == "container" else info["account"]
        body = render(content_type, self.kind, name, rows, self.row_to_dict)
        headers.append(("Content-Type", f"{content_type}; charset=utf-8"))
        return Response(200, headers, body)

    async def post(self, request: Request, sp: StoragePath) -> Response:
        ts = require_timestamp(request)
        meta = self.metadata_updates(request)

        def apply() -> None:
            broker = self.broker(sp)
            if not broker.exists() or broker.is_deleted(broker.info()):
                raise HTTPError(404, "Not Found")
            broker.update_metadata(meta, ts)

        await self.run(apply)
        return Response(204, [], b"")

    async def delete(self, request: Request, sp: StoragePath) -> Response:
        ts = require_timestamp(request)

        def apply() -> tuple[DatabaseBroker, bool]:
            broker = self.broker(sp)
            if not broker.exists():
                raise HTTPError(404, "Not Found")
            info = broker.info()
            self.check_deletable(info)
            existed = not broker.is_deleted(info)
            broker.mark_deleted(ts)
            if not broker.is_deleted(broker.info()):
                raise HTTPError(409, "Conflict")
            return broker, existed

        broker, existed = await self.run(apply)
        await self.report_up(request, sp, broker)
        if existed:
            return Response(204, [], b"")
        return text_response(404, "Not Found\n")

    def check_deletable(self, info: dict[str, Any]) -> None:
        """Raise HTTPError if the database may not be deleted now."""

    # ---- rows ------------------------------------------------------------

    async def put_row(self, request: Request, sp: StoragePath) -> Response:
        raise NotImplementedError

    async def delete_row(self, request: Request, sp: StoragePath) -> Response:
        raise NotImplementedError

    async def update_rows(self, request: Request, sp: StoragePath) -> Response:
        """Several rows in one request (``UPDATE``), where the database takes them."""
        raise HTTPError(405, "Method Not Allowed")

    def broker_for_row(self, sp: StoragePath) -> DatabaseBroker:
        """Blocking: the database a row goes into; 404 unless it exists.

        Accounts whose names start with ``.`` (system accounts) get their
        databases made on first use, like Swift's ``auto_create_account_prefix``.
        """
        broker = self.broker(sp)
        if not broker.exists():
            account, container = self.db_names(sp)
            if not account.startswith("."):
                raise HTTPError(404, "Not Found")
            broker.create(account, container, Timestamp.now())
        return broker


def targets_json(targets: list[Target]) -> str:
    return json.dumps([asdict(t) for t in targets])
