"""AWS Signature Version 2 (``Authorization: AWS AKID:sig`` and ``?Signature=``).

The string to sign::

    METHOD \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
    x-amz-* headers (lower-cased, sorted, ``name:value\\n``) + resource

``resource`` is ``/bucket/key`` as the client sent it (still percent-
encoded), for virtual-host requests ``/bucket`` + the path, followed by the
sub-resources S3 signs (``?acl``, ``?uploadId=..``, ``response-*``...) in
sorted order.  When ``x-amz-date`` is present the ``Date`` line is empty;
for a presigned URL it is the ``Expires`` value.  The signature is
base64(HMAC-SHA1(secret, string)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable

#: query parameters that are part of the signed resource (S3's list)
SUBRESOURCES = frozenset({
    "acl", "cors", "delete", "lifecycle", "location", "logging", "notification", "partNumber",
    "policy", "requestPayment", "restore", "tagging", "torrent", "uploadId", "uploads", "versionId",
    "versioning", "versions", "website", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "response-content-language", "response-content-type",
    "response-expires", "object-lock", "legal-hold", "retention", "replication", "encryption",
    "accelerate", "inventory", "analytics", "metrics", "ownershipControls", "publicAccessBlock",
    "intelligent-tiering", "select", "select-type",
})


def parse_authorization(header: str) -> tuple[str, str] | None:
    """``AWS AKID:signature`` -> ``(akid, signature)``; ``None`` if malformed."""
    scheme, _, rest = header.strip().partition(" ")
    access_key, sep, signature = rest.strip().rpartition(":")
    if scheme != "AWS" or not sep or not access_key or not signature:
        return None
    return access_key, signature


def canonical_resource(raw_path: str, bucket_from_host: str | None,
                       query: Iterable[tuple[str, str]]) -> str:
    resource = (f"/{bucket_from_host}" + raw_path) if bucket_from_host else raw_path
    subs = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    if subs:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subs)
    return resource


def string_to_sign(method: str, header: Callable[[str], str | None], date_line: str,
                   amz_headers: Iterable[tuple[str, str]], resource: str) -> str:
    """``date_line`` is ``Date`` (empty with ``x-amz-date``) or, presigned, ``Expires``."""
    merged: dict[str, list[str]] = {}
    for name, value in amz_headers:
        merged.setdefault(name.lower(), []).append(value.strip())
    amz = "".join(f"{k}:{','.join(v)}\n" for k, v in sorted(merged.items()))
    return (f"{method}\n{header('content-md5') or ''}\n{header('content-type') or ''}\n"
            f"{date_line}\n{amz}{resource}")


def sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
