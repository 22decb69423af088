"""The cluster client: read and write objects, containers and accounts through the ring.

Every API (Swift, S3, images, snapshots, identity's system containers) stores
data through this one class, so the replication rules live in one place:

* **Writes** go to every primary of the partition in parallel.  A primary
  that refuses (``507``, ``5xx``), cannot be reached or times out is replaced
  by the next handoff from ``get_more_nodes``.  The write succeeds once a
  quorum (``replicas // 2 + 1``) answered ``2xx``; Swift's ``best_response``
  rule picks the status otherwise, and no quorum at all is ``503``.
* **Object bodies stream**: the head goes out with ``Expect: 100-continue``
  (so refusing peers are known before any byte is sent), then each chunk is
  sent to every live backend before the next chunk is read from the caller.
  A backend that breaks mid-body is dropped; below quorum the write aborts
  and the remaining backends see a cut connection, so they store nothing.
  A body of known length is hashed here, once, and its MD5 and XXH3-64
  follow it as a footer (:mod:`node.etag_footer`).
* **Reads** try the primaries in order, then handoffs; the first success is
  used unless an earlier node proved (by ``X-Backend-Timestamp`` on its
  ``404``) that the object was deleted later.  With ``newest=True`` every
  primary is asked and the highest timestamp wins.  A GET that breaks
  mid-stream resumes on another node with a ``Range`` for the rest, provided
  that node has the very same version.
* **Error limiting** (:class:`node.cluster_health.ErrorLimiter`) pushes
  devices that keep failing to the back of the line; every backend call has
  a timeout (:class:`node.http_client.Timeouts`).

Paths on the internal port are Swift's: ``/<device>/<part>/<account>
[/<container>[/<object>]]``.  Object writes carry ``X-Container-*`` headers
naming the container replicas to update; container writes carry
``X-Account-*`` headers the same way.  Nothing here knows about users,
tokens or any public API.
"""

from __future__ import annotations

import itertools
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from node.cluster_health import ErrorLimiter, device_key
from node.cluster_rings import RingSet
from node.config import ClusterConfig, NodeConfig
from node.etag_footer import FOOTER_BYTES, FOOTER_HEADER, BodyChecksums
from node.headers import Headers
from node.http_client import (BackendError, BackendTimeout, ClientResponse, Exchange, HTTPClient,
                              LocalExchange, Timeouts)
from node.http_server import ClientDisconnected, iter_chunks
from node.log import log_event
from node.storage.timestamp import Timestamp

log = logging.getLogger("peerstack.cluster")

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | Headers | None

#: a bounded body for small exchanges (listings, errors); objects always stream
MAX_SMALL_BODY = 64 << 20
#: object bodies up to this size are read whole, then sent with the request
#: head in one exchange: no ``100 Continue`` round trip, and a backend that
#: refuses costs at most this much wasted transfer
SMALL_PUT = 64 * 1024
#: object bodies up to this size are read whole from the backend
SMALL_GET = 64 * 1024
#: what :meth:`ClusterClient._read_small_body` returns for a backend that broke
_BROKEN = object()
#: object bodies go to the backends in pieces of about this size ...
SEND_CHUNK = 1 << 20
#: ... with up to this many pieces queued per backend
SEND_QUEUE = 4


def make_timestamp(t: float | None = None) -> str:
    """Swift's normalized timestamp: 10 + 5 digits (``1700000000.12345``)."""
    return Timestamp(time.time() if t is None else t).normal


def quorum_size(n: int) -> int:
    """How many of ``n`` replicas must agree for a write to stand."""
    return n // 2 + 1


def best_status(statuses: list[int], n_replicas: int) -> int:
    """Swift's ``best_response`` rule: the first status class holding a quorum wins.

    Within the winning class the highest code is returned (``204`` beats
    ``201``, ``404`` beats ``400``), mirroring Swift; no quorum is ``503``.
    """
    quorum = quorum_size(n_replicas)
    for hundred in (200, 300, 400, 500):
        matching = [s for s in statuses if hundred <= s < hundred + 100]
        if len(matching) >= quorum:
            return max(matching)
    return 503


def _header_list(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return list(headers.items())
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def quote_path(*parts: str) -> str:
    """``/a/b/c`` with every part percent-encoded (object names keep their ``/``)."""
    return "".join("/" + urllib.parse.quote(p, safe="/") for p in parts)


@dataclass
class ClusterResponse:
    """A small response picked from the replicas (status, headers, whole body)."""

    status: int
    headers: Headers = field(default_factory=lambda: Headers([]))
    body: bytes = b""


def _synthetic(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> ClusterResponse:
    return ClusterResponse(status, Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]),
                           body)


def _timestamp_of(headers: Headers) -> Timestamp:
    """The version a backend answered for (``0`` when it did not say).

    An object's is its ``X-Backend-Timestamp``.  A database's is the newer of
    its PUT and DELETE timestamps: its ``X-Backend-Timestamp`` is when the file
    was created, which says nothing about whether a deletion came later (a
    handoff copy made before the DELETE must not outrank the tombstones).
    """
    try:
        return max(Timestamp(headers.get(name) or 0) for name in _VERSION_HEADERS)
    except ValueError:
        return Timestamp(0)


_VERSION_HEADERS = ("x-backend-timestamp", "x-timestamp", "x-backend-put-timestamp",
                    "x-backend-delete-timestamp")


class _NodeIter:
    """Primaries first (healthy ones in ring order), then handoffs, then suppressed primaries.

    Handoffs are capped at one ring's worth (Swift's ``request_node_count``
    of ``2 * replicas`` in all), so a partition with many dead devices does
    not make one request walk the whole cluster.
    """

    def __init__(self, ring, part: int, primaries: list[dict], health: ErrorLimiter) -> None:
        self._ring = ring
        self._part = part
        self.primaries = primaries
        self._health = health
        self._limited: list[dict] = []
        self._handoffs: Iterator[dict] | None = None
        self._max_handoffs = max(len(primaries), 1)

    def primary(self, index: int) -> dict | None:
        """Primary ``index`` if it is healthy; ``None`` means use a handoff."""
        node = self.primaries[index]
        if self._health.is_limited(node):
            self._limited.append(node)
            return None
        return node

    def handoff(self) -> dict | None:
        """The next healthy handoff, or a suppressed primary as a last resort."""
        if self._handoffs is None:
            self._handoffs = itertools.islice(
                (n for n in self._ring.get_more_nodes(self._part) if not self._health.is_limited(n)),
                self._max_handoffs)
        node = next(self._handoffs, None)
        if node is not None:
            return node
        return self._limited.pop(0) if self._limited else None

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self.primaries)):
            node = self.primary(i)
            if node is not None:
                yield node
        while (node := self.handoff()) is not None:
            yield node


class ObjectResponse:
    """A streamed object read: status and headers now, the body on iteration.

    Usable directly as a :class:`node.http_server.Response` body (it has
    ``__aiter__`` and ``aclose``).  Always close it (``aclose`` or the
    :meth:`ClusterClient.get_object` context manager): it holds a backend
    connection.
    """

    def __init__(self, client: ClusterClient, status: int, headers: Headers,
                 nodes: Iterator[dict] | None = None, path: str = "",
                 req_headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self._cc = client
        self.status = status
        self.headers = headers
        self._nodes = nodes
        self._path = path
        self._req_headers = req_headers or []
        self._small_body = body
        self._cm = None
        self._resp: ClientResponse | None = None
        self._node: dict | None = None
        self._sent = 0

    @property
    def timestamp(self) -> str | None:
        return self.headers.get("x-backend-timestamp") or self.headers.get("x-timestamp")

    def _attach(self, cm, resp: ClientResponse, node: dict) -> None:
        self._cm = cm
        self._resp = resp
        self._node = node

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_body()

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the body; on a backend failure resume elsewhere with a ``Range``."""
        if self._resp is None:
            if self._small_body:
                yield self._small_body
            return
        while True:
            try:
                async for chunk in self._resp.iter_body():
                    self._sent += len(chunk)
                    yield chunk
                break
            except BackendError as exc:
                assert self._node is not None
                self._cc.health.error(self._node)
                log_event(log, "cluster.get_broken", node=device_key(self._node), path=self._path,
                          sent=self._sent, error=str(exc))
                await self._close_backend(exc)
                if not await self._resume():
                    raise
        await self._close_backend(None)

    def _resume_range(self) -> str | None:
        """The ``Range`` asking for what is left, or ``None`` if we cannot resume."""
        if self.status == 200:
            return f"bytes={self._sent}-"
        if self.status == 206:
            content_range = self.headers.get("content-range") or ""
            try:
                unit, _, rest = content_range.partition(" ")
                span, _, _total = rest.partition("/")
                start, _, end = span.partition("-")
                return f"bytes={int(start) + self._sent}-{int(end)}"
            except ValueError:
                return None  # multipart/byteranges: not resumable
        return None

    async def _resume(self) -> bool:
        wanted = self._resume_range()
        if wanted is None or self._nodes is None:
            return False
        headers = [(k, v) for k, v in self._req_headers if k.lower() != "range"]
        headers.append(("Range", wanted))
        if self.status == 200:
            # the rest of a whole-object read: the object server checks the MD5 of it all
            headers.append(("X-Backend-Verify", "whole"))
        for node in self._nodes:
            opened = await self._cc._open_stream(node, "GET", self._path, headers)
            if opened is None:
                continue
            cm, resp = opened
            if resp.status in (200, 206) and (resp.headers.get("x-backend-timestamp")
                                              or resp.headers.get("x-timestamp")) == self.timestamp:
                self._attach(cm, resp, node)
                log_event(log, "cluster.get_resumed", node=device_key(node), path=self._path,
                          offset=self._sent)
                return True
            await self._cc._discard(cm, resp)
        return False

    async def _close_backend(self, exc: BaseException | None) -> None:
        cm, self._cm, self._resp = self._cm, None, None
        if cm is not None:
            if exc is None:
                await cm.__aexit__(None, None, None)
            else:
                await cm.__aexit__(type(exc), exc, exc.__traceback__)

    async def aclose(self) -> None:
        """Release the backend connection (it is not reused if the body was not read)."""
        if self._cm is not None:
            err = BackendError("closed before the body was read")
            await self._close_backend(err)


@dataclass
class _Putter:
    """One backend receiving an object body."""

    node: dict
    exchange: Exchange | LocalExchange
    slot: int
    failed: bool = False


def pair_by_node(cnodes: list[dict], primaries: list[dict]) -> list[int]:
    """The object request (slot) that tells each container replica of a write.

    A replica on the same node as one of the object's primaries goes to that
    primary's request: the update is then a call within the node, with no
    socket, and a node's rows for the container gather in one queue
    (:mod:`node.storage.updates`), so more of them share a request.  The
    other replicas take the slots left, in order; more replicas than slots
    wrap around (``i % slots``).
    """
    n_slots = len(primaries)
    slot_at = {(n["ip"], n["port"]): slot for slot, n in enumerate(primaries)}
    slots: list[int | None] = [None] * len(cnodes)
    free = list(range(n_slots))
    for i, cnode in enumerate(cnodes):
        slot = slot_at.get((cnode["ip"], cnode["port"]))
        if slot is not None and slot in free:
            slots[i] = slot
            free.remove(slot)
    return [slot if slot is not None else (free.pop(0) if free else i % n_slots)
            for i, slot in enumerate(slots)]


class ClusterClient:
    """Routes object, container and account requests to the right devices.

    ``client`` must be the node's signed :class:`HTTPClient`: the storage
    servers refuse unsigned requests.
    """

    def __init__(self, config: NodeConfig, cluster: ClusterConfig, client: HTTPClient, *,
                 timeouts: Timeouts | None = None, health: ErrorLimiter | None = None,
                 rings: RingSet | None = None) -> None:
        self.config = config
        self.cluster = cluster
        self.client = client
        self.timeouts = timeouts or Timeouts(connect=2.0, node=10.0)
        self.health = health or ErrorLimiter()
        self.rings = rings or RingSet(config.rings_path, cluster)

    # -- plumbing -------------------------------------------------------------

    def _failed(self, node: dict, exc: BaseException | None = None, status: int | None = None) -> None:
        """Book a failure: refusals and dead peers are suppressed at once."""
        refused = (exc is not None and not isinstance(exc, BackendTimeout)
                   and str(exc).startswith("connect to"))
        if status == 507 or refused:
            self.health.fatal(node)
        else:
            self.health.error(node)
        log_event(log, "cluster.backend_error", node=device_key(node),
                  status=status, error=str(exc) if exc else None)

    async def _request(self, node: dict, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes = b"") -> ClientResponse | None:
        """One small exchange with one device; ``None`` if it failed (and was booked)."""
        target = f"/{urllib.parse.quote(node['device'])}{path}"
        try:
            resp = await self.client.request(method, node["ip"], node["port"], target, headers, body,
                                             timeouts=self.timeouts, max_response_bytes=MAX_SMALL_BODY)
        except BackendError as exc:
            self._failed(node, exc)
            return None
        if resp.status >= 500:
            self._failed(node, status=resp.status)
            return None
        return resp

    async def _open_stream(self, node: dict, method: str, path: str, headers: list[tuple[str, str]]):
        """Start a request whose response body the caller streams: ``(cm, resp)`` or ``None``."""
        target = f"/{urllib.parse.quote(node['device'])}{path}"
        cm = self.client.stream(method, node["ip"], node["port"], target, headers, timeouts=self.timeouts)
        try:
            resp = await cm.__aenter__()
        except BackendError as exc:
            self._failed(node, exc)
            return None
        if resp.status >= 500:
            self._failed(node, status=resp.status)
            await self._discard(cm, resp)
            return None
        return cm, resp

    async def _discard(self, cm, resp: ClientResponse) -> None:
        """Finish an unwanted streamed response (read a small body to keep the connection)."""
        try:
            await resp.read(1 << 16)
        except BackendError as exc:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            return
        await cm.__aexit__(None, None, None)

    async def _read(self, ring, part: int, primaries: list[dict], method: str, path: str,
                    headers: list[tuple[str, str]], *, newest: bool = False) -> ClusterResponse:
        """GET/HEAD of a container or account (or an object HEAD): see the module docstring."""
        nodes = _NodeIter(ring, part, primaries, self.health)
        if newest:
            return await self._read_newest(nodes, method, path, headers)
        tombstone: ClusterResponse | None = None
        not_found: ClusterResponse | None = None
        for node in nodes:
            resp = await self._request(node, method, path, headers)
            if resp is None:
                continue
            self.health.success(node)
            got = ClusterResponse(resp.status, resp.headers, resp.body)
            if resp.status == 404:
                if resp.headers.get("x-backend-timestamp"):
                    if tombstone is None or _timestamp_of(resp.headers) > _timestamp_of(tombstone.headers):
                        tombstone = got
                not_found = not_found or got
                continue
            if tombstone is not None and 200 <= resp.status < 300 and \
                    _timestamp_of(tombstone.headers) > _timestamp_of(resp.headers):
                return tombstone
            return got
        if tombstone is not None:
            return tombstone
        return not_found or _synthetic(503, [("Content-Type", "text/plain")])

    async def _read_newest(self, nodes: _NodeIter, method: str, path: str,
                           headers: list[tuple[str, str]]) -> ClusterResponse:
        results: list[ClusterResponse] = []

        async def ask(node: dict) -> None:
            resp = await self._request(node, method, path, headers)
            if resp is not None:
                self.health.success(node)
                results.append(ClusterResponse(resp.status, resp.headers, resp.body))

        async with trio.open_nursery() as nursery:
            for i in range(len(nodes.primaries)):
                node = nodes.primary(i) or nodes.handoff()
                if node is not None:
                    nursery.start_soon(ask, node)
        if not results:
            return _synthetic(503, [("Content-Type", "text/plain")])
        found = [r for r in results if 200 <= r.status < 300 or r.status == 404]
        pool = found or results
        return max(pool, key=lambda r: (_timestamp_of(r.headers), 200 <= r.status < 300))

    async def _write(self, ring, part: int, primaries: list[dict], method: str, path: str,
                     headers_for_slot: list[list[tuple[str, str]]], body: bytes = b"") -> ClusterResponse:
        """Send a small write to every primary (handoffs for failures); quorum decides."""
        nodes = _NodeIter(ring, part, primaries, self.health)
        responses: list[ClusterResponse] = []

        async def send(slot: int) -> None:
            node = nodes.primary(slot) or nodes.handoff()
            while node is not None:
                resp = await self._request(node, method, path, headers_for_slot[slot], body)
                if resp is not None:
                    self.health.success(node)
                    responses.append(ClusterResponse(resp.status, resp.headers, resp.body))
                    return
                node = nodes.handoff()

        async with trio.open_nursery() as nursery:
            for slot in range(len(primaries)):
                nursery.start_soon(send, slot)
        status = best_status([r.status for r in responses], len(primaries))
        for r in responses:
            if r.status == status:
                return r
        return _synthetic(status, [("Content-Type", "text/plain")])

    # -- objects --------------------------------------------------------------

    def _object_route(self, account: str, container: str, obj: str):
        ring = self.rings.object
        part, nodes = ring.get_nodes(account, container, obj)
        return ring, part, nodes, quote_path(str(part), account, container, obj)

    def _container_update_headers(self, account: str, container: str, primaries: list[dict],
                                  base: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        """Per object-request headers naming the container replicas each one updates.

        Every container replica hears of the write from exactly one object
        server, as Swift's proxy arranges it (see :func:`pair_by_node` for
        which one).
        """
        cpart, cnodes = self.rings.container.get_nodes(account, container)
        n_slots = len(primaries)
        hosts: list[list[str]] = [[] for _ in range(n_slots)]
        devices: list[list[str]] = [[] for _ in range(n_slots)]
        for cnode, slot in zip(cnodes, pair_by_node(cnodes, primaries)):
            hosts[slot].append(f"{cnode['ip']}:{cnode['port']}")
            devices[slot].append(cnode["device"])
        out = []
        for slot in range(n_slots):
            h = list(base)
            if hosts[slot]:
                h += [("X-Container-Host", ",".join(hosts[slot])),
                      ("X-Container-Device", ",".join(devices[slot])),
                      ("X-Container-Partition", str(cpart))]
            out.append(h)
        return out

    async def put_object(self, account: str, container: str, obj: str, headers: HeaderInput,
                         body: AsyncIterator[bytes] | Iterable[bytes] | bytes,
                         content_length: int | None) -> tuple[int, Headers]:
        """Store an object: stream ``body`` to every primary; ``201`` once a quorum has it.

        ``headers`` are passed to the object servers (``Content-Type``,
        ``ETag``, ``X-Object-Meta-*``, ``X-Delete-At``, ...); an ``X-Timestamp``
        is added if missing.  ``content_length`` ``None`` streams chunked.
        Exceptions from ``body`` (a client that went away) abort every
        backend, so nothing is stored, and propagate.
        """
        ring, part, primaries, path = self._object_route(account, container, obj)
        base = _with_timestamp(_header_list(headers))
        slot_headers = self._container_update_headers(account, container, primaries, base)
        if content_length is not None and content_length <= SMALL_PUT:
            data = await _read_exactly(body, content_length)
            resp = await self._write(ring, part, primaries, "PUT", path, slot_headers, data)
            return resp.status, resp.headers
        nodes = _NodeIter(ring, part, primaries, self.health)
        quorum = quorum_size(len(primaries))
        putters: list[_Putter] = []
        refusals: list[ClusterResponse] = []
        expect = content_length is None or content_length > 0
        # One MD5 here instead of one per replica: see node.etag_footer.
        checksums = BodyChecksums() if content_length is not None else None
        backend_length = content_length
        if checksums is not None:
            backend_length = content_length + FOOTER_BYTES
            slot_headers = [[*h, (FOOTER_HEADER, str(FOOTER_BYTES))] for h in slot_headers]

        async with AsyncExitStack() as stack:
            async def connect(slot: int) -> None:
                node = nodes.primary(slot) or nodes.handoff()
                while node is not None:
                    target = f"/{urllib.parse.quote(node['device'])}{path}"
                    try:
                        ex = await stack.enter_async_context(
                            self.client.upload(node["ip"], node["port"], timeouts=self.timeouts))
                        early = await ex.start("PUT", target, slot_headers[slot],
                                               content_length=backend_length, expect_continue=expect)
                    except BackendError as exc:
                        self._failed(node, exc)
                        node = nodes.handoff()
                        continue
                    if early is None:
                        putters.append(_Putter(node, ex, slot))
                        return
                    if early.status >= 500:
                        self._failed(node, status=early.status)
                        node = nodes.handoff()
                        continue
                    # A definite answer before the body (412, 409, 422...): the
                    # backend is healthy and has spoken for this slot.
                    await _drain_quietly(early)
                    refusals.append(ClusterResponse(early.status, early.headers, early.body))
                    return

            async with trio.open_nursery() as nursery:
                for slot in range(len(primaries)):
                    nursery.start_soon(connect, slot)

            if len(putters) < quorum:
                if refusals:
                    status = best_status([r.status for r in refusals], len(primaries))
                    chosen = next((r for r in refusals if r.status == status), refusals[0])
                    return chosen.status, chosen.headers
                log_event(log, "cluster.put_no_quorum", path=path, connected=len(putters))
                return 503, Headers([])

            await self._send_body(putters, body, quorum, path, checksums)
            if sum(not p.failed for p in putters) < quorum:
                return 503, Headers([])

            statuses: list[tuple[int, Headers]] = []

            async def finish(p: _Putter) -> None:
                try:
                    resp = await p.exchange.finish()
                    await resp.read(1 << 16)
                except BackendError as exc:
                    p.failed = True
                    self._failed(p.node, exc)
                    return
                if resp.status >= 500:
                    self._failed(p.node, status=resp.status)
                else:
                    self.health.success(p.node)
                statuses.append((resp.status, resp.headers))

            async with trio.open_nursery() as nursery:
                for p in putters:
                    if not p.failed:
                        nursery.start_soon(finish, p)
        status = best_status([s for s, _ in statuses] + [r.status for r in refusals], len(primaries))
        for s, h in statuses:
            if s == status:
                return s, h
        for r in refusals:
            if r.status == status:
                return r.status, r.headers
        return status, Headers([])

    async def _send_body(self, putters: list[_Putter], body, quorum: int, path: str,
                         checksums: BodyChecksums | None = None) -> None:
        """Stream the body to every live backend, each at its own pace.

        The caller's chunks are gathered into pieces of about
        :data:`SEND_CHUNK` (fewer, bigger socket writes and h11 events) and
        handed to one sender task per backend through a queue of
        :data:`SEND_QUEUE` pieces.  So receiving from the client overlaps
        sending to the backends, and one backend's momentary stall does not
        stop the others until its queue is full; the pieces are shared, so
        memory stays under ``(SEND_QUEUE + 2) * SEND_CHUNK`` per object.

        With ``checksums``, one more consumer hashes the pieces in a worker
        thread, and once the whole body is out every backend gets the
        footer (:mod:`node.etag_footer`).
        """
        async def pump(p: _Putter, pieces: trio.MemoryReceiveChannel[bytes]) -> None:
            async with pieces:
                async for piece in pieces:
                    if not p.failed:  # else keep taking pieces so the reader never waits on us
                        await self._send_piece(p, piece)

        async def hash_pieces(pieces: trio.MemoryReceiveChannel[bytes]) -> None:
            assert checksums is not None
            async with pieces:
                async for piece in pieces:
                    await trio.to_thread.run_sync(checksums.update, piece)

        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            queues = []
            for p in putters:
                send, receive = trio.open_memory_channel[bytes](SEND_QUEUE)
                queues.append((p, send))
                nursery.start_soon(pump, p, receive)
            hasher: trio.MemorySendChannel[bytes] | None = None
            if checksums is not None:
                hasher, receive = trio.open_memory_channel[bytes](SEND_QUEUE)
                nursery.start_soon(hash_pieces, receive)
            try:
                async for piece in _gather(body, SEND_CHUNK):
                    for p, queue in queues:
                        if not p.failed:
                            await queue.send(piece)
                    if hasher is not None:
                        await hasher.send(piece)
                    if sum(not p.failed for p in putters) < quorum:
                        log_event(log, "cluster.put_lost_quorum", path=path)
                        return
            except Exception as exc:
                # The caller's body failed (a client gone): stop sending, and
                # raise it as itself rather than inside an exception group.
                failure = exc
                nursery.cancel_scope.cancel()
            finally:
                for _, queue in queues:
                    queue.close()
                if hasher is not None:
                    hasher.close()
        if failure is not None:
            raise failure
        if checksums is not None:
            footer = checksums.footer()
            async with trio.open_nursery() as nursery:
                for p in putters:
                    if not p.failed:
                        nursery.start_soon(self._send_piece, p, footer)

    async def _send_piece(self, p: _Putter, piece: bytes) -> None:
        """Send ``piece`` to one backend; a failure marks it failed (and is booked)."""
        try:
            await p.exchange.send(piece)
        except BackendError as exc:
            p.failed = True
            self._failed(p.node, exc)

    def _open_targets(self, account: str, container: str, obj: str):
        ring, part, primaries, path = self._object_route(account, container, obj)
        return _NodeIter(ring, part, primaries, self.health), path

    async def open_object(self, account: str, container: str, obj: str, headers: HeaderInput = None,
                          *, method: str = "GET") -> ObjectResponse:
        """Start reading an object; the caller streams the body and must ``aclose`` it.

        Non-success answers (``404``, ``304``, ``412``, ``416``) come back as
        responses too, with their small bodies; ``503`` if no node answered.
        """
        nodes, path = self._open_targets(account, container, obj)
        req_headers = _header_list(headers)
        node_iter = iter(nodes)
        tombstone: ObjectResponse | None = None
        fallback: ObjectResponse | None = None
        for node in node_iter:
            opened = await self._open_stream(node, method, path, req_headers)
            if opened is None:
                continue
            cm, resp = opened
            self.health.success(node)
            if resp.status == 404:
                await self._discard(cm, resp)
                got = ObjectResponse(self, 404, resp.headers, body=resp.body)
                if resp.headers.get("x-backend-timestamp"):
                    if tombstone is None or _timestamp_of(resp.headers) > _timestamp_of(tombstone.headers):
                        tombstone = got
                fallback = fallback or got
                continue
            if tombstone is not None and _timestamp_of(tombstone.headers) > _timestamp_of(resp.headers):
                await self._discard(cm, resp)
                return tombstone
            if resp.status in (200, 206) and method == "GET":
                small = await self._read_small_body(node, cm, resp)
                if small is _BROKEN:
                    continue
                if small is not None:
                    return ObjectResponse(self, resp.status, resp.headers, body=small)
                result = ObjectResponse(self, resp.status, resp.headers, node_iter, path, req_headers)
                result._attach(cm, resp, node)
                return result
            await self._discard(cm, resp)
            return ObjectResponse(self, resp.status, resp.headers, body=resp.body)
        if tombstone is not None:
            return tombstone
        return fallback or ObjectResponse(self, 503, Headers([]))

    async def _read_small_body(self, node: dict, cm, resp: ClientResponse) -> bytes | object | None:
        """A body of at most :data:`SMALL_GET` bytes, read now so the connection goes back at once.

        ``None`` if the body is bigger (stream it); :data:`_BROKEN` if the
        backend failed while sending it (the connection is closed, the
        failure booked: try the next node).
        """
        try:
            length = int(resp.headers.get("content-length") or "")
        except ValueError:
            return None
        if length > SMALL_GET:
            return None
        try:
            data = await resp.read(SMALL_GET)
        except BackendError as exc:
            self._failed(node, exc)
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            return _BROKEN
        await cm.__aexit__(None, None, None)
        return data

    @asynccontextmanager
    async def get_object(self, account: str, container: str, obj: str,
                         headers: HeaderInput = None) -> AsyncIterator[ObjectResponse]:
        """``async with cc.get_object(a, c, o) as resp: async for chunk in resp: ...``"""
        resp = await self.open_object(account, container, obj, headers)
        try:
            yield resp
        finally:
            await resp.aclose()

    async def head_object(self, account: str, container: str, obj: str, headers: HeaderInput = None,
                          *, newest: bool = False) -> ClusterResponse:
        ring, part, primaries, path = self._object_route(account, container, obj)
        return await self._read(ring, part, primaries, "HEAD", path, _header_list(headers), newest=newest)

    async def post_object(self, account: str, container: str, obj: str,
                          headers: HeaderInput) -> ClusterResponse:
        """Replace an object's metadata (Swift's fast-POST) on every replica."""
        ring, part, primaries, path = self._object_route(account, container, obj)
        base = _with_timestamp(_header_list(headers))
        slots = self._container_update_headers(account, container, primaries, base)
        return await self._write(ring, part, primaries, "POST", path, slots)

    async def delete_object(self, account: str, container: str, obj: str,
                            headers: HeaderInput = None) -> ClusterResponse:
        """Tombstone an object on every replica (and drop it from the listing)."""
        ring, part, primaries, path = self._object_route(account, container, obj)
        base = _with_timestamp(_header_list(headers))
        slots = self._container_update_headers(account, container, primaries, base)
        return await self._write(ring, part, primaries, "DELETE", path, slots)

    # -- containers -----------------------------------------------------------

    def _container_route(self, account: str, container: str):
        ring = self.rings.container
        part, nodes = ring.get_nodes(account, container)
        return ring, part, nodes, quote_path(str(part), account, container)

    def _account_update_headers(self, account: str, n_slots: int,
                                base: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
        apart, anodes = self.rings.account.get_nodes(account)
        hosts: list[list[str]] = [[] for _ in range(n_slots)]
        devices: list[list[str]] = [[] for _ in range(n_slots)]
        for i, anode in enumerate(anodes):
            hosts[i % n_slots].append(f"{anode['ip']}:{anode['port']}")
            devices[i % n_slots].append(anode["device"])
        out = []
        for slot in range(n_slots):
            h = list(base)
            if hosts[slot]:
                h += [("X-Account-Host", ",".join(hosts[slot])),
                      ("X-Account-Device", ",".join(devices[slot])),
                      ("X-Account-Partition", str(apart))]
            out.append(h)
        return out

    async def put_container(self, account: str, container: str, headers: HeaderInput = None, *,
                            create_account: bool = True) -> ClusterResponse:
        """Create (or update) a container; with ``create_account`` its account appears too."""
        if create_account:
            acct = await self.head_account(account)
            if acct.status == 404:
                made = await self.put_account(account)
                if made.status // 100 != 2 and made.status != 202:
                    return made
            elif acct.status // 100 != 2:
                return acct
        ring, part, primaries, path = self._container_route(account, container)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "PUT", path,
                                 self._account_update_headers(account, len(primaries), base))

    async def head_container(self, account: str, container: str, headers: HeaderInput = None, *,
                             newest: bool = False) -> ClusterResponse:
        ring, part, primaries, path = self._container_route(account, container)
        return await self._read(ring, part, primaries, "HEAD", path, _header_list(headers), newest=newest)

    async def get_container(self, account: str, container: str, query: Mapping[str, str] | None = None,
                            headers: HeaderInput = None) -> ClusterResponse:
        """A listing page; ``query`` is passed on (``format``, ``prefix``, ``marker``...)."""
        ring, part, primaries, path = self._container_route(account, container)
        if query:
            path += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return await self._read(ring, part, primaries, "GET", path, _header_list(headers))

    async def post_container(self, account: str, container: str, headers: HeaderInput) -> ClusterResponse:
        ring, part, primaries, path = self._container_route(account, container)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "POST", path, [base] * len(primaries))

    async def delete_container(self, account: str, container: str,
                               headers: HeaderInput = None) -> ClusterResponse:
        """Delete an empty container (``409`` if it still lists objects)."""
        ring, part, primaries, path = self._container_route(account, container)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "DELETE", path,
                                 self._account_update_headers(account, len(primaries), base))

    # -- accounts -------------------------------------------------------------

    def _account_route(self, account: str):
        ring = self.rings.account
        part, nodes = ring.get_nodes(account)
        return ring, part, nodes, quote_path(str(part), account)

    async def put_account(self, account: str, headers: HeaderInput = None) -> ClusterResponse:
        ring, part, primaries, path = self._account_route(account)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "PUT", path, [base] * len(primaries))

    async def head_account(self, account: str, headers: HeaderInput = None, *,
                           newest: bool = False) -> ClusterResponse:
        ring, part, primaries, path = self._account_route(account)
        return await self._read(ring, part, primaries, "HEAD", path, _header_list(headers), newest=newest)

    async def get_account(self, account: str, query: Mapping[str, str] | None = None,
                          headers: HeaderInput = None) -> ClusterResponse:
        ring, part, primaries, path = self._account_route(account)
        if query:
            path += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        return await self._read(ring, part, primaries, "GET", path, _header_list(headers))

    async def post_account(self, account: str, headers: HeaderInput) -> ClusterResponse:
        ring, part, primaries, path = self._account_route(account)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "POST", path, [base] * len(primaries))

    async def delete_account(self, account: str, headers: HeaderInput = None) -> ClusterResponse:
        ring, part, primaries, path = self._account_route(account)
        base = _with_timestamp(_header_list(headers))
        return await self._write(ring, part, primaries, "DELETE", path, [base] * len(primaries))


def _with_timestamp(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not any(k.lower() == "x-timestamp" for k, _ in headers):
        headers = headers + [("X-Timestamp", make_timestamp())]
    return headers


async def _gather(body: AsyncIterator[bytes] | Iterable[bytes] | bytes, size: int) -> AsyncIterator[bytes]:
    """``body`` re-cut into pieces of at least ``size`` bytes (the last may be shorter)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        if body:
            yield bytes(body)
        return
    parts: list[bytes] = []
    held = 0
    async for chunk in iter_chunks(body):
        if not chunk:
            continue
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
    if parts:
        yield parts[0] if len(parts) == 1 else b"".join(parts)


async def _read_exactly(body: AsyncIterator[bytes] | Iterable[bytes] | bytes, length: int) -> bytes:
    """A small body, whole; :class:`ClientDisconnected` if it is not ``length`` bytes."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    else:
        pieces = []
        size = 0
        async for chunk in iter_chunks(body):
            size += len(chunk)
            if size > length:
                break
            pieces.append(chunk)
        data = b"".join(pieces)
    if len(data) != length:
        raise ClientDisconnected(f"object body of {len(data)}+ bytes, expected {length}")
    return data


async def _drain_quietly(resp: ClientResponse) -> None:
    try:
        await resp.read(1 << 16)
    except BackendError:
        pass
