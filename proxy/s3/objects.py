"""Object requests: PutObject, GetObject/HeadObject, DeleteObject(s), CopyObject.

Bodies stream both ways.  A PUT hands the verified :class:`Payload` to the
cluster client; a GET returns the backend stream, or for a multipart
object (a Swift SLO manifest) the segment stream of ``proxy.swift_object``
-- the same reader the Swift API uses, so both APIs serve the same bytes.

What S3 keeps besides the body, and where:

* ``x-amz-meta-*`` -> ``X-Object-Meta-*`` (so Swift shows it too), and
  Content-Type/-Encoding/-Disposition/-Language, Cache-Control, Expires as
  the standard headers;
* a multipart object's S3 ETag (``<md5 of part md5s>-N``) and upload id in
  ``X-Object-Sysmeta-S3-*``;
* the checksum (``x-amz-checksum-<algo>``) in
  ``X-Object-Transient-Sysmeta-S3-Checksum-<Algo>``.  A checksum that
  arrives in a trailer after a big body is only known once the body is
  stored, so it is added by a metadata POST right after the PUT (small
  bodies are read first and need no POST); being POST-able metadata, a
  later Swift POST that replaces the metadata drops it, as it drops
  ``X-Object-Meta-*``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterable
from dataclasses import dataclass

import trio

from node.cluster_client import make_timestamp
from node.headers import Headers
from node.http_server import ClientDisconnected, Request, Response
from node.log import log_event
from node.storage.conditional import evaluate_preconditions
from node.storage.timestamp import Timestamp
from proxy import slo
from proxy.s3 import xml
from proxy.s3.buckets import acl_document, require_bucket, xml_response
from proxy.s3.context import MAX_KEY_BYTES, MAX_OBJECT_SIZE, MAX_USER_METADATA, S3Call
from proxy.s3.errors import S3Error, status_error
from proxy.s3.listing import http_to_iso
from proxy.s3.payload import Payload, algorithm_label
from proxy.s3.xml import element
from proxy.swift_object import ReadResult, open_for_read

log = logging.getLogger("peerstack.proxy.s3")

S3_ETAG = "x-object-sysmeta-s3-etag"
UPLOAD_ID = "x-object-sysmeta-s3-upload-id"
CHECKSUM_PREFIX = "x-object-transient-sysmeta-s3-checksum-"
#: standard headers an object keeps (sent to and returned by the storage servers)
STANDARD_HEADERS = ("content-encoding", "content-disposition", "content-language", "cache-control",
                    "expires")
#: Swift's per-value limit on metadata, which the storage servers enforce
MAX_META_VALUE = 256
DELETE_CONCURRENCY = 10
_CONDITIONALS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
              "response-expires": "Expires", "response-cache-control": "Cache-Control",
              "response-content-disposition": "Content-Disposition",
              "response-content-encoding": "Content-Encoding"}


def check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", MaxSizeAllowed=str(MAX_KEY_BYTES), Size=str(len(key.encode())))
    if "\x00" in key:
        raise S3Error("InvalidArgument", "Object key contains a NUL character")


def metadata_headers(request: Request) -> list[tuple[str, str]]:
    """Backend headers for an object's metadata, from an S3 request (PUT, copy REPLACE, upload)."""
    h = request.headers
    out = [("Content-Type", h.get("content-type") or "binary/octet-stream")]
    for name in STANDARD_HEADERS:
        value = h.get(name)
        if name == "content-encoding" and value:
            # aws-chunked is the framing of this request, not a property of the object.
            value = ",".join(v.strip() for v in value.split(",") if v.strip().lower() != "aws-chunked")
        if value:
            out.append((name.title(), value))
    size = 0
    for name, value in h.with_prefix("x-amz-meta-").items():
        short = name[len("x-amz-meta-"):]
        size += len(short) + len(value)
        if len(value) > MAX_META_VALUE or size > MAX_USER_METADATA:
            raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum allowed metadata "
                                              f"size ({MAX_USER_METADATA} bytes, {MAX_META_VALUE} per value).",
                          MaxSizeAllowed=str(MAX_USER_METADATA))
        out.append(("X-Object-Meta-" + short, value))
    storage_class = (h.get("x-amz-storage-class") or "STANDARD").upper()
    if storage_class not in ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "INTELLIGENT_TIERING"):
        raise S3Error("InvalidStorageClass", StorageClassRequested=storage_class)
    if h.get("x-amz-server-side-encryption-customer-algorithm"):
        raise S3Error("NotImplemented", "Server-side encryption with customer keys is not offered.")
    return out


def stored_metadata(stored: Headers) -> list[tuple[str, str]]:
    """The metadata headers of a stored object, to carry over (copy, POST)."""
    out = []
    for name, value in stored.items():
        if name in STANDARD_HEADERS or name.startswith("x-object-meta-"):
            out.append((name, value))
    return out


def checksum_of(stored: Headers) -> tuple[str, str] | None:
    for name, value in stored.items():
        if name.startswith(CHECKSUM_PREFIX):
            return name[len(CHECKSUM_PREFIX):], value
    return None


def checksum_header(algorithm: str, value: str) -> tuple[str, str]:
    return (CHECKSUM_PREFIX + algorithm).title(), value


# -- writing ----------------------------------------------------------------------


@dataclass
class Stored:
    etag: str
    timestamp: str
    checksum: tuple[str, str] | None


async def store(call: S3Call, container: str, obj: str, headers: list[tuple[str, str]],
                payload: Payload) -> Stored:
    """Stream a verified body into ``container/obj``; raises :class:`S3Error` on any failure."""
    request = call.request
    if payload.length is None and not request.chunked and payload.decoder is None:
        raise S3Error("MissingContentLength")
    if payload.length is not None and payload.length > MAX_OBJECT_SIZE:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_OBJECT_SIZE),
                      ProposedSize=str(payload.length))
    headers = list(headers) + [("X-Timestamp", make_timestamp())]
    if payload.md5_hex:
        headers.append(("ETag", payload.md5_hex))
    if request.headers.get("if-none-match") == "*":
        headers.append(("If-None-Match", "*"))
    small = await payload.prefetch()
    known_checksum = payload.algorithm is not None and payload.checksum_value is not None
    if known_checksum:
        assert payload.algorithm and payload.checksum_value
        headers.append(checksum_header(payload.algorithm, payload.checksum_value))
    body: bytes | AsyncIterable[bytes] = small if small is not None else payload.stream()
    length = len(small) if small is not None else payload.length
    try:
        status, resp_headers = await call.cc.put_object(call.account, container, obj, headers, body, length)
    except ClientDisconnected as exc:
        log_event(log, "s3.put_client_gone", rid=call.rid, error=str(exc))
        raise S3Error("IncompleteBody") from exc
    if status == 422:
        raise S3Error("BadDigest")
    if status == 412:
        raise S3Error("PreconditionFailed", Condition="If-None-Match")
    if status // 100 != 2:
        raise status_error(status)
    ts = next(v for k, v in headers if k == "X-Timestamp")
    etag = (resp_headers.get("etag") or "").strip('"')
    checksum = None
    if payload.algorithm is not None and payload.checksum_value is not None:
        checksum = (payload.algorithm, payload.checksum_value)
        if not known_checksum:
            # Known only after the body (a trailer): add it to the stored metadata.
            post = [(k, v) for k, v in headers if k.lower() in STANDARD_HEADERS
                    or k.lower().startswith("x-object-meta-")]
            post.append(checksum_header(*checksum))
            answer = await call.cc.post_object(call.account, container, obj, post)
            if answer.status // 100 != 2:
                log_event(log, "s3.checksum_post_failed", rid=call.rid, status=answer.status)
    return Stored(etag, ts, checksum)


def _checksum_response_headers(checksum: tuple[str, str] | None) -> list[tuple[str, str]]:
    if checksum is None:
        return []
    return [(f"x-amz-checksum-{checksum[0]}", checksum[1])]


async def put_object(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    headers = metadata_headers(call.request)
    await require_bucket(call)
    result = await store(call, call.bucket or "", key, headers, call.payload)
    return Response(200, [("ETag", f'"{result.etag}"'), *_checksum_response_headers(result.checksum)],
                    b"", content_length=0)


# -- reading ----------------------------------------------------------------------


@dataclass
class S3Object:
    """An object opened for reading, in S3 terms."""

    result: ReadResult
    etag: str
    size: int
    content_range: str | None

    @property
    def stored(self) -> Headers:
        return self.result.stored

    @property
    def status(self) -> int:
        return self.result.status

    @property
    def last_modified(self) -> str:
        ts = self.stored.get("x-timestamp")
        return Timestamp(ts).http_date if ts else ""

    async def aclose(self) -> None:
        await self.result.aclose()


def _header_view(request: Request, method: str, headers: list[tuple[str, str]]) -> Request:
    """``request`` with other headers: how the Swift large-object reader sees it."""
    raw = [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]
    return Request(method, request.target, Headers(raw), request.request_id, request.client, None)


def _answer_header(response: Response, name: str) -> str | None:
    return response.header(name)


async def open_read(call: S3Call, bucket: str, key: str, method: str,
                    conditions: list[tuple[str, str]], range_header: str | None,
                    *, not_modified_is_failure: bool = False) -> S3Object | Response:
    """Open ``bucket/key`` honouring S3's conditional and range rules.

    Returns the open object, or a bodiless ``304`` response; raises
    ``NoSuchKey``, ``PreconditionFailed``, ``InvalidRange``.  For a copy
    source a ``304`` condition is a ``PreconditionFailed``
    (``not_modified_is_failure``), as S3's copy conditions are.
    """
    ranges = [r for r in (range_header or "").partition("=")[2].split(",") if r.strip()]
    use_range = range_header if range_header and len(ranges) == 1 else None
    fwd = list(conditions) + ([("Range", use_range)] if use_range else [])
    swift = call.swift_call()
    swift.container, swift.obj = bucket, key
    swift.request = _header_view(call.request, method, [("Range", use_range)] if use_range else [])
    result = await open_for_read(swift, call.account, bucket, key, method, fwd, manifest_get=False)
    if isinstance(result, Response):
        status = result.status
        if status == 304:
            if not_modified_is_failure:
                raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-None-Match")
            keep = [(k, v) for k, v in result.headers if k.lower() in ("etag", "last-modified")]
            return Response(304, keep, b"")
        if status == 404:
            raise S3Error("NoSuchKey", Key=key)
        if status == 416:
            size = (_answer_header(result, "content-range") or "").rpartition("/")[2]
            raise S3Error("InvalidRange", RangeRequested=use_range or "", ActualObjectSize=size)
        if status == 409:
            raise S3Error("InternalError", "A part of this multipart object is missing.", status=503)
        raise status_error(status)
    stored = result.stored
    large = slo.is_slo(stored)
    etag = stored.get(S3_ETAG) or next((v for k, v in result.headers if k.lower() == "etag"), "")
    etag = etag.strip('"')
    content_range = next((v for k, v in result.headers if k.lower() == "content-range"), None)
    if content_range:
        size = int(content_range.rpartition("/")[2])
    elif large:
        size = result.content_length or 0
    else:
        size = int(stored.get("content-length") or result.content_length or 0)
    obj = S3Object(result, etag, size, content_range)
    if large and conditions:
        # The backends judged the manifest; S3 conditions are about the object's own ETag.
        ts = stored.get("x-timestamp")
        verdict = evaluate_preconditions(dict((k.lower(), v) for k, v in conditions).get, method, True,
                                         etag, Timestamp(ts) if ts else None)
        if verdict is not None:
            await obj.aclose()
            if verdict == 304 and not not_modified_is_failure:
                return Response(304, [("ETag", f'"{etag}"'), ("Last-Modified", obj.last_modified)], b"")
            raise S3Error("PreconditionFailed", Condition="If-Match")
    return obj


def object_headers(obj: S3Object, call: S3Call, *, whole: bool) -> list[tuple[str, str]]:
    """S3's response headers for an object (metadata, checksum, overrides)."""
    stored = obj.stored
    out = [("Content-Type", stored.get("content-type") or "binary/octet-stream"),
           ("ETag", f'"{obj.etag}"'), ("Last-Modified", obj.last_modified), ("Accept-Ranges", "bytes")]
    for name in STANDARD_HEADERS:
        if stored.get(name):
            out.append((name.title(), stored[name]))
    for name, value in stored.with_prefix("x-object-meta-").items():
        out.append(("x-amz-meta-" + name[len("x-object-meta-"):], value))
    if obj.content_range:
        out.append(("Content-Range", obj.content_range))
    checksum = checksum_of(stored)
    mode = (call.request.headers.get("x-amz-checksum-mode") or "").upper()
    if checksum is not None and whole and mode == "ENABLED":
        out.append((f"x-amz-checksum-{checksum[0]}", checksum[1]))
        if checksum[1].rpartition("-")[2].isdigit() and "-" in checksum[1]:
            out.append(("x-amz-checksum-type", "COMPOSITE"))
        else:
            out.append(("x-amz-checksum-type", "FULL_OBJECT"))
    if stored.get(S3_ETAG):
        parts = obj.etag.rpartition("-")[2]
        if parts.isdigit() and call.query.get("partNumber"):
            out.append(("x-amz-mp-parts-count", parts))
    for param, header in _OVERRIDES.items():
        if param in call.query:
            out = [(k, v) for k, v in out if k.lower() != header.lower()]
            out.append((header, call.query[param]))
    return out


async def get_object(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    h = call.request.headers
    part = call.query.get("partNumber")
    if part is not None and part != "1":
        raise S3Error("InvalidPart", "Only partNumber=1 (the whole object) can be read this way.")
    conditions = [(n, v) for n in _CONDITIONALS if (v := h.get(n)) is not None]
    opened = await open_read(call, call.bucket or "", key, call.method, conditions, h.get("range"))
    if isinstance(opened, Response):
        return opened
    length = opened.result.content_length
    headers = object_headers(opened, call, whole=opened.status == 200)
    if call.method == "HEAD":
        await opened.aclose()
        headers.append(("Content-Length", str(length or 0)))
        return Response(opened.status, headers, b"")
    return Response(opened.status, headers, opened.result.body, content_length=length)


async def get_acl(call: S3Call) -> Response:
    check_key(call.key or "")
    head = await call.cc.head_object(call.account, call.bucket or "", call.key or "")
    if head.status == 404:
        await require_bucket(call)
        raise S3Error("NoSuchKey", Key=call.key or "")
    if head.status // 100 != 2:
        raise status_error(head.status)
    return xml_response(acl_document(call))


# -- deleting ---------------------------------------------------------------------


async def delete_one(call: S3Call, bucket: str, key: str) -> None:
    """Delete a key (and the parts of a multipart object); a missing key is fine, as in S3."""
    head = await call.cc.head_object(call.account, bucket, key)
    segments: list[str] = []
    if head.status // 100 == 2 and slo.is_slo(head.headers) and head.headers.get(UPLOAD_ID):
        try:
            entries = await slo.read_manifest(call.swift_call(), call.account, bucket, key)
            segments = [e["name"] for e in entries]
        except slo.ManifestError as exc:
            log_event(log, "s3.manifest_unreadable", rid=call.rid, key=key, error=str(exc))
    resp = await call.cc.delete_object(call.account, bucket, key)
    if resp.status // 100 != 2 and resp.status != 404:
        raise status_error(resp.status)
    await delete_paths(call, segments)


async def delete_paths(call: S3Call, paths: list[str]) -> None:
    """Delete ``/container/object`` paths of this account, a few at a time."""
    limiter = trio.Semaphore(DELETE_CONCURRENCY)

    async def one(path: str) -> None:
        where = slo.split_segment_path(path)
        if where is None:
            return
        async with limiter:
            await call.cc.delete_object(call.account, *where)

    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(one, path)


async def delete_object(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    await require_bucket(call)
    await delete_one(call, call.bucket or "", key)
    return Response(204, [], b"")


MAX_DELETE_KEYS = 1000


async def delete_objects(call: S3Call) -> Response:
    """``POST ?delete``: up to 1000 keys; quiet mode reports only the failures."""
    await require_bucket(call)
    body = await call.payload.read_all(xml.MAX_XML_BODY)
    try:
        doc = xml.parse(body, "Delete")
    except xml.XMLError:
        raise S3Error("MalformedXML") from None
    quiet = (xml.child_text(doc, "Quiet") or "").strip().lower() == "true"
    keys = [xml.child_text(o, "Key") for o in xml.children(doc, "Object")]
    if not keys or len(keys) > MAX_DELETE_KEYS or any(k is None or k == "" for k in keys):
        raise S3Error("MalformedXML")
    results: dict[int, S3Error | None] = {}
    limiter = trio.Semaphore(DELETE_CONCURRENCY)

    async def one(i: int, key: str) -> None:
        async with limiter:
            try:
                check_key(key)
                await delete_one(call, call.bucket or "", key)
                results[i] = None
            except S3Error as exc:
                results[i] = exc

    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            nursery.start_soon(one, i, key or "")
    children = []
    for i, key in enumerate(keys):
        err = results.get(i)
        if err is None:
            if not quiet:
                children.append(element("Deleted", [element("Key", key)]))
        else:
            children.append(element("Error", [element("Key", key), element("Code", err.code),
                                              element("Message", err.message)]))
    return xml_response(element("DeleteResult", children))


# -- copying ----------------------------------------------------------------------


def parse_copy_source(value: str) -> tuple[str, str]:
    """``/bucket/key`` or ``bucket/key`` (percent-encoded, maybe ``?versionId=``)."""
    path, _, version = value.partition("?")
    path = urllib.parse.unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: "
                                         "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source",
                      ArgumentValue=value)
    if version and version.partition("=")[2] not in ("", "null"):
        raise S3Error("NoSuchVersion", "The specified version does not exist.", status=404)
    check_key(key)
    return bucket, key


def copy_conditions(request: Request) -> list[tuple[str, str]]:
    h = request.headers
    return [(n, v) for n in _CONDITIONALS if (v := h.get("x-amz-copy-source-" + n)) is not None]


async def open_copy_source(call: S3Call, range_header: str | None = None) -> tuple[str, str, S3Object]:
    bucket, key = parse_copy_source(call.request.headers.get("x-amz-copy-source") or "")
    await require_bucket(call, bucket)
    opened = await open_read(call, bucket, key, "GET", copy_conditions(call.request), range_header,
                             not_modified_is_failure=True)
    assert not isinstance(opened, Response)
    if opened.size > MAX_OBJECT_SIZE and range_header is None:
        await opened.aclose()
        raise S3Error("InvalidRequest", "The specified copy source is larger than the maximum allowable "
                                        f"size for a copy source: {MAX_OBJECT_SIZE}")
    return bucket, key, opened


async def copy_object(call: S3Call) -> Response:
    dest = call.key or ""
    check_key(dest)
    await require_bucket(call)
    directive = (call.request.headers.get("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.",
                      ArgumentName="x-amz-metadata-directive", ArgumentValue=directive)
    replaced = metadata_headers(call.request) if directive == "REPLACE" else None
    src_bucket, src_key, source = await open_copy_source(call)
    try:
        if (src_bucket, src_key) == (call.bucket, dest) and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an "
                                            "object to itself without changing the object's metadata, "
                                            "storage class, website redirect location or encryption "
                                            "attributes.")
        stored = source.stored
        if replaced is None:
            headers = [("Content-Type", stored.get("content-type") or "binary/octet-stream")]
            headers += stored_metadata(stored)
        else:
            headers = replaced
        headers.append(("X-Timestamp", make_timestamp()))
        checksum = checksum_of(stored)
        if checksum is not None and "-" not in checksum[1]:
            headers.append(checksum_header(*checksum))
        body = source.result.body
        status, resp_headers = await call.cc.put_object(call.account, call.bucket or "", dest, headers,
                                                        body, source.result.content_length)
    except ClientDisconnected as exc:
        raise S3Error("InternalError", f"The copy source failed mid-stream: {exc}", status=503) from exc
    finally:
        await source.aclose()
    if status // 100 != 2:
        raise status_error(status)
    ts = next(v for k, v in headers if k == "X-Timestamp")
    etag = (resp_headers.get("etag") or "").strip('"')
    result = [element("LastModified", http_to_iso(ts)), element("ETag", f'"{etag}"')]
    if checksum is not None and "-" not in checksum[1]:
        result.append(element(f"Checksum{algorithm_label(checksum[0])}", checksum[1]))
    return xml_response(element("CopyObjectResult", result))
