"""Multipart uploads: parts in ``<bucket>+segments``, the result a Swift SLO manifest.

Layout in the segments container (Swift's s3api uses the same idea):

* ``<key>/<upload id>`` -- the upload marker: an empty object whose
  metadata is the future object's (Content-Type, ``x-amz-meta-*``, the
  checksum algorithm);
* ``<key>/<upload id>/<part number, 5 digits>`` -- each part, an ordinary
  object (so its ETag is its MD5 and the storage servers verify it).

CompleteMultipartUpload checks the list (ascending part numbers, every part
present with the given ETag, every part but the last at least
``min_part_size``), then writes ``<bucket>/<key>`` as an SLO manifest in
``proxy.slo``'s format, so the Swift API reads the same object.  The S3
ETag (MD5 of the parts' binary MD5s, ``-N``) and the combined checksum are
kept with the manifest; the listing shows the S3 ETag and the object's
real size through the container-update overrides.  Parts stay where they
are (the manifest points at them) and go when the object is deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

import trio

from node.cluster_client import make_timestamp
from node.headers import Headers
from node.http_server import Response
from node.storage.timestamp import Timestamp
from proxy import slo
from proxy.s3 import checksums, xml
from proxy.s3.buckets import owner, require_bucket, xml_response
from proxy.s3.context import MAX_PARTS, S3Call
from proxy.s3.errors import S3Error, status_error
from proxy.s3.listing import fetch_page, iso8601, listing_etag
from proxy.s3.objects import (S3_ETAG, UPLOAD_ID, check_key, checksum_header, checksum_of,
                              delete_paths, metadata_headers, open_copy_source, store)
from proxy.s3.payload import algorithm_label
from proxy.s3.xml import element

ALGORITHM = "x-object-sysmeta-s3-checksum-algorithm"
CHECKSUM_TYPE = "x-object-sysmeta-s3-checksum-type"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
PAGE = 10000
HEAD_CONCURRENCY = 10


def part_name(key: str, upload_id: str, number: int) -> str:
    return f"{key}/{upload_id}/{number:05d}"


def _upload_id(call: S3Call) -> str:
    upload_id = call.query.get("uploadId", "")
    if not _UPLOAD_ID.match(upload_id):
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return upload_id


async def _marker(call: S3Call, upload_id: str) -> Headers:
    """The upload marker's metadata; ``NoSuchUpload`` if the upload is not in progress."""
    head = await call.cc.head_object(call.account, call.segments, f"{call.key}/{upload_id}")
    if head.status == 404:
        await require_bucket(call)
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    if head.status // 100 != 2:
        raise status_error(head.status)
    return head.headers


async def _list_all(call: S3Call, prefix: str, marker: str = "", limit: int | None = None) -> list[dict]:
    """Every segments-container row under ``prefix`` (page after page)."""
    rows: list[dict] = []
    while limit is None or len(rows) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(rows))
        try:
            page = await fetch_page(call, call.segments, prefix=prefix, delimiter="", marker=marker, limit=want)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return rows
            raise
        rows += page
        if len(page) < want:
            break
        marker = page[-1]["name"]
    return rows


async def create_upload(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    headers = metadata_headers(call.request)
    h = call.request.headers
    algorithm = (h.get("x-amz-checksum-algorithm") or "").lower()
    if algorithm and algorithm not in checksums.ALGORITHMS:
        raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported.")
    checksum_type = (h.get("x-amz-checksum-type") or "").upper()
    if checksum_type not in ("", "COMPOSITE", "FULL_OBJECT"):
        raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
    if checksum_type == "FULL_OBJECT" and algorithm in ("sha1", "sha256"):
        raise S3Error("InvalidRequest", f"The FULL_OBJECT checksum type cannot be used with the "
                                        f"{algorithm_label(algorithm)} checksum algorithm.")
    if algorithm == "crc64nvme" and checksum_type == "COMPOSITE":
        raise S3Error("InvalidRequest", "The COMPOSITE checksum type cannot be used with the CRC64NVME "
                                        "checksum algorithm.")
    if algorithm:
        checksum_type = checksum_type or ("FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE")
        headers += [(ALGORITHM.title(), algorithm), (CHECKSUM_TYPE.title(), checksum_type)]
    await require_bucket(call)
    info = await call.containers.get(call.cc, call.account, call.segments)
    if info.status == 404:
        made = await call.cc.put_container(call.account, call.segments)
        if made.status // 100 != 2:
            raise status_error(made.status, key=False)
    upload_id = uuid.uuid4().hex
    status, _ = await call.cc.put_object(call.account, call.segments, f"{key}/{upload_id}", headers, b"", 0)
    if status // 100 != 2:
        raise status_error(status)
    extra = []
    if algorithm:
        extra = [("x-amz-checksum-algorithm", algorithm_label(algorithm)), ("x-amz-checksum-type", checksum_type)]
    return xml_response(element("InitiateMultipartUploadResult", [
        element("Bucket", call.bucket or ""), element("Key", key), element("UploadId", upload_id)]),
        headers=extra)


def _part_number(call: S3Call) -> int:
    value = call.query.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, "
                                         f"inclusive", ArgumentName="partNumber", ArgumentValue=value)
    return int(value)


async def upload_part(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    number = _part_number(call)
    upload_id = _upload_id(call)
    marker = await _marker(call, upload_id)
    algorithm = marker.get(ALGORITHM)
    payload = call.payload
    if algorithm and payload.algorithm and payload.algorithm != algorithm:
        raise S3Error("InvalidRequest", f"Checksum Type mismatch occurred, expected checksum Type: "
                                        f"{algorithm}, actual checksum Type: {payload.algorithm}")
    headers = [("Content-Type", "application/octet-stream")]
    result = await store(call, call.segments, part_name(key, upload_id, number), headers, payload)
    out = [("ETag", f'"{result.etag}"')]
    if result.checksum:
        out.append((f"x-amz-checksum-{result.checksum[0]}", result.checksum[1]))
    return Response(200, out, b"", content_length=0)


async def upload_part_copy(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    number = _part_number(call)
    upload_id = _upload_id(call)
    await _marker(call, upload_id)
    wanted = call.request.headers.get("x-amz-copy-source-range")
    if wanted is not None:
        first, dash, last = wanted.partition("=")[2].partition("-")
        if not wanted.startswith("bytes=") or not dash or not first.isdigit() or not last.isdigit() \
                or int(last) < int(first):
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                                             "bytes=first-last where first and last are the zero-based "
                                             "offsets of the first and last bytes to copy",
                          ArgumentName="x-amz-copy-source-range", ArgumentValue=wanted)
    _, _, source = await open_copy_source(call, wanted)
    try:
        if wanted is not None and source.status != 206:
            raise S3Error("InvalidRange", "The requested range is not satisfiable", RangeRequested=wanted)
        ts = make_timestamp()
        status, resp_headers = await call.cc.put_object(
            call.account, call.segments, part_name(key, upload_id, number),
            [("Content-Type", "application/octet-stream"), ("X-Timestamp", ts)],
            source.result.body, source.result.content_length)
    finally:
        await source.aclose()
    if status // 100 != 2:
        raise status_error(status)
    etag = (resp_headers.get("etag") or "").strip('"')
    return xml_response(element("CopyPartResult", [element("LastModified", iso8601(float(Timestamp(ts)))),
                                                   element("ETag", f'"{etag}"')]))


def _requested_parts(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    try:
        doc = xml.parse(body, "CompleteMultipartUpload")
    except xml.XMLError:
        raise S3Error("MalformedXML") from None
    parts = []
    for part in xml.children(doc, "Part"):
        number = xml.child_text(part, "PartNumber")
        etag = xml.child_text(part, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML")
        sums = {a: v for a in checksums.ALGORITHMS
                if (v := xml.child_text(part, f"Checksum{algorithm_label(a)}"))}
        parts.append((int(number), etag.strip().strip('"'), sums))
    if not parts:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate "
                                      "against our published schema")
    return parts


async def _part_checksums(call: S3Call, names: list[str], algorithm: str) -> list[str | None]:
    """The stored checksum of each part (``None`` where a part has none)."""
    found: list[str | None] = [None] * len(names)
    limiter = trio.Semaphore(HEAD_CONCURRENCY)

    async def one(i: int, name: str) -> None:
        async with limiter:
            head = await call.cc.head_object(call.account, call.segments, name)
        stored = checksum_of(head.headers) if head.status // 100 == 2 else None
        if stored is not None and stored[0] == algorithm:
            found[i] = stored[1]

    async with trio.open_nursery() as nursery:
        for i, name in enumerate(names):
            nursery.start_soon(one, i, name)
    return found


async def complete_upload(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    upload_id = _upload_id(call)
    marker = await _marker(call, upload_id)
    requested = _requested_parts(await call.payload.read_all(xml.MAX_XML_BODY))
    numbers = [n for n, _, _ in requested]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise S3Error("InvalidPartOrder", UploadId=upload_id)
    prefix = f"{key}/{upload_id}/"
    uploaded = {row["name"]: row for row in await _list_all(call, prefix)}
    entries = []
    for i, (number, etag, _) in enumerate(requested):
        name = part_name(key, upload_id, number)
        row = uploaded.get(name)
        if row is None or listing_etag(row["hash"]).strip('"') != etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
        if i < len(requested) - 1 and row["bytes"] < call.settings.min_part_size:
            raise S3Error("EntityTooSmall", ProposedSize=str(row["bytes"]),
                          MinSizeAllowed=str(call.settings.min_part_size), PartNumber=str(number))
        entries.append({"name": f"/{call.segments}/{name}", "bytes": row["bytes"], "hash": etag,
                        "content_type": row.get("content_type") or "application/octet-stream",
                        "last_modified": row.get("last_modified") or ""})
    s3_etag = hashlib.md5(b"".join(bytes.fromhex(e["hash"]) for e in entries)).hexdigest() + f"-{len(entries)}"
    algorithm = marker.get(ALGORITHM)
    checksum: tuple[str, str] | None = None
    if algorithm:
        stored = await _part_checksums(call, [part_name(key, upload_id, n) for n in numbers], algorithm)
        for (number, etag, sums), value in zip(requested, stored):
            given = sums.get(algorithm)
            if value is None or (given is not None and given != value):
                raise S3Error("InvalidPart", f"The {algorithm_label(algorithm)} checksum of part {number} "
                                             f"is missing or does not match.", UploadId=upload_id,
                              PartNumber=str(number))
        values = [v for v in stored if v is not None]
        if marker.get(CHECKSUM_TYPE) == "FULL_OBJECT":
            combined = checksums.full_object(algorithm, list(zip(values, [e["bytes"] for e in entries])))
        else:
            combined = checksums.composite(algorithm, values)
        checksum = (algorithm, combined)
    manifest = json.dumps(entries).encode()
    headers = [("Content-Type", marker.get("content-type") or "binary/octet-stream"),
               *slo.manifest_headers(entries, listing_etag=s3_etag),
               (S3_ETAG.title(), s3_etag), (UPLOAD_ID.title(), upload_id),
               ("X-Timestamp", make_timestamp())]
    headers += [(k, v) for k, v in marker.items()
                if k.startswith("x-object-meta-") or k in ("content-encoding", "content-disposition",
                                                           "content-language", "cache-control", "expires")]
    if checksum is not None:
        headers.append(checksum_header(*checksum))
    status, _ = await call.cc.put_object(call.account, call.bucket or "", key, headers, manifest, len(manifest))
    if status // 100 != 2:
        raise status_error(status)
    await call.cc.delete_object(call.account, call.segments, f"{key}/{upload_id}")
    # Parts uploaded but left out of the list are not part of the object.
    unused = [f"/{call.segments}/{n}" for n in uploaded if n not in {e["name"].split("/", 2)[2] for e in entries}]
    await delete_paths(call, unused)
    fields = [element("Location", f"/{call.bucket}/{key}"), element("Bucket", call.bucket or ""),
              element("Key", key), element("ETag", f'"{s3_etag}"')]
    extra = []
    if checksum is not None:
        fields.append(element(f"Checksum{algorithm_label(checksum[0])}", checksum[1]))
        fields.append(element("ChecksumType", marker.get(CHECKSUM_TYPE) or "COMPOSITE"))
        extra.append((f"x-amz-checksum-{checksum[0]}", checksum[1]))
    return xml_response(element("CompleteMultipartUploadResult", fields), headers=extra)


async def abort_upload(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    upload_id = _upload_id(call)
    await _marker(call, upload_id)
    parts = await _list_all(call, f"{key}/{upload_id}/")
    await delete_paths(call, [f"/{call.segments}/{row['name']}" for row in parts])
    await call.cc.delete_object(call.account, call.segments, f"{key}/{upload_id}")
    return Response(204, [], b"")


def _int_param(call: S3Call, name: str, default: int, maximum: int) -> int:
    value = call.query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=value)
    return min(int(value), maximum)


async def list_parts(call: S3Call) -> Response:
    key = call.key or ""
    check_key(key)
    upload_id = _upload_id(call)
    marker_headers = await _marker(call, upload_id)
    max_parts = _int_param(call, "max-parts", 1000, 1000)
    after = _int_param(call, "part-number-marker", 0, MAX_PARTS)
    prefix = f"{key}/{upload_id}/"
    start = part_name(key, upload_id, after) if after else ""
    rows = await _list_all(call, prefix, start, limit=max_parts + 1)
    truncated = len(rows) > max_parts
    rows = rows[:max_parts]
    children = [element("Bucket", call.bucket or ""), element("Key", key), element("UploadId", upload_id),
                element("Initiator", [element("ID", call.account), element("DisplayName", call.identity.project)]),
                owner(call), element("StorageClass", "STANDARD"), element("PartNumberMarker", after)]
    numbers = [int(r["name"][len(prefix):]) for r in rows]
    if numbers:
        children.append(element("NextPartNumberMarker", numbers[-1]))
    children += [element("MaxParts", max_parts), element("IsTruncated", truncated)]
    if marker_headers.get(ALGORITHM):
        children.append(element("ChecksumAlgorithm", algorithm_label(marker_headers[ALGORITHM])))
    for number, row in zip(numbers, rows):
        children.append(element("Part", [element("PartNumber", number),
                                         element("LastModified", iso8601(row.get("last_modified") or 0.0)),
                                         element("ETag", listing_etag(row["hash"])),
                                         element("Size", row["bytes"])]))
    return xml_response(element("ListPartsResult", children))


async def list_uploads(call: S3Call) -> Response:
    """In-progress uploads: the markers (``<key>/<32 hex>``) in the segments container."""
    await require_bucket(call)
    prefix = call.query.get("prefix", "")
    max_uploads = _int_param(call, "max-uploads", 1000, 1000)
    key_marker = call.query.get("key-marker", "")
    id_marker = call.query.get("upload-id-marker", "")
    start = f"{key_marker}/{id_marker}" if key_marker and id_marker else (key_marker + "/\U0010ffff"
                                                                           if key_marker else "")
    uploads: list[tuple[str, str, dict]] = []
    marker = start
    truncated = False
    while True:
        try:
            page = await fetch_page(call, call.segments, prefix=prefix, delimiter="", marker=marker, limit=PAGE)
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise
            page = []
        for row in page:
            key, _, upload_id = row["name"].rpartition("/")
            if key and _UPLOAD_ID.match(upload_id):
                if len(uploads) == max_uploads:
                    truncated = True
                    break
                uploads.append((key, upload_id, row))
        if truncated or len(page) < PAGE:
            break
        marker = page[-1]["name"]
    children = [element("Bucket", call.bucket or ""), element("KeyMarker", key_marker),
                element("UploadIdMarker", id_marker)]
    if truncated and uploads:
        children += [element("NextKeyMarker", uploads[-1][0]), element("NextUploadIdMarker", uploads[-1][1])]
    children += [element("MaxUploads", max_uploads), element("IsTruncated", truncated)]
    if prefix:
        children.append(element("Prefix", prefix))
    for key, upload_id, row in uploads:
        children.append(element("Upload", [
            element("Key", key), element("UploadId", upload_id),
            element("Initiator", [element("ID", call.account), element("DisplayName", call.identity.project)]),
            owner(call), element("StorageClass", "STANDARD"),
            element("Initiated", iso8601(row.get("last_modified") or 0.0))]))
    return xml_response(element("ListMultipartUploadsResult", children))
