"""Error limiting: stop asking a device that keeps failing, for a while.

A device (``ip:port/device``) that fails ``limit`` times within ``interval``
seconds -- or fails in a way that says it is certainly down (connection
refused, ``507 Insufficient Storage``) -- is *suppressed* for ``suppress``
seconds.  Callers try suppressed devices only after every healthy one, so one
dead disk does not add a timeout to every request, yet a cluster whose
devices are all suppressed still gets asked (the errors may be stale).

This is Swift's ``error_suppression_limit`` / ``error_suppression_interval``
idea; the state is per process and never persisted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


def device_key(dev: dict) -> str:
    """The identity the limiter tracks: where a device is, not its ring id."""
    return f"{dev['ip']}:{dev['port']}/{dev['device']}"


class ErrorLimiter:
    """Counts recent errors per device and says which devices to skip."""

    def __init__(self, limit: int = 10, interval: float = 60.0, suppress: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.interval = interval
        self.suppress = suppress
        self._clock = clock
        self._errors: dict[str, deque[float]] = {}
        self._suppressed_until: dict[str, float] = {}

    def error(self, dev: dict) -> None:
        """Count one failure (a timeout, a 5xx, a broken stream)."""
        key = device_key(dev)
        now = self._clock()
        recent = self._errors.setdefault(key, deque())
        recent.append(now)
        while recent and recent[0] < now - self.interval:
            recent.popleft()
        if len(recent) >= self.limit:
            self._suppress(key, now)

    def fatal(self, dev: dict) -> None:
        """A failure that means the device is down right now: suppress at once."""
        self._suppress(device_key(dev), self._clock())

    def success(self, dev: dict) -> None:
        """A device answered: forget its suppression (it is back)."""
        key = device_key(dev)
        self._suppressed_until.pop(key, None)
        self._errors.pop(key, None)

    def peer_alive(self, ip: str, port: int) -> None:
        """Membership heard from the node at ``ip:port``: its devices are worth asking again.

        Without this a node that was still starting when first asked (connection
        refused) would be skipped for ``suppress`` seconds although it is up,
        and writes meant for it would land on handoffs.
        """
        prefix = f"{ip}:{port}/"
        for key in [k for k in self._suppressed_until if k.startswith(prefix)]:
            del self._suppressed_until[key]
            self._errors.pop(key, None)

    def is_limited(self, dev: dict) -> bool:
        key = device_key(dev)
        until = self._suppressed_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._suppressed_until[key]
            self._errors.pop(key, None)
            return False
        return True

    def _suppress(self, key: str, now: float) -> None:
        self._suppressed_until[key] = now + self.suppress
        self._errors.pop(key, None)
