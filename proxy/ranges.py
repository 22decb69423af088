"""HTTP ``Range`` headers, as Swift reads them.

A header that is not valid ``bytes=`` syntax is ignored (the whole object is
sent, ``200``), as Swift and RFC 9110 do.  A valid header none of whose
ranges overlaps the object is ``416``.  Each range resolves to an inclusive
``(first, last)`` byte pair.
"""

from __future__ import annotations

MAX_RANGES = 50


def parse_range(header: str | None) -> list[tuple[int | None, int | None]] | None:
    """``bytes=0-9,-5,100-`` -> ``[(0, 9), (None, 5), (100, None)]``; ``None`` if invalid."""
    if not header:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    out: list[tuple[int | None, int | None]] = []
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
        a = int(first) if first else None
        b = int(last) if last else None
        if a is not None and b is not None and b < a:
            return None
        out.append((a, b))
    if not out or len(out) > MAX_RANGES:
        return None
    return out


def resolve(ranges: list[tuple[int | None, int | None]], length: int) -> list[tuple[int, int]]:
    """Inclusive byte spans of an object of ``length`` bytes; empty means unsatisfiable."""
    spans = []
    for a, b in ranges:
        if a is None:
            assert b is not None
            if b == 0:
                continue
            spans.append((max(length - b, 0), length - 1))
        elif a < length:
            spans.append((a, length - 1 if b is None else min(b, length - 1)))
    return [s for s in spans if s[0] <= s[1]]
