"""Swift's constraints: name and metadata limits, with Swift's own error texts.

The numbers are Swift's defaults (``swift/common/constraints.py``) so a
client tuned for Swift (and ``GET /info``) sees the same limits here.  Each
check returns ``None`` when the input is fine or a :class:`Refusal` (status
and message) the handler turns into a plain-text error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from node.headers import Headers

MAX_FILE_SIZE = 5 * 1024 ** 3 + 2
MAX_META_NAME_LENGTH = 128
MAX_META_VALUE_LENGTH = 256
MAX_META_COUNT = 90
MAX_META_OVERALL_SIZE = 4096
MAX_HEADER_SIZE = 8192
MAX_OBJECT_NAME_LENGTH = 1024
CONTAINER_LISTING_LIMIT = 10000
ACCOUNT_LISTING_LIMIT = 10000
MAX_ACCOUNT_NAME_LENGTH = 256
MAX_CONTAINER_NAME_LENGTH = 256

SWIFT_INFO = {
    "max_file_size": MAX_FILE_SIZE,
    "max_meta_name_length": MAX_META_NAME_LENGTH,
    "max_meta_value_length": MAX_META_VALUE_LENGTH,
    "max_meta_count": MAX_META_COUNT,
    "max_meta_overall_size": MAX_META_OVERALL_SIZE,
    "max_header_size": MAX_HEADER_SIZE,
    "max_object_name_length": MAX_OBJECT_NAME_LENGTH,
    "container_listing_limit": CONTAINER_LISTING_LIMIT,
    "account_listing_limit": ACCOUNT_LISTING_LIMIT,
    "max_account_name_length": MAX_ACCOUNT_NAME_LENGTH,
    "max_container_name_length": MAX_CONTAINER_NAME_LENGTH,
    "extra_header_count": 0,
    "valid_api_versions": ["v1", "v1.0"],
    "strict_cors_mode": True,
    "allow_account_management": False,
    "account_autocreate": True,
    "policies": [{"name": "Policy-0", "aliases": "Policy-0", "default": True}],
}


@dataclass
class Refusal:
    status: int
    message: str


def check_name_chars(name: str) -> Refusal | None:
    """Swift answers ``412`` for paths that are not UTF-8 or hold a NUL."""
    if "\x00" in name:
        return Refusal(412, "Invalid UTF8 or contains NULL")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return Refusal(412, "Invalid UTF8 or contains NULL")
    return None


def check_container_name(name: str) -> Refusal | None:
    bad = check_name_chars(name)
    if bad:
        return bad
    length = len(name.encode("utf-8"))
    if length > MAX_CONTAINER_NAME_LENGTH:
        return Refusal(400, f"Container name length of {length} longer than {MAX_CONTAINER_NAME_LENGTH}")
    if "/" in name:
        return Refusal(400, "Container name cannot contain slashes")
    if name in (".", ".."):
        return Refusal(400, "Container name cannot be . or ..")
    return None


def check_object_name(name: str) -> Refusal | None:
    bad = check_name_chars(name)
    if bad:
        return bad
    length = len(name.encode("utf-8"))
    if length > MAX_OBJECT_NAME_LENGTH:
        return Refusal(400, f"Object name length of {length} longer than {MAX_OBJECT_NAME_LENGTH}")
    return None


def check_metadata(headers: Headers, target: str) -> Refusal | None:
    """Swift's ``check_metadata`` for ``X-<target>-Meta-*`` headers (target: object/container/account)."""
    prefix = f"x-{target}-meta-"
    count = 0
    size = 0
    for key, value in headers.items():
        if value and len(value) > MAX_HEADER_SIZE:
            return Refusal(400, f"Header value too long: {key[:MAX_META_NAME_LENGTH]}")
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if not name:
            return Refusal(400, "Metadata name cannot be empty")
        try:
            value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return Refusal(400, "Metadata must be valid UTF-8")
        # Header values arrive decoded as latin-1, one character per byte,
        # so len() is the byte count Swift's limits are written in.
        count += 1
        size += len(name) + len(value)
        if len(name) > MAX_META_NAME_LENGTH:
            return Refusal(400, f"Metadata name too long: {prefix}{name}")
        if len(value) > MAX_META_VALUE_LENGTH:
            return Refusal(400, f"Metadata value longer than {MAX_META_VALUE_LENGTH}: {prefix}{name}")
        if count > MAX_META_COUNT:
            return Refusal(400, f"Too many metadata items; max {MAX_META_COUNT}")
        if size > MAX_META_OVERALL_SIZE:
            return Refusal(400, f"Total metadata too large; max {MAX_META_OVERALL_SIZE}")
    return None


def delete_at_header(headers: Headers, now: float | None = None) -> tuple[str | None, Refusal | None]:
    """Turn ``X-Delete-After``/``X-Delete-At`` into the absolute ``X-Delete-At`` value."""
    now = time.time() if now is None else now
    after = headers.get("x-delete-after")
    if after is not None:
        try:
            seconds = int(after)
        except ValueError:
            return None, Refusal(400, "Non-integer X-Delete-After")
        if seconds <= 0:
            return None, Refusal(400, "X-Delete-After in past")
        return str(int(now + seconds)), None
    at = headers.get("x-delete-at")
    if at is not None:
        try:
            when = int(float(at))
        except ValueError:
            return None, Refusal(400, "Non-integer X-Delete-At")
        if when <= now:
            return None, Refusal(400, "X-Delete-At in past")
        return str(when), None
    return None, None


def parse_listing_limit(value: str | None, maximum: int) -> tuple[int, Refusal | None]:
    if value is None or value == "":
        return maximum, None
    try:
        limit = int(value)
    except ValueError:
        return 0, Refusal(412, "Value of limit must be a positive integer")
    if limit < 0:
        return 0, Refusal(412, "Value of limit must be a positive integer")
    if limit > maximum:
        return 0, Refusal(412, f"Maximum limit is {maximum}")
    return limit, None
