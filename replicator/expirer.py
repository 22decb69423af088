"""The expirer: objects whose ``X-Delete-At`` has passed are deleted for real.

Reads never show an expired object -- the object server answers ``404``
as soon as ``X-Delete-At`` is past -- so what is left to do is to free the
space and take the object out of its container listing.  Every
``expire_interval`` this service sweeps the objects on its local devices,
reading only their metadata, and for each expired one it holds as a
*primary* it sends a ``DELETE`` through the cluster client with
``X-Timestamp`` set to the ``X-Delete-At`` instant.  The tombstone thus has
the same name on every replica whichever node sends it (so two nodes
expiring the same object at once agree, and the second just gets ``409``),
and any write made after that instant is newer and wins.

Why a sweep, and not Swift's hidden ``.expiring_objects`` account: that
queue costs every PUT or POST with ``X-Delete-At`` an extra container
update across the cluster, needs the object server to write it, and is
one more replicated thing to keep consistent; a sweep needs nothing from
the write path, cannot miss an object however it arrived (a PUT, a POST,
replication), and costs one directory listing and one metadata read per
object per pass, the same walk the auditor does.  The price is latency:
an object's listing entry goes away within ``expire_interval`` (plus a
pass) after it expired, not at once.

Caveat shared with Swift: a POST that changed ``X-Delete-At`` but has not
reached this replica yet does not stop the DELETE; its newer metadata then
loses to the tombstone once it was older than the expiry instant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import trio

from node.cluster_rings import RingUnavailable
from node.log import log_event
from node.storage import diskfile
from node.storage.diskfile import DiskFileError, ObjectLocation
from node.storage.timestamp import Timestamp
from replicator.context import Context
from replicator.report import PassReport, PassService
from replicator.walk import objects

log = logging.getLogger("peerstack.expirer")

#: objects whose metadata is read per thread hop
BATCH_OBJECTS = 256


def expired_objects(walk: Iterator[tuple[int, Path]], dev_path: Path, now: float,
                    limit: int = BATCH_OBJECTS) -> tuple[list[tuple[int, str, int]], int, bool]:
    """Next batch of ``(partition, name, delete_at)`` of expired objects (blocking).

    Returns the batch, how many objects were looked at, and whether the
    walk is over.  Objects with unreadable metadata are left to the auditor.
    """
    found: list[tuple[int, str, int]] = []
    seen = 0
    for part, hash_dir in walk:
        seen += 1
        loc = ObjectLocation(dev_path, part, hash_dir.name)
        state = diskfile.read_state(loc)
        if state.data is not None:
            try:
                obj = diskfile.open_object(loc, state)
            except (DiskFileError, FileNotFoundError):
                obj = None
            if obj is not None:
                obj.close()
                delete_at = obj.metadata.get("X-Delete-At")
                if delete_at is not None and str(delete_at).isdigit() and int(delete_at) <= now:
                    found.append((part, str(obj.metadata.get("name", "")), int(delete_at)))
        if seen >= limit:
            return found, seen, False
    return found, seen, True


class Expirer(PassService):
    """One node's X-Delete-At service."""

    name = "expirer"
    log = log

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def interval(self) -> float:
        return self.ctx.config.expire_interval

    async def work(self, report: PassReport) -> None:
        try:
            ring = self.ctx.rings.object
        except RingUnavailable as exc:
            log_event(log, "expirer.no_ring", level=logging.WARNING, error=str(exc))
            return
        local = self.ctx.local
        for device in await trio.to_thread.run_sync(local.mounted):
            dev_path = local.path(device)
            walk = objects(dev_path)
            done = False
            while not done:
                batch, seen, done = await trio.to_thread.run_sync(
                    expired_objects, walk, dev_path, time.time())
                report.add(device, objects_seen=seen)
                for part, name, delete_at in batch:
                    if not any(local.is_me(d, device) for d in ring.get_part_nodes(part)):
                        continue  # a handoff copy: it goes home, and is expired there
                    report.add(device, **{await self._expire(name, delete_at): 1})

    async def _expire(self, name: str, delete_at: int) -> str:
        parts = name.split("/", 3)
        if len(parts) != 4 or parts[0]:
            return "bad_names"
        _, account, container, obj = parts
        resp = await self.ctx.cluster.delete_object(
            account, container, obj, {"X-Timestamp": Timestamp(delete_at).internal})
        if resp.status in (204, 404, 409):
            log_event(log, "expirer.expired", object=name, delete_at=delete_at, status=resp.status)
            return "expired"
        log_event(log, "expirer.delete_failed", level=logging.WARNING, object=name,
                  status=resp.status)
        return "failed"
