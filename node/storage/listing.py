"""Listing requests and bodies for container and account GETs.

Parameters (as Swift): ``limit`` (default and maximum 10000; more is 412),
``marker``, ``end_marker``, ``prefix``, ``delimiter``, ``reverse``, ``path``
and ``format`` (``json``, ``xml``, ``plain``) -- or an ``Accept`` header
naming ``application/json``, ``application/xml``/``text/xml`` or
``text/plain``; an ``Accept`` that allows none of them is 406.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from node.storage.db import ListingQuery

LISTING_LIMIT = 10000
JSON, XML, PLAIN = "application/json", "application/xml", "text/plain"
_FORMATS = {"json": JSON, "xml": XML, "plain": PLAIN, "text": PLAIN}
_OFFERED = (PLAIN, JSON, XML, "text/xml")


class ListingError(ValueError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on", "t", "y")


def parse_listing_query(query_string: str) -> tuple[ListingQuery, dict[str, str]]:
    """Listing parameters from the raw query string; raises :class:`ListingError`."""
    try:
        params = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ListingError(400, "Invalid UTF-8 in query") from None
    if any("\x00" in v for v in params.values()):
        raise ListingError(400, "NUL in query")
    q = ListingQuery()
    limit = params.get("limit")
    if limit:
        if not limit.isdigit():
            raise ListingError(412, "Value of limit must be a non-negative integer")
        q.limit = int(limit)
        if q.limit > LISTING_LIMIT:
            raise ListingError(412, f"Maximum limit is {LISTING_LIMIT}")
    q.marker = params.get("marker", "")
    q.end_marker = params.get("end_marker", "")
    q.prefix = params.get("prefix", "")
    q.delimiter = params.get("delimiter", "")
    q.reverse = _true(params.get("reverse", ""))
    q.path = params.get("path")
    return q, params


def _accept_best(accept: str) -> str | None:
    """The offered type the ``Accept`` header ranks highest (ties: ours in order)."""
    best, best_q = None, 0.0
    for item in accept.split(","):
        media, *opts = [p.strip() for p in item.split(";")]
        quality = 1.0
        for opt in opts:
            if opt.startswith("q="):
                try:
                    quality = float(opt[2:])
                except ValueError:
                    quality = 0.0
        media = media.lower()
        for offered in _OFFERED:
            major = offered.split("/")[0]
            if media in (offered, "*/*", f"{major}/*") and quality > best_q:
                best, best_q = offered, quality
                break
    return best


def content_type_for(params: dict[str, str], accept: str | None) -> str:
    fmt = params.get("format", "").lower()
    if fmt in _FORMATS:
        return _FORMATS[fmt]
    if not accept:
        return PLAIN
    best = _accept_best(accept)
    if best is None:
        raise ListingError(406, "Not Acceptable")
    return XML if best == "text/xml" else best


def render(content_type: str, kind: str, name: str, rows: list[tuple],
           to_dict: Callable[[tuple], dict]) -> bytes:
    """The listing body; subdir rows are 1-tuples ``(name,)``.

    ``kind`` is ``container`` (listing objects) or ``account`` (listing
    containers); ``to_dict`` turns a row into its JSON/XML fields.
    """
    if content_type == JSON:
        items = [{"subdir": r[0]} if len(r) == 1 else to_dict(r) for r in rows]
        return json.dumps(items, ensure_ascii=False).encode("utf-8")
    if content_type == XML:
        item = "object" if kind == "container" else "container"
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f"<{kind} name={quoteattr(name)}>"]
        for r in rows:
            if len(r) == 1:
                out.append(f"<subdir name={quoteattr(r[0])}><name>{escape(r[0])}</name></subdir>")
            else:
                fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in to_dict(r).items())
                out.append(f"<{item}>{fields}</{item}>")
        out.append(f"</{kind}>")
        return "".join(out).encode("utf-8")
    return "".join(r[0] + "\n" for r in rows).encode("utf-8")
