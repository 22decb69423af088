"""ListBuckets, ListObjects (v1) and ListObjectsV2 from the container and account listings.

The container servers do the work (prefix, delimiter folding, marker);
this module asks for one entry more than ``max-keys`` to know whether the
page is truncated and renders S3's XML.  V2's continuation token is the
last name of the page, base64-encoded (opaque to clients, as S3's).

``LastModified`` is rounded up to the second, as the ``Last-Modified``
header of a HEAD is, so tools that compare the two (rclone, ``aws s3
sync``) agree with themselves.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import urllib.parse

from node.http_server import Response
from node.storage.timestamp import Timestamp
from proxy.s3.buckets import check_bucket_name, owner, xml_response
from proxy.s3.context import SEGMENTS_SUFFIX, S3Call
from proxy.s3.errors import S3Error, status_error
from proxy.s3.xml import Element, element

MAX_KEYS = 1000


def iso8601(value: str | float) -> str:
    """A listing's ``last_modified`` (or epoch seconds) -> ``2023-11-14T22:13:21.000Z``."""
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return value
        seconds = math.ceil(parsed.timestamp())
    else:
        seconds = math.ceil(value)
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def http_to_iso(ts: str) -> str:
    return iso8601(float(Timestamp(ts)))


def listing_etag(row_hash: str) -> str:
    """The ETag a listing row shows (the container may carry ``; param`` suffixes)."""
    return '"' + row_hash.split(";")[0].strip().strip('"') + '"'


async def list_buckets(call: S3Call) -> Response:
    resp = await call.cc.get_account(call.account, {"format": "json"})
    rows: list[dict] = []
    if resp.status // 100 == 2:
        rows = json.loads(resp.body or b"[]")
    elif resp.status != 404:
        raise status_error(resp.status, key=False)
    entries = [element("Bucket", [element("Name", r["name"]),
                                  element("CreationDate", iso8601(r.get("last_modified") or 0.0))])
               for r in rows if not r["name"].endswith(SEGMENTS_SUFFIX)]
    return xml_response(element("ListAllMyBucketsResult", [owner(call), element("Buckets", entries)]))


def _max_keys(call: S3Call, name: str = "max-keys", maximum: int = MAX_KEYS) -> int:
    value = call.query.get(name)
    if value is None or value == "":
        return maximum
    try:
        n = int(value)
    except ValueError:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=value) from None
    if n < 0:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between 0 and 2147483647",
                      ArgumentName=name, ArgumentValue=value)
    return min(n, maximum)


async def fetch_page(call: S3Call, container: str, *, prefix: str, delimiter: str, marker: str,
                     limit: int) -> list[dict]:
    """Up to ``limit`` listing rows (objects and ``{"subdir": ...}``) after ``marker``."""
    query = {"format": "json", "limit": str(limit)}
    if prefix:
        query["prefix"] = prefix
    if delimiter:
        query["delimiter"] = delimiter
    if marker:
        query["marker"] = marker
    resp = await call.cc.get_container(call.account, container, query)
    if resp.status == 404:
        raise S3Error("NoSuchBucket", BucketName=container)
    if resp.status // 100 != 2:
        raise status_error(resp.status, key=False)
    return json.loads(resp.body or b"[]")


class _Page:
    """One listing page in S3 terms, shared by v1 and v2."""

    def __init__(self, call: S3Call, marker: str, max_keys: int) -> None:
        self.call = call
        self.prefix = call.query.get("prefix", "")
        self.delimiter = call.query.get("delimiter", "")
        self.encoding = call.query.get("encoding-type")
        if self.encoding not in (None, "url"):
            raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                          ArgumentName="encoding-type", ArgumentValue=self.encoding)
        self.marker = marker
        self.max_keys = max_keys
        self.rows: list[dict] = []
        self.truncated = False

    async def load(self) -> None:
        check_bucket_name(self.call.bucket or "")
        if self.max_keys == 0:
            await fetch_page(self.call, self.call.bucket or "", prefix=self.prefix,
                             delimiter=self.delimiter, marker=self.marker, limit=1)
            return
        rows = await fetch_page(self.call, self.call.bucket or "", prefix=self.prefix,
                                delimiter=self.delimiter, marker=self.marker, limit=self.max_keys + 1)
        self.truncated = len(rows) > self.max_keys
        self.rows = rows[:self.max_keys]

    def enc(self, text: str) -> str:
        return urllib.parse.quote(text, safe="/") if self.encoding == "url" else text

    @property
    def last_name(self) -> str:
        if not self.rows:
            return ""
        last = self.rows[-1]
        return last.get("subdir") or last["name"]

    def entries(self, with_owner: bool) -> list[Element]:
        out: list[Element] = []
        prefixes: list[Element] = []
        for row in self.rows:
            if "subdir" in row:
                prefixes.append(element("CommonPrefixes", [element("Prefix", self.enc(row["subdir"]))]))
                continue
            fields = [element("Key", self.enc(row["name"])),
                      element("LastModified", iso8601(row.get("last_modified") or 0.0)),
                      element("ETag", listing_etag(row.get("hash") or "")),
                      element("Size", row.get("bytes", 0)),
                      element("StorageClass", "STANDARD")]
            if with_owner:
                fields.append(owner(self.call))
            out.append(element("Contents", fields))
        return out + prefixes

    def common(self) -> list[Element]:
        out = [element("Name", self.call.bucket or ""), element("Prefix", self.enc(self.prefix))]
        return out

    def tail(self) -> list[Element]:
        out = []
        if self.delimiter:
            out.append(element("Delimiter", self.enc(self.delimiter)))
        if self.encoding:
            out.append(element("EncodingType", self.encoding))
        return out


async def list_objects_v1(call: S3Call) -> Response:
    marker = call.query.get("marker", "")
    page = _Page(call, marker, _max_keys(call))
    await page.load()
    children = page.common() + [element("Marker", page.enc(marker))]
    if page.truncated and page.delimiter:
        children.append(element("NextMarker", page.enc(page.last_name)))
    children += [element("MaxKeys", page.max_keys)] + page.tail()
    children += [element("IsTruncated", page.truncated)] + page.entries(with_owner=True)
    return xml_response(element("ListBucketResult", children))


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from None


async def list_objects_v2(call: S3Call) -> Response:
    token = call.query.get("continuation-token")
    start_after = call.query.get("start-after", "")
    marker = _decode_token(token) if token is not None else start_after
    if token is not None and start_after > marker:
        marker = start_after
    page = _Page(call, marker, _max_keys(call))
    await page.load()
    fetch_owner = call.query.get("fetch-owner", "").lower() == "true"
    children = page.common()
    if token is not None:
        children.append(element("ContinuationToken", token))
    if start_after:
        children.append(element("StartAfter", page.enc(start_after)))
    if page.truncated:
        next_token = base64.urlsafe_b64encode(page.last_name.encode()).decode().rstrip("=")
        children.append(element("NextContinuationToken", next_token))
    children += [element("KeyCount", len(page.rows)), element("MaxKeys", page.max_keys)] + page.tail()
    children += [element("IsTruncated", page.truncated)] + page.entries(with_owner=fetch_owner)
    return xml_response(element("ListBucketResult", children))
