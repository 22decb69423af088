"""Bucket requests: create, head, delete, location, and the read-only ACL/versioning answers.

A bucket is a container of the caller's account; its multipart parts live
in a companion container ``<bucket>+segments``, which the bucket rules
below make impossible to create as a bucket of its own (``+`` is not
allowed in a bucket name).  Buckets are per project, not global: two
projects may each have a bucket ``photos``.

The cluster is one region, ``S3Settings.region`` (``us-east-1`` by
default).  CreateBucket accepts no LocationConstraint or that region's
name; GetBucketLocation answers as S3 does for us-east-1 (an empty
constraint) or with the configured region.
"""

from __future__ import annotations

import ipaddress
import re

from node.http_server import Response
from proxy.s3 import xml
from proxy.s3.context import S3Call
from proxy.s3.errors import S3Error, status_error
from proxy.s3.xml import element, render

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: names existing Swift containers may have that S3 can still address (not create)
_LEGACY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


def valid_new_bucket(name: str) -> bool:
    """S3's rules for a new bucket name (DNS-compatible)."""
    if not _BUCKET_RE.match(name) or ".." in name or ".-" in name or "-." in name:
        return False
    if name.startswith("xn--") or name.endswith("-s3alias"):
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def check_bucket_name(name: str) -> None:
    """Names S3 can address: DNS-style, or an existing container's legacy name."""
    if not (_BUCKET_RE.match(name) or _LEGACY_RE.match(name)):
        raise S3Error("InvalidBucketName", BucketName=name)


def xml_response(root: xml.Element, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    body = render(root)
    return Response(status, [("Content-Type", "application/xml"), *(headers or [])], body,
                    content_length=len(body))


def empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []), b"", content_length=0 if status != 204 else None)


def owner(call: S3Call) -> xml.Element:
    return element("Owner", [element("ID", call.account), element("DisplayName", call.identity.project)])


async def require_bucket(call: S3Call, bucket: str | None = None) -> None:
    """``NoSuchBucket`` unless the bucket exists (cached for a few seconds)."""
    name = bucket or call.bucket or ""
    check_bucket_name(name)
    info = await call.containers.get(call.cc, call.account, name)
    if info.status == 404:
        raise S3Error("NoSuchBucket", BucketName=name)
    if info.status // 100 != 2:
        raise status_error(info.status, key=False)


async def create_bucket(call: S3Call) -> Response:
    name = call.bucket or ""
    if not valid_new_bucket(name):
        raise S3Error("InvalidBucketName", BucketName=name)
    body = await call.payload.read_all(xml.MAX_XML_BODY)
    if body.strip():
        try:
            doc = xml.parse(body, "CreateBucketConfiguration")
        except xml.XMLError:
            raise S3Error("MalformedXML") from None
        constraint = xml.child_text(doc, "LocationConstraint")
        if constraint and constraint != call.settings.region:
            raise S3Error("InvalidLocationConstraint",
                          f"The {constraint} location constraint is not valid; this cluster is "
                          f"region {call.settings.region}.", LocationConstraint=constraint)
    existing = await call.cc.head_container(call.account, name)
    if existing.status // 100 == 2:
        raise S3Error("BucketAlreadyOwnedByYou", BucketName=name)
    call.containers.forget(call.account, name)
    made = await call.cc.put_container(call.account, name)
    if made.status // 100 != 2:
        raise status_error(made.status, key=False)
    return empty(200, [("Location", f"/{name}")])


async def head_bucket(call: S3Call) -> Response:
    name = call.bucket or ""
    check_bucket_name(name)
    resp = await call.cc.head_container(call.account, name)
    if resp.status == 404:
        raise S3Error("NoSuchBucket", BucketName=name)
    if resp.status // 100 != 2:
        raise status_error(resp.status, key=False)
    return empty(200, [("x-amz-bucket-region", call.settings.region)])


async def delete_bucket(call: S3Call) -> Response:
    name = call.bucket or ""
    check_bucket_name(name)
    call.containers.forget(call.account, name)
    resp = await call.cc.delete_container(call.account, name)
    if resp.status == 409:
        raise S3Error("BucketNotEmpty", BucketName=name)
    if resp.status == 404:
        raise S3Error("NoSuchBucket", BucketName=name)
    if resp.status // 100 != 2:
        raise status_error(resp.status, key=False)
    # The parts container goes too if no upload is in progress (409 otherwise: kept).
    await call.cc.delete_container(call.account, call.segments)
    return empty(204)


async def get_location(call: S3Call) -> Response:
    await require_bucket(call)
    region = call.settings.region
    return xml_response(element("LocationConstraint", "" if region == "us-east-1" else region))


async def get_versioning(call: S3Call) -> Response:
    """Versioning is never enabled: S3's answer for a bucket that never had it."""
    await require_bucket(call)
    return xml_response(element("VersioningConfiguration", []))


def acl_document(call: S3Call) -> xml.Element:
    """The only ACL there is: the owner has full control."""
    grantee = xml.Element("Grantee", None, [element("ID", call.account),
                                            element("DisplayName", call.identity.project)],
                          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"')
    return element("AccessControlPolicy", [
        owner(call),
        element("AccessControlList", [element("Grant", [grantee, element("Permission", "FULL_CONTROL")])]),
    ])


async def get_acl(call: S3Call) -> Response:
    await require_bucket(call)
    return xml_response(acl_document(call))
