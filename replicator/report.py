"""Passes: how every background service works, and what it reports.

Each service (object replicator, DB replicator, auditor, updater, expirer)
works in *passes* over the local devices with a pause in between
(:class:`PassService`).  A pass counts its work per device in a
:class:`PassReport`, which is logged as one structured line
(``<service>.pass``) when the pass ends, kept as the service's last pass,
and added to its totals since the node started -- both shown by
``GET /replication/status``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import trio

from node.log import log_event


class PassReport:
    """Counters of one pass of one service, per device."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.started = time.time()
        self._t0 = time.monotonic()
        self.finished: float | None = None
        self.seconds = 0.0
        self.devices: dict[str, Counter[str]] = {}

    def add(self, device: str, **counts: int) -> None:
        self.devices.setdefault(device, Counter()).update(counts)

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.devices.values():
            total.update(counts)
        return total

    def finish(self, logger: logging.Logger) -> None:
        self.seconds = round(time.monotonic() - self._t0, 3)
        self.finished = time.time()
        log_event(logger, f"{self.service}.pass", seconds=self.seconds, **self.totals(),
                  devices={d: dict(c) for d, c in self.devices.items()})

    def for_device(self, device: str) -> dict[str, Any]:
        """This pass as seen from one device (for the status document)."""
        return {"started": self.started, "finished": self.finished, "seconds": self.seconds,
                **self.devices.get(device, {})}


class PassService:
    """A background service that works in passes; subclasses define :meth:`work`."""

    #: the name of its reports and log lines
    name = ""
    log = logging.getLogger("peerstack.replicator")

    def __init__(self) -> None:
        self.last: PassReport | None = None
        self.since_start: dict[str, Counter[str]] = {}

    def interval(self) -> float:
        """Seconds to pause between passes."""
        raise NotImplementedError

    async def work(self, report: PassReport) -> None:
        """Do one pass, counting into ``report``."""
        raise NotImplementedError

    async def run(self) -> None:
        """The service: passes forever."""
        while True:
            await self.run_pass()
            await trio.sleep(self.interval())

    async def run_pass(self) -> PassReport:
        report = PassReport(self.name)
        await self.work(report)
        report.finish(self.log)
        self.last = report
        for device, counts in report.devices.items():
            self.since_start.setdefault(device, Counter()).update(counts)
        return report

    def status(self, device: str) -> dict[str, Any]:
        """``{"last_pass": ..., "since_start": ...}`` for one device."""
        return {"last_pass": self.last.for_device(device) if self.last else None,
                "since_start": dict(self.since_start.get(device, {}))}
