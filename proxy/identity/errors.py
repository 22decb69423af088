"""Keystone's error shape: ``{"error": {"code", "message", "title"}}``.

Every refusal of the identity API is an :class:`IdentityError`, raised
anywhere below the HTTP layer and turned into this JSON body by
:func:`error_response`; clients (keystoneauth, openstackclient) read
``code`` and ``message`` from it.
"""

from __future__ import annotations

import json

from node.http_server import Response

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 503: "Service Unavailable",
}

#: Keystone's own wording, which some tools match on
UNAUTHORIZED = "The request you have made requires authentication."
FORBIDDEN = "You are not authorized to perform the requested action."


class IdentityError(Exception):
    """A refusal with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> IdentityError:
    return IdentityError(400, message)


def unauthorized(message: str = UNAUTHORIZED) -> IdentityError:
    return IdentityError(401, message)


def forbidden(message: str = FORBIDDEN) -> IdentityError:
    return IdentityError(403, message)


def not_found(kind: str, ref: str) -> IdentityError:
    return IdentityError(404, f"Could not find {kind}: {ref}.")


def conflict(message: str) -> IdentityError:
    return IdentityError(409, f"Conflict occurred attempting to store {message}.")


def error_response(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps({"error": {"code": status, "message": message,
                                 "title": TITLES.get(status, "Error")}}).encode()
    hdrs = [("Content-Type", "application/json"), ("Vary", "X-Auth-Token"), *(headers or [])]
    if status == 401:
        hdrs.append(("WWW-Authenticate", 'Keystone uri="/v3"'))
    return Response(status, hdrs, body)
