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


async def upload(client: HTTPClient, port: int, path: str, headers: list[tuple[str, str]],
                 pieces: list[bytes], length: int | None, finish: bool = True):
    """Stream ``pieces`` as the proxy does (``100-continue``, then the body): the
    refusal or the final response; ``None`` when left unfinished."""
    async with client.upload(HOST, port, timeouts=Timeouts(connect=5, node=30)) as ex:
        early = await ex.start("PUT", path, headers, content_length=length, expect_continue=True)
        if early is not None:
            await early.read()
            return early
        for piece in pieces:
            await ex.send(piece)
        if not finish:
            return None
        resp = await ex.finish()
        await resp.read()
        return resp


async def test_local_uploads_answer_as_the_socket_does(store: Store, nursery: trio.Nursery) -> None:
    """The proxy's streamed PUT to its own device: stored, refused and checked exactly
    as over a socket; a body left unfinished stores nothing."""
    from node.etag_footer import FOOTER_BYTES, FOOTER_HEADER, BodyChecksums

    local = local_client(store, nursery)
    data = os.urandom(5 * 1024 * 1024 + 17)
    sums = BodyChecksums()
    sums.update(data)
    pieces = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)] + [sums.footer()]
    corrupt = [*pieces[:-1], pieces[-1][:32] + b"0" * 16 + pieces[-1][48:]]
    length = len(data) + FOOTER_BYTES

    def headers() -> list[tuple[str, str]]:
        return [("X-Timestamp", Timestamp(time.time()).internal), ("Content-Type", "a/b"),
                (FOOTER_HEADER, str(FOOTER_BYTES))]

    answers = {}
    for name, client in (("socket", store.client), ("local", local)):
        path = quote("d1", 3, "a", "c", f"up-{name}")
        stored = await upload(client, store.port, path, headers(), pieces, length)
        got = await store.request("GET", path)
        assert (got.body == data, got.headers["etag"]) == (True, f'"{hashlib.md5(data).hexdigest()}"')
        refused = await upload(client, store.port, quote("nodev", 3, "a", "c", "o"), headers(),
                               pieces, length)
        too_old = await upload(client, store.port, path, [("X-Timestamp", "1.00000"), *headers()[1:]],
                               pieces, length)
        bad_check = await upload(client, store.port, quote("d1", 3, "a", "c", f"bad-{name}"),
                                 headers(), corrupt, length)
        cut = quote("d1", 3, "a", "c", f"cut-{name}")
        assert await upload(client, store.port, cut, headers(), pieces[:2], length, finish=False) is None
        answers[name] = [(r.status, r.body) for r in (stored, refused, too_old, bad_check)]
        await trio.sleep(0.2)  # the handler sees the body end early, and stops
        assert (await store.request("HEAD", quote("d1", 3, "a", "c", f"bad-{name}"))).status == 404
        assert (await store.request("HEAD", cut)).status == 404
    assert answers["local"] == answers["socket"]
    assert [s for s, _ in answers["local"]] == [201, 507, 409, 422]
    assert not list((store.device() / "tmp").glob("*")), "an unfinished upload left a tmp file"


async def test_local_upload_waits_and_failures(nursery: trio.Nursery) -> None:
    """A handler that never asks for the body, or stops taking it, is a timeout for the
    sender; one that answers midway has the rest dropped; chunked bodies end where the
    sender ends, and one left unfinished is a peer gone away for the handler."""
    outcomes: list[str] = []

    async def handler(request: Request) -> Response:
        if request.path == "/ignore":
            await trio.sleep(10)
        if request.path == "/stall":
            async for _ in request.iter_body():
                await trio.sleep(10)
        if request.path == "/early":
            async for _ in request.iter_body():
                return text_response(413, "enough\n")
        try:
            size = sum([len(chunk) async for chunk in request.iter_body()])
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append(f"{size} bytes")
        return text_response(200, f"{size} {request.chunked}")

    client = HTTPClient(timeouts=Timeouts(connect=1, node=0.3))
    client.local[("10.0.0.9", 6200)] = LocalRoute(handler, "10.0.0.9:6200", nursery)

    async def put(path: str, pieces: list[bytes], length: int | None, finish: bool = True):
        async with client.upload("10.0.0.9", 6200) as ex:
            early = await ex.start("PUT", path, [], content_length=length, expect_continue=True)
            assert early is None
            for piece in pieces:
                await ex.send(piece)
            return await ex.finish() if finish else None

    with pytest.raises(BackendTimeout):
        await put("/ignore", [b"x"], 1)
    with pytest.raises(BackendTimeout):
        await put("/stall", [b"x", b"y", b"z"], 3)
    r = await put("/early", [b"x" * 10] * 5, 50)
    assert (r.status, r.body) == (413, b"enough\n")
    r = await put("/echo", [b"a" * 7, b"b" * 8], None)
    assert (r.status, r.body) == (200, b"15 True")
    r = await put("/echo", [b"a" * 7, b"b" * 8], 15)
    assert (r.status, r.body) == (200, b"15 False")
    assert await put("/echo", [b"a" * 7], None, finish=False) is None
    assert await put("/echo", [b"a" * 7], 15, finish=False) is None
    # what h11 refuses to send over a socket is refused here too
    with pytest.raises(BackendError):
        await put("/echo", [b"a" * 16], 15)
    with pytest.raises(BackendError):
        await put("/echo", [b"a" * 7], 15)
    await trio.sleep(0.1)
    assert outcomes == ["15 bytes", "15 bytes"] + ["ClientDisconnected"] * 4
