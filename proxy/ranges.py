"""HTTP ``Range`` headers for large objects, as Swift reads them.

A header that is not valid ``bytes=`` syntax is ignored (the whole object is
sent, ``200``), as Swift and RFC 9110 do.  A valid header none of whose
ranges overlaps the object is ``416``.  Each range resolves to an inclusive
``(first, last)`` byte pair.
"""

from __future__ import annotations

from node.storage.conditional import parse_range, satisfiable_ranges

__all__ = ["parse_range", "resolve"]


def resolve(ranges: list[tuple[int | None, int | None]], length: int) -> list[tuple[int, int]]:
    """Inclusive byte spans of an object of ``length`` bytes; empty means unsatisfiable.

    The proxy reads the same ``Range`` syntax the object server does
    (:func:`node.storage.conditional.parse_range`); large objects need the
    spans inclusive, as ``Content-Range`` writes them.
    """
    return [(start, stop - 1) for start, stop in satisfiable_ranges(ranges, length) if start < stop]
