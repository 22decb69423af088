"""AWS Signature Version 4, as S3 checks it: header, presigned query, streaming chunks.

The pieces are pure functions over strings so tests can run AWS's
published examples through them.  The canonical request is::

    METHOD \\n URI \\n QUERY \\n HEADERS \\n SIGNED-HEADERS \\n PAYLOAD-HASH

where ``URI`` is the path percent-encoded once (S3 does not double-encode),
``QUERY`` the parameters sorted and percent-encoded, and ``HEADERS`` the
signed headers, lower-cased, values trimmed with inner runs of spaces
collapsed.  The string to sign names the algorithm, the request time, the
credential scope ``<date>/<region>/s3/aws4_request`` and the canonical
request's SHA-256; the key is an HMAC chain from ``"AWS4" + secret``.

Streaming uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) sign each chunk
with the previous chunk's signature, starting from the header's
(:func:`chunk_string_to_sign`), and trailers likewise
(:func:`trailer_string_to_sign`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
#: longest life of a presigned URL S3 accepts (seven days)
MAX_PRESIGN_EXPIRES = 604800

_SPACES = re.compile(r"\s+")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SigV4Error(ValueError):
    """The signature fields are malformed; ``code`` is the S3 error to send."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credential:
    """``AKID/20130524/us-east-1/s3/aws4_request`` split into its fields."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class V4Request:
    """What a request says about its own signature."""

    credential: Credential
    signed_headers: list[str]
    signature: str
    amz_date: str
    #: ``None`` for the Authorization header form
    expires: int | None = None


def parse_credential(value: str, code: str) -> Credential:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise SigV4Error(code, f"Error parsing the Credential: {value!r}")
    if parts[3] != "s3":
        raise SigV4Error(code, f"Credential should be scoped to correct service: 's3', not {parts[3]!r}")
    return Credential(parts[0], parts[1], parts[2], parts[3])


def parse_authorization(header: str, amz_date: str | None) -> V4Request:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    code = "AuthorizationHeaderMalformed"
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(code, f"Unsupported algorithm {algorithm!r}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.strip().partition("=")
        if eq:
            fields[key.strip()] = value.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise SigV4Error(code, f"The authorization header is malformed; missing {', '.join(missing)}.")
    if not amz_date:
        raise SigV4Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed:
        raise SigV4Error(code, "The host header must be signed")
    return V4Request(parse_credential(fields["Credential"], code), signed, fields["Signature"], amz_date)


def parse_presigned(query: dict[str, str]) -> V4Request:
    """The ``X-Amz-*`` parameters of a presigned URL."""
    code = "AuthorizationQueryParametersError"
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise SigV4Error(code, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [k for k in needed if not query.get(k)]
    if missing:
        raise SigV4Error(code, f"Query-string authentication version 4 requires the {', '.join(needed)} "
                               f"parameters")
    try:
        expires = int(query["X-Amz-Expires"])
    except ValueError:
        raise SigV4Error(code, "X-Amz-Expires should be a number") from None
    if expires < 0:
        raise SigV4Error(code, "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES:
        raise SigV4Error(code, "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    return V4Request(parse_credential(query["X-Amz-Credential"], code),
                     query["X-Amz-SignedHeaders"].split(";"), query["X-Amz-Signature"],
                     query["X-Amz-Date"], expires)


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """RFC 3986 percent-encoding, the way every AWS signer does it."""
    return urllib.parse.quote(text, safe="/~" if keep_slash else "~")


def split_query(query_string: str) -> list[tuple[str, str]]:
    """Raw query -> decoded ``(name, value)`` pairs; ``+`` stays a ``+`` as S3 reads it."""
    pairs = []
    for item in query_string.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return pairs


def canonical_query(pairs: list[tuple[str, str]], *, skip: str | None = None) -> str:
    encoded = sorted((uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False))
                     for k, v in pairs if k != skip)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(method: str, path: str, query: list[tuple[str, str]],
                      header: Callable[[str], list[str]], signed_headers: list[str],
                      payload_hash: str, *, presigned: bool = False) -> str:
    """The canonical request; ``header(name)`` returns every value of a request header."""
    lines = []
    for name in signed_headers:
        values = [_SPACES.sub(" ", v.strip()) for v in header(name)]
        lines.append(f"{name}:{','.join(values)}\n")
    return "\n".join([
        method,
        uri_encode(path, keep_slash=True),
        canonical_query(query, skip="X-Amz-Signature" if presigned else None),
        "".join(lines),
        ";".join(signed_headers),
        payload_hash,
    ])


def signing_key(secret: str, cred: Credential) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), cred.date.encode(), hashlib.sha256).digest()
    for part in (cred.region, cred.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def string_to_sign(amz_date: str, cred: Credential, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, cred.scope, hashlib.sha256(canonical.encode()).hexdigest()])


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def chunk_string_to_sign(amz_date: str, cred: Credential, previous: str, chunk_sha256: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, cred.scope, previous, EMPTY_SHA256,
                      chunk_sha256])


def trailer_string_to_sign(amz_date: str, cred: Credential, previous: str, trailer_sha256: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, cred.scope, previous, trailer_sha256])


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
