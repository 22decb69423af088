"""The HTTP/1.1 server every node runs on both of its ports, on trio + h11.

One trio task per connection.  A handler is an ``async`` function taking a
:class:`Request` and returning a :class:`Response`.  Request bodies are pulled
by the handler (``async for chunk in request.iter_body()``), so a slow disk
slows the client down instead of filling memory; response bodies may be an
async iterable and are written as they are produced.  Either way the server
holds at most one receive buffer and one chunk per connection.

What the server does for every handler:

* keep-alive and pipelining (h11 parses one request at a time; bytes that
  arrive early wait in h11's buffer);
* ``Expect: 100-continue``: the ``100`` goes out the first time the handler
  asks for the body, so a handler can refuse a PUT without reading it;
* limits on header bytes and count (431), timeouts while idle and while
  reading, a 400 and a closed connection for malformed HTTP;
* a request id (``X-Trans-Id``) reused from the caller or made here, and one
  structured log line per request;
* graceful shutdown: :meth:`HTTPServer.shutdown` stops accepting, closes idle
  connections, and lets in-flight requests finish within a grace period.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
import urllib.parse
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import h11
import trio

from node.headers import Headers, encode_headers
from node.log import log_event

log = logging.getLogger("peerstack.http")

READ_SIZE = 1 << 20  # large reads: fewer syscalls and h11 events per MiB


class ClientDisconnected(Exception):
    """The peer went away (or stalled past the read timeout) mid-request."""


class BadRequest(Exception):
    """Malformed request the handler detected while reading the body."""


@dataclass
class ServerLimits:
    """Per-connection limits; the defaults suit both ports."""

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    idle_timeout: float = 75.0
    read_timeout: float = 60.0
    shutdown_grace: float = 10.0
    #: how much of an unread request body we drain to keep a connection alive
    max_drain_bytes: int = 1 << 20


def new_request_id() -> str:
    """A Swift-style transaction id: random part, then the time in hex."""
    return f"tx{secrets.token_hex(10)}-{int(time.time()):010x}"


class Request:
    """One request as a handler sees it.

    ``path`` is percent-decoded and guaranteed valid UTF-8 (the server answers
    400 otherwise); ``raw_path`` is what the client sent.  ``query`` maps each
    parameter to its last value, ``query_list`` keeps every value.
    """

    __slots__ = (
        "method", "target", "raw_path", "path", "query_string", "query",
        "headers", "request_id", "client", "content_length", "chunked",
        "_conn", "_body_done", "_broken", "bytes_in", "context", "http_version",
    )

    def __init__(self, method: str, target: str, headers: Headers, request_id: str,
                 client: str, conn: _Connection | None, http_version: str = "1.1") -> None:
        self.method = method
        self.target = target
        raw_path, _, qs = target.partition("?")
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(raw_path, errors="strict")
        self.query_string = qs
        self.query = dict(urllib.parse.parse_qsl(qs, keep_blank_values=True)) if qs else {}
        self.headers = headers
        self.request_id = request_id
        self.client = client
        self.http_version = http_version
        cl = headers.get("content-length")
        self.content_length = int(cl) if cl is not None else None
        self.chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        self._conn = conn
        self._body_done = conn is None or (not self.chunked and not self.content_length)
        self._broken = False
        self.bytes_in = 0
        #: free slot for handlers and middleware (auth results and the like)
        self.context: dict = {}

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def body_consumed(self) -> bool:
        return self._body_done

    async def iter_body(self) -> AsyncIterable[bytes]:
        """Yield the request body as it arrives, in chunks of at most ~1 MiB.

        Raises :class:`ClientDisconnected` if the client goes away or stalls
        past the read timeout before the body is complete.
        """
        if self._broken:
            raise BadRequest("request body already failed")
        if self._body_done:
            return
        conn = self._conn
        assert conn is not None
        if conn.h11.they_are_waiting_for_100_continue:
            await conn.send_event(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            try:
                event = await conn.next_event(conn.limits.read_timeout)
            except h11.RemoteProtocolError as exc:
                self._broken = True
                if conn.h11.trailing_data[1]:
                    raise ClientDisconnected("peer closed mid-request") from exc
                raise BadRequest(f"malformed body: {exc}") from exc
            if isinstance(event, h11.Data):
                self.bytes_in += len(event.data)
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return
            else:
                self._broken = True
                raise ClientDisconnected(f"unexpected {type(event).__name__} in body")

    async def read_body(self, max_bytes: int = 1 << 20) -> bytes:
        """The whole body, for small control-plane requests only.

        Raises :class:`BadRequest` once more than ``max_bytes`` arrive, so a
        handler cannot be made to buffer an unbounded body.
        """
        if self.content_length is not None and self.content_length > max_bytes:
            raise BadRequest(f"body larger than {max_bytes} bytes")
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_body():
            size += len(chunk)
            if size > max_bytes:
                raise BadRequest(f"body larger than {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)


BodyType = bytes | AsyncIterable[bytes] | Iterable[bytes]


@dataclass
class Response:
    """What a handler returns.

    ``body`` is bytes or an (async) iterable of bytes.  For an iterable, set
    ``content_length`` when it is known; otherwise the body goes out chunked.
    For HEAD, handlers return the headers a GET would carry and the server
    sends no body.
    """

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: BodyType = b""
    content_length: int | None = None
    #: set by the server to how many body bytes went out
    bytes_out: int = 0

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def set_header(self, name: str, value: str) -> None:
        lname = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != lname]
        self.headers.append((name, value))


Handler = Callable[[Request], Awaitable[Response]]


def text_response(status: int, text: str = "", headers: list[tuple[str, str]] | None = None) -> Response:
    """A plain-text response, the shape Swift uses for errors."""
    body = text.encode("utf-8")
    hdrs = [("Content-Type", "text/plain; charset=utf-8")]
    if headers:
        hdrs.extend(headers)
    return Response(status, hdrs, body)


_REASONS = {
    100: b"Continue", 200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content",
    206: b"Partial Content", 207: b"Multi-Status", 301: b"Moved Permanently", 302: b"Found",
    304: b"Not Modified", 307: b"Temporary Redirect", 400: b"Bad Request", 401: b"Unauthorized",
    403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    408: b"Request Timeout", 409: b"Conflict", 411: b"Length Required",
    412: b"Precondition Failed", 413: b"Request Entity Too Large", 416: b"Range Not Satisfiable",
    422: b"Unprocessable Entity", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    499: b"Client Disconnect", 500: b"Internal Server Error", 501: b"Not Implemented",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 507: b"Insufficient Storage",
}


class _Connection:
    """One accepted socket and its h11 state machine."""

    def __init__(self, stream: trio.SocketStream, limits: ServerLimits, client: str) -> None:
        self.stream = stream
        self.limits = limits
        self.client = client
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.idle = True

    async def next_event(self, timeout: float) -> h11.Event | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(timeout) as scope:
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ClientDisconnected(str(exc)) from exc
            if scope.cancelled_caught:
                raise ClientDisconnected("read timeout")
            self.h11.receive_data(data)

    async def send_event(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ClientDisconnected(str(exc)) from exc


class HTTPServer:
    """Serve ``handler`` on one listening socket.

    ``name`` tags the log lines (``public`` or ``internal``).  Run
    :meth:`serve` in a nursery; call :meth:`shutdown` (or cancel) to stop.
    """

    def __init__(self, handler: Handler, host: str, port: int, *, name: str = "http",
                 limits: ServerLimits | None = None, reuse_port: bool = False) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.name = name
        self.limits = limits or ServerLimits()
        self.reuse_port = reuse_port
        self._listeners: list[trio.SocketListener] = []
        self._connections: set[_Connection] = set()
        self._conn_scopes: dict[_Connection, trio.CancelScope] = {}
        self._closing = False
        self._stopped = trio.Event()
        self._accept_scope: trio.CancelScope | None = None

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port via ``task_status``, serve until shut down."""
        sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in self.host else trio.socket.AF_INET,
                                  trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind((self.host, self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        listener = trio.SocketListener(sock)
        self._listeners = [listener]
        async with trio.open_nursery() as nursery:
            self._accept_scope = trio.CancelScope()
            task_status.started(self.port)
            with self._accept_scope:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        log_event(log, "http.accept_error", server=self.name, error=str(exc))
                        await trio.sleep(0.05)
                        continue
                    nursery.start_soon(self._run_connection, stream)
            await listener.aclose()
        self._stopped.set()

    async def shutdown(self) -> None:
        """Stop accepting, close idle connections, give busy ones the grace period."""
        self._closing = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for conn, scope in list(self._conn_scopes.items()):
            if conn.idle:
                scope.cancel()
        with trio.move_on_after(self.limits.shutdown_grace):
            while self._conn_scopes:
                await trio.sleep(0.02)
        for scope in list(self._conn_scopes.values()):
            scope.cancel()

    async def _run_connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            client = f"{peer[0]}:{peer[1]}"
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            client = "?"
        conn = _Connection(stream, self.limits, client)
        scope = trio.CancelScope()
        self._conn_scopes[conn] = scope
        try:
            with scope:
                await self._serve_requests(conn)
        finally:
            del self._conn_scopes[conn]
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await stream.aclose()

    async def _serve_requests(self, conn: _Connection) -> None:
        while not self._closing:
            conn.idle = True
            try:
                event = await conn.next_event(self.limits.idle_timeout)
            except ClientDisconnected:
                return
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, exc.error_status_hint or 400, str(exc))
                return
            if isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
                return
            if not isinstance(event, h11.Request):
                await self._send_error(conn, 400, "expected a request")
                return
            conn.idle = False
            keep_going = await self._handle_one(conn, event)
            if not keep_going or conn.h11.our_state is not h11.DONE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _send_error(self, conn: _Connection, status: int, detail: str) -> None:
        """Best-effort error for a request h11 could not parse; always closes."""
        log_event(log, "http.bad_request", server=self.name, client=conn.client,
                  status=status, detail=detail[:200])
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{_REASONS.get(status, b'Error').decode()}: {detail}\n".encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                   ("Connection", "close")]
        raw = (f"HTTP/1.1 {status} {_REASONS.get(status, b'Error').decode()}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode() + body
        try:
            with trio.move_on_after(2):
                await conn.send_raw(raw)
        except ClientDisconnected:
            pass

    async def _handle_one(self, conn: _Connection, event: h11.Request) -> bool:
        """Run the handler for one request; returns whether to keep the connection."""
        started = time.perf_counter()
        if len(event.headers) > self.limits.max_header_count:
            await self._send_error(conn, 431, "too many headers")
            return False
        headers = Headers(event.headers)
        rid = headers.get("x-trans-id") or new_request_id()
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("latin-1")
        try:
            request = Request(method, target, headers, rid, conn.client, conn,
                              event.http_version.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            await self._send_error(conn, 400, f"bad request line or headers: {exc}")
            return False
        status = 500
        response: Response | None = None
        try:
            try:
                response = await self.handler(request)
            except BadRequest as exc:
                response = text_response(400, f"{exc}\n")
            except ClientDisconnected:
                status = 499
                return False
            except Exception:
                log.exception("handler crashed", extra={"rid": rid})
                response = text_response(500, "Internal Server Error\n")
            status = response.status
            keep = await self._send_response(conn, request, response)
            if keep and not request.body_consumed:
                keep = await self._drain(conn, request)
            return keep and not self._closing
        except ClientDisconnected:
            status = 499 if response is None else status
            return False
        finally:
            log_event(log, "http.request", server=self.name, rid=rid, method=method,
                      path=request.raw_path, status=status, bytes_in=request.bytes_in,
                      bytes_out=response.bytes_out if response else 0,
                      ms=round((time.perf_counter() - started) * 1000, 2), client=conn.client)

    async def _drain(self, conn: _Connection, request: Request) -> bool:
        """Read and drop what the handler left of the body, if it is small."""
        if conn.h11.they_are_waiting_for_100_continue:
            return False  # client never sent the body; reusing would desync
        if request.content_length is not None and request.content_length > self.limits.max_drain_bytes:
            return False
        drained = 0
        try:
            async for chunk in request.iter_body():
                drained += len(chunk)
                if drained > self.limits.max_drain_bytes:
                    return False
        except ClientDisconnected:
            return False
        return True

    async def _send_response(self, conn: _Connection, request: Request, response: Response) -> bool:
        headers = list(response.headers)
        names = {k.lower() for k, _ in headers}
        headers.append(("X-Trans-Id", request.request_id))
        body = response.body
        is_head = request.method == "HEAD"
        close = self._closing or request._broken or (
            not request.body_consumed and conn.h11.they_are_waiting_for_100_continue)
        if isinstance(body, (bytes, bytearray, memoryview)):
            if "content-length" not in names and response.status not in (204, 304) and response.status >= 200:
                headers.append(("Content-Length", str(len(body))))
        elif response.content_length is not None and "content-length" not in names:
            headers.append(("Content-Length", str(response.content_length)))
        if close:
            headers.append(("Connection", "close"))
        reason = _REASONS.get(response.status, b"")
        try:
            await conn.send_event(h11.Response(status_code=response.status,
                                               headers=encode_headers(headers), reason=reason))
        except h11.LocalProtocolError as exc:
            log_event(log, "http.bad_response", rid=request.request_id, error=str(exc))
            return False
        if not is_head and response.status not in (204, 304):
            if isinstance(body, (bytes, bytearray, memoryview)):
                if body:
                    await conn.send_event(h11.Data(data=body))
                    response.bytes_out = len(body)
            else:
                await self._send_stream(conn, response, body)
        else:
            await _close_iterable(body)
        await conn.send_event(h11.EndOfMessage())
        return not close and conn.h11.our_state is h11.DONE

    async def _send_stream(self, conn: _Connection, response: Response,
                           body: AsyncIterable[bytes] | Iterable[bytes]) -> None:
        try:
            if hasattr(body, "__aiter__"):
                async for chunk in body:  # type: ignore[union-attr]
                    if chunk:
                        await conn.send_event(h11.Data(data=chunk))
                        response.bytes_out += len(chunk)
            else:
                for chunk in body:  # type: ignore[union-attr]
                    if chunk:
                        await conn.send_event(h11.Data(data=chunk))
                        response.bytes_out += len(chunk)
        except h11.LocalProtocolError as exc:
            # The body produced more or fewer bytes than its Content-Length:
            # the connection cannot be trusted any more.
            raise ClientDisconnected(f"response body mismatch: {exc}") from exc
        finally:
            await _close_iterable(body)


async def _close_iterable(body: object) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()


