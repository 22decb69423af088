"""Pacing background work to a bytes-per-second budget.

Replication and auditing must not starve client traffic of disk and
network bandwidth, so each reads or sends through a :class:`RateLimiter`.
"""

from __future__ import annotations

import trio


class RateLimiter:
    """Paces ``consume(n)`` calls to ``rate`` units per second (``0``: unlimited).

    Every call books its share of a virtual timeline and sleeps until its
    turn, so concurrent tasks sharing one limiter get ``rate`` in total.
    Up to ``burst`` seconds of unused budget may be spent at once, which
    keeps small files from paying a sleep each.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self._next = 0.0

    async def consume(self, amount: int) -> None:
        if self.rate <= 0 or amount <= 0:
            return
        now = trio.current_time()
        self._next = max(self._next, now - self.burst) + amount / self.rate
        delay = self._next - now
        if delay > 0:
            await trio.sleep(delay)
