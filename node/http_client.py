"""The pooled HTTP/1.1 client nodes use to talk to each other, on trio + h11.

A :class:`HTTPClient` keeps a pool of idle keep-alive connections per peer
(``host:port``).  Two ways to use it:

* :meth:`HTTPClient.request` for small messages: sends a bytes body, reads
  the whole response, retries once on a fresh connection when a pooled one
  turns out to be dead -- but only for idempotent methods, since a POST that
  may have reached the peer must not be sent twice;
* :meth:`HTTPClient.exchange` for streams: an :class:`Exchange` sends the
  head, optionally waits for ``100 Continue`` (so a PUT fan-out learns early
  which peers refuse), sends the body chunk by chunk, then reads the
  response head and lets the caller pull the body.

Every network step runs under a timeout; failures surface as
:class:`BackendError` (with :class:`BackendTimeout` for timeouts) so callers
have one exception to catch per peer.  A pooled connection found dead before
any byte of the answer arrived raises :class:`StaleConnection`, which a
caller that can resend its body may retry on a fresh connection.

The sockets are driven like the server's (see :class:`node.http_server.SocketIO`):
non-blocking calls first, trio's I/O waits only when the kernel says
``EAGAIN``, so a small request costs one ``send`` and one or two ``recv``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import h11
import trio

from node.headers import Headers, encode_headers
from node.http_server import (DIRECT_BODY, READ_SIZE, SMALL_RESPONSE, SocketIO, direct_reader,
                              receive_past_h11, tune_tcp)
from node.local_call import LocalCallError, LocalCallTimeout, LocalRoute, LocalUpload
from node.log import request_id

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "REPLICATE"})

#: signs an outgoing request: ``(method, target) -> extra headers``
Signer = Callable[[str, str], list[tuple[str, str]]]


class BackendError(Exception):
    """A peer could not be reached, or broke the exchange."""


class BackendTimeout(BackendError):
    """A peer did not answer within the timeout."""


class StaleConnection(BackendError):
    """A pooled connection was closed by the peer before it answered.

    The peer closed it while idle (or just as the request went out), so the
    request most likely never reached a handler; safe to resend on a fresh
    connection if the method is idempotent.
    """


@dataclass
class Timeouts:
    connect: float = 3.0
    #: per network step (send a chunk, wait for a head, read a chunk)
    node: float = 10.0


class _PooledConnection:
    __slots__ = ("io", "h11", "key", "host_header", "buf", "reused", "answered")

    def __init__(self, sock: socket.socket, key: tuple[str, int], buf: memoryview) -> None:
        self.io = SocketIO(sock)
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.key = key
        host, port = key
        self.host_header = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("idna")
        #: the client's receive buffer, shared like the server's
        self.buf = buf
        #: came from the pool (so a failure may just mean it went stale)
        self.reused = False
        #: some byte of the current response arrived
        self.answered = False

    def _error(self, what: str, exc: BaseException) -> BackendError:
        where = f"{self.key[0]}:{self.key[1]}"
        if isinstance(exc, TimeoutError):
            return BackendTimeout(f"{what} {where} timed out")
        if self.reused and not self.answered:
            return StaleConnection(f"{what} {where}: pooled connection closed ({exc})")
        return BackendError(f"{what} {where}: {exc}")

    async def send_bytes(self, data: bytes, timeout: float) -> None:
        if data:
            await self.send_pieces([data], timeout)

    async def send_pieces(self, pieces: list[bytes], timeout: float) -> None:
        try:
            await self.io.send_pieces(pieces, timeout)
        except (OSError, TimeoutError) as exc:
            raise self._error("send to", exc) from exc

    async def send_data(self, data: bytes, timeout: float) -> None:
        """Send body bytes; big chunks go to the kernel without a copy."""
        await self.send_pieces(self.h11.send_with_data_passthrough(h11.Data(data=data)), timeout)

    async def next_event(self, timeout: float) -> h11.Event:
        h = self.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._error("bad response from", exc) from exc
            if event is not h11.NEED_DATA:
                if type(event) is h11.ConnectionClosed:
                    raise self._error("receive from", ConnectionError("closed"))
                return event
            try:
                n = await self.io.receive_into(self.buf, timeout)
            except (OSError, TimeoutError) as exc:
                raise self._error("receive from", exc) from exc
            if n:
                self.answered = True
                h.receive_data(self.buf[:n])
            else:
                h.receive_data(b"")

    async def receive_direct(self, reader: object, timeout: float) -> bytearray:
        """The next piece of a big response body, read past h11 (see :func:`direct_reader`)."""
        async def receive_into(view: memoryview) -> int:
            try:
                n = await self.io.receive_into(view, timeout)
            except (OSError, TimeoutError) as exc:
                raise self._error("receive from", exc) from exc
            self.answered = True
            return n

        try:
            return await receive_past_h11(reader, receive_into)
        except EOFError as exc:
            raise self._error("receive from", exc) from exc

    def looks_alive(self) -> bool:
        """Cheap check before reuse: has the peer closed (or sent junk)?"""
        try:
            self.io.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # end of stream, or bytes nobody asked for: not reusable

    def close(self) -> None:
        self.io.close()


@contextmanager
def _local_errors() -> Iterator[None]:
    """A local call's failures as the caller's socket failures would be."""
    try:
        yield
    except LocalCallTimeout as exc:
        raise BackendTimeout(str(exc)) from exc
    except LocalCallError as exc:
        raise BackendError(str(exc)) from exc


def _local_response(answer: tuple[int, Headers, bytes]) -> ClientResponse:
    status, headers, body = answer
    resp = ClientResponse(status, headers, None)
    resp.body = body
    return resp


class LocalExchange:
    """:class:`Exchange`'s upload half (``start``, ``send``, ``finish``) with this
    node's own handler, in-process (:class:`node.local_call.LocalUpload`)."""

    reused = False

    def __init__(self, route: LocalRoute, timeouts: Timeouts) -> None:
        self._route = route
        self._timeouts = timeouts
        self._upload: LocalUpload | None = None
        self._refusal: ClientResponse | None = None

    async def start(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                    *, content_length: int | None = None,
                    expect_continue: bool = False) -> ClientResponse | None:
        """As :meth:`Exchange.start`."""
        with _local_errors():
            self._upload = self._route.upload(method, target, headers, content_length,
                                              timeout=self._timeouts.node)
            early = await self._upload.start()
        if early is not None:
            self._refusal = _local_response(early)
        return self._refusal

    async def send(self, data: bytes) -> None:
        if self._refusal is not None:
            raise BackendError("peer refused the request body")
        assert self._upload is not None, "start() first"
        if data:
            with _local_errors():
                await self._upload.send(data)

    async def finish(self) -> ClientResponse:
        if self._refusal is not None:
            return self._refusal
        assert self._upload is not None, "start() first"
        with _local_errors():
            return _local_response(await self._upload.finish())

    def abort(self) -> None:
        """End an unfinished body early (the handler sees its peer go away)."""
        if self._upload is not None:
            self._upload.abort()


class ClientResponse:
    """A response head plus a body the caller pulls.

    ``body`` is filled in by :meth:`read` (and by :meth:`HTTPClient.request`).
    """

    def __init__(self, status: int, headers: Headers, exchange: Exchange | None) -> None:
        self.status = status
        self.headers = headers
        self.body = b""
        self._exchange = exchange

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, in chunks of at most ~1 MiB.

        Chunks are bytes-like (fresh ``bytearray`` objects nothing else holds),
        as for :meth:`node.http_server.Request.iter_body`.
        """
        ex = self._exchange
        if ex is None:
            return
        while True:
            chunk = await ex._next_body_chunk()
            if chunk is None:
                return
            yield chunk

    async def read(self, max_bytes: int = 64 << 20) -> bytes:
        """The whole body; :class:`BackendError` past ``max_bytes``.

        Reading again returns the same bytes (``request()`` already read).
        """
        ex = self._exchange
        if ex is None or ex._response_done:
            return self.body
        parts = []
        size = 0
        while True:
            chunk = await ex._next_body_chunk()
            if chunk is None:
                break
            size += len(chunk)
            if size > max_bytes:
                raise BackendError(f"response body over {max_bytes} bytes")
            parts.append(chunk)
        self.body = b"".join(parts)
        return self.body


class Exchange:
    """One request/response on a pooled connection.

    Use through :meth:`HTTPClient.exchange`; the connection returns to the
    pool only if the exchange ran to completion.
    """

    def __init__(self, client: HTTPClient, conn: _PooledConnection, timeouts: Timeouts) -> None:
        self._client = client
        self._conn = conn
        self._timeouts = timeouts
        self.response: ClientResponse | None = None
        self._response_done = False
        self._refused = False
        #: h11's body reader when a big response body is read past h11
        self._direct: object | None = None

    @property
    def reused(self) -> bool:
        """Whether this exchange runs on a connection taken from the pool."""
        return self._conn.reused

    def _head(self, method: str, target: str, headers: Iterable[tuple[str, str]],
              content_length: int | None, expect_continue: bool) -> bytes:
        hdrs = encode_headers(headers)
        names = {name.lower() for name, _ in hdrs}
        if b"host" not in names:
            hdrs.append((b"Host", self._conn.host_header))
        rid = request_id.get()
        if rid and b"x-trans-id" not in names:
            # the peer logs under the same id, so one grep follows a request across nodes
            hdrs.append((b"X-Trans-Id", rid.encode("latin-1")))
        if content_length is not None:
            hdrs.append((b"Content-Length", b"%d" % content_length))
        elif method in ("PUT", "POST") or expect_continue:
            hdrs.append((b"Transfer-Encoding", b"chunked"))
        if expect_continue:
            hdrs.append((b"Expect", b"100-continue"))
        if self._client.signer is not None:
            hdrs.extend(encode_headers(self._client.signer(method, target)))
        try:
            event = h11.Request(method=method.encode("ascii"), target=target.encode("latin-1"),
                                headers=hdrs)
            return self._conn.h11.send(event)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise BackendError(f"cannot send {method} {target!r}: {exc}") from exc

    async def start(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                    *, content_length: int | None = None,
                    expect_continue: bool = False) -> ClientResponse | None:
        """Send the request head.

        With ``expect_continue`` wait for the peer's ``100 Continue``; if the
        peer answers with a final status instead, that response is returned
        (and the caller must not send a body: :meth:`send` then refuses and
        :meth:`finish` returns that response).  Otherwise returns ``None``.
        """
        head = self._head(method, target, headers, content_length, expect_continue)
        await self._conn.send_bytes(head, self._timeouts.node)
        if expect_continue:
            event = await self._conn.next_event(self._timeouts.node)
            if isinstance(event, h11.InformationalResponse):
                return None
            self._refused = True
            return self._take_response(event)
        return None

    async def _send_whole(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                          body: bytes) -> None:
        """Head, body and end of message in one ``send`` when small."""
        send_length = bool(body) or method in ("PUT", "POST")
        conn = self._conn
        head = self._head(method, target, headers, len(body) if send_length else None, False)
        pieces = conn.h11.send_with_data_passthrough(h11.Data(data=body)) if body else []
        conn.h11.send(h11.EndOfMessage())
        if len(body) < SMALL_RESPONSE:
            await conn.send_bytes(b"".join((head, *pieces)), self._timeouts.node)
        else:
            await conn.send_pieces([head, *pieces], self._timeouts.node)

    async def send(self, data: bytes) -> None:
        """Send the next piece of the request body."""
        if self._refused:
            raise BackendError("peer refused the request body")
        if data:
            await self._conn.send_data(data, self._timeouts.node)

    async def finish(self) -> ClientResponse:
        """End the request body and read the response head."""
        if self._refused:
            assert self.response is not None
            return self.response
        try:
            tail = self._conn.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise BackendError(f"request body does not match its length: {exc}") from exc
        await self._conn.send_bytes(tail, self._timeouts.node)
        return await self.read_head()

    async def read_head(self) -> ClientResponse:
        if self.response is not None:
            return self.response
        while True:
            event = await self._conn.next_event(self._timeouts.node)
            if type(event) is h11.InformationalResponse:
                continue
            return self._take_response(event)

    def _take_response(self, event: h11.Event) -> ClientResponse:
        if type(event) is not h11.Response:
            raise BackendError(f"expected a response, got {type(event).__name__}")
        self.response = ClientResponse(event.status_code, Headers(event.headers.raw_items()), self)
        length = self.response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) >= DIRECT_BODY:
            self._direct = direct_reader(self._conn.h11)
        return self.response

    async def _next_body_chunk(self) -> bytes | None:
        """The next piece of the response body, ``None`` at its end."""
        if self._response_done:
            return None
        conn = self._conn
        direct = self._direct
        if direct is not None and direct._remaining and not conn.h11._receive_buffer:  # type: ignore[attr-defined]
            return await conn.receive_direct(direct, self._timeouts.node)
        event = await conn.next_event(self._timeouts.node)
        if type(event) is h11.Data:
            return event.data
        if type(event) is h11.EndOfMessage:
            self._response_done = True
            return None
        raise BackendError(f"unexpected {type(event).__name__} in response body")

    @property
    def reusable(self) -> bool:
        h = self._conn.h11
        return self._response_done and h.our_state is h11.DONE and h.their_state is h11.DONE


class HTTPClient:
    """Keep-alive connection pool for talking to peers.

    ``signer`` adds the internal-RPC signature headers to every request.
    One client serves one trio run (its receive buffer is shared by its
    connections, which is safe only within one thread).
    """

    def __init__(self, *, timeouts: Timeouts | None = None, max_idle_per_peer: int = 64,
                 signer: Signer | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_idle_per_peer = max_idle_per_peer
        self.signer = signer
        self._idle: dict[tuple[str, int], list[_PooledConnection]] = {}
        self._buf = memoryview(bytearray(READ_SIZE))
        #: peers served in this process (:mod:`node.local_call`), by address
        self.local: dict[tuple[str, int], LocalRoute] = {}

    async def _connect(self, key: tuple[str, int], timeout: float) -> _PooledConnection:
        with trio.move_on_after(timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(*key)
            except OSError as exc:
                raise BackendError(f"connect to {key[0]}:{key[1]}: {exc}") from exc
        if scope.cancelled_caught:
            raise BackendTimeout(f"connect to {key[0]}:{key[1]} timed out")
        # Take the plain socket out of trio's stream: see SocketIO for why.
        tsock = stream.socket
        sock = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
        tune_tcp(sock)
        return _PooledConnection(sock, key, self._buf)

    def _checkout_idle(self, key: tuple[str, int]) -> _PooledConnection | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if conn.looks_alive():
                conn.reused = True
                conn.answered = False
                return conn
            conn.close()
        return None

    def _checkin(self, conn: _PooledConnection) -> bool:
        try:
            conn.h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        pool = self._idle.setdefault(conn.key, [])
        if len(pool) >= self.max_idle_per_peer:
            return False
        pool.append(conn)
        return True

    @asynccontextmanager
    async def exchange(self, host: str, port: int, *, timeouts: Timeouts | None = None,
                       fresh: bool = False) -> AsyncIterator[Exchange]:
        """Check a connection out for one request/response.

        ``fresh`` skips the pool (used for the retry after a stale pooled
        connection failed).
        """
        key = (host, port)
        t = timeouts or self.timeouts
        conn = None if fresh else self._checkout_idle(key)
        if conn is None:
            conn = await self._connect(key, t.connect)
        ex = Exchange(self, conn, t)
        try:
            yield ex
        except BaseException:
            conn.close()
            raise
        if not (ex.reusable and self._checkin(conn)):
            conn.close()

    @asynccontextmanager
    async def upload(self, host: str, port: int, *,
                     timeouts: Timeouts | None = None) -> AsyncIterator[Exchange | LocalExchange]:
        """An exchange for a request whose body follows :meth:`Exchange.start`
        (``start``, ``send``, ``finish``); to this node's own address it runs
        in-process (:class:`LocalExchange`)."""
        route = self.local.get((host, port))
        if route is None:
            async with self.exchange(host, port, timeouts=timeouts) as ex:
                yield ex
            return
        local = LocalExchange(route, timeouts or self.timeouts)
        try:
            yield local
        finally:
            local.abort()

    async def request(self, method: str, host: str, port: int, target: str,
                      headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                      timeouts: Timeouts | None = None,
                      max_response_bytes: int = 64 << 20) -> ClientResponse:
        """Send a small request and read the whole response.

        A connection from the pool may have been closed by the peer while it
        sat idle; for idempotent methods the request is then sent once more
        on a new connection.
        """
        route = self.local.get((host, port))
        if route is not None:
            return await self._request_local(route, method, target, headers, body,
                                             timeouts or self.timeouts, max_response_bytes)
        if not isinstance(headers, list):
            headers = list(headers)
        try:
            return await self._request_once(method, host, port, target, headers, body,
                                            timeouts, max_response_bytes, fresh=False)
        except StaleConnection:
            if method not in IDEMPOTENT:
                raise
        return await self._request_once(method, host, port, target, headers, body, timeouts,
                                        max_response_bytes, fresh=True)

    @staticmethod
    async def _request_local(route: LocalRoute, method: str, target: str,
                             headers: Iterable[tuple[str, str]], body: bytes, timeouts: Timeouts,
                             max_response_bytes: int) -> ClientResponse:
        with _local_errors():
            answer = await route.request(method, target, headers, body, timeout=timeouts.node,
                                         max_response_bytes=max_response_bytes)
        return _local_response(answer)

    async def _request_once(self, method: str, host: str, port: int, target: str,
                            headers: list[tuple[str, str]], body: bytes,
                            timeouts: Timeouts | None, max_response_bytes: int,
                            fresh: bool) -> ClientResponse:
        async with self.exchange(host, port, timeouts=timeouts, fresh=fresh) as ex:
            await ex._send_whole(method, target, headers, body)
            resp = await ex.read_head()
            await resp.read(max_response_bytes)
            return resp

    @asynccontextmanager
    async def stream(self, method: str, host: str, port: int, target: str,
                     headers: Iterable[tuple[str, str]] = (), *,
                     timeouts: Timeouts | None = None) -> AsyncIterator[ClientResponse]:
        """Send a bodiless request; yield the response with its body unread.

        Like :meth:`request`, an idempotent request whose pooled connection
        turns out stale is sent once more on a new connection -- only before
        the response is handed over, never after.
        """
        headers = list(headers)
        for fresh in (False, True):
            handed_over = False
            try:
                async with self.exchange(host, port, timeouts=timeouts, fresh=fresh) as ex:
                    await ex._send_whole(method, target, headers, b"")
                    response = await ex.read_head()
                    handed_over = True
                    yield response
                return
            except StaleConnection:
                if handed_over or fresh or method not in IDEMPOTENT:
                    raise

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
