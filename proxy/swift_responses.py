"""Response shapes of the Swift API: error bodies, status texts, header filtering.

Swift answers errors with short HTML bodies (``<html><h1>Not Found</h1>...``)
unless a specific message applies; clients match on the status, and some
humans on the text, so both follow Swift.  Backend responses carry headers
that are none of the client's business (``X-Backend-*``, sysmeta, the
internal signature); :func:`client_headers` keeps only what Swift shows.
"""

from __future__ import annotations

from node.headers import Headers
from node.http_server import Response
from node.storage.timestamp import Timestamp

STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 412: "Precondition Failed", 413: "Request Entity Too Large",
    416: "Requested Range Not Satisfiable", 422: "Unprocessable Entity", 499: "Client Disconnect",
    500: "Internal Error", 501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
}

_EXPLANATION = {
    400: "The server could not comply with the request since it is either malformed or otherwise incorrect.",
    401: "This server could not verify that you are authorized to access the document you requested.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    408: "The server has waited too long for the request to be sent by the client.",
    409: "There was a conflict when trying to complete your request.",
    411: "Content-Length header required.",
    412: "A precondition for this request was not met.",
    413: "The body of your request was too large for this server.",
    416: "The Range requested is not available.",
    422: "Unable to process the contained instructions",
    499: "The client disconnected during request.",
    500: "An error occurred while processing the request.",
    503: "The server is currently unavailable. Please try again at a later time.",
}


def status_line(status: int) -> str:
    """``404 Not Found``: how bulk responses name a status."""
    return f"{status} {STATUS_TEXT.get(status, '')}".strip()


def error(status: int, message: str | None = None,
          headers: list[tuple[str, str]] | None = None) -> Response:
    """A Swift error response: ``message`` as plain text, else Swift's HTML blurb."""
    hdrs = list(headers or [])
    if message is not None:
        body = message.encode("utf-8")
        hdrs.append(("Content-Type", "text/plain; charset=UTF-8"))
    else:
        title = STATUS_TEXT.get(status, "Error")
        body = f"<html><h1>{title}</h1><p>{_EXPLANATION.get(status, '')}</p></html>".encode()
        hdrs.append(("Content-Type", "text/html; charset=UTF-8"))
    return Response(status, hdrs, body)


def empty(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    """A bodiless success (``201``/``202``/``204``) the way Swift sends them."""
    hdrs = list(headers or [])
    if status != 204:
        hdrs.append(("Content-Type", "text/html; charset=UTF-8"))
    return Response(status, hdrs, b"", content_length=0 if status != 204 else None)


#: headers a backend may say that the client also gets to see
_PASS_EXACT = frozenset({
    "content-type", "content-length", "etag", "last-modified", "x-timestamp", "content-range",
    "accept-ranges", "content-encoding", "content-disposition", "content-language", "cache-control",
    "expires", "x-delete-at", "x-object-manifest", "x-static-large-object", "x-robots-tag",
    "x-container-object-count", "x-container-bytes-used", "x-account-container-count",
    "x-account-object-count", "x-account-bytes-used", "x-put-timestamp", "x-storage-policy",
    "x-versions-location", "x-history-location", "x-container-sync-to", "x-container-sync-key",
})
_PASS_PREFIX = ("x-object-meta-", "x-container-meta-", "x-account-meta-")
#: container ACLs are shown only to the container's owners
ACL_HEADERS = ("x-container-read", "x-container-write")


def client_headers(backend: Headers, *, show_acls: bool = False) -> list[tuple[str, str]]:
    """The headers of a backend answer the client may see, with Swift's spelling."""
    out = []
    for name, value in backend.items():
        if name in _PASS_EXACT or name.startswith(_PASS_PREFIX) or (show_acls and name in ACL_HEADERS):
            out.append((_title(name), value))
    ts = backend.get("x-timestamp")
    if ts and "last-modified" not in backend:
        try:
            out.append(("Last-Modified", Timestamp(ts).http_date))
        except ValueError:
            pass
    return out


def _title(name: str) -> str:
    if name == "etag":
        return "Etag"
    return "-".join(part.capitalize() for part in name.split("-"))
