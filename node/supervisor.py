"""Keeps a node's services running.

Every service (a server, the replicator, membership...) is an ``async``
function run as a trio task.  :func:`supervise` restarts one that crashes,
with a growing delay, and logs every crash and restart, so a bug in one
service never silently leaves the node half alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from node.log import log_event

log = logging.getLogger("peerstack.supervisor")

ServiceFn = Callable[[], Awaitable[None]]


async def supervise(name: str, fn: ServiceFn, *, first_delay: float = 0.5,
                    max_delay: float = 30.0) -> None:
    """Run ``fn`` until it returns; restart it whenever it raises."""
    delay = first_delay
    while True:
        started = time.monotonic()
        log_event(log, "service.start", service=name)
        try:
            await fn()
        except Exception as exc:
            log.exception("service crashed", extra={"event": "service.crash",
                                                    "fields": {"service": name, "error": repr(exc)}})
        else:
            log_event(log, "service.exit", service=name)
            return
        if time.monotonic() - started > 60:
            delay = first_delay  # it ran fine for a while: start the backoff over
        log_event(log, "service.restart", service=name, delay=delay)
        await trio.sleep(delay)
        delay = min(delay * 2, max_delay)
