"""JSON plumbing shared by the OpenStack-style APIs (images, compute).

OpenStack services answer errors as ``{"<kind>": {"message": ..., "code":
N}}`` (``badRequest``, ``itemNotFound``, ``forbidden``, ``conflict``...);
clients (openstackclient, novaclient) print ``message``.  :class:`APIError`
carries such an answer out of any depth of handler code; the APIs turn it
into a response at the top.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from node.http_server import BadRequest, ClientDisconnected, Request, Response
from proxy.auth import Identity

ERROR_KINDS = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "methodNotAllowed", 409: "conflict", 413: "overLimit", 415: "badMediaType",
    500: "computeFault", 501: "notImplemented", 503: "serviceUnavailable",
}
MAX_JSON_BODY = 1 << 20


class APIError(Exception):
    """An OpenStack error answer: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        kind = ERROR_KINDS.get(self.status, "error")
        return json_response(self.status, {kind: {"message": self.message, "code": self.status}})


def caller(identify: Callable[[Request], Identity | None], request: Request) -> Identity:
    """Who is asking: 401 if nobody, 403 if a reader asks for a change (owner or admin writes)."""
    identity = identify(request)
    if identity is None:
        raise APIError(401, "The request you have made requires authentication.")
    if request.method not in ("GET", "HEAD") and not (identity.owner or identity.cluster_admin):
        raise APIError(403, "Your role in this project does not allow changes.")
    return identity


def json_response(status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json"), *(headers or [])], body)


def empty_response(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []), b"", content_length=0 if status != 204 else None)


async def read_json(request: Request, *, limit: int = MAX_JSON_BODY) -> Any:
    """The request body as JSON; a malformed or oversized one is a ``400``."""
    try:
        raw = await request.read_body(limit)
    except (BadRequest, ClientDisconnected) as exc:
        raise APIError(400, f"cannot read request body: {exc}") from None
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON in request body: {exc}") from None


def require_dict(doc: Any, key: str | None = None) -> dict[str, Any]:
    """``doc`` (or ``doc[key]``) as a dict, else a ``400`` naming what was expected."""
    if key is not None:
        if not isinstance(doc, dict) or key not in doc:
            raise APIError(400, f"request body must be an object with '{key}'")
        doc = doc[key]
    if not isinstance(doc, dict):
        raise APIError(400, f"'{key or 'body'}' must be an object")
    return doc
