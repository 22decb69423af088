"""Conditional and range requests (RFC 9110 sections 13 and 14), as Swift answers them.

Pure functions, so the object server (and later the proxy) can share them:

* :func:`evaluate_preconditions` -- If-Match / If-Unmodified-Since (412) and
  If-None-Match / If-Modified-Since (304 for GET/HEAD), in the RFC's order;
* :func:`parse_range` / :func:`satisfiable_ranges` -- ``Range: bytes=...``
  with Swift's rules: a header that does not parse is ignored (full 200),
  one whose ranges all miss the object is a 416, more than
  :data:`MAX_RANGES` ranges is a 416;
* :class:`Multipart` -- the ``multipart/byteranges`` framing of a
  multi-range answer, with its exact length known up front.
"""

from __future__ import annotations

import email.utils
import math
import secrets
from collections.abc import Callable

from node.storage.timestamp import Timestamp

MAX_RANGES = 50


def _etags(header: str) -> list[str]:
    """Entity tags in an If-Match / If-None-Match list, quotes removed."""
    tags = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.append(tag.strip('"'))
    return [t for t in tags if t]


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def evaluate_preconditions(get: Callable[[str], str | None], method: str, exists: bool,
                           etag: str | None, last_modified: Timestamp | None) -> int | None:
    """The status a precondition forces (304 or 412), or ``None`` to go on.

    ``get`` reads a request header.  ``last_modified`` compares at whole
    seconds, rounded up like the ``Last-Modified`` header we send.
    """
    modified = math.ceil(float(last_modified)) if last_modified is not None else None
    if_match = get("if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if not exists or not ("*" in tags or etag in tags):
            return 412
    else:
        since = _http_date(get("if-unmodified-since"))
        if since is not None and exists and modified is not None and modified > since:
            return 412
    read = method in ("GET", "HEAD")
    if_none = get("if-none-match")
    if if_none is not None:
        tags = _etags(if_none)
        if exists and ("*" in tags or etag in tags):
            return 304 if read else 412
    elif read and exists and modified is not None:
        since = _http_date(get("if-modified-since"))
        if since is not None and modified <= since:
            return 304
    return None


def parse_range(header: str | None) -> list[tuple[int | None, int | None]] | None:
    """``bytes=0-9,20-,-5`` -> ``[(0, 9), (20, None), (None, 5)]``; None to ignore."""
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int | None, int | None]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last):
            return None
        if (first and not first.isdigit()) or (last and not last.isdigit()):
            return None
        start = int(first) if first else None
        end = int(last) if last else None
        if start is None and end == 0:
            return None
        if start is not None and end is not None and end < start:
            return None
        ranges.append((start, end))
    return ranges or None


def satisfiable_ranges(ranges: list[tuple[int | None, int | None]],
                       length: int) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` byte ranges of a ``length``-byte body.

    An empty result means 416 Range Not Satisfiable.
    """
    if len(ranges) > MAX_RANGES:
        return []
    out = []
    for start, end in ranges:
        if start is None:
            assert end is not None
            out.append((max(0, length - end), length))
        elif start < length:
            stop = length if end is None else min(end + 1, length)
            out.append((start, stop))
    return out


class Multipart:
    """Framing for a ``multipart/byteranges`` body over ``ranges`` of one object."""

    def __init__(self, ranges: list[tuple[int, int]], length: int, content_type: str) -> None:
        self.boundary = secrets.token_hex(16)
        self.ranges = ranges
        self.heads = []
        for i, (start, stop) in enumerate(ranges):
            lead = "" if i == 0 else "\r\n"
            self.heads.append(
                f"{lead}--{self.boundary}\r\nContent-Type: {content_type}\r\n"
                f"Content-Range: bytes {start}-{stop - 1}/{length}\r\n\r\n".encode("latin-1"))
        self.tail = f"\r\n--{self.boundary}--".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges;boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return (sum(len(h) for h in self.heads) + len(self.tail)
                + sum(stop - start for start, stop in self.ranges))
