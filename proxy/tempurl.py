"""Temporary URLs: object access without a token, signed with an account or container key.

``?temp_url_sig=<sig>&temp_url_expires=<unix time or ISO 8601>`` grants one
method on one object until it expires.  The signature is an HMAC of
``<method>\\n<expires>\\n<path>`` (or ``prefix:<path-prefix>`` with
``temp_url_prefix``, ``ip=<range>`` first with ``temp_url_ip_range``) under
any of the keys in ``X-Account-Meta-Temp-URL-Key(-2)`` and
``X-Container-Meta-Temp-URL-Key(-2)``.  The digest is told by the
signature: 40/64/128 hex digits for SHA1/SHA256/SHA512, or
``<alg>:<base64url>``.  A signature for GET also opens HEAD, as Swift's.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import ipaddress
import time

from node.headers import Headers

DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
_HEX_LENGTHS = {40: "sha1", 64: "sha256", 128: "sha512"}
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")

TEMPURL_INFO = {
    "methods": list(METHODS),
    "incoming_remove_headers": ["x-timestamp"],
    "incoming_allow_headers": [],
    "outgoing_remove_headers": ["x-object-meta-*"],
    "outgoing_allow_headers": ["x-object-meta-public-*"],
    "allowed_digests": sorted(DIGESTS),
}


def parse_expires(value: str) -> int | None:
    if value.isdigit():
        return int(value)
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def _decode_sig(sig: str) -> tuple[str, bytes] | None:
    """``(digest name, raw signature)`` from a hex or ``alg:base64`` signature."""
    if ":" in sig:
        alg, _, b64 = sig.partition(":")
        if alg not in DIGESTS:
            return None
        try:
            return alg, base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            return None
    alg = _HEX_LENGTHS.get(len(sig))
    if alg is None:
        return None
    try:
        return alg, bytes.fromhex(sig)
    except ValueError:
        return None


def sign(key: str, method: str, expires: int | str, path: str, digest: str = "sha256",
         prefix: bool = False, ip_range: str | None = None) -> str:
    """The hex signature a client would compute (used by tests and tools)."""
    body = f"{method}\n{expires}\n{'prefix:' if prefix else ''}{path}"
    if ip_range:
        body = f"ip={ip_range}\n{body}"
    return hmac.new(key.encode(), body.encode(), DIGESTS[digest]).hexdigest()


def keys_from(headers: Headers, level: str) -> list[str]:
    return [k for k in (headers.get(f"x-{level}-meta-temp-url-key"),
                        headers.get(f"x-{level}-meta-temp-url-key-2")) if k]


def validate(query: dict[str, str], method: str, path: str, keys: list[str],
             client_ip: str = "", now: float | None = None) -> bool:
    """Does the query carry a valid, unexpired signature for ``method`` on ``path``?"""
    sig = query.get("temp_url_sig", "")
    expires = parse_expires(query.get("temp_url_expires", ""))
    if not sig or expires is None or expires < (time.time() if now is None else now):
        return False
    decoded = _decode_sig(sig)
    if decoded is None:
        return False
    alg, raw = decoded
    prefix = query.get("temp_url_prefix")
    if prefix is not None:
        account_container, obj = _split_object(path)
        if not obj.startswith(prefix):
            return False
        signed_path = f"prefix:{account_container}/{prefix}"
    else:
        signed_path = path
    ip_range = query.get("temp_url_ip_range")
    if ip_range and not _ip_in_range(client_ip, ip_range):
        return False
    methods = [method] + (["GET", "PUT"] if method == "HEAD" else [])
    for key in keys:
        for m in methods:
            body = f"{m}\n{query['temp_url_expires']}\n{signed_path}"
            if ip_range:
                body = f"ip={ip_range}\n{body}"
            mac = hmac.new(key.encode(), body.encode(), DIGESTS[alg]).digest()
            if hmac.compare_digest(mac, raw):
                return True
    return False


def _split_object(path: str) -> tuple[str, str]:
    """``/v1/a/c/o/x`` -> (``/v1/a/c``, ``o/x``)."""
    parts = path.split("/", 4)
    if len(parts) < 5:
        return path, ""
    return "/".join(parts[:4]), parts[4]


def _ip_in_range(client_ip: str, ip_range: str) -> bool:
    try:
        return ipaddress.ip_address(client_ip.rpartition(":")[0] or client_ip) in \
            ipaddress.ip_network(ip_range, strict=False)
    except ValueError:
        return False
