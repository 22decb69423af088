"""The updater: deliver the container and account updates that failed the first time.

When an object server cannot tell a container server about a PUT or DELETE
(or a container server cannot report its totals to an account server), it
writes an *async pending* record on its device (format in
:mod:`node.storage.updates`).  Every ``update_interval`` this service sends
each record again -- to the *current* primaries of the container (or
account) according to the ring, not the ones named when it was written, so
a rebalance in between does not strand it -- and deletes it once every
primary accepted it.  Sending a row again is harmless: the receiving
database keeps the newest row per name whatever the order.

A container-totals record is refreshed from the container database on the
same device before it is sent, when that database is there, so a late
delivery never reports stale totals.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import trio

from node.cluster_rings import RingUnavailable
from node.log import log_event
from node.storage.container_db import ContainerBroker
from node.storage.updates import Target, UpdateSender
from replicator.context import Context
from replicator.report import PassReport, PassService
from replicator.walk import async_pendings

log = logging.getLogger("peerstack.updater")


def load_record(path: Path) -> dict[str, Any] | None:
    """An async pending record, or None if it is unreadable (blocking)."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Updater(PassService):
    """One node's async-pending service."""

    name = "updater"
    log = log

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.sender = UpdateSender(ctx.client, ctx.timeouts)

    def interval(self) -> float:
        return self.ctx.config.update_interval

    async def work(self, report: PassReport) -> None:
        local = self.ctx.local
        for device in await trio.to_thread.run_sync(local.mounted):
            dev_path = local.path(device)
            records = await trio.to_thread.run_sync(lambda p=dev_path: list(async_pendings(p)))
            slots = trio.CapacityLimiter(max(1, self.ctx.config.concurrency))

            async def one(path: Path, device: str = device, dev_path: Path = dev_path) -> None:
                async with slots:
                    report.add(device, **{await self._deliver(dev_path, path): 1})

            async with trio.open_nursery() as nursery:
                for path in records:
                    nursery.start_soon(one, path)

    async def _deliver(self, dev_path: Path, path: Path) -> str:
        """Send one record; what happened (``delivered``, ``deferred``, ``bad``, ``gone``)."""
        record = await trio.to_thread.run_sync(load_record, path)
        if record is None:
            return "gone"
        try:
            kind, method = record["kind"], record["op"]
            account, container = record["account"], record["container"]
            headers = dict(record["headers"])
            names = [account, container] + ([record["obj"]] if kind == "container" else [])
            if kind not in ("container", "account") or not all(isinstance(n, str) for n in names):
                raise ValueError(f"bad record kind or names: {kind!r}")
            ring = self.ctx.rings.get(kind)
            part, nodes = (ring.get_nodes(account, container) if kind == "container"
                           else ring.get_nodes(account))
        except (KeyError, TypeError, ValueError) as exc:
            log_event(log, "updater.bad_record", level=logging.ERROR, path=str(path), error=repr(exc))
            return "bad"
        except RingUnavailable:
            return "deferred"
        if kind == "account":
            try:
                cpart = self.ctx.rings.container.get_part(account, container)
            except RingUnavailable:
                return "deferred"
            headers.update(await trio.to_thread.run_sync(self._fresh_totals, dev_path, cpart,
                                                         path.name[:32]))
        targets = [Target(n["ip"], n["port"], n["device"], part) for n in nodes]
        statuses = await self.sender.send(method, targets, names,
                                          {**headers, "X-Backend-Server": kind},
                                          f"updater-{path.name[:40]}")
        if targets and all(s is not None and 200 <= s < 300 for s in statuses.values()):
            await trio.to_thread.run_sync(_remove, path)
            return "delivered"
        return "deferred"

    def _fresh_totals(self, dev_path: Path, part: int, name_hash: str) -> dict[str, str]:
        """The container's current totals from its database on this device, if it is here."""
        broker = ContainerBroker(self.ctx.pool, dev_path, part, name_hash)
        if not broker.exists():
            return {}
        info = broker.info()
        return {"X-Put-Timestamp": info["put_timestamp"],
                "X-Delete-Timestamp": info["delete_timestamp"],
                "X-Object-Count": str(info["object_count"]),
                "X-Bytes-Used": str(info["bytes_used"])}


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    try:
        os.rmdir(path.parent)
    except OSError:
        pass  # other records left in the suffix
