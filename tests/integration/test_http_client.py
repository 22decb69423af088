"""The pooled client against our real server and against hand-written peers.

Misbehaving peers (one that hangs up on a pooled connection, one that never
answers) are tiny raw trio servers, so each failure happens exactly once and
at a known point.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import pytest
import trio

from node.http_client import (
    BackendError, BackendTimeout, HTTPClient, StaleConnection, Timeouts,
)
from node.http_server import Request, Response, ServerLimits, text_response
from tests.integration.test_http_server import HOST, echo_info, serving


async def test_sequential_requests_share_one_connection():
    client = HTTPClient()
    with trio.fail_after(10):
        async with serving(echo_info) as server:
            clients = set()
            for i in range(5):
                resp = await client.request("GET", HOST, server.port, f"/p{i}?q={i}")
                assert await resp.read() == resp.body  # already read: same bytes again
                info = json.loads(resp.body)
                assert resp.status == 200 and info["path"] == f"/p{i}" and info["query"] == {"q": str(i)}
                clients.add(info["client"])
            resp = await client.request("PUT", HOST, server.port, "/put", body=b"abc")
            clients.add(json.loads(resp.body)["client"])
            assert len(clients) == 1
    await client.aclose()


async def test_concurrent_requests_open_parallel_connections_then_pool_them():
    client = HTTPClient()
    seen: set[str] = set()

    async def slow(request: Request) -> Response:
        seen.add(request.client)
        await trio.sleep(0.05)
        return text_response(200, "ok")

    with trio.fail_after(10):
        async with serving(slow) as server:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(client.request, "GET", HOST, server.port, "/")
            assert len(seen) == 4
            for _ in range(4):
                await client.request("GET", HOST, server.port, "/")
            assert len(seen) == 4
    await client.aclose()


async def test_idle_connection_closed_by_server_is_replaced():
    client = HTTPClient()
    with trio.fail_after(10):
        async with serving(echo_info, ServerLimits(idle_timeout=0.2)) as server:
            first = json.loads((await client.request("GET", HOST, server.port, "/")).body)
            await trio.sleep(0.5)  # the server drops the pooled connection
            second = json.loads((await client.request("POST", HOST, server.port, "/", body=b"x")).body)
            assert first["client"] != second["client"]
    await client.aclose()


async def hangs_up_on_second_request(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A peer that answers one request per connection with keep-alive, then
    reads the next request and closes without answering -- the race where a
    server times out an idle connection just as the client reuses it."""
    async def conn(stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            try:
                await stream.receive_some(65536)
            except trio.BrokenResourceError:
                pass

    await trio.serve_tcp(conn, 0, host=HOST, handler_nursery=None, task_status=task_status)


async def test_idempotent_request_retried_after_pooled_connection_dies():
    client = HTTPClient()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(hangs_up_on_second_request)
            port = listeners[0].socket.getsockname()[1]
            assert (await client.request("GET", HOST, port, "/")).body == b"ok"
            # Pooled connection: the peer reads this request, then hangs up.
            resp = await client.request("GET", HOST, port, "/")
            assert resp.status == 200 and resp.body == b"ok"
            # The same for a streamed GET.
            async with client.stream("GET", HOST, port, "/") as resp:
                assert resp.status == 200 and await resp.read() == b"ok"
            nursery.cancel_scope.cancel()
    await client.aclose()


async def test_post_is_not_retried():
    client = HTTPClient()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(hangs_up_on_second_request)
            port = listeners[0].socket.getsockname()[1]
            await client.request("POST", HOST, port, "/", body=b"once")
            with pytest.raises(StaleConnection):
                await client.request("POST", HOST, port, "/", body=b"once")
            nursery.cancel_scope.cancel()
    await client.aclose()


@pytest.mark.parametrize("length", [10, 1_000_000])  # through h11, and read past it
async def test_timeouts_raise_backend_timeout(length):
    async def stalls(request: Request) -> Response:
        if request.path == "/head":
            await trio.sleep(30)

        async def body():
            yield b"start"
            await trio.sleep(30)
            yield b"never"
        return Response(200, [], body(), content_length=length)

    client = HTTPClient(timeouts=Timeouts(connect=1, node=0.2))
    with trio.fail_after(10):
        async with serving(stalls) as server:
            with pytest.raises(BackendTimeout):
                await client.request("GET", HOST, server.port, "/head")
            with pytest.raises(BackendTimeout):
                await client.request("GET", HOST, server.port, "/body")
            async with client.stream("GET", HOST, server.port, "/body") as resp:
                assert resp.status == 200
                with pytest.raises(BackendTimeout):
                    async for _ in resp.iter_body():
                        pass
    await client.aclose()


async def test_connection_refused_is_backend_error():
    probe = trio.socket.socket()
    await probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(BackendError) as info:
        await HTTPClient().request("GET", HOST, port, "/")
    assert not isinstance(info.value, BackendTimeout)


async def test_expect_continue_refusal_returned_early():
    read_body = []

    async def handler(request: Request) -> Response:
        if request.headers.get("x-quota") == "full":
            return text_response(507, "no space\n")
        read_body.append(len(await request.read_body()))
        return text_response(201, "stored\n")

    client = HTTPClient()
    with trio.fail_after(10):
        async with serving(handler) as server:
            async with client.exchange(HOST, server.port) as ex:
                early = await ex.start("PUT", "/o", [("X-Quota", "full")],
                                       content_length=1 << 30, expect_continue=True)
                assert early is not None and early.status == 507
                with pytest.raises(BackendError):
                    await ex.send(b"x")
                assert await ex.finish() is early
            assert read_body == []
            async with client.exchange(HOST, server.port) as ex:
                assert await ex.start("PUT", "/o", content_length=6, expect_continue=True) is None
                await ex.send(b"abc")
                await ex.send(b"def")
                resp = await ex.finish()
                assert resp.status == 201 and await resp.read() == b"stored\n"
            async with client.exchange(HOST, server.port) as ex:  # chunked, no length
                assert await ex.start("PUT", "/o", expect_continue=True) is None
                await ex.send(b"1234")
                assert (await ex.finish()).status == 201
            assert read_body == [6, 4]
    await client.aclose()


async def test_large_bodies_stream_both_ways_in_bounded_memory():
    size = 64 << 20
    block = bytes(range(256)) * 4096  # 1 MiB

    async def handler(request: Request) -> Response:
        if request.method == "PUT":
            md5 = hashlib.md5()
            async for chunk in request.iter_body():
                md5.update(chunk)
            return text_response(201, md5.hexdigest())

        async def blocks():
            for _ in range(size // len(block)):
                yield block
        return Response(200, [], blocks(), content_length=size)

    expected = hashlib.md5(block * (size // len(block))).hexdigest()
    client = HTTPClient()
    with trio.fail_after(60):
        async with serving(handler) as server:
            await client.request("GET", HOST, server.port, "/warm", max_response_bytes=size)
            tracemalloc.start()
            try:
                async with client.exchange(HOST, server.port) as ex:
                    await ex.start("PUT", "/big", content_length=size)
                    for _ in range(size // len(block)):
                        await ex.send(block)
                    resp = await ex.finish()
                    assert resp.status == 201 and await resp.read() == expected.encode()
                md5 = hashlib.md5()
                got = 0
                async with client.stream("GET", HOST, server.port, "/big") as resp:
                    async for chunk in resp.iter_body():
                        md5.update(chunk)
                        got += len(chunk)
                assert got == size and md5.hexdigest() == expected
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            # Server and client share this process: both together stayed
            # within a few chunks of 1 MiB while 128 MiB went through.
            assert peak < 12 << 20, peak
    await client.aclose()


async def test_head_and_response_without_body():
    async def handler(request: Request) -> Response:
        if request.path == "/empty":
            return Response(204, [], b"")
        return Response(200, [("Content-Type", "text/plain")], b"twelve bytes")

    client = HTTPClient()
    with trio.fail_after(10):
        async with serving(handler) as server:
            head = await client.request("HEAD", HOST, server.port, "/x")
            assert head.status == 200 and head.headers.get("content-length") == "12"
            assert head.body == b""
            assert (await client.request("DELETE", HOST, server.port, "/empty")).status == 204
            assert (await client.request("GET", HOST, server.port, "/x")).body == b"twelve bytes"
    await client.aclose()


async def test_response_over_limit_is_refused():
    async def handler(request: Request) -> Response:
        return Response(200, [], b"x" * 10_000)

    client = HTTPClient()
    with trio.fail_after(10):
        async with serving(handler) as server:
            with pytest.raises(BackendError):
                await client.request("GET", HOST, server.port, "/", max_response_bytes=1000)
            assert len((await client.request("GET", HOST, server.port, "/")).body) == 10_000
    await client.aclose()
