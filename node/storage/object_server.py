"""The object server: Swift's backend object protocol on one node's devices.

Verbs on ``/<device>/<part>/<account>/<container>/<object>``:

* ``PUT`` -- stream the body to ``tmp/`` in ~1 MiB batches (each batch
  written and hashed in worker threads while the next one is received),
  check ``Content-Length`` and the ``ETag`` header (422 on mismatch), then
  install it durably as ``<X-Timestamp>.data`` and tell the container
  servers; 201.
* ``GET``/``HEAD`` -- the newest ``.data`` with ranges (single, and multiple
  as ``multipart/byteranges``) and conditional headers; 404 (with
  ``X-Backend-Timestamp``) when a tombstone is newest or ``X-Delete-At``
  has passed.
* ``POST`` -- replace user metadata with a ``.meta`` file; 202.
* ``DELETE`` -- write a ``.ts`` tombstone; 204 if the object existed, else 404.

Every write needs ``X-Timestamp`` and must be newer than what is stored,
else 409 with the stored ``X-Backend-Timestamp`` (the proxy uses it to
resolve races).  ``X-Backend-Replication: true`` marks a write from the
replicator: it skips container updates and sees expired objects.

ETags go out quoted (``"d41d8..."``) as Swift's swob sends them; clients
strip the quotes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.http_server import ClientDisconnected, Request, Response, text_response
from node.etag_footer import BODY_CHECK_KEY, FOOTER_BYTES, FOOTER_HEADER, FooterError, body_check
from node.log import log_event
from node.storage import diskfile
from node.storage.conditional import (Multipart, evaluate_preconditions, parse_range,
                                      satisfiable_ranges)
from node.storage.devices import Devices, DeviceUnavailable
from node.storage.diskfile import DiskFileError, ObjectLocation, ObjectState, ObjectWriter
from node.storage.hashes import get_hashes
from node.storage.httputil import HTTPError, backend_timestamp, is_true, require_timestamp
from node.storage.metadata import MetadataError, check_metadata, header_case
from node.storage.paths import StoragePath, hash_path, parse_replicate_path
from node.storage.timestamp import Timestamp
from node.storage.updates import RowPromise, Target, UpdateSender, parse_targets
from node.thread_job import ThreadJob

log = logging.getLogger("peerstack.storage")

#: Swift's MAX_FILE_SIZE: 5 GiB plus the 2 bytes its tests use
MAX_FILE_SIZE = 5 * (1 << 30) + 2
#: how much request body to gather before one thread hop writes it
WRITE_BATCH = 1 << 20
READ_CHUNK = 1 << 20
#: bodies up to this size are written, or read, in the same thread hop as
#: the rest of the request's disk work: one hop instead of three or four
SMALL_BODY = 64 * 1024

#: headers a PUT stores besides Content-Type and metadata
STORED_HEADERS = frozenset({"content-disposition", "content-encoding", "content-language",
                            "cache-control", "expires", "x-robots-tag", "x-delete-at",
                            "x-object-manifest", "x-static-large-object"})
STORED_PREFIXES = ("x-object-meta-", "x-object-sysmeta-", "x-object-transient-sysmeta-",
                   "x-backend-")
#: per-request control headers, never stored
REQUEST_ONLY = frozenset({"x-backend-replication", "x-backend-timestamp", "x-backend-server"})
OVERRIDE = "x-backend-container-update-override-"


def _delete_at(request: Request, now: float) -> str | None:
    """``X-Delete-At`` from the request (``X-Delete-After`` converted); 400 if bad."""
    headers = request.headers
    after = headers.get("x-delete-after")
    at = headers.get("x-delete-at")
    if after is not None:
        try:
            seconds = int(after)
        except ValueError:
            raise HTTPError(400, "Non-integer X-Delete-After") from None
        if seconds < 0:
            raise HTTPError(400, "X-Delete-After in past")
        at = str(int(now + seconds))
    if at is None:
        return None
    try:
        value = int(at)
    except ValueError:
        raise HTTPError(400, "Non-integer X-Delete-At") from None
    if value <= now:
        raise HTTPError(400, "X-Delete-At in past")
    return str(value)


def _expired(metadata: dict[str, Any], request: Request) -> bool:
    at = metadata.get("X-Delete-At")
    if at is None or is_true(request.headers.get("x-backend-replication")):
        return False
    try:
        return int(at) <= time.time()
    except ValueError:
        return False


def _footer_bytes(request: Request) -> int:
    """How many bytes at the end of the body are the proxy's ETag footer (0: none)."""
    value = request.headers.get(FOOTER_HEADER.lower())
    if value is None:
        return 0
    if value.strip() != str(FOOTER_BYTES) or request.content_length is None \
            or request.content_length < FOOTER_BYTES:
        raise HTTPError(400, f"Bad {FOOTER_HEADER}: {FOOTER_BYTES}-byte footers on "
                             "Content-Length bodies only")
    return FOOTER_BYTES


def _stored_headers(request: Request, keep: Callable[[str], bool]) -> dict[str, str]:
    return {header_case(k): v for k, v in request.headers.items()
            if keep(k) and k not in REQUEST_ONLY}


def _put_keeps(name: str) -> bool:
    return name in STORED_HEADERS or name.startswith(STORED_PREFIXES)


async def _receive_into(request: Request, writer: ObjectWriter, footer: int = 0) -> bytes:
    """Stream the request body into ``writer``, ~1 MiB per worker-thread hop.

    Network, disk and MD5 overlap: while one batch is written in one
    thread and hashed in another (both release the GIL; done one after the
    other they are the bottleneck on this hardware), the next batch is
    received.  With the proxy's footer to come, the hash is only the
    footer's check, which costs less than a second thread hop: it runs
    with the write.  The channel holds one batch, so at most about three batches
    are in memory at once.  The last ``footer`` bytes of the body are not
    the object's: they are returned (:mod:`node.etag_footer`).
    """
    data_left = (request.content_length or 0) - footer if footer else -1
    tail = bytearray()
    send, receive = trio.open_memory_channel[list[bytes]](1)

    def write_and_hash(batch: list[bytes]) -> None:
        writer.write(batch)
        writer.hash(batch)

    async def write_batches() -> None:
        async with receive:
            async for batch in receive:
                if writer.hash_is_cheap:
                    await trio.to_thread.run_sync(write_and_hash, batch)
                    continue
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, writer.hash, batch)
                    await trio.to_thread.run_sync(writer.write, batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_batches)
        async with send:
            batch: list[bytes] = []
            size = 0
            async for chunk in request.iter_body():
                if 0 <= data_left < len(chunk):
                    tail += chunk[data_left:]
                    chunk = memoryview(chunk)[:data_left]
                    if not chunk:
                        continue
                if data_left > 0:
                    data_left -= len(chunk)
                batch.append(chunk)
                size += len(chunk)
                if size >= WRITE_BATCH:
                    await send.send(batch)
                    batch, size = [], 0
            if batch:
                await send.send(batch)
    return bytes(tail)


class FileBody:
    """Streams byte ranges of an open object, one thread hop per ~1 MiB.

    A class rather than a generator so :meth:`aclose` closes the file even
    if the response is dropped before the first chunk.

    A whole-object read is checked as it goes against the body's stored
    XXH3-64 (:data:`node.etag_footer.BODY_CHECK_KEY`), or its ETag (MD5) if
    it has none, and the last chunk is held back until they match: a corrupt
    file is quarantined (``on_corrupt``) and the response is cut short, so a
    reader never receives a complete corrupt object -- the proxy sees a
    broken read and resumes from another replica.  The resumed read
    (``Range: bytes=N-`` with ``X-Backend-Verify: whole``) is checked the
    same way, hashing the first N bytes before it sends the rest.
    """

    def __init__(self, obj: diskfile.OpenObject, ranges: list[tuple[int, int]],
                 multipart: Multipart | None = None,
                 on_corrupt: Callable[[str], None] | None = None) -> None:
        self.obj = obj
        self.parts: list[tuple[bytes, int, int]] = []
        for i, (start, stop) in enumerate(ranges):
            self.parts.append((multipart.heads[i] if multipart else b"", start, stop))
        self.tail = multipart.tail if multipart else b""
        # ``on_corrupt`` asks for the check; it needs the bytes up to the end of
        # the object, and the ones before a resumed read's start are read first.
        checkable = on_corrupt is not None and multipart is None and len(ranges) == 1 \
            and ranges[0][1] == obj.size
        self._expected = ""
        self._digest: Any = None
        #: the digest costs less than a thread hop per chunk (XXH3-64): run it inline
        self._cheap = False
        if checkable:
            if obj.metadata.get(BODY_CHECK_KEY):
                self._expected, self._digest = str(obj.metadata[BODY_CHECK_KEY]), body_check()
                self._cheap = True
            elif obj.metadata.get("ETag"):
                self._expected, self._digest = str(obj.metadata["ETag"]), hashlib.md5()
        self._on_corrupt = on_corrupt
        self._ahead: ThreadJob[bytes] | None = None
        self._hashing: ThreadJob[None] | None = None
        self._gen = self._produce()
        if obj.content is None:
            obj.bypass_cache(READ_CHUNK)

    def _hash_prefix(self, stop: int) -> None:
        assert self._digest is not None
        for pos in range(0, stop, READ_CHUNK):
            self._digest.update(self.obj.pread(pos, min(READ_CHUNK, stop - pos)))

    async def _produce(self):
        for head, start, stop in self.parts:
            if head:
                yield head
            if self._digest is not None and start:
                await trio.to_thread.run_sync(self._hash_prefix, start)
            # A pipeline of worker threads: chunk N+1 is read while chunk N is
            # hashed and sent, so disk, hash and network overlap.  The hash
            # sees the chunks in order (one hash job at a time).
            pos = start
            if pos < stop:
                self._ahead = ThreadJob(self.obj.pread, pos, min(READ_CHUNK, stop - pos))
            while self._ahead is not None:
                chunk = await self._ahead.result()
                self._ahead = None
                if not chunk:
                    raise DiskFileError("object shrank while being read")
                pos += len(chunk)
                if pos < stop:
                    self._ahead = ThreadJob(self.obj.pread, pos, min(READ_CHUNK, stop - pos))
                if self._cheap:
                    self._digest.update(chunk)  # ~30 µs per MiB: less than a thread hop
                elif self._digest is not None:
                    await self._hashed()
                    self._hashing = ThreadJob(self._digest.update, chunk)
                if pos >= stop:
                    await self._hashed()
                    await self._verify()
                yield chunk
        if self.tail:
            yield self.tail

    async def _hashed(self) -> None:
        """Wait for the chunk being hashed, if any."""
        if self._hashing is not None:
            job, self._hashing = self._hashing, None
            await job.result()

    async def _verify(self) -> None:
        if self._digest is None or self._digest.hexdigest() == self._expected:
            return
        reason = f"{self._digest.name} {self._digest.hexdigest()} != stored {self._expected}"
        if self._on_corrupt is not None:
            await trio.to_thread.run_sync(self._on_corrupt, reason)
        raise DiskFileError(reason)

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        return await self._gen.__anext__()

    def prefetched(self) -> bytes | None:
        """The whole body at once if the object was read ahead (and the file closed)."""
        content = self.obj.content
        if content is None:
            return None
        pieces = []
        for head, start, stop in self.parts:
            pieces += [head, content[start:stop]]
        pieces.append(self.tail)
        self.obj.close()
        return b"".join(pieces)

    async def aclose(self) -> None:
        await self._gen.aclose()
        for job in (self._ahead, self._hashing):
            if job is not None:
                await job.wait()  # the read uses the descriptor about to close
        self.obj.close()


class ObjectServer:
    def __init__(self, devices: Devices, hash_prefix: str, hash_suffix: str,
                 updates: UpdateSender) -> None:
        self.devices = devices
        self.hash_prefix = hash_prefix
        self.hash_suffix = hash_suffix
        self.updates = updates

    async def handle(self, request: Request, sp: StoragePath) -> Response:
        method = request.method
        handler = {"PUT": self.put, "GET": self.get, "HEAD": self.get,
                   "POST": self.post, "DELETE": self.delete}.get(method)
        if handler is None:
            return text_response(405, "Method Not Allowed\n", [("Allow", "DELETE, GET, HEAD, POST, PUT")])
        try:
            return await handler(request, sp)
        except HTTPError as exc:
            return exc.response
        except DeviceUnavailable as exc:
            return text_response(507, f"{exc}\n")

    def _location(self, sp: StoragePath) -> ObjectLocation:
        """Blocking: check the device and name the object's directory."""
        device_path = self.devices.path(sp.device)
        name_hash = hash_path(self.hash_prefix, self.hash_suffix, sp.account, sp.container, sp.obj)
        return ObjectLocation(device_path, sp.partition, name_hash)

    @staticmethod
    def _quarantine(loc: ObjectLocation, request: Request, reason: str) -> None:
        """Blocking: move a corrupt object aside (replication restores a good copy)."""
        dest = diskfile.quarantine(loc)
        log_event(log, "storage.quarantined", level=logging.ERROR, rid=request.request_id,
                  error=reason, moved_to=str(dest))

    def _open_current(self, sp: StoragePath, request: Request
                      ) -> tuple[ObjectLocation, ObjectState, diskfile.OpenObject | None]:
        """Blocking: the object's state and, if it exists and is not expired, its open file.

        A corrupt object is quarantined and reported as missing.
        """
        loc = self._location(sp)
        for _attempt in range(2):
            state = diskfile.read_state(loc)
            if state.data is None:
                return loc, state, None
            try:
                obj = diskfile.open_object(loc, state)
            except FileNotFoundError:
                continue  # replaced between listing and opening: look again
            except DiskFileError as exc:
                self._quarantine(loc, request, str(exc))
                return loc, ObjectState(), None
            if _expired(obj.metadata, request):
                obj.close()
                return loc, state, None
            return loc, state, obj
        return loc, diskfile.read_state(loc), None

    # ---- PUT -------------------------------------------------------------

    async def put(self, request: Request, sp: StoragePath) -> Response:
        headers = request.headers
        ts = require_timestamp(request)
        length = request.content_length
        if length is None and not request.chunked:
            raise HTTPError(411, "Missing Content-Length or Transfer-Encoding: chunked")
        if length is not None and length > MAX_FILE_SIZE:
            raise HTTPError(413, "Your request is too large.")
        content_type = headers.get("content-type")
        if not content_type:
            raise HTTPError(400, "No content type")
        try:
            check_metadata(headers, "object")
        except MetadataError as exc:
            raise HTTPError(400, str(exc)) from None
        delete_at = _delete_at(request, time.time())
        try:
            targets = parse_targets(headers, "container")
        except ValueError as exc:
            raise HTTPError(400, f"Bad container update headers: {exc}") from None
        expected_etag = (headers.get("etag") or "").strip().strip('"').lower() or None
        if_none_match = headers.get("if-none-match")
        footer = _footer_bytes(request)
        if footer:
            assert length is not None
            length -= footer

        def prepare() -> ObjectWriter:
            loc, state, current = self._open_current(sp, request)
            if current is not None:
                current.close()
            self.devices.check_space(loc.device_path, sp.device, length or 0)
            if state.newest is not None and state.newest >= ts:
                raise HTTPError(409, "Conflict", backend_timestamp(state.newest))
            if if_none_match is not None and current is not None and if_none_match.strip() == "*":
                raise HTTPError(412, "Precondition Failed")
            return ObjectWriter(loc, footer=bool(footer), size=length)

        def describe(writer: ObjectWriter, tail: bytes) -> dict[str, str]:
            """The new object's metadata, once its body (and ``tail``, its footer) is in;
            422 on an ETag mismatch or a body that does not match its footer."""
            if length is not None and writer.size != length:
                raise ClientDisconnected(f"got {writer.size} of {length} bytes")
            if footer:
                try:
                    writer.take_footer(tail)
                except FooterError as exc:
                    raise HTTPError(422, f"Unprocessable Entity: {exc}") from None
            etag = writer.etag
            if expected_etag is not None and expected_etag != etag:
                raise HTTPError(422, "Unprocessable Entity")
            metadata = {"name": f"/{sp.account}/{sp.container}/{sp.obj}",
                        "X-Timestamp": ts.internal, "Content-Type": content_type,
                        "ETag": etag, "Content-Length": str(writer.size)}
            if writer.check is not None:
                metadata[BODY_CHECK_KEY] = writer.check.hexdigest()
            metadata.update(_stored_headers(request, _put_keeps))
            if delete_at is not None:
                metadata["X-Delete-At"] = delete_at
            return metadata

        replicating = is_true(headers.get("x-backend-replication"))
        if length is not None and length <= SMALL_BODY:
            # Small: take the body first, then check, write, hash and install
            # in one thread hop.  The checks after the body cost a refused
            # writer at most SMALL_BODY bytes of transfer.
            raw = await request.read_body(SMALL_BODY + footer) if length + footer else b""
            body, tail = [raw[:length]], raw[length:]

            def store() -> ObjectWriter:
                writer = prepare()
                try:
                    writer.write(body)
                    writer.hash(body)
                    metadata = describe(writer, tail)
                except BaseException:
                    writer.abort()
                    raise
                writer.commit(ts, metadata)
                return writer

            # Its row will follow in a thread hop: a batch leaving for the same
            # container replica meanwhile waits for it (node.storage.updates).
            promise = None if replicating else self.updates.promise(targets, sp.account, sp.container)
            with promise or contextlib.nullcontext():
                writer = await trio.to_thread.run_sync(store)
                return await self._put_done(request, sp, ts, targets, writer, content_type,
                                            replicating, promise)
        writer = await trio.to_thread.run_sync(prepare)
        try:
            tail = await _receive_into(request, writer, footer)
            metadata = describe(writer, tail)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(writer.abort)
            raise
        await trio.to_thread.run_sync(writer.commit, ts, metadata)
        return await self._put_done(request, sp, ts, targets, writer, content_type, replicating)

    async def _put_done(self, request: Request, sp: StoragePath, ts: Timestamp,
                        targets: list[Target], writer: ObjectWriter, content_type: str,
                        replicating: bool, promise: RowPromise | None = None) -> Response:
        """A stored object: tell its container (unless replicating), answer 201."""
        etag = writer.etag
        if not replicating:
            update = {"X-Timestamp": ts.internal, "X-Size": str(writer.size),
                      "X-Content-Type": content_type, "X-Etag": etag}
            for key, name in (("etag", "X-Etag"), ("size", "X-Size"), ("content-type", "X-Content-Type")):
                override = request.headers.get(OVERRIDE + key)
                if override is not None:
                    update[name] = override
            await self._container_update("PUT", request, sp, writer.loc, ts, targets, update, promise)
        return Response(201, [("ETag", f'"{etag}"'), ("Content-Length", "0")], b"")

    async def _container_update(self, method: str, request: Request, sp: StoragePath,
                                loc: ObjectLocation, ts: Timestamp, targets: list[Target],
                                headers: dict[str, str], promise: RowPromise | None = None) -> None:
        if not targets:
            return
        assert sp.container is not None and sp.obj is not None
        await self.updates.send_or_save("container", method, targets,
                                        [sp.account, sp.container, sp.obj], headers,
                                        request.request_id, loc.device_path, loc.hash, ts, promise)

    # ---- GET / HEAD ------------------------------------------------------

    async def get(self, request: Request, sp: StoragePath) -> Response:
        def open_for_read() -> tuple[ObjectLocation, ObjectState, diskfile.OpenObject | None]:
            loc, state, obj = self._open_current(sp, request)
            if obj is not None and request.method == "GET" and obj.size <= SMALL_BODY:
                try:
                    obj.read_ahead()
                except DiskFileError as exc:
                    obj.close()
                    self._quarantine(loc, request, str(exc))
                    return loc, ObjectState(), None
                except BaseException:
                    obj.close()
                    raise
            return loc, state, obj

        loc, state, obj = await trio.to_thread.run_sync(open_for_read)
        if obj is None:
            status = evaluate_preconditions(request.headers.get, request.method, False, None, None)
            ts = state.newest
            return text_response(status or 404, "" if status else "Not Found\n", backend_timestamp(ts))
        try:
            return self._object_response(request, obj, state,
                                         functools.partial(self._quarantine, loc, request))
        except BaseException:
            obj.close()
            raise

    def _object_response(self, request: Request, obj: diskfile.OpenObject, state: ObjectState,
                         on_corrupt: Callable[[str], None]) -> Response:
        meta = obj.metadata
        etag = str(meta.get("ETag", ""))
        shown_ts = Timestamp(meta.get("X-Timestamp", obj.data_timestamp))
        content_type = str(meta.get("Content-Type", "application/octet-stream"))
        headers = [("Content-Type", content_type), ("ETag", f'"{etag}"'),
                   ("Last-Modified", shown_ts.http_date), ("X-Timestamp", shown_ts.normal),
                   ("X-Backend-Timestamp", shown_ts.internal),
                   ("X-Backend-Data-Timestamp", obj.data_timestamp.internal),
                   ("Accept-Ranges", "bytes")]
        for key, value in meta.items():
            lk = key.lower()
            if lk in STORED_HEADERS or lk.startswith(STORED_PREFIXES):
                headers.append((key, str(value)))
        status = evaluate_preconditions(request.headers.get, request.method, True, etag, shown_ts)
        if status is not None:
            obj.close()
            return Response(status, headers, b"")
        size = obj.size
        ranges = parse_range(request.headers.get("range")) if size else None
        if ranges is not None:
            wanted = satisfiable_ranges(ranges, size)
            if not wanted:
                obj.close()
                return text_response(416, "Requested Range Not Satisfiable\n",
                                     [("Content-Range", f"bytes */{size}"), *headers[1:]])
            if len(wanted) == 1:
                start, stop = wanted[0]
                headers.append(("Content-Range", f"bytes {start}-{stop - 1}/{size}"))
                verify = on_corrupt if request.headers.get("x-backend-verify") == "whole" else None
                return self._body(request, obj, 206, headers, wanted, None, stop - start, verify)
            multipart = Multipart(wanted, size, content_type)
            headers[0] = ("Content-Type", multipart.content_type)
            return self._body(request, obj, 206, headers, wanted, multipart, multipart.content_length)
        return self._body(request, obj, 200, headers, [(0, size)], None, size, on_corrupt)

    def _body(self, request: Request, obj: diskfile.OpenObject, status: int,
              headers: list[tuple[str, str]], ranges: list[tuple[int, int]],
              multipart: Multipart | None, length: int,
              on_corrupt: Callable[[str], None] | None = None) -> Response:
        headers.append(("Content-Length", str(length)))
        if request.method == "HEAD":
            obj.close()
            return Response(status, headers, b"")
        body = FileBody(obj, ranges, multipart, on_corrupt)
        whole = body.prefetched()
        return Response(status, headers, body if whole is None else whole, content_length=length)

    # ---- POST ------------------------------------------------------------

    async def post(self, request: Request, sp: StoragePath) -> Response:
        ts = require_timestamp(request)
        try:
            check_metadata(request.headers, "object")
        except MetadataError as exc:
            raise HTTPError(400, str(exc)) from None
        delete_at = _delete_at(request, time.time())

        def apply() -> None:
            loc, state, obj = self._open_current(sp, request)
            if obj is None:
                raise HTTPError(404, "Not Found", backend_timestamp(state.newest))
            obj.close()
            assert state.newest is not None
            current = max(state.newest, state.meta[0]) if state.meta else state.newest
            if current >= ts:
                raise HTTPError(409, "Conflict", backend_timestamp(current))
            metadata = {"name": f"/{sp.account}/{sp.container}/{sp.obj}", "X-Timestamp": ts.internal}
            metadata.update(_stored_headers(request, diskfile.is_post_metadata))
            metadata.pop("X-Delete-At", None)
            if delete_at is not None:
                metadata["X-Delete-At"] = delete_at
            diskfile.write_marker(loc, ts, "meta", metadata)

        await trio.to_thread.run_sync(apply)
        return text_response(202, "Accepted\n")

    # ---- DELETE ----------------------------------------------------------

    async def delete(self, request: Request, sp: StoragePath) -> Response:
        ts = require_timestamp(request)
        try:
            targets = parse_targets(request.headers, "container")
        except ValueError as exc:
            raise HTTPError(400, f"Bad container update headers: {exc}") from None
        if_delete_at = request.headers.get("x-if-delete-at")

        def apply() -> tuple[ObjectLocation, bool]:
            loc, state, obj = self._open_current(sp, request)
            existed = obj is not None
            delete_at = None
            if obj is not None:
                delete_at = obj.metadata.get("X-Delete-At")
                obj.close()
            if if_delete_at is not None and (not existed or str(delete_at) != if_delete_at.strip()):
                raise HTTPError(412, "X-If-Delete-At mismatch")
            if state.newest is not None and state.newest >= ts:
                raise HTTPError(409, "Conflict", backend_timestamp(state.newest))
            diskfile.write_marker(loc, ts, "ts", {"name": f"/{sp.account}/{sp.container}/{sp.obj}",
                                                  "X-Timestamp": ts.internal})
            return loc, existed

        if is_true(request.headers.get("x-backend-replication")):
            loc, existed = await trio.to_thread.run_sync(apply)
        else:
            with self.updates.promise(targets, sp.account, sp.container) as promise:
                loc, existed = await trio.to_thread.run_sync(apply)
                await self._container_update("DELETE", request, sp, loc, ts, targets,
                                             {"X-Timestamp": ts.internal}, promise)
        status = 204 if existed else 404
        return text_response(status, "" if existed else "Not Found\n", backend_timestamp(ts))

    # ---- REPLICATE -------------------------------------------------------

    async def replicate(self, request: Request) -> Response:
        """``{suffix: md5}`` for a partition; suffixes in the path are recalculated first."""
        try:
            device, partition, suffixes = parse_replicate_path(request.path)
        except ValueError as exc:
            return text_response(400, f"{exc}\n")

        def run() -> dict[str, str]:
            part_dir: Path = self.devices.path(device) / "objects" / str(partition)
            return get_hashes(part_dir, suffixes)

        try:
            hashes = await trio.to_thread.run_sync(run)
        except DeviceUnavailable as exc:
            return text_response(507, f"{exc}\n")
        return Response(200, [("Content-Type", "application/json")],
                        json.dumps(hashes, sort_keys=True).encode())
