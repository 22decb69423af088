"""Requests a node serves to itself (node.local_call) answer exactly as over a socket."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import trio

from node.http_client import BackendError, BackendTimeout, HTTPClient, Timeouts
from node.http_server import BadRequest, Request, Response, text_response
from node.local_call import LocalRoute
from node.storage.timestamp import Timestamp
from tests.integration.storage_fixture import HOST, Store, quote, store  # noqa: F401

OBJ = quote("d1", 3, "a", "c", "o")
# Headers a socket and a local call may legitimately differ in.
VARYING = {"date", "connection", "x-trans-id"}


def local_client(store: Store, nursery: trio.Nursery) -> HTTPClient:
    client = HTTPClient()
    client.local[(HOST, store.port)] = LocalRoute(store.server, f"{HOST}:{store.port}", nursery)
    return client


async def both(store: Store, local: HTTPClient, method: str, path: str,
               headers: dict[str, str] | None = None, **kw):
    """The same request over the socket and in-process: both responses."""
    hdrs = list((headers or {}).items())
    timeouts = Timeouts(connect=5, node=30)
    over_socket = await store.client.request(method, HOST, store.port, path, hdrs, timeouts=timeouts, **kw)
    in_process = await local.request(method, HOST, store.port, path, hdrs, timeouts=timeouts, **kw)
    return over_socket, in_process


def comparable(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in VARYING}


async def test_local_calls_answer_as_the_socket_does(store: Store, nursery: trio.Nursery) -> None:
    local = local_client(store, nursery)
    body = os.urandom(70_000)
    t = Timestamp(time.time()).internal
    put = await local.request("PUT", HOST, store.port, OBJ,
                              [("X-Timestamp", t), ("Content-Type", "text/plain"),
                               ("X-Object-Meta-Colour", "snow ☃")], body)
    assert put.status == 201, put.body
    assert put.headers["x-trans-id"]

    for method, headers in [("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=5-9"}),
                            ("GET", {"If-None-Match": hashlib.md5(body).hexdigest()})]:
        sock, loc = await both(store, local, method, OBJ, headers)
        assert (loc.status, comparable(loc.headers), loc.body) == \
            (sock.status, comparable(sock.headers), sock.body), (method, headers)
    sock, loc = await both(store, local, "GET", OBJ)
    assert loc.body == body and loc.headers["x-object-meta-colour"] == sock.headers["x-object-meta-colour"]
    sock, loc = await both(store, local, "HEAD", OBJ)
    assert loc.body == b"" and loc.headers["content-length"] == str(len(body))

    for method, path, headers in [("GET", quote("d1", 3, "a", "c", "missing"), {}),
                                  ("PUT", quote("d1", 3, "a", "c", "no-ts"), {}),
                                  ("GET", quote("nodev", 3, "a", "c", "o"), {}),
                                  ("PATCH", OBJ, {})]:
        sock, loc = await both(store, local, method, path, headers)
        assert (loc.status, loc.body) == (sock.status, sock.body), (method, path)
        assert 400 <= loc.status < 600


async def test_local_calls_refuse_what_the_wire_would(store: Store, nursery: trio.Nursery) -> None:
    local = local_client(store, nursery)
    for client in (store.client, local):
        with pytest.raises(BackendError):
            await client.request("GET", HOST, store.port, OBJ, [("X-Evil", "a\r\nX-Injected: 1")])
        with pytest.raises(BackendError):
            await client.request("GET", HOST, store.port, OBJ, [("Bad Name", "x")])
        with pytest.raises(BackendError):
            await client.request("GET", HOST, store.port, OBJ, [("X-Trailing", "x ")])
        with pytest.raises(BackendError):
            await client.request("GET", HOST, store.port, OBJ + " x")
    t = Timestamp(time.time()).internal
    assert (await local.request("PUT", HOST, store.port, OBJ, [("X-Timestamp", t), ("Content-Type", "a/b")],
                              b"x" * 5000)).status == 201
    for client in (store.client, local):
        with pytest.raises(BackendError):
            await client.request("GET", HOST, store.port, OBJ, max_response_bytes=4096)


async def test_local_handler_failures_and_timeouts(nursery: trio.Nursery) -> None:
    """Failures answer as the server would; a caller that stops waiting (timeout,
    cancellation) leaves the handler running to its end, as a socket would."""
    seen: list[Request] = []
    finished: list[str] = []

    async def broken_body():
        yield b"first part"
        raise OSError("disk went away")

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.path == "/broken":
            return Response(200, [], broken_body(), content_length=100)
        if request.path == "/slow":
            await trio.sleep(0.5)
            finished.append(request.path)
        if request.path == "/crash":
            raise RuntimeError("boom")
        if request.path == "/bad":
            raise BadRequest("no")
        return text_response(200, (await request.read_body()).decode())

    client = HTTPClient(timeouts=Timeouts(connect=1, node=0.2))
    client.local[("10.0.0.9", 6200)] = LocalRoute(handler, "10.0.0.9:6200", nursery)
    r = await client.request("POST", "10.0.0.9", 6200, "/echo?x=1", [("X-Trans-Id", "tx-mine")], b"hello")
    assert (r.status, r.body, r.headers["x-trans-id"]) == (200, b"hello", "tx-mine")
    assert r.headers["content-length"] == "5"
    req = seen[-1]
    assert req.headers["host"] == "10.0.0.9:6200" and req.headers["content-length"] == "5"
    assert req.query == {"x": "1"} and req.request_id == "tx-mine"
    assert (await client.request("GET", "10.0.0.9", 6200, "/crash")).status == 500
    assert (await client.request("GET", "10.0.0.9", 6200, "/bad")).status == 400
    # a body that fails midway is a broken exchange for the caller, not a crash of the node
    with pytest.raises(BackendError):
        await client.request("GET", "10.0.0.9", 6200, "/broken")
    assert (await client.request("POST", "10.0.0.9", 6200, "/echo", [], b"still here")).body == b"still here"
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await client.request("GET", "10.0.0.9", 6200, "/slow")
    assert time.monotonic() - started < 0.4 and finished == []
    with trio.move_on_after(0.05):
        await client.request("GET", "10.0.0.9", 6200, "/slow")
    await trio.sleep(0.7)
    assert finished == ["/slow", "/slow"]
