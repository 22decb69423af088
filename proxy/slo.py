"""Static Large Objects: a manifest object listing segments with their ETags and sizes.

* ``PUT ?multipart-manifest=put`` with a JSON list of ``{"path": "/c/o",
  "etag": ..., "size_bytes": ..., "range": "a-b"}`` checks every segment
  (exists, ETag and size as promised, at least one byte unless last) and
  stores the manifest, in Swift's internal form (``name``, ``hash``,
  ``bytes``, ``content_type``, ``last_modified``, ``range``, ``sub_slo``), as
  the object's body with ``X-Static-Large-Object: True``.  The whole's ETag
  is the MD5 of the segments' ETags (plus ``:range;`` for ranged entries),
  kept in ``X-Object-Sysmeta-Slo-Etag`` together with the size, so a HEAD
  needs no segment.
* ``GET`` streams the segments (ranged GETs open only the segments they
  touch; nested manifests are followed up to ``MAX_NESTING``);
  ``?multipart-manifest=get`` returns the stored manifest (``&format=raw``:
  in the PUT format).
* ``DELETE ?multipart-manifest=delete`` deletes the segments, then the
  manifest, answering like a bulk delete.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import AsyncIterator

import trio

from node.headers import Headers
from node.http_server import Response
from node.storage.timestamp import Timestamp
from proxy.bulk import BulkResult, delete_paths
from proxy.segments import Segment, SegmentError
from proxy.swift_authz import authorize
from proxy.swift_call import SwiftCall
from proxy.swift_responses import error, status_line

MAX_MANIFEST_SEGMENTS = 1000
MAX_MANIFEST_SIZE = 8 * 1024 * 1024
MIN_SEGMENT_SIZE = 1
MAX_NESTING = 10
HEAD_CONCURRENCY = 10

SLO_INFO = {
    "max_manifest_segments": MAX_MANIFEST_SEGMENTS,
    "max_manifest_size": MAX_MANIFEST_SIZE,
    "yield_frequency": 10,
    "min_segment_size": MIN_SEGMENT_SIZE,
    "allow_async_delete": False,
}

SLO_ETAG = "x-object-sysmeta-slo-etag"
SLO_SIZE = "x-object-sysmeta-slo-size"


class ManifestError(SegmentError):
    """The stored manifest is not one this proxy can read (or a caller may not read)."""


def is_slo(headers: Headers) -> bool:
    return (headers.get("x-static-large-object") or "").lower() in ("true", "1", "yes")


def split_segment_path(path: str) -> tuple[str, str] | None:
    """``/container/object`` -> ``(container, object)``; ``None`` if not that shape."""
    container, sep, obj = path.lstrip("/").partition("/")
    if not container or not sep or not obj:
        return None
    return container, obj


def _parse_range(spec: str, size: int) -> tuple[int, int] | None:
    """A segment's ``range`` (``a-b``, ``a-``, ``-n``) -> inclusive span inside ``size`` bytes."""
    first, dash, last = spec.partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) or \
            (last and not last.isdigit()):
        return None
    if not first:
        n = int(last)
        return (max(size - n, 0), size - 1) if 0 < n else None
    a = int(first)
    b = int(last) if last else size - 1
    b = min(b, size - 1)
    if a > b:
        return None
    return a, b


def manifest_etag(entries: list[dict]) -> str:
    md5 = hashlib.md5()
    for e in entries:
        md5.update(e["hash"].encode())
        if "range" in e:
            md5.update(f":{e['range']};".encode())
    return md5.hexdigest()


def entry_size(entry: dict) -> int:
    if "range" in entry:
        span = _parse_range(entry["range"], int(entry["bytes"]))
        return 0 if span is None else span[1] - span[0] + 1
    return int(entry["bytes"])


def manifest_headers(entries: list[dict], listing_etag: str | None = None) -> list[tuple[str, str]]:
    """The headers that make a PUT body a Static Large Object manifest.

    Container listings show the whole object's size and ETag, not the
    manifest's: ``listing_etag`` overrides the ETag shown there (S3 shows its
    ``md5-of-md5s-N``), default the SLO ETag.
    """
    etag = manifest_etag(entries)
    size = str(sum(entry_size(e) for e in entries))
    return [("X-Static-Large-Object", "True"), (SLO_ETAG.title(), etag), (SLO_SIZE.title(), size),
            ("X-Backend-Container-Update-Override-Etag", listing_etag or etag),
            ("X-Backend-Container-Update-Override-Size", size)]


def parse_manifest(data: bytes) -> list[dict]:
    try:
        entries = json.loads(data)
    except ValueError as exc:
        raise ManifestError("manifest is not JSON") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e and "bytes" in e
                                                and "hash" in e for e in entries):
        raise ManifestError("manifest entries need name, bytes and hash")
    return entries


async def put_manifest(call: SwiftCall, base_headers: list[tuple[str, str]]) -> Response:
    """``PUT ?multipart-manifest=put``: validate the segments, store the manifest."""
    request = call.request
    if request.content_length is not None and request.content_length > MAX_MANIFEST_SIZE:
        return error(413, f"Manifest File > {MAX_MANIFEST_SIZE} bytes")
    raw = await request.read_body(MAX_MANIFEST_SIZE)
    try:
        items = json.loads(raw)
    except ValueError:
        return error(400, "Manifest must be valid JSON.\n")
    if not isinstance(items, list) or not items:
        return error(400, "Manifest must be a list of segments.\n")
    if len(items) > MAX_MANIFEST_SEGMENTS:
        return error(413, f"Number of segments must be <= {MAX_MANIFEST_SEGMENTS}")
    problems: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"path", "etag", "size_bytes", "range"} or \
                not isinstance(item.get("path"), str) or split_segment_path(item["path"]) is None:
            problems.append(f"Index {i}: invalid path or keys")
            continue
        if item.get("size_bytes") is not None and not isinstance(item["size_bytes"], int) \
                and not str(item["size_bytes"]).isdigit():
            problems.append(f"Index {i}: invalid size_bytes")
        if item.get("etag") is not None and not isinstance(item["etag"], str):
            problems.append(f"Index {i}: invalid etag")
    if problems:
        return error(400, "Errors:\n" + "\n".join(problems) + "\n")

    entries: list[dict | None] = [None] * len(items)
    errors: list[tuple[int, str]] = []
    checked: dict[str, Response | None] = {}
    limiter = trio.Semaphore(HEAD_CONCURRENCY)

    async def check(i: int, item: dict) -> None:
        container, obj = split_segment_path(item["path"])  # type: ignore[misc]
        async with limiter:
            if await may_read_segments(call, container, checked) is not None:
                errors.append((i, f"{item['path']}, {status_line(403 if call.identity else 401)}"))
                return
            seg = await head_view(call, call.account, container, obj)
        if seg is None:
            errors.append((i, f"{item['path']}, 404 Not Found"))
            return
        status, headers, etag, size = seg
        if status // 100 != 2:
            errors.append((i, f"{item['path']}, {status_line(status)}"))
            return
        if item.get("etag") and item["etag"].strip('"') != etag:
            errors.append((i, f"{item['path']}, Etag Mismatch"))
        if item.get("size_bytes") is not None and int(item["size_bytes"]) != size:
            errors.append((i, f"{item['path']}, Size Mismatch"))
        entry = {"name": "/" + container + "/" + obj, "bytes": size, "hash": etag,
                 "content_type": headers.get("content-type") or "application/octet-stream",
                 "last_modified": headers.get("last-modified") or ""}
        if item.get("range"):
            if _parse_range(item["range"], size) is None:
                errors.append((i, f"{item['path']}, Unsatisfiable Range"))
            entry["range"] = item["range"]
        if is_slo(headers):
            entry["sub_slo"] = True
        if entry_size(entry) < MIN_SEGMENT_SIZE and i < len(items) - 1:
            errors.append((i, f"{item['path']}, Too small; each segment must be at least 1 byte."))
        entries[i] = entry

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(check, i, item)
    if errors:
        errors.sort()
        return error(400, "Errors:\n" + "\n".join(text for _, text in errors) + "\n")
    final = [e for e in entries if e is not None]
    etag = manifest_etag(final)
    wanted = request.headers.get("etag")
    if wanted and wanted.strip('"') != etag:
        return error(422)
    body = json.dumps(final).encode()
    headers = [(k, v) for k, v in base_headers if k.lower() not in ("etag", "content-length")]
    headers += manifest_headers(final)
    status, resp_headers = await call.cc.put_object(call.account, call.container or "", call.obj or "",
                                                    headers, body, len(body))
    if status // 100 != 2:
        return error(status)
    out = [("Etag", f'"{etag}"')]
    ts = resp_headers.get("x-timestamp") or dict((k.lower(), v) for k, v in headers).get("x-timestamp")
    if ts:
        out.append(("Last-Modified", Timestamp(ts).http_date))
    return Response(201, out + [("Content-Type", "text/html; charset=UTF-8")], b"", content_length=0)


async def may_read_segments(call: SwiftCall, container: str,
                            checked: dict[str, Response | None]) -> Response | None:
    """A caller who is not the owner must be allowed to read every segment container.

    Otherwise a write grant on one container plus a manifest would read any
    other container of the account.  Temp URLs are signed by the owner and
    so reach the owner's segments.  ``checked`` remembers answers per
    container for one request.
    """
    if call.owner or call.tempurl:
        return None
    if container not in checked:
        checked[container] = await authorize(call, call.account, container, write=False)
    return checked[container]


async def head_view(call: SwiftCall, account: str, container: str, obj: str):
    """``(status, headers, etag, size)`` of an object as a client HEAD would see it.

    For a manifest that is the large object's ETag and size, not the
    manifest body's.  ``None`` if no node knows the object.
    """
    resp = await call.cc.head_object(account, container, obj)
    if resp.status == 404 or resp.status == 503 and not len(resp.headers):
        return None
    headers = resp.headers
    if is_slo(headers) and headers.get(SLO_ETAG) and headers.get(SLO_SIZE):
        return resp.status, headers, headers[SLO_ETAG], int(headers[SLO_SIZE])
    return resp.status, headers, (headers.get("etag") or "").strip('"'), int(headers.get("content-length") or 0)


async def read_manifest(call: SwiftCall, account: str, container: str, obj: str) -> list[dict]:
    async with call.cc.get_object(account, container, obj) as resp:
        if resp.status != 200:
            raise ManifestError(f"/{container}/{obj}, {status_line(resp.status)}")
        if not is_slo(resp.headers):
            raise ManifestError(f"/{container}/{obj} is no longer a manifest")
        parts = []
        size = 0
        async for chunk in resp:
            size += len(chunk)
            if size > MAX_MANIFEST_SIZE * 4:
                raise ManifestError("manifest too large")
            parts.append(chunk)
    return parse_manifest(b"".join(parts))


async def iter_segments(call: SwiftCall, entries: list[dict], depth: int = 0,
                        checked: dict[str, Response | None] | None = None) -> AsyncIterator[Segment]:
    """The flat segment list, following nested manifests lazily."""
    checked = {} if checked is None else checked
    for entry in entries:
        where = split_segment_path(urllib.parse.unquote(entry["name"]) if "%" in entry["name"]
                                   else entry["name"])
        if where is None:
            raise ManifestError(f"bad segment name {entry['name']!r}")
        container, obj = where
        if await may_read_segments(call, container, checked) is not None:
            raise ManifestError(f"/{container}/{obj}, access denied")
        span = (0, int(entry["bytes"]) - 1)
        if "range" in entry:
            parsed = _parse_range(entry["range"], int(entry["bytes"]))
            if parsed is None:
                continue
            span = parsed
        if entry.get("sub_slo"):
            if depth >= MAX_NESTING:
                raise ManifestError("too many levels of nested manifests")
            sub = await read_manifest(call, call.account, container, obj)
            async for seg in _clip(iter_segments(call, sub, depth + 1, checked), span):
                yield seg
            continue
        yield Segment(container, obj, span[1] - span[0] + 1, entry["hash"], span[0])


async def _clip(segments: AsyncIterator[Segment], span: tuple[int, int]) -> AsyncIterator[Segment]:
    """Only bytes ``span`` of a nested manifest's segments."""
    pos = 0
    first, last = span
    async for seg in segments:
        s_first, s_last = pos, pos + seg.size - 1
        pos += seg.size
        if s_last < first:
            continue
        if s_first > last:
            break
        lo = max(first, s_first) - s_first
        hi = min(last, s_last) - s_first
        yield Segment(seg.container, seg.obj, hi - lo + 1, seg.etag, seg.offset + lo)


def raw_manifest(entries: list[dict]) -> list[dict]:
    """The stored manifest in the format a PUT takes (``?format=raw``)."""
    out = []
    for e in entries:
        item = {"path": e["name"], "etag": e["hash"], "size_bytes": e["bytes"]}
        if "range" in e:
            item["range"] = e["range"]
        out.append(item)
    return out


async def _manifest_paths(call: SwiftCall, entries: list[dict], depth: int = 0) -> list[str]:
    """Every segment path to delete, nested manifests' segments before the manifests."""
    out: list[str] = []
    for entry in entries:
        where = split_segment_path(entry["name"])
        if entry.get("sub_slo") and where is not None and depth < MAX_NESTING:
            try:
                sub = await read_manifest(call, call.account, *where)
            except ManifestError:
                sub = []
            out += await _manifest_paths(call, sub, depth + 1)
        out.append(entry["name"])
    return out


async def delete_manifest(call: SwiftCall) -> Response:
    """``DELETE ?multipart-manifest=delete``: segments first, then the manifest."""
    result = BulkResult()
    container, obj = call.container or "", call.obj or ""
    try:
        entries = await read_manifest(call, call.account, container, obj)
    except ManifestError as exc:
        head = await call.cc.head_object(call.account, container, obj)
        if head.status == 404:
            result.not_found += 1
            return result.response(call.request)
        if head.status // 100 == 2 and not is_slo(head.headers):
            return error(400, "Not an SLO manifest")
        result.errors.append((f"/{container}/{obj}", str(exc)))
        return result.response(call.request)
    await delete_paths(call, await _manifest_paths(call, entries), result)
    await delete_paths(call, [f"/{container}/{obj}"], result)
    return result.response(call.request)
