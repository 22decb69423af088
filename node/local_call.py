"""Requests from a node to itself, served without a socket.

With four nodes and three replicas, a proxy finds one of its own devices
among the primaries of about three objects in four, and an object server
sends a share of its container updates to its own node's container replica.
Over loopback each such request pays for both ends of an HTTP exchange --
a head built, sent, parsed and validated twice (request and response), a
signature made and checked, four socket calls and the wake-ups between two
tasks -- although it never leaves the process.  :class:`LocalRoute` hands it
straight to the node's internal handler instead, the way
:class:`node.http_server.HTTPServer` would once it had parsed it:

* the handler gets the same :class:`~node.http_server.Request` (headers
  encoded as the client would send them and decoded as the server would
  read them, a ``Content-Length`` for the body, the caller's request id);
* the caller gets the headers the server would have sent (``X-Trans-Id``,
  ``Content-Length``) and the whole body, bounded like
  :meth:`node.http_client.ClientResponse.read`; ``HEAD``, ``204`` and
  ``304`` bring no body;
* a handler's ``BadRequest`` is a ``400``, its crash a logged ``500``, a
  body that fails midway a broken exchange for the caller
  (:class:`~node.http_client.BackendError`, where a socket would be cut),
  and the request gets its one ``http.request`` log line (``server: "local"``);
* the caller's per-step timeout bounds its wait for the answer
  (:class:`~node.http_client.BackendTimeout`, as for a peer that does not
  answer) but not the handler, which runs on in the node's nursery as it
  would in the node's server; header values that could not go on the
  wire are refused the same way (:class:`~node.http_client.BackendError`).

The one thing left out on purpose is the internal-RPC signature: the
request does not cross anything an attacker could reach.  Only whole small
exchanges (:meth:`node.http_client.HTTPClient.request`) come this way;
streamed bodies keep their sockets, whose buffers let both ends run at
their own pace (and a local replica costs a large PUT little: measured).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import trio

from node.headers import Headers, encode_headers
from node.http_server import (BadRequest, Handler, Request, Response, close_body, iter_chunks,
                              log_request, new_request_id, response_head, text_response)
from node.log import request_id

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("peerstack.http")

# What the wire accepts (RFC 9110, as h11 checks it before sending): a
# request that could not have gone out over a socket does not go out here.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_BYTES = (bytes, bytearray, memoryview)


class LocalCallError(Exception):
    """The request could not have been sent (a bad header), or the answer broke its bounds."""


class LocalCallTimeout(LocalCallError):
    """The handler did not answer within the caller's timeout."""


class LocalRoute:
    """This node's internal handler, callable without a socket.

    Handlers run as tasks of ``nursery`` (the node's), not of the caller:
    as with a peer over a socket, a caller that times out or is cancelled
    stops waiting, while the handler finishes what it started (an object
    stored still gets its container update or its async pending).
    """

    def __init__(self, handler: Handler, host_header: str, nursery: trio.Nursery) -> None:
        self.handler = handler
        self.host_header = host_header
        self.nursery = nursery

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes, *, timeout: float,
                      max_response_bytes: int) -> tuple[int, Headers, bytes]:
        """Serve one request in-process: ``(status, headers, body)`` as a peer would answer."""
        try:
            raw = [(b"Host", self.host_header.encode("latin-1")), *encode_headers(headers)]
        except UnicodeEncodeError as exc:
            raise LocalCallError(f"cannot send {method} {target!r}: {exc}") from exc
        for name, value in raw:
            if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                raise LocalCallError(f"cannot send {method} {target!r}: bad header {name!r}")
        try:
            line_ok = bool(_TOKEN.fullmatch(method.encode("ascii"))
                           and _TARGET.fullmatch(target.encode("latin-1")))
        except UnicodeEncodeError:
            line_ok = False
        if not line_ok:
            raise LocalCallError(f"cannot send {method} {target!r}: bad request line")
        names = {name.lower() for name, _ in raw}
        if (body or method in ("PUT", "POST")) and b"content-length" not in names:
            raw.append((b"Content-Length", b"%d" % len(body)))
        hdrs = Headers(raw)
        rid = hdrs.get("x-trans-id") or request_id.get() or new_request_id()
        try:
            request = Request.in_process(method, target, hdrs, rid, body)
        except (UnicodeDecodeError, ValueError) as exc:
            return 400, Headers([]), f"bad request line or headers: {exc}\n".encode()
        answer: list[tuple[Response, bytes | None]] = []
        broke: list[Exception] = []
        done = trio.Event()

        async def serve() -> None:
            try:
                answer.append(await self._serve(request, max_response_bytes))
            except Exception as exc:
                # The body failed after the head was made (a corrupt object
                # found while reading, say): over a socket the connection would
                # be cut; here the caller hears of it, and the node runs on.
                log.exception("response body failed", extra={"rid": rid})
                broke.append(exc)
            finally:
                done.set()

        self.nursery.start_soon(serve)
        with trio.move_on_after(timeout):
            await done.wait()
        if broke:
            raise LocalCallError(f"{method} {target!r}: response body failed: {broke[0]}")
        if not answer:
            raise LocalCallTimeout(f"{method} {target!r}: no answer within {timeout} s")
        response, data = answer[0]
        if data is None:
            raise LocalCallError(f"response body over {max_response_bytes} bytes")
        return response.status, Headers(response_head(request, response)), data

    async def _serve(self, request: Request, limit: int) -> tuple[Response, bytes | None]:
        """Run the handler as the HTTP server would; the body read whole (``None``
        past ``limit`` bytes)."""
        started = time.perf_counter()
        response: Response | None = None
        status = 500
        try:
            try:
                response = await self.handler(request)
            except BadRequest as exc:
                response = text_response(400, f"{exc}\n")
            except Exception:
                log.exception("handler crashed", extra={"rid": request.request_id})
                response = text_response(500, "Internal Server Error\n")
            status = response.status
            return response, await _collect(response, request.method, limit)
        finally:
            log_request("local", request, status, response, started)


async def _collect(response: Response, method: str, limit: int) -> bytes | None:
    """The whole response body as the caller would read it off the wire; ``None``
    once it grows past ``limit``."""
    body = response.body
    if method == "HEAD" or response.status in (204, 304):
        await close_body(body)
        return b""
    if isinstance(body, _BYTES):
        data = bytes(body)
    else:
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in iter_chunks(body):
                size += len(chunk)
                if size > limit:
                    return None
                parts.append(bytes(chunk))
        finally:
            await close_body(body)
        data = b"".join(parts)
    response.bytes_out = len(data)
    return data if len(data) <= limit else None
