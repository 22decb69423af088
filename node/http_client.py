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
have one exception to catch per peer.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11
import trio

from node.headers import Headers, encode_headers

READ_SIZE = 1 << 20
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "REPLICATE"})

#: signs an outgoing request: ``(method, target) -> extra headers``
Signer = Callable[[str, str], list[tuple[str, str]]]


class BackendError(Exception):
    """A peer could not be reached, or broke the exchange."""


class BackendTimeout(BackendError):
    """A peer did not answer within the timeout."""


@dataclass
class Timeouts:
    connect: float = 3.0
    #: per network step (send a chunk, wait for a head, read a chunk)
    node: float = 10.0


class _PooledConnection:
    __slots__ = ("stream", "h11", "key")

    def __init__(self, stream: trio.SocketStream, key: tuple[str, int]) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.key = key

    async def send(self, event: h11.Event, timeout: float) -> None:
        data = self.h11.send(event)
        if not data:
            return
        with trio.move_on_after(timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise BackendError(f"send to {self.key[0]}:{self.key[1]}: {exc}") from exc
        if scope.cancelled_caught:
            raise BackendTimeout(f"send to {self.key[0]}:{self.key[1]} timed out")

    async def next_event(self, timeout: float) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise BackendError(f"{self.key[0]}:{self.key[1]}: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(timeout) as scope:
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise BackendError(f"receive from {self.key[0]}:{self.key[1]}: {exc}") from exc
            if scope.cancelled_caught:
                raise BackendTimeout(f"{self.key[0]}:{self.key[1]} timed out")
            self.h11.receive_data(data)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await self.stream.aclose()


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
        if self._exchange is None:
            return
        async for chunk in self._exchange._iter_response_body():
            yield chunk

    async def read(self, max_bytes: int = 64 << 20) -> bytes:
        parts = []
        size = 0
        async for chunk in self.iter_body():
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
        self._method = ""
        self.response: ClientResponse | None = None
        self._response_done = False

    async def start(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                    *, content_length: int | None = None,
                    expect_continue: bool = False) -> ClientResponse | None:
        """Send the request head.

        With ``expect_continue`` wait for the peer's ``100 Continue``; if the
        peer answers with a final status instead, that response is returned
        (and the caller must not send a body).  Otherwise returns ``None``.
        """
        self._method = method
        hdrs = list(headers)
        hdrs.append(("Host", f"{self._conn.key[0]}:{self._conn.key[1]}"))
        if content_length is not None:
            hdrs.append(("Content-Length", str(content_length)))
        elif method in ("PUT", "POST") or expect_continue:
            hdrs.append(("Transfer-Encoding", "chunked"))
        if expect_continue:
            hdrs.append(("Expect", "100-continue"))
        if self._client.signer is not None:
            hdrs.extend(self._client.signer(method, target))
        await self._conn.send(h11.Request(method=method, target=target.encode("latin-1"),
                                          headers=encode_headers(hdrs)), self._timeouts.node)
        if expect_continue:
            event = await self._conn.next_event(self._timeouts.node)
            if isinstance(event, h11.InformationalResponse):
                return None
            return self._take_response(event)
        return None

    async def send(self, data: bytes) -> None:
        if data:
            await self._conn.send(h11.Data(data=data), self._timeouts.node)

    async def finish(self) -> ClientResponse:
        """End the request body and read the response head."""
        await self._conn.send(h11.EndOfMessage(), self._timeouts.node)
        return await self.read_head()

    async def read_head(self) -> ClientResponse:
        if self.response is not None:
            return self.response
        while True:
            event = await self._conn.next_event(self._timeouts.node)
            if isinstance(event, h11.InformationalResponse):
                continue
            return self._take_response(event)

    def _take_response(self, event: h11.Event) -> ClientResponse:
        if not isinstance(event, h11.Response):
            raise BackendError(f"expected a response, got {type(event).__name__}")
        self.response = ClientResponse(event.status_code, Headers(event.headers), self)
        return self.response

    async def _iter_response_body(self) -> AsyncIterator[bytes]:
        while not self._response_done:
            event = await self._conn.next_event(self._timeouts.node)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._response_done = True
            else:
                raise BackendError(f"unexpected {type(event).__name__} in response body")

    @property
    def reusable(self) -> bool:
        h = self._conn.h11
        return self._response_done and h.our_state is h11.DONE and h.their_state is h11.DONE


class HTTPClient:
    """Keep-alive connection pool for talking to peers.

    ``signer`` adds the internal-RPC signature headers to every request.
    """

    def __init__(self, *, timeouts: Timeouts | None = None, max_idle_per_peer: int = 64,
                 signer: Signer | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_idle_per_peer = max_idle_per_peer
        self.signer = signer
        self._idle: dict[tuple[str, int], list[_PooledConnection]] = defaultdict(list)

    async def _connect(self, key: tuple[str, int], timeout: float) -> _PooledConnection:
        with trio.move_on_after(timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(*key)
            except OSError as exc:
                raise BackendError(f"connect to {key[0]}:{key[1]}: {exc}") from exc
        if scope.cancelled_caught:
            raise BackendTimeout(f"connect to {key[0]}:{key[1]} timed out")
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _PooledConnection(stream, key)

    def _checkout_idle(self, key: tuple[str, int]) -> _PooledConnection | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if conn.h11.our_state is h11.IDLE and conn.h11.their_state is h11.IDLE:
                return conn
        return None

    def _checkin(self, conn: _PooledConnection) -> bool:
        try:
            conn.h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        pool = self._idle[conn.key]
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
            await conn.aclose()
            raise
        if not (ex.reusable and self._checkin(conn)):
            await conn.aclose()

    async def request(self, method: str, host: str, port: int, target: str,
                      headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
                      timeouts: Timeouts | None = None,
                      max_response_bytes: int = 64 << 20) -> ClientResponse:
        """Send a small request and read the whole response.

        A connection from the pool may have been closed by the peer while it
        sat idle; for idempotent methods the request is retried once on a new
        connection.
        """
        headers = list(headers)
        reused = bool(self._idle.get((host, port)))
        try:
            return await self._request_once(method, host, port, target, headers, body,
                                            timeouts, max_response_bytes, fresh=False)
        except BackendTimeout:
            raise
        except BackendError:
            if not (reused and method in IDEMPOTENT):
                raise
        return await self._request_once(method, host, port, target, headers, body, timeouts,
                                        max_response_bytes, fresh=True)

    async def _request_once(self, method: str, host: str, port: int, target: str,
                            headers: list[tuple[str, str]], body: bytes,
                            timeouts: Timeouts | None, max_response_bytes: int,
                            fresh: bool) -> ClientResponse:
        async with self.exchange(host, port, timeouts=timeouts, fresh=fresh) as ex:
            send_length = bool(body) or method in ("PUT", "POST")
            await ex.start(method, target, headers,
                           content_length=len(body) if send_length else None)
            await ex.send(body)
            resp = await ex.finish()
            await resp.read(max_response_bytes)
            return resp

    @asynccontextmanager
    async def stream(self, method: str, host: str, port: int, target: str,
                     headers: Iterable[tuple[str, str]] = (), *,
                     timeouts: Timeouts | None = None) -> AsyncIterator[ClientResponse]:
        """Send a bodiless request; yield the response with its body unread."""
        async with self.exchange(host, port, timeouts=timeouts) as ex:
            await ex.start(method, target, headers)
            resp = await ex.finish()
            yield resp

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                await conn.aclose()
        self._idle.clear()
