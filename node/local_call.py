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
request does not cross anything an attacker could reach.

Whole exchanges (:meth:`node.http_client.HTTPClient.request`) and uploads
(:meth:`node.http_client.HTTPClient.upload`: the proxy streaming a large PUT
to its own device) come this way.  An upload (:class:`LocalUpload`) hands
the body's pieces to the handler through a channel one piece deep, where a
socket would have its buffer: the handler asking for its first piece is its
``100 Continue``, an answer before that is a refusal, and a sender that
stops short (its client went away, quorum lost) leaves the handler a body
that ended early, so nothing is stored.  Measured on a 256 MiB PUT whose
proxy holds a replica: the loopback copy, its socket calls and the wake-ups
on both ends were ~0.3 of ~2 CPU-seconds.  Downloads keep their sockets.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import trio

from node.headers import Headers, encode_headers
from node.http_server import (BYTES_LIKE, BadRequest, ClientDisconnected, Handler, Request, Response,
                              close_body, iter_chunks, log_request, new_request_id, response_head,
                              text_response)
from node.log import request_id

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

log = logging.getLogger("peerstack.http")

# What the wire accepts (RFC 9110, as h11 checks it before sending): a
# request that could not have gone out over a socket does not go out here.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")


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

    def _prepare(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                 length: int | None) -> tuple[Headers, str]:
        """The headers as the handler would read them off the wire (with ``Host``,
        and ``Content-Length`` for a ``length``-byte body, ``chunked`` for a body
        of unknown length), and the request id; :class:`LocalCallError` for what
        the wire would refuse."""
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
        if length is None:
            raw.append((b"Transfer-Encoding", b"chunked"))
        elif (length or method in ("PUT", "POST")) and b"content-length" not in names:
            raw.append((b"Content-Length", b"%d" % length))
        hdrs = Headers(raw)
        return hdrs, hdrs.get("x-trans-id") or request_id.get() or new_request_id()

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes, *, timeout: float,
                      max_response_bytes: int) -> tuple[int, Headers, bytes]:
        """Serve one request in-process: ``(status, headers, body)`` as a peer would answer."""
        hdrs, rid = self._prepare(method, target, headers, len(body))
        try:
            request = Request.in_process(method, target, hdrs, rid, body)
        except (UnicodeDecodeError, ValueError) as exc:
            return 400, Headers([]), f"bad request line or headers: {exc}\n".encode()
        call = _HandlerRun(self, request, max_response_bytes)
        with trio.move_on_after(timeout):
            await call.done.wait()
        return call.answer(timeout)

    def upload(self, method: str, target: str, headers: Iterable[tuple[str, str]],
               content_length: int | None, *, timeout: float,
               max_response_bytes: int = 64 << 20) -> LocalUpload:
        """A request whose body (``content_length`` bytes, or ``None``: as many as are
        sent before :meth:`LocalUpload.finish`) follows in pieces."""
        hdrs, rid = self._prepare(method, target, headers, content_length)
        return LocalUpload(self, method, target, hdrs, rid, timeout, max_response_bytes)

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


class _HandlerRun:
    """The handler serving one request, started at once in the node's nursery,
    and what came of it."""

    def __init__(self, route: LocalRoute, request: Request, limit: int,
                 on_done: Callable[[], None] | None = None) -> None:
        self.request = request
        self.done = trio.Event()
        self._answer: tuple[Response, bytes | None] | None = None
        self._broke: Exception | None = None
        self._on_done = on_done
        self._limit = limit
        route.nursery.start_soon(self._run, route)

    async def _run(self, route: LocalRoute) -> None:
        try:
            self._answer = await route._serve(self.request, self._limit)
        except Exception as exc:
            # The body failed after the head was made (a corrupt object
            # found while reading, say): over a socket the connection would
            # be cut; here the caller hears of it, and the node runs on.
            log.exception("response body failed", extra={"rid": self.request.request_id})
            self._broke = exc
        finally:
            self.done.set()
            if self._on_done is not None:
                self._on_done()

    def answer(self, timeout: float) -> tuple[int, Headers, bytes]:
        """``(status, headers, body)``; :class:`LocalCallTimeout` if there is none yet."""
        what = f"{self.request.method} {self.request.target!r}"
        if self._broke is not None:
            raise LocalCallError(f"{what}: response body failed: {self._broke}")
        if self._answer is None:
            raise LocalCallTimeout(f"{what}: no answer within {timeout} s")
        response, data = self._answer
        if data is None:
            raise LocalCallError(f"{what}: response body over {self._limit} bytes")
        return response.status, Headers(response_head(self.request, response)), data


class LocalUpload:
    """A request to this node's handler whose body is sent in pieces.

    :meth:`start` runs the handler and waits until it asks for the body (a
    server's ``100 Continue``: ``None``) or answers without it (a refusal:
    the answer).  :meth:`send` hands on a piece, waiting while the handler
    still holds the previous one; :meth:`finish` ends the body and returns
    the answer.  :meth:`abort` (also what leaving the upload unfinished
    comes to) ends the body early: the handler sees a peer that went away.
    Every wait is bounded by ``timeout``, as a socket's would be.
    """

    def __init__(self, route: LocalRoute, method: str, target: str, headers: Headers,
                 rid: str, timeout: float, limit: int) -> None:
        self._route = route
        self._method, self._target, self._headers, self._rid = method, target, headers, rid
        self._timeout = timeout
        self._limit = limit
        self._pieces, self._receive = trio.open_memory_channel[bytes](1)
        self._wanted = trio.Event()
        length = headers.get("content-length")
        self._length = int(length) if length is not None and length.isdigit() else None
        self._sent = 0
        self._finished = False
        self._run: _HandlerRun | None = None

    async def start(self) -> tuple[int, Headers, bytes] | None:
        try:
            request = Request.in_process(self._method, self._target, self._headers, self._rid,
                                         _BodyPieces(self._receive, self._wanted,
                                                     lambda: self._finished))
        except (UnicodeDecodeError, ValueError) as exc:
            return 400, Headers([]), f"bad request line or headers: {exc}\n".encode()
        run = self._run = _HandlerRun(self._route, request, self._limit, on_done=self._handler_done)
        with trio.move_on_after(self._timeout):
            await self._wanted.wait()
        if run.done.is_set() or not self._wanted.is_set():
            return run.answer(self._timeout)
        return None

    def _handler_done(self) -> None:
        self._receive.close()  # a piece still on its way is dropped, as a server drains
        self._wanted.set()

    async def send(self, piece: bytes) -> None:
        assert self._run is not None, "start() first"
        self._sent += len(piece)
        if self._length is not None and self._sent > self._length:
            raise LocalCallError(f"{self._method} {self._target!r}: body longer than its "
                                 "Content-Length")
        if self._run.done.is_set():
            return  # answered already: the rest of the body goes unread
        with trio.move_on_after(self._timeout):
            try:
                await self._pieces.send(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return
        raise LocalCallTimeout(f"{self._method} {self._target!r}: body not taken within "
                               f"{self._timeout} s")

    async def finish(self) -> tuple[int, Headers, bytes]:
        assert self._run is not None, "start() first"
        if self._length is not None and self._sent != self._length:
            raise LocalCallError(f"{self._method} {self._target!r}: body shorter than its "
                                 "Content-Length")
        self._finished = True
        self._pieces.close()
        with trio.move_on_after(self._timeout):
            await self._run.done.wait()
        return self._run.answer(self._timeout)

    def abort(self) -> None:
        self._pieces.close()


class _BodyPieces:
    """The handler's end of an upload; its first read is the handler's ``100 Continue``,
    and a body the sender did not finish ends in :class:`ClientDisconnected`."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes], wanted: trio.Event,
                 finished: Callable[[], bool]) -> None:
        self._receive = receive
        self._wanted = wanted
        self._finished = finished

    def __aiter__(self) -> _BodyPieces:
        return self

    async def __anext__(self) -> bytes:
        self._wanted.set()
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if not self._finished():
                raise ClientDisconnected("peer stopped mid-request") from None
            raise StopAsyncIteration from None


async def _collect(response: Response, method: str, limit: int) -> bytes | None:
    """The whole response body as the caller would read it off the wire; ``None``
    once it grows past ``limit``."""
    body = response.body
    if method == "HEAD" or response.status in (204, 304):
        await close_body(body)
        return b""
    if isinstance(body, BYTES_LIKE):
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
