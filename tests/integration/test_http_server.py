"""The HTTP core's server against real sockets.

Clients here are raw ``trio.open_tcp_stream`` connections writing bytes, so
each test controls framing, timing and misbehaviour exactly; responses are
parsed by the small reader below rather than by our own client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

import pytest
import trio

from node.config import Listen, NodeConfig, new_cluster
from node.daemon import Node
from node.http_server import (
    BadRequest, ClientDisconnected, HTTPServer, Request, Response, ServerLimits, text_response,
)
from node.log import JSONFormatter

HOST = "127.0.0.1"


@asynccontextmanager
async def serving(handler, limits: ServerLimits | None = None) -> AsyncIterator[HTTPServer]:
    """Run an HTTPServer on a free loopback port for the duration."""
    server = HTTPServer(handler, HOST, 0, name="test", limits=limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            with trio.move_on_after(5):
                await server.shutdown()
            nursery.cancel_scope.cancel()


class RawClient:
    """A TCP connection that writes bytes and parses responses by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(HOST, port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buf += data
        return bool(data)

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not await self._fill():
                raise EOFError(f"closed before {marker!r}; have {bytes(self.buf)!r}")
        idx = self.buf.index(marker) + len(marker)
        out = bytes(self.buf[:idx])
        del self.buf[:idx]
        return out

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise EOFError("closed mid-body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Read one response: status, headers (lower-case names), body."""
        head = (await self.read_until(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                size = int((await self.read_until(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.read_until(b"\r\n")
                    return status, headers, bytes(body)
                body += await self.read_exact(size)
                assert await self.read_exact(2) == b"\r\n"
        return status, headers, await self.read_exact(int(headers.get("content-length", 0)))

    async def at_eof(self) -> bool:
        """True if the server closed the connection (after any buffered bytes)."""
        if self.buf:
            return False
        try:
            return not await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def hello(request: Request) -> Response:
    return Response(200, [("Content-Type", "text/plain")], f"hello {request.raw_path}".encode())


async def echo_info(request: Request) -> Response:
    """Reads the whole body; reports what arrived and from which connection."""
    body = await request.read_body(64 << 20)
    info = {"client": request.client, "len": len(body), "md5": hashlib.md5(body).hexdigest(),
            "path": request.path, "query": request.query, "method": request.method}
    return Response(200, [("Content-Type", "application/json")], json.dumps(info).encode())


# -- keep-alive and pipelining ------------------------------------------------

async def test_keep_alive_reuses_one_connection():
    with trio.fail_after(10):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            seen = []
            for i in range(3):
                await client.send(get(f"/k{i}"))
                status, headers, body = await client.response()
                assert status == 200 and "connection" not in headers
                seen.append(json.loads(body))
            assert [s["path"] for s in seen] == ["/k0", "/k1", "/k2"]
            assert len({s["client"] for s in seen}) == 1
            await client.aclose()


async def test_pipelined_requests_answered_in_order():
    with trio.fail_after(10):
        async with serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/a") + b"PUT /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                              + get("/c") + b"HEAD /d HTTP/1.1\r\nHost: t\r\n\r\n" + get("/e"))
            bodies = []
            for path in "abcde":
                status, headers, body = await client.response(head_only=path == "d")
                assert status == 200
                bodies.append(body)
                if path == "d":
                    assert headers["content-length"] == str(len(b"hello /d"))
            assert bodies == [b"hello /a", b"hello /b", b"hello /c", b"", b"hello /e"]
            await client.aclose()


# -- chunked bodies -----------------------------------------------------------

async def test_chunked_request_body():
    with trio.fail_after(10):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            status, _, body = await client.response()
            info = json.loads(body)
            assert status == 200 and info["len"] == 11
            assert info["md5"] == hashlib.md5(b"hello world").hexdigest()
            # The connection is still usable after a chunked body.
            await client.send(get("/after"))
            assert json.loads((await client.response())[2])["path"] == "/after"


async def test_streamed_response_without_length_goes_out_chunked():
    async def handler(request: Request) -> Response:
        async def parts():
            for i in range(5):
                await trio.sleep(0)
                yield f"part{i};".encode()
        return Response(200, [], parts())

    with trio.fail_after(10):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            for _ in range(2):
                await client.send(get())
                status, headers, body = await client.response()
                assert headers["transfer-encoding"] == "chunked"
                assert body == b"part0;part1;part2;part3;part4;"


async def test_streamed_response_with_length_and_sync_iterable():
    async def handler(request: Request) -> Response:
        return Response(200, [], iter([b"abc", b"", b"def"]), content_length=6)

    with trio.fail_after(10):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            await client.send(get())
            status, headers, body = await client.response()
            assert headers["content-length"] == "6" and body == b"abcdef"


# -- Expect: 100-continue -----------------------------------------------------

async def test_100_continue_sent_when_handler_reads():
    with trio.fail_after(10):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                              b"Expect: 100-continue\r\n\r\n")
            status, _, _ = await client.response()
            assert status == 100
            await client.send(b"data")
            status, headers, body = await client.response()
            assert status == 200 and json.loads(body)["len"] == 4
            await client.send(get("/next"))
            assert (await client.response())[0] == 200


async def test_100_continue_refused_without_reading():
    async def refuse(request: Request) -> Response:
        if request.method == "PUT":
            return text_response(413, "too big\n")
        return await hello(request)

    with trio.fail_after(10):
        async with serving(refuse) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                              b"Expect: 100-continue\r\n\r\n")
            status, headers, body = await client.response()
            # No 100 first: the final answer comes straight away, and since the
            # client may or may not send the body now, the server closes.
            assert status == 413 and body == b"too big\n"
            assert headers["connection"] == "close"
            assert await client.at_eof()
            other = await RawClient.connect(server.port)
            await other.send(get("/ok"))
            assert (await other.response())[0] == 200


async def test_unread_small_body_is_drained_and_connection_kept():
    with trio.fail_after(10):
        async with serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
            assert (await client.response())[0] == 200
            await client.send(get("/y"))
            assert (await client.response())[2] == b"hello /y"


async def test_unread_large_body_closes_but_answer_arrives():
    limits = ServerLimits(max_drain_bytes=1024)
    with trio.fail_after(10):
        async with serving(hello, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n")
            await client.send(b"x" * 300_000)
            status, headers, body = await client.response()
            assert status == 200 and headers["connection"] == "close"


# -- slow clients and timeouts --------------------------------------------------

async def test_slow_client_byte_by_byte():
    with trio.fail_after(20):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            raw = b"PUT /slow?a=1&b=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde"
            for i in range(len(raw)):
                await client.send(raw[i:i + 1])
                await trio.sleep(0.002)
            status, _, body = await client.response()
            info = json.loads(body)
            assert status == 200 and info["len"] == 5 and info["query"] == {"a": "1", "b": "2"}


async def test_idle_timeout_closes_kept_alive_connection():
    limits = ServerLimits(idle_timeout=0.3)
    with trio.fail_after(10):
        async with serving(hello, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(get())
            assert (await client.response())[0] == 200
            start = trio.current_time()
            assert await client.at_eof()
            assert trio.current_time() - start >= 0.25
            silent = await RawClient.connect(server.port)
            assert await silent.at_eof()


async def test_read_timeout_on_trickling_head():
    """A head that keeps trickling in must still finish within read_timeout."""
    limits = ServerLimits(idle_timeout=30, read_timeout=0.5)
    with trio.fail_after(10):
        async with serving(hello, limits) as server:
            client = await RawClient.connect(server.port)
            closed = False
            for byte in get().decode():
                try:
                    await client.send(byte.encode())
                except trio.BrokenResourceError:
                    closed = True
                    break
                await trio.sleep(0.1)
            assert closed or await client.at_eof()


@pytest.mark.parametrize("length", [100, 1_000_000])  # through h11, and read past it
async def test_read_timeout_mid_body_reaches_handler(length):
    seen: list[BaseException] = []

    async def handler(request: Request) -> Response:
        try:
            await request.read_body()
        except ClientDisconnected as exc:
            seen.append(exc)
            raise
        return text_response(200, "unexpected")

    limits = ServerLimits(read_timeout=0.3)
    with trio.fail_after(10):
        async with serving(handler, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n0123456789"
                              % length)
            assert await client.at_eof()
            assert len(seen) == 1


async def test_send_timeout_drops_a_client_that_stops_reading():
    closed = trio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/ok":
            return await hello(request)

        async def endless():
            try:
                while True:
                    yield b"x" * (1 << 20)
            finally:
                closed.set()
        return Response(200, [], endless())

    limits = ServerLimits(send_timeout=0.3)
    with trio.fail_after(10):
        async with serving(handler, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/forever"))
            # Never read: the kernel buffers fill, the server's sends stall,
            # and the watchdog ends the connection and the body with it.
            await closed.wait()
            other = await RawClient.connect(server.port)
            await other.send(get("/ok"))
            assert (await other.response())[0] == 200


async def test_http_1_0_request_is_answered_and_closed():
    with trio.fail_after(10):
        async with serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"GET /old HTTP/1.0\r\n\r\n")
            status, headers, body = await client.response()
            assert (status, body) == (200, b"hello /old")
            assert await client.at_eof()


# -- malformed requests and limits ------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nNo-Colon\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"GET /%ff%fe HTTP/1.1\r\nHost: t\r\n\r\n",
])
async def test_malformed_request_gets_400_and_close(raw):
    with trio.fail_after(10):
        async with serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(raw)
            status, headers, _ = await client.response()
            assert 400 <= status < 600 and status != 500
            assert headers.get("connection") == "close"
            assert await client.at_eof()
            other = await RawClient.connect(server.port)
            await other.send(get("/still"))
            assert (await other.response())[2] == b"hello /still"


async def test_bad_chunk_framing_gets_400():
    with trio.fail_after(10):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"zz\r\nhello\r\n0\r\n\r\n")
            status, headers, body = await client.response()
            assert status == 400 and headers["connection"] == "close"
            assert b"malformed body" in body
            assert await client.at_eof()


async def test_oversized_head_gets_431():
    limits = ServerLimits(max_header_bytes=4096)
    with trio.fail_after(10):
        async with serving(hello, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(get(extra="X-Big: " + "a" * 8000 + "\r\n"))
            status, headers, _ = await client.response()
            assert status == 431 and headers["connection"] == "close"


async def test_too_many_headers_gets_431():
    limits = ServerLimits(max_header_count=20)
    with trio.fail_after(10):
        async with serving(hello, limits) as server:
            client = await RawClient.connect(server.port)
            await client.send(get(extra="".join(f"X-H{i}: v\r\n" for i in range(30))))
            status, headers, _ = await client.response()
            assert status == 431 and headers["connection"] == "close"
            ok = await RawClient.connect(server.port)
            await ok.send(get(extra="".join(f"X-H{i}: v\r\n" for i in range(10))))
            assert (await ok.response())[0] == 200


# -- failures on either side ---------------------------------------------------------

async def test_client_disconnect_mid_body():
    seen: list[BaseException] = []
    done = trio.Event()

    async def handler(request: Request) -> Response:
        try:
            async for _ in request.iter_body():
                pass
        except ClientDisconnected as exc:
            seen.append(exc)
            raise
        finally:
            done.set()
        return text_response(201)

    with trio.fail_after(10):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            await client.send(b"x" * 5000)
            await client.aclose()
            await done.wait()
            assert len(seen) == 1
            other = await RawClient.connect(server.port)
            await other.send(b"PUT /y HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
            assert (await other.response())[0] == 201


async def test_handler_exception_gives_500_and_server_keeps_serving():
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/bad":
            raise BadRequest("you asked for it")
        if request.path == "/crlf":
            return Response(200, [("X-Evil", "a\r\nSet-Cookie: x=1")], b"")
        return await hello(request)

    with trio.fail_after(10):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/boom"))
            status, _, body = await client.response()
            assert status == 500 and b"handler bug" not in body
            await client.send(get("/bad"))
            assert (await client.response())[0] == 400
            await client.send(get("/crlf"))
            status, headers, _ = await client.response()
            assert status == 500 and "set-cookie" not in headers
            await client.send(get("/fine"))
            assert (await client.response())[2] == b"hello /fine"


async def test_streamed_body_failure_cuts_connection_only():
    async def handler(request: Request) -> Response:
        if request.path == "/ok":
            return await hello(request)

        async def parts():
            yield b"first"
            raise RuntimeError("disk went away")
        return Response(200, [], parts(), content_length=100)

    with trio.fail_after(10):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/broken"))
            with pytest.raises(EOFError):
                await client.response()
            other = await RawClient.connect(server.port)
            await other.send(get("/ok"))
            assert (await other.response())[0] == 200


async def test_graceful_shutdown_finishes_in_flight_request():
    started = trio.Event()
    release = trio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await release.wait()
        return text_response(200, "finished")

    server = HTTPServer(handler, HOST, 0, limits=ServerLimits(shutdown_grace=5))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            busy = await RawClient.connect(port)
            idle = await RawClient.connect(port)
            await busy.send(get())
            await started.wait()
            nursery.start_soon(server.shutdown)
            await trio.sleep(0.1)
            assert await idle.at_eof()
            with pytest.raises(OSError):
                await trio.open_tcp_stream(HOST, port)
            release.set()
            status, headers, body = await busy.response()
            assert (status, body) == (200, b"finished")
            assert headers["connection"] == "close"
        # serve() returned by itself once the last connection finished.


# -- request ids and the request log -------------------------------------------------

class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_request_ids_and_one_json_log_line_per_request():
    logger = logging.getLogger("peerstack.http")
    capture = _Capture()
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        with trio.fail_after(10):
            async with serving(hello) as server:
                client = await RawClient.connect(server.port)
                await client.send(get("/mine", "X-Trans-Id: tx-caller-42\r\n"))
                _, headers, _ = await client.response()
                assert headers["x-trans-id"] == "tx-caller-42"
                await client.send(get("/made"))
                _, headers, _ = await client.response()
                made = headers["x-trans-id"]
                assert re.fullmatch(r"tx[0-9a-f]{20}-[0-9a-f]{10}", made)
                await client.send(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
                await client.response()
                await client.aclose()
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    docs = [json.loads(line) for line in capture.lines]
    requests = [d for d in docs if d["event"] == "http.request"]
    assert [(d["rid"], d["path"], d["status"]) for d in requests[:2]] == [
        ("tx-caller-42", "/mine", 200), (made, "/made", 200)]
    assert requests[2]["method"] == "PUT" and len(requests) == 3
    assert all("\n" not in line for line in capture.lines)


# -- large bodies stream through bounded memory ---------------------------------------

async def test_large_bodies_stream_in_bounded_chunks():
    size = 48 << 20
    largest: list[int] = [0]

    async def handler(request: Request) -> Response:
        if request.method == "PUT":
            md5 = hashlib.md5()
            async for chunk in request.iter_body():
                largest[0] = max(largest[0], len(chunk))
                md5.update(chunk)
            return text_response(201, md5.hexdigest())
        block = bytes(range(256)) * 4096

        async def blocks():
            for _ in range(size // len(block)):
                yield block
        return Response(200, [], blocks(), content_length=size)

    with trio.fail_after(60):
        async with serving(handler) as server:
            client = await RawClient.connect(server.port)
            block = b"\x5a" * (1 << 20)
            await client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(block)):
                await client.send(block)
            status, _, body = await client.response()
            assert status == 201
            assert body.decode().strip() == hashlib.md5(block * (size // len(block))).hexdigest()
            assert 0 < largest[0] <= 1 << 20
            await client.send(get("/big"))
            head = await client.read_until(b"\r\n\r\n")
            assert b"Content-Length: %d" % size in head
            remaining = size
            while remaining:
                if not client.buf:
                    assert await client._fill()
                take = min(remaining, len(client.buf))
                del client.buf[:take]
                remaining -= take


async def test_large_bodies_back_to_back_keep_their_framing():
    """Big Content-Length bodies are read past h11; the bytes around them must still
    frame correctly: body bytes sent with the head, and the next request sent with
    the end of the body, in odd-sized writes."""
    bodies = [bytes([i]) * ((1 << 20) + 12345 * i) + b"end" for i in (1, 2, 3)]
    wire = b"".join(b"PUT /%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (i, len(b), b)
                    for i, b in enumerate(bodies)) + get("/after")
    with trio.fail_after(30):
        async with serving(echo_info) as server:
            client = await RawClient.connect(server.port)
            for start in range(0, len(wire), 777_777):
                await client.send(wire[start:start + 777_777])
            for i, body in enumerate(bodies):
                status, _, got = await client.response()
                info = json.loads(got)
                assert status == 200 and info["path"] == f"/{i}"
                assert (info["len"], info["md5"]) == (len(body), hashlib.md5(body).hexdigest())
            status, _, got = await client.response()
            assert status == 200 and json.loads(got)["path"] == "/after"
            await client.aclose()


# -- the node's internal port requires signatures --------------------------------------

async def test_node_internal_port_requires_signature(tmp_path):
    cluster = new_cluster("test")
    config = NodeConfig(node_id="n1", public=Listen(HOST, 0), internal=Listen(HOST, 0))
    config.storage.root = str(tmp_path)

    async def ring_info(request: Request) -> Response:
        return text_response(200, "ring ok")

    node = Node(config, cluster)
    node.internal_routes["ring"] = ring_info
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                for port in (node.internal_port, node.public_port):
                    client = await RawClient.connect(port)
                    await client.send(get("/healthcheck"))
                    assert (await client.response())[:3:2] == (200, b"OK")
                client = await RawClient.connect(node.internal_port)
                await client.send(get("/ring/info"))
                status, _, body = await client.response()
                assert status == 401 and b"unsigned" in body
                resp = await node.client.request("GET", HOST, node.internal_port, "/ring/info")
                assert (resp.status, resp.body) == (200, b"ring ok")
                # A signed request replayed verbatim is refused.
                signed = node.client.signer("GET", "/ring/info")
                replay = "".join(f"{k}: {v}\r\n" for k, v in signed)
                await client.send(get("/ring/info", replay))
                assert (await client.response())[0] == 200
                await client.send(get("/ring/info", replay))
                status, _, body = await client.response()
                assert status == 401 and b"replayed" in body
            finally:
                node.stop()
