"""Swift object requests: GET/HEAD/PUT/POST/DELETE/COPY, large objects included.

Bodies stream in both directions: a PUT hands ``request.iter_body()`` to the
cluster client (each chunk reaches every replica before the next is read); a
GET returns the backend stream (or the segment stream of a large object) as
the response body.  A failure after the response head is out cuts the
connection, so a client never mistakes a short body for the object.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from node.cluster_client import make_timestamp
from node.headers import Headers
from node.http_client import BackendError
from node.http_server import BadRequest, ClientDisconnected, Response
from node.log import log_event
from node.storage.timestamp import Timestamp
from proxy import dlo, slo
from proxy.ranges import parse_range, resolve
from proxy.segments import SegmentError, prefetch, stream_segments
from proxy.swift_authz import authorize
from proxy.swift_call import SwiftCall
from proxy.swift_limits import (MAX_FILE_SIZE, Refusal, check_container_name, check_metadata,
                                check_object_name, delete_at_header)
from proxy.swift_responses import client_headers, empty, error

log = logging.getLogger("peerstack.proxy.object")

#: request headers an object keeps (besides X-Object-Meta-*)
_STORED = ("content-type", "content-encoding", "content-disposition", "content-language",
           "cache-control", "expires", "x-object-manifest", "x-robots-tag")
_CONDITIONALS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


class BodyTooLarge(Exception):
    """A chunked upload went past the object size limit."""


@dataclass
class ReadResult:
    """An object ready to send: client headers, body and its length."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterable[bytes] | bytes
    content_length: int | None
    #: the object's own headers as stored (metadata for COPY)
    stored: Headers

    def response(self) -> Response:
        headers = self.headers
        if isinstance(self.body, bytes) and self.content_length is not None \
                and len(self.body) != self.content_length:
            # A HEAD: no body, but the length the GET would have.
            headers = headers + [("Content-Length", str(self.content_length))]
        return Response(self.status, headers, self.body, content_length=self.content_length)

    async def aclose(self) -> None:
        aclose = getattr(self.body, "aclose", None)
        if aclose is not None:
            await aclose()


def _refuse(r: Refusal) -> Response:
    return error(r.status, r.message)


async def handle(call: SwiftCall) -> Response:
    method = call.method
    if method in ("GET", "HEAD"):
        return await get_object(call)
    if method == "PUT":
        return await put_object(call)
    if method == "POST":
        return await post_object(call)
    if method == "DELETE":
        return await delete_object(call)
    if method == "COPY":
        return await copy_request(call)
    return error(405, headers=[("Allow", "GET, HEAD, PUT, POST, DELETE, COPY")])


# -- reads ----------------------------------------------------------------------


def _forwarded(call: SwiftCall, *, with_range: bool = True) -> list[tuple[str, str]]:
    names = _CONDITIONALS + (("range",) if with_range else ())
    return [(n, v) for n in names if (v := call.request.headers.get(n)) is not None]


async def get_object(call: SwiftCall) -> Response:
    result = await open_for_read(call, call.account, call.container or "", call.obj or "",
                                 call.method, _forwarded(call),
                                 manifest_get=call.query.get("multipart-manifest") == "get")
    if isinstance(result, Response):
        return result
    if call.tempurl:
        result.headers = _tempurl_outgoing(call, result.headers)
    return result.response()


def _tempurl_outgoing(call: SwiftCall, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Hide private metadata from temp URL users; offer the file as a download."""
    out = [(k, v) for k, v in headers if not k.lower().startswith("x-object-meta-")
           or k.lower().startswith("x-object-meta-public-")]
    if call.method == "GET" and "inline" not in call.query:
        name = call.query.get("filename") or (call.obj or "").rsplit("/", 1)[-1]
        quoted = urllib.parse.quote(name)
        out = [(k, v) for k, v in out if k.lower() != "content-disposition"]
        out.append(("Content-Disposition", f"attachment; filename=\"{quoted}\"; filename*=UTF-8''{quoted}"))
    return out


async def open_for_read(call: SwiftCall, account: str, container: str, obj: str, method: str,
                        fwd: list[tuple[str, str]], *, manifest_get: bool) -> ReadResult | Response:
    """The object as a client would read it (segments joined) or the error to send."""
    resp = await call.cc.open_object(account, container, obj, fwd, method=method)
    stored = resp.headers
    if resp.status == 503 and not len(stored):
        await resp.aclose()
        return error(503)
    large_answer = resp.status in (200, 206, 304, 412, 416)
    if large_answer and slo.is_slo(stored):
        if manifest_get:
            return await _manifest_as_stored(call, resp, method)
        first_body = resp if resp.status == 200 and method == "GET" else None
        if first_body is None:
            await resp.aclose()
        return await _read_slo(call, account, container, obj, stored, method, first_body)
    if large_answer and stored.get("x-object-manifest") and not manifest_get:
        await resp.aclose()
        return await _read_dlo(call, stored, method)
    headers = client_headers(stored)
    if resp.status // 100 != 2:
        await resp.aclose()
        if resp.status in (304, 412):
            return Response(resp.status, [h for h in headers if h[0].lower() != "content-length"], b"")
        if resp.status == 416:
            return error(416, headers=[h for h in headers if h[0].lower() == "content-range"])
        return error(resp.status)
    length = stored.get("content-length")
    headers = [h for h in headers if h[0].lower() != "content-length"]
    body: AsyncIterable[bytes] | bytes = _GuardedStream(resp) if method == "GET" else b""
    if method != "GET":
        await resp.aclose()
    return ReadResult(resp.status, headers, body, int(length) if length is not None else None, stored)


class _GuardedStream:
    """A backend stream whose failures cut the client connection instead of crashing.

    A class, not a generator, so ``aclose`` releases the backend connection
    even when the body was never started.
    """

    def __init__(self, resp) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp:
                yield chunk
        except BackendError as exc:
            raise ClientDisconnected(f"backend failed mid-stream: {exc}") from exc

    async def aclose(self) -> None:
        await self._resp.aclose()


async def _manifest_as_stored(call: SwiftCall, resp, method: str) -> ReadResult | Response:
    """``?multipart-manifest=get``: the manifest itself (``&format=raw``: PUT format)."""
    stored = resp.headers
    if resp.status != 200:
        await resp.aclose()
        return error(resp.status)
    raw = b""
    try:
        if method == "GET" or call.query.get("format") == "raw":
            raw = b"".join([c async for c in resp])
    finally:
        await resp.aclose()
    headers = [h for h in client_headers(stored) if h[0].lower() not in ("content-length", "content-type")]
    headers.append(("Content-Type", "application/json; charset=utf-8"))
    if call.query.get("format") == "raw":
        try:
            raw = json.dumps(slo.raw_manifest(slo.parse_manifest(raw))).encode()
        except slo.ManifestError:
            return error(500, "Manifest is corrupt")
        headers = [h for h in headers if h[0].lower() != "etag"]
    length = len(raw) if raw or method == "GET" else int(stored.get("content-length") or 0)
    return ReadResult(200, headers, raw if method == "GET" else b"", length, stored)


def _large_headers(stored: Headers, etag: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    drop = {"content-length", "etag", "content-range", "accept-ranges"}
    headers = [h for h in client_headers(stored) if h[0].lower() not in drop]
    return headers + [("Etag", f'"{etag}"'), ("Accept-Ranges", "bytes")] + extra


def _conditional(call: SwiftCall, etag: str, stored: Headers) -> int | None:
    """Evaluate If-Match / If-None-Match against a large object's own ETag."""
    h = call.request.headers
    match = h.get("if-match")
    if match is not None and match.strip() != "*" and \
            etag not in [t.strip().strip('"') for t in match.split(",")]:
        return 412
    none_match = h.get("if-none-match")
    if none_match is not None and (none_match.strip() == "*" or
                                   etag in [t.strip().strip('"') for t in none_match.split(",")]):
        return 304 if call.method in ("GET", "HEAD") else 412
    return None


async def _serve_segments(call: SwiftCall, stored: Headers, etag: str, size: int, method: str,
                          segments_factory) -> ReadResult | Response:
    """Headers, range and body of a large object of ``size`` bytes."""
    cond = _conditional(call, etag, stored)
    if cond is not None:
        return Response(cond, [("Etag", f'"{etag}"')], b"")
    status = 200
    first, last = 0, size - 1
    extra: list[tuple[str, str]] = []
    ranges = parse_range(call.request.headers.get("range"))
    if ranges is not None:
        spans = resolve(ranges, size)
        if not spans:
            return error(416, headers=[("Content-Range", f"bytes */{size}")])
        if len(spans) == 1:
            # Several ranges of a large object get the whole object (RFC 9110 allows it).
            first, last = spans[0]
            status = 206
            extra.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    headers = _large_headers(stored, etag, extra)
    length = max(last - first + 1, 0)
    if method != "GET" or length == 0:
        return ReadResult(status, headers, b"", length, stored)
    try:
        body = await prefetch(stream_segments(call.cc, call.account, segments_factory(), first, last))
    except (SegmentError, slo.ManifestError, BackendError) as exc:
        log_event(log, "large_object.first_segment_failed", rid=call.rid, error=str(exc))
        return error(409, f"Object segment no longer valid: {exc}")
    return ReadResult(status, headers, body, length, stored)


async def _read_slo(call: SwiftCall, account: str, container: str, obj: str, stored: Headers,
                    method: str, first_body) -> ReadResult | Response:
    etag = stored.get(slo.SLO_ETAG)
    size = stored.get(slo.SLO_SIZE)
    entries: list[dict] | None = None
    if method == "GET" or etag is None or size is None:
        try:
            if first_body is not None:
                try:
                    entries = slo.parse_manifest(b"".join([c async for c in first_body]))
                finally:
                    await first_body.aclose()
            else:
                entries = await slo.read_manifest(call, account, container, obj)
        except (slo.ManifestError, BackendError) as exc:
            return error(409, f"Manifest unreadable: {exc}")
        etag = etag or slo.manifest_etag(entries)
        size = size if size is not None else str(sum(slo.entry_size(e) for e in entries))
    listed = entries or []
    return await _serve_segments(call, stored, etag, int(size), method,
                                 lambda: slo.iter_segments(call, listed))


async def _read_dlo(call: SwiftCall, stored: Headers, method: str) -> ReadResult | Response:
    where = dlo.parse_manifest_header(stored["x-object-manifest"])
    if where is None:
        return error(409, "Invalid X-Object-Manifest")
    if call.identity is None or not call.identity.owns(call.account):
        refused = await authorize(call, call.account, where[0], write=False)
        if refused is not None and not call.tempurl:
            return refused
    try:
        listing = await dlo.list_segments(call, *where)
    except dlo.ListingError as exc:
        return error(503, str(exc))
    return await _serve_segments(call, stored, listing.etag, listing.size, method,
                                 lambda: dlo.as_async(listing.segments))


# -- writes ---------------------------------------------------------------------


def object_headers(call: SwiftCall, obj: str, *, new_body: bool = False
                   ) -> tuple[list[tuple[str, str]] | None, Response | None]:
    """Backend headers for a PUT/POST from the client's, after Swift's checks."""
    h = call.request.headers
    bad = check_metadata(h, "object")
    if bad:
        return None, _refuse(bad)
    if h.get("x-static-large-object") is not None and call.method != "COPY":
        return None, error(400, "X-Static-Large-Object is a reserved header. To create a static "
                                "large object add query param multipart-manifest=put.")
    manifest = h.get("x-object-manifest")
    if manifest is not None:
        bad = dlo.check_manifest_header(manifest)
        if bad:
            return None, _refuse(bad)
    delete_at, bad = delete_at_header(h)
    if bad:
        return None, _refuse(bad)
    out = [(k, v) for k, v in h.items() if k in _STORED or k.startswith("x-object-meta-")]
    if delete_at:
        out.append(("X-Delete-At", delete_at))
    if new_body and not h.get("content-type"):
        out.append(("Content-Type", mimetypes.guess_type(obj)[0] or "application/octet-stream"))
    out.append(("X-Timestamp", make_timestamp()))
    return out, None


async def _counted(call: SwiftCall) -> AsyncIterator[bytes]:
    """The request body, refusing chunked uploads beyond the object size limit."""
    total = 0
    async for chunk in call.request.iter_body():
        total += len(chunk)
        if total > MAX_FILE_SIZE:
            raise BodyTooLarge()
        yield chunk


async def put_object(call: SwiftCall) -> Response:
    request = call.request
    h = request.headers
    container, obj = call.container or "", call.obj or ""
    if h.get("x-copy-from") is not None:
        source = _split_copy_path(h["x-copy-from"])
        if source is None:
            return error(412, "X-Copy-From header must be of the form <container name>/<object name>")
        src_account = h.get("x-copy-from-account") or call.account
        return await copy_object(call, (src_account, *source), (call.account, container, obj))
    if request.content_length is None and not request.chunked:
        return error(411)
    if request.content_length is not None and request.content_length > MAX_FILE_SIZE:
        return error(413, "Your request is too large.")
    headers, refusal = object_headers(call, obj, new_body=True)
    if refusal is not None:
        return refusal
    assert headers is not None
    info = await call.containers.get(call.cc, call.account, container)
    if info.status // 100 != 2:
        return error(404 if info.status == 404 else info.status)
    if call.query.get("multipart-manifest") == "put":
        return await slo.put_manifest(call, headers)
    if h.get("etag"):
        headers.append(("ETag", h["etag"].strip('"')))
    try:
        status, resp_headers = await call.cc.put_object(call.account, container, obj, headers,
                                                        _counted(call), request.content_length)
    except BodyTooLarge:
        return error(413, "Your request is too large.")
    except BadRequest as exc:
        return error(400, str(exc))
    except ClientDisconnected as exc:
        log_event(log, "object.put_client_gone", rid=call.rid, error=str(exc))
        return error(408) if "timeout" in str(exc) else error(499)
    return _put_answer(status, resp_headers, headers)


def _put_answer(status: int, resp_headers: Headers, sent: list[tuple[str, str]],
                extra: list[tuple[str, str]] | None = None) -> Response:
    if status // 100 != 2:
        return error(status)
    ts = resp_headers.get("x-timestamp") or next(v for k, v in sent if k == "X-Timestamp")
    out = [("Last-Modified", Timestamp(ts).http_date)]
    if resp_headers.get("etag"):
        out.append(("Etag", resp_headers["etag"]))
    return empty(201, out + (extra or []))


async def post_object(call: SwiftCall) -> Response:
    headers, refusal = object_headers(call, call.obj or "")
    if refusal is not None:
        return refusal
    resp = await call.cc.post_object(call.account, call.container or "", call.obj or "", headers)
    if resp.status // 100 != 2:
        return error(resp.status)
    return empty(202)


async def delete_object(call: SwiftCall) -> Response:
    if call.query.get("multipart-manifest") == "delete":
        return await slo.delete_manifest(call)
    resp = await call.cc.delete_object(call.account, call.container or "", call.obj or "")
    if resp.status // 100 != 2:
        return error(resp.status)
    return empty(204)


# -- copies ---------------------------------------------------------------------


def _split_copy_path(value: str) -> tuple[str, str] | None:
    path = urllib.parse.unquote(value).lstrip("/")
    container, sep, obj = path.partition("/")
    if not container or not sep or not obj or check_container_name(container) or check_object_name(obj):
        return None
    return container, obj


async def copy_request(call: SwiftCall) -> Response:
    """``COPY /v1/a/c/o`` with ``Destination: c2/o2`` (and maybe ``Destination-Account``)."""
    dest = call.request.headers.get("destination")
    if dest is None:
        return error(412, "Destination header required")
    where = _split_copy_path(dest)
    if where is None:
        return error(412, "Destination header must be of the form <container name>/<object name>")
    dest_account = call.request.headers.get("destination-account") or call.account
    return await copy_object(call, (call.account, call.container or "", call.obj or ""),
                             (dest_account, *where))


async def copy_object(call: SwiftCall, src: tuple[str, str, str], dst: tuple[str, str, str]) -> Response:
    """Server-side copy: stream the source (joined, if large) into a new object."""
    refused = await authorize(call, src[0], src[1], write=False)
    if refused is None:
        refused = await authorize(call, dst[0], dst[1], write=True)
    if refused is not None:
        return refused
    info = await call.containers.get(call.cc, dst[0], dst[1])
    if info.status // 100 != 2:
        return error(404 if info.status == 404 else info.status)
    manifest_get = call.query.get("multipart-manifest") == "get"
    fwd = [(k, v) for k, v in _forwarded(call, with_range=False)]
    source = await open_for_read(call, src[0], src[1], src[2], "GET", fwd, manifest_get=manifest_get)
    if isinstance(source, Response):
        return source
    if source.status != 200:
        await source.aclose()
        return error(source.status)
    headers, refusal = object_headers(call, dst[2])
    if refusal is not None:
        await source.aclose()
        return refusal
    assert headers is not None
    stored = source.stored
    fresh = (call.request.headers.get("x-fresh-metadata") or "").lower() in ("true", "1", "yes")
    given = {k.lower() for k, _ in headers}
    if not fresh:
        for k, v in stored.items():
            keep = k.startswith("x-object-meta-") or k in _STORED
            if keep and k not in given and not (k == "x-object-manifest" and not manifest_get):
                headers.append((k, v))
    if manifest_get and slo.is_slo(stored):
        headers += [(k, v) for k, v in stored.items()
                    if k == "x-static-large-object" or k.startswith("x-object-sysmeta-")]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", stored.get("content-type") or "application/octet-stream"))
    body = source.body if not isinstance(source.body, bytes) else _once(source.body)
    try:
        status, resp_headers = await call.cc.put_object(dst[0], dst[1], dst[2], headers, body,
                                                        source.content_length)
    except ClientDisconnected as exc:
        return error(503, f"Copy source failed mid-stream: {exc}")
    finally:
        await source.aclose()
    extra = [("X-Copied-From", urllib.parse.quote(f"{src[1]}/{src[2]}")),
             ("X-Copied-From-Account", urllib.parse.quote(src[0]))]
    last_modified = next((v for k, v in source.headers if k == "Last-Modified"), None)
    if last_modified:
        extra.append(("X-Copied-From-Last-Modified", last_modified))
    return _put_answer(status, resp_headers, headers, extra)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
