"""User metadata headers and Swift's limits on them.

Metadata arrives as ``X-<Type>-Meta-<name>: <value>`` headers (``Type`` is
``Object``, ``Container`` or ``Account``).  Swift caps it per request, and
so do we, whatever the filesystem underneath can store (see
:mod:`node.storage.diskfile` for how objects hold it on ext4):

* at most 90 items, names up to 128 bytes, values up to 256 bytes,
* at most 4096 bytes of names plus values in total,
* names non-empty, names and values valid UTF-8.

Header values come off the wire decoded as latin-1, so ``len()`` counts
bytes and the original UTF-8 bytes go back out unchanged.
"""

from __future__ import annotations

from node.headers import Headers

MAX_META_COUNT = 90
MAX_META_NAME_LENGTH = 128
MAX_META_VALUE_LENGTH = 256
MAX_META_OVERALL_SIZE = 4096


class MetadataError(ValueError):
    """Metadata breaks a limit; the message is the 400 body."""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return False
    return "\x00" not in text


def check_metadata(headers: Headers, kind: str) -> None:
    """Raise :class:`MetadataError` if the ``X-<kind>-Meta-*`` headers break a limit."""
    prefix = f"x-{kind}-meta-"
    count = 0
    size = 0
    for name, value in headers.with_prefix(prefix).items():
        key = name[len(prefix):]
        if not key:
            raise MetadataError("Metadata name cannot be empty")
        if not (_is_utf8(key) and _is_utf8(value)):
            raise MetadataError("Metadata must be valid UTF-8")
        count += 1
        size += len(key) + len(value)
        if len(key) > MAX_META_NAME_LENGTH:
            raise MetadataError(f"Metadata name too long: {key}; max {MAX_META_NAME_LENGTH}")
        if len(value) > MAX_META_VALUE_LENGTH:
            raise MetadataError(f"Metadata value longer than {MAX_META_VALUE_LENGTH}: {key}")
        if count > MAX_META_COUNT:
            raise MetadataError(f"Too many metadata items; max {MAX_META_COUNT}")
        if size > MAX_META_OVERALL_SIZE:
            raise MetadataError(f"Total metadata too large; max {MAX_META_OVERALL_SIZE}")


def header_case(name: str) -> str:
    """``x-object-meta-color`` -> ``X-Object-Meta-Color`` (how Swift spells stored keys)."""
    if name.lower() == "etag":
        return "ETag"
    return "-".join(part[:1].upper() + part[1:] for part in name.lower().split("-"))
