"""The HTTP/1.1 server every node runs on both of its ports, on trio + h11.

One trio task per connection.  A handler is an ``async`` function taking a
:class:`Request` and returning a :class:`Response`.  Request bodies are pulled
by the handler (``async for chunk in request.iter_body()``), so a slow disk
slows the client down instead of filling memory; response bodies may be an
async iterable and are written as they are produced.  Either way the server
holds at most one receive buffer's worth of input and one chunk per
connection.

What the server does for every handler:

* keep-alive and pipelining (h11 parses one request at a time; bytes that
  arrive early wait in h11's buffer);
* ``Expect: 100-continue``: the ``100`` goes out the first time the handler
  asks for the body, so a handler can refuse a PUT without reading it (the
  connection is then closed, since the client may or may not send the body);
* limits on header bytes and count (431), timeouts while idle, while a
  request head trickles in, while reading a body and while a client does not
  take the response; a 400 and a closed connection for malformed HTTP;
* a request id (``X-Trans-Id``) reused from the caller or made here, and one
  structured log line per request;
* graceful shutdown: :meth:`HTTPServer.shutdown` stops accepting, closes idle
  connections, and lets in-flight requests finish within a grace period.

Why not trio's ``SocketStream``: every ``receive_some``/``send_all`` there
costs a scheduler round trip even when the socket is ready, which is most of
the per-request cost of a small GET.  :class:`SocketIO` calls the
non-blocking socket first and only parks the task in
``trio.lowlevel.wait_readable``/``wait_writable`` when the kernel says
``EAGAIN``; the server then checkpoints once per request so cancellation and
fairness still hold.  For the same reason socket waits carry no cancel scope
each: a connection notes a deadline before it may block, and one watchdog
task per server interrupts waits that overrun theirs.

Big ``Content-Length`` bodies, both ways (request bodies here, response
bodies in :mod:`node.http_client`), are read from the socket straight into
the chunks handed on, past h11's buffer: see :func:`direct_reader`.

Where the time goes for a small GET (about 90 us of CPU here): roughly 60 us
in h11 (parsing the request, validating and writing the response), 10-15 us
in the ``send`` syscall, the rest in this module and trio.
"""

from __future__ import annotations

import logging
import random
import socket
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import h11
import trio

from node.headers import Headers, encode_headers
from node.log import log_event, request_id

log = logging.getLogger("peerstack.http")

#: one receive reads up to this much: fewer syscalls and h11 events per MiB
READ_SIZE = 1 << 20
#: a response whose head and body together are smaller than this goes out in
#: one ``send``; bigger bodies are handed to the kernel without being copied
SMALL_RESPONSE = 64 * 1024
#: how little unsent data a socket must hold before it counts as writable
#: again; without it a sender parks its whole buffer in the kernel at once,
#: and large transfers measured ~30% slower here
NOTSENT_LOWAT = 128 * 1024
#: ``Content-Length`` bodies at least this big skip h11's buffer: the
#: socket is read straight into the chunks handed to the handler
DIRECT_BODY = 256 * 1024
_MAX_REQUEST_ID = 128
_NEVER = float("inf")
#: body types sent as they are (anything else is an iterable of chunks)
BYTES_LIKE = (bytes, bytearray, memoryview)


class ClientDisconnected(Exception):
    """The peer went away (or stalled past the read timeout) mid-request."""


class BadRequest(Exception):
    """Malformed request the handler detected while reading the body."""


@dataclass
class ServerLimits:
    """Per-connection limits; the defaults suit both ports."""

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    #: how long a kept-alive connection may wait for its next request
    idle_timeout: float = 75.0
    #: how long a request head may take once it started, and how long any
    #: single read of a request body may stall
    read_timeout: float = 60.0
    #: how long a client may refuse to take response bytes
    send_timeout: float = 60.0
    shutdown_grace: float = 10.0
    #: how much of an unread request body we drain to keep a connection alive
    max_drain_bytes: int = 1 << 20
    #: after answering a request whose body we did not read, keep reading
    #: (and dropping) for this long before closing, so the close does not
    #: turn into a TCP reset that destroys the answer in flight
    linger_timeout: float = 1.0


def new_request_id() -> str:
    """A Swift-style transaction id: random part, then the time in hex.

    ``random`` (reseeded in forked children) rather than ``secrets``: an id
    needs to be unique, not unguessable, and this runs once per request.
    """
    return f"tx{random.getrandbits(80):020x}-{int(time.time()):010x}"


def tune_tcp(sock: socket.socket) -> None:
    """The socket options both ends of our HTTP connections want.

    ``TCP_NODELAY`` because every message goes out in as few sends as
    possible anyway; ``TCP_NOTSENT_LOWAT`` (as trio's own ``SocketStream``
    sets) see :data:`NOTSENT_LOWAT`.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
    except OSError:
        pass  # not TCP (a unix socket in a test), or already closed


class SocketIO:
    """A non-blocking stdlib socket driven by trio's I/O waits.

    The operation is tried first; only ``EAGAIN`` parks the task, under a
    timeout.  Timeouts raise :class:`TimeoutError`, socket failures
    :class:`OSError`; the server and client map them to their own errors.
    A ``timeout`` of ``None`` waits without a cancel scope of its own (they
    cost several microseconds each): the caller then bounds the wait some
    other way, as the server's watchdog does with
    ``trio.lowlevel.notify_closing``, which makes the wait raise
    ``trio.ClosedResourceError``.  Shared by :mod:`node.http_client`.
    """

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]],
                    timeout: float | None) -> None:
        """Park until ``wait`` (trio's wait_readable/wait_writable) returns."""
        if timeout is None:
            await wait(self.sock)
            return
        with trio.move_on_after(timeout):
            await wait(self.sock)
            return
        raise TimeoutError("socket wait timed out")

    async def receive_into(self, buf: memoryview, timeout: float | None) -> int:
        """Read what is available into ``buf``; 0 means the peer closed."""
        sock = self.sock
        while True:
            try:
                return sock.recv_into(buf)
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_readable, timeout)

    async def send_all(self, data: bytes | bytearray | memoryview, timeout: float | None) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(view):
            await self._wait(trio.lowlevel.wait_writable, timeout)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                pass

    async def send_pieces(self, pieces: list[bytes], timeout: float | None) -> None:
        """Send several buffers as one stream, without joining them first."""
        if len(pieces) == 1:
            await self.send_all(pieces[0], timeout)
            return
        sock = self.sock
        views = [memoryview(p) for p in pieces if len(p)]
        while views:
            try:
                sent = sock.sendmsg(views)
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_writable, timeout)
                continue
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]
            if views:
                await self._wait(trio.lowlevel.wait_writable, timeout)

    async def linger(self, scratch: memoryview, timeout: float) -> None:
        """Half-close, then read and drop input until EOF or ``timeout``."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(timeout):
            try:
                while await self.receive_into(scratch, timeout):
                    pass
            except (OSError, TimeoutError):
                pass

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class Request:
    """One request as a handler sees it.

    ``path`` is percent-decoded and guaranteed valid UTF-8 (the server answers
    400 otherwise); ``raw_path`` is what the client sent.  ``query`` maps each
    parameter to its last value, ``query_list`` keeps every value.
    """

    __slots__ = (
        "method", "target", "raw_path", "path", "query_string", "query",
        "headers", "request_id", "client", "content_length", "chunked",
        "_conn", "_body_done", "_broken", "bytes_in", "context", "http_version", "_local_body",
    )

    def __init__(self, method: str, target: str, headers: Headers, request_id: str,
                 client: str, conn: _Connection | None, http_version: str = "1.1") -> None:
        self.method = method
        self.target = target
        raw_path, _, qs = target.partition("?")
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
        self.query_string = qs
        self.query = dict(urllib.parse.parse_qsl(qs, keep_blank_values=True)) if qs else {}
        self.headers = headers
        self.request_id = request_id
        self.client = client
        self.http_version = http_version
        cl = headers.get("content-length")
        self.content_length = int(cl) if cl is not None else None
        te = headers.get("transfer-encoding")
        self.chunked = te is not None and "chunked" in te.lower()
        self._conn = conn
        self._body_done = conn is None or (not self.chunked and not self.content_length)
        self._broken = False
        self.bytes_in = 0
        #: free slot for handlers and middleware (auth results and the like)
        self.context: dict = {}
        self._local_body: bytes | AsyncIterable[bytes] | None = None

    @classmethod
    def in_process(cls, method: str, target: str, headers: Headers, request_id: str,
                   body: bytes | AsyncIterable[bytes]) -> Request:
        """A request that never crossed a socket (:mod:`node.local_call`), carrying
        ``body``: bytes, or the pieces of a ``Content-Length`` body as they are sent."""
        request = cls(method, target, headers, request_id, "local", None)
        if body:
            request._local_body = body
            request._body_done = False
        return request

    @property
    def query_list(self) -> list[tuple[str, str]]:
        return urllib.parse.parse_qsl(self.query_string, keep_blank_values=True)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def body_consumed(self) -> bool:
        return self._body_done

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the request body as it arrives, in chunks of at most ~1 MiB.

        Chunks are bytes-like: each is a fresh ``bytearray`` that nothing
        else references (h11 made it), handed over without another copy --
        a copy per MiB costs more than the rest of the receive path.  Use
        ``bytes(chunk)`` where an immutable value is needed (a dict key).
        An in-process body streamed by this node's own proxy hands over the
        proxy's pieces, which its other replicas' sockets read too: chunks are
        for reading, never for changing in place.

        Raises :class:`ClientDisconnected` if the client goes away or stalls
        past the read timeout before the body is complete, and
        :class:`BadRequest` if the body is malformed (bad chunk framing).
        """
        if self._broken:
            raise BadRequest("request body already failed")
        if self._body_done:
            return
        conn = self._conn
        if conn is None:
            body, self._local_body = self._local_body or b"", None
            if isinstance(body, BYTES_LIKE):
                self._body_done = True
                self.bytes_in += len(body)
                yield body
                return
            async for piece in self._local_pieces(body):
                yield piece
            return
        h = conn.h11
        if h.they_are_waiting_for_100_continue:
            await conn.send_all(h.send(h11.InformationalResponse(status_code=100, headers=[])))
        timeout = conn.limits.read_timeout
        direct = direct_reader(h) if self.content_length and self.content_length >= DIRECT_BODY else None
        while True:
            if direct is not None and direct._remaining and not h._receive_buffer:  # type: ignore[attr-defined]
                chunk = await self._receive_direct(conn, direct)
                self.bytes_in += len(chunk)
                yield chunk
                continue
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._broken = True
                if conn.peer_closed:
                    raise ClientDisconnected("peer closed mid-request") from exc
                raise BadRequest(f"malformed body: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    await conn.receive(timeout)
                except ClientDisconnected:
                    self._broken = True
                    raise
                continue
            if type(event) is h11.Data:
                self.bytes_in += len(event.data)
                yield event.data
            elif type(event) is h11.EndOfMessage:
                self._body_done = True
                return
            else:
                self._broken = True
                raise ClientDisconnected(f"unexpected {type(event).__name__} in body")

    async def _receive_direct(self, conn: _Connection, reader: object) -> bytearray:
        timeout = conn.limits.read_timeout
        try:
            return await receive_past_h11(reader, lambda view: conn.receive_into(view, timeout))
        except EOFError:
            conn.peer_closed = True
            self._broken = True
            raise ClientDisconnected("peer closed mid-request") from None
        except ClientDisconnected:
            self._broken = True
            raise

    async def _local_pieces(self, pieces: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """An in-process body sent in pieces: exactly ``Content-Length`` bytes (or
        all a chunked sender sends), or the error a socket would give (the
        sender stopped short: the peer went away).

        The pieces are the sender's own objects, shared with its other
        receivers (the proxy sends the same piece to every replica): like
        chunks off a socket they are read, never changed.
        """
        want = self.content_length  # None: chunked, the pieces end where the sender ends
        got = 0
        try:
            async for piece in pieces:
                got += len(piece)
                if want is not None and got > want:
                    raise BadRequest("body longer than its Content-Length")
                self.bytes_in += len(piece)
                yield piece
                if got == want:
                    break
            if want is not None and got < want:
                raise ClientDisconnected("peer closed mid-request")
        except (BadRequest, ClientDisconnected):
            self._broken = True
            raise
        self._body_done = True

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
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
    507: b"Insufficient Storage",
}


class _Connection:
    """One accepted socket and its h11 state machine."""

    __slots__ = ("io", "h11", "limits", "client", "idle", "buf", "peer_closed", "linger",
                 "deadline")

    def __init__(self, sock: socket.socket, limits: ServerLimits, client: str,
                 buf: memoryview) -> None:
        self.io = SocketIO(sock)
        self.limits = limits
        self.client = client
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.idle = True
        #: the server's receive buffer; bytes are copied into h11 before the
        #: next await, so every connection of a server can share it
        self.buf = buf
        self.peer_closed = False
        #: close via :meth:`SocketIO.linger`: the peer may still be sending
        self.linger = False
        #: trio time by which the current socket wait must end; the server's
        #: watchdog interrupts waits that overrun it
        self.deadline = _NEVER

    async def receive(self, timeout: float) -> None:
        """Feed h11 whatever arrives next, waiting up to ``timeout``."""
        n = await self.receive_into(self.buf, timeout)
        if n:
            self.h11.receive_data(self.buf[:n])
        else:
            self.peer_closed = True
            self.h11.receive_data(b"")

    async def receive_into(self, view: memoryview, timeout: float) -> int:
        """Read what arrives next into ``view``, bypassing h11; 0 if the peer closed."""
        self.deadline = trio.current_time() + timeout
        try:
            return await self.io.receive_into(view, None)
        except trio.ClosedResourceError as exc:
            raise ClientDisconnected("read timeout") from exc
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            self.deadline = _NEVER

    async def send_all(self, data: bytes) -> None:
        await self.send_pieces([data])

    async def send_pieces(self, pieces: list[bytes]) -> None:
        """Send ``pieces`` in order; the client must take them within send_timeout."""
        self.deadline = trio.current_time() + self.limits.send_timeout
        try:
            await self.io.send_pieces(pieces, None)
        except trio.ClosedResourceError as exc:
            raise ClientDisconnected("send timeout") from exc
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            self.deadline = _NEVER


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
        self._conn_scopes: dict[_Connection, trio.CancelScope] = {}
        self._closing = False
        self._accept_scope: trio.CancelScope | None = None
        self._buf = memoryview(bytearray(READ_SIZE))

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port via ``task_status``, serve until shut down."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            lsock.setblocking(False)
            lsock.bind((self.host, self.port))
            lsock.listen(1024)
            self.port = lsock.getsockname()[1]
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watchdog)
                async with trio.open_nursery() as nursery:
                    self._accept_scope = trio.CancelScope()
                    task_status.started(self.port)
                    with self._accept_scope:
                        await self._accept_loop(lsock, nursery)
                    # No new connections from here on: a connect now is refused.
                    trio.lowlevel.notify_closing(lsock)
                    lsock.close()
                outer.cancel_scope.cancel()
        finally:
            lsock.close()

    async def _accept_loop(self, lsock: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(lsock)
                continue
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning.
                log_event(log, "http.accept_error", server=self.name, error=str(exc))
                await trio.sleep(0.05)
                continue
            nursery.start_soon(self._run_connection, sock, peer)
            await trio.lowlevel.checkpoint()

    async def _watchdog(self) -> None:
        """Interrupt socket waits that overran their connection's deadline.

        One timer for all connections instead of a cancel scope per wait;
        deadlines are honoured to within a quarter of the shortest timeout
        (at most a second).
        """
        limits = self.limits
        tick = min(max(min(limits.idle_timeout, limits.read_timeout, limits.send_timeout) / 4,
                       0.005), 1.0)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for conn in self._conn_scopes:
                if conn.deadline < now:
                    # A task waiting on this socket gets ClosedResourceError;
                    # with none waiting (it just woke) this does nothing.
                    trio.lowlevel.notify_closing(conn.io.sock)

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

    async def _run_connection(self, sock: socket.socket, peer: tuple) -> None:
        tune_tcp(sock)
        conn = _Connection(sock, self.limits, f"{peer[0]}:{peer[1]}", self._buf)
        scope = trio.CancelScope()
        self._conn_scopes[conn] = scope
        try:
            with scope:
                await self._serve_requests(conn)
            if conn.linger and not scope.cancel_called:
                await conn.io.linger(self._buf, self.limits.linger_timeout)
        finally:
            del self._conn_scopes[conn]
            conn.io.close()

    async def _serve_requests(self, conn: _Connection) -> None:
        h = conn.h11
        limits = self.limits
        while not self._closing:
            conn.idle = True
            timeout = limits.idle_timeout
            head_deadline = 0.0
            waited = False
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    if h.trailing_data[0] or not conn.peer_closed:
                        await self._send_error(conn, exc.error_status_hint or 400, str(exc))
                    return
                if event is not h11.NEED_DATA:
                    break
                if waited:
                    # Part of a head arrived: the rest must follow within
                    # read_timeout of the first byte, however it trickles.
                    if not head_deadline:
                        head_deadline = trio.current_time() + limits.read_timeout
                    timeout = max(head_deadline - trio.current_time(), 0.0)
                try:
                    await conn.receive(timeout)
                except ClientDisconnected:
                    return
                waited = True
            if type(event) is not h11.Request:
                # ConnectionClosed, or PAUSED after a protocol switch we refuse.
                return
            if not waited:
                # A pipelined request was already buffered: let others run.
                await trio.lowlevel.checkpoint()
            conn.idle = False
            if not await self._handle_one(conn, event):
                return
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return
            h.start_next_cycle()

    async def _send_error(self, conn: _Connection, status: int, detail: str) -> None:
        """Best-effort error for a request h11 could not parse; always closes."""
        log_event(log, "http.bad_request", server=self.name, client=conn.client,
                  status=status, detail=detail[:200])
        conn.linger = True
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        reason = _REASONS.get(status, b"Error")
        body = reason + b": " + detail.encode("utf-8", "replace") + b"\n"
        raw = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n" % (status, reason, len(body))) + body
        try:
            await conn.send_all(raw)
        except ClientDisconnected:
            pass

    async def _handle_one(self, conn: _Connection, event: h11.Request) -> bool:
        """Run the handler for one request; returns whether to keep the connection."""
        started = time.perf_counter()
        raw_headers = event.headers.raw_items()
        if len(raw_headers) > self.limits.max_header_count:
            await self._send_error(conn, 431, "too many headers")
            return False
        # h11 enforces max_header_bytes only on a head that arrives in pieces;
        # one large read can deliver an oversized head whole.
        head_size = len(event.target) + sum([len(k) + len(v) + 4 for k, v in raw_headers])
        if head_size > self.limits.max_header_bytes:
            await self._send_error(conn, 431, "request head too large")
            return False
        if event.http_version not in (b"1.1", b"1.0"):
            await self._send_error(conn, 505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
            return False
        headers = Headers(raw_headers)
        rid = headers.get("x-trans-id")
        if not rid or len(rid) > _MAX_REQUEST_ID:
            rid = new_request_id()
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("latin-1")
        try:
            request = Request(method, target, headers, rid, conn.client, conn,
                              "1.1" if event.http_version == b"1.1" else event.http_version.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            await self._send_error(conn, 400, f"bad request line or headers: {exc}")
            return False
        if request._body_done:
            # h11 still holds the (empty) body's end; take it now so the
            # cycle can restart without a trip through iter_body.
            conn.h11.next_event()
        status = 500
        response: Response | None = None
        request_id.set(rid)
        try:
            try:
                response = await self.handler(request)
                if not isinstance(response, Response):
                    raise TypeError(f"handler returned {type(response).__name__}, not Response")
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
            if keep and not request._body_done:
                keep = await self._drain(conn, request)
            if not request._body_done:
                conn.linger = True
            return keep and not self._closing
        except ClientDisconnected:
            status = 499 if response is None else status
            return False
        finally:
            log_request(self.name, request, status, response, started)

    def _can_drain(self, request: Request) -> bool:
        """Whether the unread rest of a body is worth reading to keep the connection."""
        if request._broken or request._conn.h11.they_are_waiting_for_100_continue:
            return False  # the client may never send the body; reusing would desync
        cl = request.content_length
        return cl is None or cl - request.bytes_in <= self.limits.max_drain_bytes

    async def _drain(self, conn: _Connection, request: Request) -> bool:
        """Read and drop what the handler left of the body, if it is small."""
        if not self._can_drain(request):
            return False
        drained = 0
        try:
            async for chunk in request.iter_body():
                drained += len(chunk)
                if drained > self.limits.max_drain_bytes:
                    return False
        except (ClientDisconnected, BadRequest):
            return False
        return True

    def _response_event(self, request: Request, response: Response,
                        close: bool) -> h11.Response:
        headers = response_head(request, response)
        if close:
            headers.append((b"Connection", b"close"))
        return h11.Response(status_code=response.status, headers=headers,
                            reason=_REASONS.get(response.status, b""))

    async def _send_response(self, conn: _Connection, request: Request, response: Response) -> bool:
        h = conn.h11
        close = self._closing or request._broken or (
            not request._body_done and not self._can_drain(request))
        try:
            event = self._response_event(request, response, close)
        except (h11.LocalProtocolError, UnicodeEncodeError, TypeError, ValueError) as exc:
            # Invalid status or header (a CR/LF smuggled into a value, say):
            # the handler's fault, so the client gets a 500, not a hang-up.
            log_event(log, "http.bad_response", rid=request.request_id, error=str(exc))
            await close_body(response.body)
            response.status = 500
            response.headers = []
            response.body = b"Internal Server Error\n"
            response.content_length = None
            event = self._response_event(request, response, close)
        body = response.body
        try:
            head = h.send(event)
            if request.method == "HEAD" or response.status in (204, 304):
                await close_body(body)
                await conn.send_all(head + h.send(h11.EndOfMessage()))
            elif isinstance(body, BYTES_LIKE):
                pieces = h.send_with_data_passthrough(h11.Data(data=body)) if body else []
                tail = h.send(h11.EndOfMessage())
                if len(body) < SMALL_RESPONSE:
                    await conn.send_all(b"".join((head, *pieces, tail)))
                else:
                    await conn.send_pieces([head, *pieces, tail])
                response.bytes_out = len(body)
            else:
                await conn.send_all(head)
                await self._send_stream(conn, request, response, body)
                await conn.send_all(h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            # The body did not match its Content-Length: the connection
            # cannot be trusted any more.
            log_event(log, "http.bad_response", rid=request.request_id, error=str(exc))
            raise ClientDisconnected(f"response body mismatch: {exc}") from exc
        return not close and h.our_state is h11.DONE

    async def _send_stream(self, conn: _Connection, request: Request, response: Response,
                           body: AsyncIterable[bytes] | Iterable[bytes]) -> None:
        h = conn.h11
        try:
            async for chunk in iter_chunks(body):
                if chunk:
                    await conn.send_pieces(h.send_with_data_passthrough(h11.Data(data=chunk)))
                    response.bytes_out += len(chunk)
        except (ClientDisconnected, h11.LocalProtocolError):
            raise
        except Exception as exc:
            # The head is out, so no 500 is possible: cut the connection and
            # let framing (short Content-Length, missing last chunk) tell the
            # client the body is incomplete.
            log.exception("response body failed", extra={"rid": request.request_id})
            raise ClientDisconnected(f"response body failed: {exc}") from exc
        finally:
            await close_body(body)


def log_request(server: str, request: Request, status: int, response: Response | None,
                started: float) -> None:
    """The one log line per request (background chatter such as heartbeats asks,
    through ``request.context["quiet"]``, to be logged at debug level)."""
    level = logging.DEBUG if request.context.get("quiet") else logging.INFO
    if log.isEnabledFor(level):
        log_event(log, "http.request", level, server=server, rid=request.request_id,
                  method=request.method, path=request.raw_path, status=status,
                  bytes_in=request.bytes_in, bytes_out=response.bytes_out if response else 0,
                  ms=round((time.perf_counter() - started) * 1000, 2), client=request.client)


def response_head(request: Request, response: Response) -> list[tuple[bytes, bytes]]:
    """The headers a response goes out with: the handler's, ``X-Trans-Id``, and
    ``Content-Length`` where the handler left it to the server."""
    body = response.body
    status = response.status
    headers = encode_headers(response.headers)
    has_length = False
    for name, _ in headers:
        if name.lower() == b"content-length":
            has_length = True
            break
    headers.append((b"X-Trans-Id", request.request_id.encode("latin-1")))
    if not has_length:
        if isinstance(body, BYTES_LIKE):
            if status >= 200 and status not in (204, 304):
                headers.append((b"Content-Length", b"%d" % len(body)))
        elif response.content_length is not None:
            headers.append((b"Content-Length", b"%d" % response.content_length))
    return headers


def direct_reader(h: h11.Connection) -> object | None:
    """h11's reader of the current ``Content-Length`` body, if it can be bypassed.

    Big bodies are read from the socket straight into the chunks handed on:
    one copy (kernel to chunk) instead of three, since h11's buffer would take
    the bytes in and copy them out again.  This reaches into h11 (pinned
    below 0.17): its ``ContentLengthReader`` counts the bytes still to come in
    ``_remaining``, and lowering that count for bytes read past h11 keeps its
    framing of the message end and the next message right.  Bypass only while
    h11's own buffer is empty (``h._receive_buffer``): bytes already there
    come first.  With any other h11 this returns ``None`` and bodies go
    through h11 as usual.
    """
    reader = getattr(h, "_reader", None)
    if type(reader).__name__ != "ContentLengthReader" or not isinstance(
            getattr(reader, "_remaining", None), int) or not hasattr(h, "_receive_buffer"):
        return None
    return reader


async def receive_past_h11(reader: object,
                           receive_into: Callable[[memoryview], Awaitable[int]]) -> bytearray:
    """The next up-to-:data:`READ_SIZE` bytes of a body that :func:`direct_reader` allowed.

    ``receive_into`` reads what the socket has into a view (0: the peer
    closed, raised here as :class:`EOFError`).  h11 is told how much of the
    body is gone even when this fails midway.
    """
    want = min(reader._remaining, READ_SIZE)  # type: ignore[attr-defined]
    chunk = bytearray(want)
    view = memoryview(chunk)
    got = 0
    try:
        while got < want:
            n = await receive_into(view[got:])
            if not n:
                raise EOFError("peer closed mid-body")
            got += n
    finally:
        view.release()
        reader._remaining -= got  # type: ignore[attr-defined]
    return chunk


async def iter_chunks(body: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a body given as an async or a plain iterable."""
    if hasattr(body, "__aiter__"):
        async for chunk in body:  # type: ignore[union-attr]
            yield chunk
    else:
        for chunk in body:  # type: ignore[union-attr]
            yield chunk


async def close_body(body: object) -> None:
    """Release a response body that will not be (fully) sent."""
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
    else:
        close = getattr(body, "close", None)
        if close is not None and not isinstance(body, BYTES_LIKE):
            close()
