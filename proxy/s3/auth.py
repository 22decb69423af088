"""Who signed this S3 request? SigV4 and SigV2, in headers or presigned URLs.

:func:`authenticate` checks the signature with the caller's secret (from
:class:`proxy.s3.credentials.Credentials`), the request time (more than
``max_skew`` away is ``RequestTimeTooSkewed``; a presigned URL past its
expiry is ``AccessDenied``), and sets up the :class:`Payload` that checks
the body the signature vouches for: ``x-amz-content-sha256`` (a hash,
``UNSIGNED-PAYLOAD`` or one of the ``STREAMING-*`` aws-chunked modes).

SigV4's region is taken from the client's credential scope, whatever it
is: a cluster is one region, and clients configured for any region work.
"""

from __future__ import annotations

import calendar
import email.utils
import time
from dataclasses import dataclass

from node.http_server import Request
from proxy.auth import Identity
from proxy.s3 import sigv2, sigv4
from proxy.s3.chunked import ChunkSigner
from proxy.s3.credentials import Credentials
from proxy.s3.errors import S3Error
from proxy.s3.payload import Payload


@dataclass
class Authenticated:
    identity: Identity
    access_key: str
    payload: Payload


def _parse_amz_date(value: str) -> float | None:
    """``20130524T000000Z`` -> epoch seconds."""
    try:
        return calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def _parse_http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _check_skew(when: float | None, max_skew: float) -> None:
    if when is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if abs(time.time() - when) > max_skew:
        raise S3Error("RequestTimeTooSkewed",
                      RequestTime=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)),
                      ServerTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)))


def has_credentials(request: Request) -> bool:
    """Does the request carry an S3 signature (header or presigned query)?"""
    auth = request.headers.get("authorization") or ""
    if auth.startswith("AWS4-HMAC-SHA256 ") or auth.startswith("AWS "):
        return True
    q = request.query
    return "X-Amz-Signature" in q or "X-Amz-Credential" in q or ("Signature" in q and "AWSAccessKeyId" in q)


async def _secret(creds: Credentials, access_key: str) -> tuple[Identity, str]:
    found = await creds.lookup(access_key)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return found


async def authenticate(request: Request, query: list[tuple[str, str]], creds: Credentials, *,
                       bucket_from_host: str | None, max_skew: float) -> Authenticated:
    """Verify the request's signature; raises :class:`S3Error` (AccessDenied for none at all)."""
    auth = request.headers.get("authorization") or ""
    q = dict(query)
    if auth.startswith("AWS4-HMAC-SHA256"):
        return await _v4(request, query, creds, max_skew, presigned=False)
    if "X-Amz-Algorithm" in q or "X-Amz-Signature" in q:
        return await _v4(request, query, creds, max_skew, presigned=True)
    if auth.startswith("AWS "):
        return await _v2(request, query, creds, bucket_from_host, max_skew, presigned=False)
    if "Signature" in q and "AWSAccessKeyId" in q:
        return await _v2(request, query, creds, bucket_from_host, max_skew, presigned=True)
    raise S3Error("AccessDenied", "Anonymous access is not allowed")


async def _v4(request: Request, query: list[tuple[str, str]], creds: Credentials, max_skew: float, *,
              presigned: bool) -> Authenticated:
    h = request.headers
    try:
        if presigned:
            v4 = sigv4.parse_presigned(dict(query))
        else:
            v4 = sigv4.parse_authorization(h.get("authorization") or "", h.get("x-amz-date"))
    except sigv4.SigV4Error as exc:
        raise S3Error(exc.code, str(exc)) from None
    when = _parse_amz_date(v4.amz_date)
    if when is None:
        raise S3Error("AccessDenied" if not presigned else "AuthorizationQueryParametersError",
                      "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if v4.credential.date != v4.amz_date[:8]:
        raise S3Error("AuthorizationHeaderMalformed" if not presigned else "AuthorizationQueryParametersError",
                      f"Invalid credential date \"{v4.credential.date}\". This date is not the same as "
                      f"X-Amz-Date: \"{v4.amz_date[:8]}\".")
    if presigned:
        assert v4.expires is not None
        if when - time.time() > max_skew:
            _check_skew(when, max_skew)
        if time.time() > when + v4.expires:
            raise S3Error("AccessDenied", "Request has expired", Expires=str(v4.expires))
        content_sha256 = dict(query).get("X-Amz-Content-Sha256") or sigv4.UNSIGNED_PAYLOAD
    else:
        _check_skew(when, max_skew)
        content_sha256 = h.get("x-amz-content-sha256") or ""
        if not content_sha256:
            raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if not (content_sha256 in (sigv4.UNSIGNED_PAYLOAD, *sigv4.STREAMING_MODES)
            or sigv4.is_sha256_hex(content_sha256)):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.",
                      ArgumentName="x-amz-content-sha256", ArgumentValue=content_sha256)
    identity, secret = await _secret(creds, v4.credential.access_key)
    for name in v4.signed_headers:
        if name not in request.headers:
            raise S3Error("SignatureDoesNotMatch", f"Signed header {name!r} is missing")
    canonical = sigv4.canonical_request(request.method, request.path, query, request.headers.get_all,
                                        v4.signed_headers, content_sha256, presigned=presigned)
    to_sign = sigv4.string_to_sign(v4.amz_date, v4.credential, canonical)
    key = sigv4.signing_key(secret, v4.credential)
    expected = sigv4.sign(key, to_sign)
    if not sigv4.same(expected, v4.signature):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=v4.credential.access_key,
                      StringToSign=to_sign, SignatureProvided=v4.signature, CanonicalRequest=canonical)
    streaming = content_sha256 in sigv4.STREAMING_MODES
    signer = None
    if content_sha256 in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
        signer = ChunkSigner(key, v4.amz_date, v4.credential, v4.signature)
    payload = Payload(request, content_sha256=content_sha256 if sigv4.is_sha256_hex(content_sha256) else None,
                      signer=signer, aws_chunked=streaming,
                      trailer_signed=content_sha256 == sigv4.STREAMING_SIGNED_TRAILER)
    return Authenticated(identity, v4.credential.access_key, payload)


async def _v2(request: Request, query: list[tuple[str, str]], creds: Credentials,
              bucket_from_host: str | None, max_skew: float, *, presigned: bool) -> Authenticated:
    h = request.headers
    q = dict(query)
    if presigned:
        access_key, signature = q["AWSAccessKeyId"], q["Signature"]
        try:
            expires = int(q.get("Expires", ""))
        except ValueError:
            raise S3Error("AccessDenied", "Query-string authentication requires the Signature, Expires and "
                                          "AWSAccessKeyId parameters") from None
        if time.time() > expires:
            raise S3Error("AccessDenied", "Request has expired", Expires=str(expires))
        date_lines = [str(expires)]
    else:
        parsed = sigv2.parse_authorization(h.get("authorization") or "")
        if parsed is None:
            raise S3Error("AccessDenied", "The authorization header is malformed")
        access_key, signature = parsed
        amz_date = h.get("x-amz-date")
        _check_skew(_parse_http_date(amz_date or h.get("date") or ""), max_skew)
        # With x-amz-date the Date line is empty; some clients sign their Date anyway.
        date_lines = ["", h.get("date") or ""] if amz_date else [h.get("date") or ""]
    identity, secret = await _secret(creds, access_key)
    paths = [request.raw_path]
    if bucket_from_host is None and request.raw_path.count("/") == 1 and len(request.raw_path) > 1:
        # A request for a bucket is "/bucket/" in S3's canonical resource; clients differ.
        paths.append(request.raw_path + "/")
    amz = [(k, v) for k, v in h.items() if k.startswith("x-amz-")]
    candidates = [sigv2.string_to_sign(request.method, h.get, date_line,
                                       amz, sigv2.canonical_resource(path, bucket_from_host, query))
                  for date_line in dict.fromkeys(date_lines) for path in paths]
    for to_sign in candidates:
        if sigv2.same(sigv2.sign(secret, to_sign), signature):
            break
    else:
        to_sign = candidates[0]
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=to_sign,
                      SignatureProvided=signature)
    content_sha256 = h.get("x-amz-content-sha256")
    payload = Payload(request, content_sha256=content_sha256 if content_sha256 and
                      sigv4.is_sha256_hex(content_sha256) else None)
    return Authenticated(identity, access_key, payload)
