"""Checks on what clients send to the identity API (JSON shapes, names, flags).

Keystone answers a malformed request with ``400`` and a message naming the
offending field; these helpers raise exactly that, so handlers can read
fields without defending against every wrong type themselves.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.identity.errors import bad_request

MAX_NAME = 64
MAX_USER_NAME = 255
MAX_DESCRIPTION = 4096
#: longest id accepted in a path or body (ours are 32 hex digits; Keystone allows 64)
MAX_ID = 64


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("Expecting to find JSON in the request body.")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Malformed JSON in the request body.") from None
    if not isinstance(doc, dict):
        raise bad_request("The request body must be a JSON object.")
    return doc


def section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise bad_request(f"Expecting to find {key} in the request body.")
    return value


def name(value: Any, field: str = "name", limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"Invalid input for field '{field}': a non-empty string is required.")
    if len(value) > limit:
        raise bad_request(f"Invalid input for field '{field}': longer than {limit} characters.")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise bad_request(f"Invalid input for field '{field}': control characters are not allowed.")
    return value


def ident(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or "/" in value:
        raise bad_request(f"Invalid input for field '{field}': not a valid id.")
    return value


def optional_ident(value: Any, field: str) -> str | None:
    return None if value is None else ident(value, field)


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"Invalid input for field '{field}': {value!r} is not of type 'boolean'.")
    return value


def description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise bad_request("Invalid input for field 'description': a string is required.")
    return value


def string(value: Any, field: str, limit: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f"Invalid input for field '{field}': a string is required.")
    return value
