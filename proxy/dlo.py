"""Dynamic Large Objects: ``X-Object-Manifest: <container>/<prefix>``.

The manifest is an empty object whose header names a container and a
prefix; its content is every object in that container whose name starts
with the prefix, in listing order, read at GET time.  The ETag is the
quoted MD5 of the segments' ETags and the length their sum, so both need
the listing (at most ``MAX_SEGMENTS`` objects, as Swift's ``dlo``).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.segments import Segment
from proxy.swift_call import SwiftCall
from proxy.swift_limits import CONTAINER_LISTING_LIMIT, Refusal, check_container_name

MAX_SEGMENTS = 10000
DLO_INFO = {"max_segments": MAX_SEGMENTS}


class ListingError(Exception):
    """The segment container could not be listed."""


def parse_manifest_header(value: str) -> tuple[str, str] | None:
    """``container/prefix`` (URL-encoded, as clients send it) -> its parts."""
    value = urllib.parse.unquote(value.strip())
    container, sep, prefix = value.lstrip("/").partition("/")
    if not container or not sep or check_container_name(container):
        return None
    return container, prefix


def check_manifest_header(value: str) -> Refusal | None:
    if parse_manifest_header(value) is None:
        return Refusal(400, "X-Object-Manifest must be in the format container/prefix")
    return None


@dataclass
class DloListing:
    segments: list[Segment]
    etag: str
    size: int


async def list_segments(call: SwiftCall, container: str, prefix: str) -> DloListing:
    """Every segment (name order), their total size and the DLO ETag."""
    segments: list[Segment] = []
    md5 = hashlib.md5()
    marker = ""
    while len(segments) < MAX_SEGMENTS:
        query = {"format": "json", "prefix": prefix, "limit": str(CONTAINER_LISTING_LIMIT)}
        if marker:
            query["marker"] = marker
        resp = await call.cc.get_container(call.account, container, query)
        if resp.status == 404:
            break
        if resp.status // 100 != 2:
            raise ListingError(f"listing {container}: {resp.status}")
        rows = json.loads(resp.body or b"[]") if resp.status == 200 else []
        if not rows:
            break
        for row in rows:
            if "subdir" in row:
                continue
            segments.append(Segment(container, row["name"], int(row["bytes"])))
            md5.update(row["hash"].encode())
        marker = rows[-1].get("name") or rows[-1].get("subdir", "")
        if len(rows) < CONTAINER_LISTING_LIMIT:
            break
    return DloListing(segments[:MAX_SEGMENTS], md5.hexdigest(), sum(s.size for s in segments))


async def as_async(segments: list[Segment]) -> AsyncIterator[Segment]:
    for seg in segments:
        yield seg
