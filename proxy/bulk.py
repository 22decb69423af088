"""Bulk delete (``POST /v1/<account>?bulk-delete``) and the report format it shares with SLO deletes.

The body lists one URL-encoded ``/container/object`` (or ``/container``)
per line, at most ``MAX_DELETES`` lines.  Objects are deleted a few at a
time in parallel, containers after the objects of the same request (so
"empty this container, then delete it" works in one call).  The answer is
``200`` with Swift's report -- ``Number Deleted``, ``Number Not Found``,
``Errors``, ``Response Status`` -- as JSON when the client accepts it,
otherwise as ``Key: value`` lines.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field

import trio

from node.http_server import BadRequest, Request, Response
from proxy.acl import allows_write
from proxy.swift_call import SwiftCall
from proxy.swift_limits import check_container_name, check_object_name
from proxy.swift_responses import error, status_line

MAX_DELETES = 10000
MAX_FAILED_DELETES = 1000
DELETE_CONCURRENCY = 8
MAX_PATH_BYTES = 1024 + 256 + 8

BULK_DELETE_INFO = {"max_deletes_per_request": MAX_DELETES, "max_failed_deletes": MAX_FAILED_DELETES}


@dataclass
class BulkResult:
    deleted: int = 0
    not_found: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: set when the request as a whole was bad (``400 Bad Request`` in the report)
    status: int = 200
    body: str = ""

    def response(self, request: Request) -> Response:
        status = self.status
        if status == 200 and self.errors:
            status = 400
        accept = request.headers.get("accept") or ""
        report = {"Number Deleted": self.deleted, "Number Not Found": self.not_found,
                  "Response Status": status_line(status), "Response Body": self.body,
                  "Errors": [[path, why] for path, why in self.errors]}
        if "json" in accept:
            return Response(200, [("Content-Type", "application/json; charset=utf-8")],
                            json.dumps(report).encode())
        lines = [f"Number Deleted: {self.deleted}", f"Number Not Found: {self.not_found}",
                 f"Response Body: {self.body}", f"Response Status: {status_line(status)}", "Errors:"]
        lines += [f"{path}, {why}" for path, why in self.errors]
        return Response(200, [("Content-Type", "text/plain; charset=utf-8")],
                        ("\n".join(lines) + "\n").encode())


async def _may_write(call: SwiftCall, container: str) -> bool:
    if call.owner:
        return True
    info = await call.containers.get(call.cc, call.account, container)
    return info.status // 100 == 2 and allows_write(info.headers.get("x-container-write"), call.identity)


async def delete_paths(call: SwiftCall, paths: list[str], result: BulkResult) -> None:
    """Delete each ``/container/object`` (objects in parallel, then containers)."""
    objects: list[tuple[str, str, str]] = []
    containers: list[tuple[str, str]] = []
    for raw in paths:
        container, sep, obj = raw.lstrip("/").partition("/")
        bad = check_container_name(container) if container else None
        if not container or bad or (obj and check_object_name(obj)):
            result.errors.append((raw, "400 Bad Request"))
        elif obj:
            objects.append((raw, container, obj))
        else:
            containers.append((raw, container))
    limiter = trio.Semaphore(DELETE_CONCURRENCY)

    async def delete_object(raw: str, container: str, obj: str) -> None:
        async with limiter:
            if not await _may_write(call, container):
                result.errors.append((raw, status_line(403 if call.identity else 401)))
                return
            resp = await call.cc.delete_object(call.account, container, obj)
        _book(result, raw, resp.status)

    async with trio.open_nursery() as nursery:
        for raw, container, obj in objects:
            nursery.start_soon(delete_object, raw, container, obj)
    for raw, container in containers:
        if not call.owner:
            result.errors.append((raw, status_line(403 if call.identity else 401)))
            continue
        resp = await call.cc.delete_container(call.account, container)
        call.containers.forget(call.account, container)
        _book(result, raw, resp.status)


def _book(result: BulkResult, raw: str, status: int) -> None:
    if status // 100 == 2:
        result.deleted += 1
    elif status == 404:
        result.not_found += 1
    else:
        result.errors.append((raw, status_line(status)))


async def bulk_delete(call: SwiftCall) -> Response:
    """``POST|DELETE /v1/<account>?bulk-delete``."""
    result = BulkResult()
    try:
        body = await call.request.read_body(MAX_DELETES * MAX_PATH_BYTES * 3)
    except BadRequest:
        return error(413, f"Maximum Bulk Deletes: {MAX_DELETES} per request")
    paths = []
    for line in body.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        path = urllib.parse.unquote(line, errors="replace")
        if len(path.encode("utf-8")) > MAX_PATH_BYTES or "\ufffd" in path:
            result.errors.append((line, "400 Bad Request"))
            continue
        paths.append(path)
    if len(paths) > MAX_DELETES:
        return error(413, f"Maximum Bulk Deletes: {MAX_DELETES} per request")
    if not paths and not result.errors:
        result.status = 400
        result.body = "Invalid bulk delete."
        return result.response(call.request)
    await delete_paths(call, paths, result)
    return result.response(call.request)
