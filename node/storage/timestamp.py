"""Swift's timestamps: the clock value that decides which write wins.

Every write to a storage server carries ``X-Timestamp``.  Swift normalizes
it to ten integer digits and five decimals (``%016.05f``, so
``1700000000.12345``) and may append an *offset* in hex
(``1700000000.12345_0000000000000001``) to order two events that happen at
the same wall-clock time (an object and its own tombstone, for instance).
Both forms are fixed-width, so comparing them as strings (what SQLite does
with them) agrees with comparing them as numbers.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from functools import total_ordering

_SCALE = 100_000  # five decimal places
_MAX = 10_000_000_000 * _SCALE  # ten integer digits
_MAX_OFFSET = 1 << 64


@total_ordering
class Timestamp:
    """An instant at 10 µs resolution plus an ordering offset.

    ``Timestamp("1700000000.123456")`` rounds to five decimals, as Swift does.
    Anything that is not a finite, non-negative number below 10^10 (or has
    a bad offset) raises :class:`ValueError`; servers turn that into 400.
    """

    __slots__ = ("ticks", "offset")

    def __init__(self, value: str | float | int | Timestamp, offset: int = 0) -> None:
        if isinstance(value, Timestamp):
            ticks, offset = value.ticks, value.offset + offset
        else:
            if isinstance(value, str):
                number, sep, off = value.partition("_")
                if sep:
                    if not off or len(off) > 16 or not all(c in "0123456789abcdefABCDEF" for c in off):
                        raise ValueError(f"bad timestamp offset {value!r}")
                    offset += int(off, 16)
                value = float(number)
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("timestamp must be finite")
            ticks = round(value * _SCALE)
        if ticks < 0:
            raise ValueError("timestamp cannot be negative")
        if ticks >= _MAX:
            raise ValueError("timestamp too large")
        if not 0 <= offset < _MAX_OFFSET:
            raise ValueError("timestamp offset out of range")
        self.ticks = ticks
        self.offset = offset

    @classmethod
    def now(cls) -> Timestamp:
        return cls(time.time())

    @property
    def normal(self) -> str:
        """``1700000000.12345``: what clients see in ``X-Timestamp``."""
        return f"{self.ticks // _SCALE:010d}.{self.ticks % _SCALE:05d}"

    @property
    def internal(self) -> str:
        """``normal`` plus ``_<offset>`` when there is one: what goes on disk."""
        if self.offset:
            return f"{self.normal}_{self.offset:016x}"
        return self.normal

    @property
    def isoformat(self) -> str:
        """``2023-11-14T22:13:20.123450``: the ``last_modified`` of listings."""
        dt = datetime.datetime.fromtimestamp(self.ticks // _SCALE, datetime.timezone.utc)
        micro = (self.ticks % _SCALE) * 10
        return dt.replace(microsecond=micro, tzinfo=None).isoformat(timespec="microseconds")

    @property
    def http_date(self) -> str:
        """``Last-Modified``: whole seconds, rounded up like Swift."""
        return email.utils.formatdate(math.ceil(self.ticks / _SCALE), usegmt=True)

    def __float__(self) -> float:
        return self.ticks / _SCALE

    def __str__(self) -> str:
        return self.internal

    def __repr__(self) -> str:
        return f"Timestamp({self.internal!r})"

    def _key(self) -> tuple[int, int]:
        return (self.ticks, self.offset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: Timestamp) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())


ZERO = Timestamp(0)


def parse_timestamp(value: str | None) -> Timestamp | None:
    """The header value as a :class:`Timestamp`, ``None`` if it is absent or bad."""
    if value is None:
        return None
    try:
        return Timestamp(value)
    except ValueError:
        return None
