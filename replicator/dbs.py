"""The database replicator: container and account databases converge with their peers.

For every database on a local device (accounts and containers alike), per
peer -- the other primaries, or all primaries for a handoff copy:

1. ``POST .../sync`` with our id, highest ``ROWID``, timestamps and
   metadata.  The peer merges the timestamps and metadata and answers its
   sync point for our id: how far into our rows it already is.
2. Nothing to do if the point is at our highest row.  If the peer lacks the
   database (``404``) or is more than ``db_max_diff_rows`` behind, it gets a
   whole copy (a consistent SQLite snapshot, streamed); otherwise the rows
   after its point, in batches, each batch moving the point.
3. A handoff copy is removed once every primary is in sync and no row
   arrived meanwhile.

Rows merge by "newest timestamp per name wins" (:mod:`node.storage.db`),
so the order and repetition of syncs never matter.  See
:mod:`node.storage.replication_db` for the receiving side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.log import log_event
from node.storage import replication_db as rdb
from node.storage.db import DatabaseBroker
from node.storage.fsutil import makedirs_durable, unlink_quietly
from replicator.context import Context
from replicator.ratelimit import RateLimiter
from replicator.report import PassReport, PassService
from replicator.walk import databases

log = logging.getLogger("peerstack.replicator")

KINDS = ("account", "container")
COPY_CHUNK = 1 << 20


@dataclass
class DBJob:
    kind: str
    device: str
    dev_path: Path
    partition: int
    hash: str
    handoff: bool
    peers: list[dict[str, Any]]


class DBReplicator(PassService):
    """One node's container and account replication service."""

    name = "db_replication"
    log = log

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.limiter = RateLimiter(ctx.config.bytes_per_second)

    def interval(self) -> float:
        return self.ctx.config.interval

    async def work(self, report: PassReport) -> None:
        jobs = await self._jobs()
        slots = trio.CapacityLimiter(max(1, self.ctx.config.concurrency))

        async def one(job: DBJob) -> None:
            async with slots:
                try:
                    await self._replicate(job, report)
                except (OSError, ValueError, sqlite3.Error) as exc:
                    report.add(job.device, errors=1)
                    log_event(log, "db_replication.db_failed", level=logging.WARNING,
                              kind=job.kind, device=job.device, hash=job.hash, error=repr(exc))

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)

    async def _jobs(self) -> list[DBJob]:
        local = self.ctx.local

        def scan() -> list[tuple[str, str, Path, int, str]]:
            return [(kind, d, local.path(d), part, name_hash)
                    for d in local.mounted() for kind in KINDS
                    for part, name_hash, _ in databases(local.path(d), kind)]

        found = await trio.to_thread.run_sync(scan)
        jobs = []
        for kind in KINDS:
            try:
                ring = self.ctx.rings.get(kind)
            except RingUnavailable as exc:
                log_event(log, "db_replication.no_ring", level=logging.WARNING, error=str(exc))
                continue
            for k, device, dev_path, part, name_hash in found:
                if k != kind or part >= ring.partition_count:
                    continue
                primaries = ring.get_part_nodes(part)
                peers = [d for d in primaries if not local.is_me(d, device)]
                jobs.append(DBJob(kind, device, dev_path, part, name_hash,
                                  len(peers) == len(primaries), peers))
        jobs.sort(key=lambda j: not j.handoff)
        return jobs

    async def _replicate(self, job: DBJob, report: PassReport) -> None:
        broker = rdb.make_broker(job.kind, self.ctx.pool, job.dev_path, job.partition, job.hash)
        state = await trio.to_thread.run_sync(rdb.local_state, broker)
        report.add(job.device, **{f"{job.kind}_dbs": 1}, handoffs=int(job.handoff))
        results: list[bool] = []

        async def with_peer(peer: dict[str, Any]) -> None:
            try:
                results.append(await self._sync_peer(job, broker, state, peer, report))
            except (BackendError, ValueError, KeyError, TypeError) as exc:
                results.append(False)
                report.add(job.device, peer_errors=1)
                log_event(log, "db_replication.peer_failed", level=logging.WARNING,
                          peer=f"{peer['ip']}:{peer['port']}/{peer['device']}",
                          db=str(broker.db_file), error=repr(exc))

        async with trio.open_nursery() as nursery:
            for peer in job.peers:
                nursery.start_soon(with_peer, peer)
        if job.handoff and all(results):
            if await trio.to_thread.run_sync(_remove_if_unchanged, broker, state):
                report.add(job.device, reverted=1)

    def _url(self, job: DBJob, peer: dict[str, Any], op: str) -> str:
        return f"/replication/db/{job.kind}/{peer['device']}/{job.partition}/{job.hash}/{op}"

    async def _post(self, peer: dict[str, Any], target: str, doc: Any):
        return await self.ctx.client.request(
            "POST", peer["ip"], peer["port"], target, [("Content-Type", "application/json")],
            json.dumps(doc).encode(), timeouts=self.ctx.timeouts)

    async def _sync_peer(self, job: DBJob, broker: DatabaseBroker, state: dict[str, Any],
                         peer: dict[str, Any], report: PassReport) -> bool:
        resp = await self._post(peer, self._url(job, peer, "sync"), state)
        if resp.status == 404:
            return await self._send_copy(job, broker, state["id"], peer, report)
        if resp.status != 200:
            raise BackendError(f"sync answered {resp.status}: {resp.body[:200]!r}")
        point = int(json.loads(resp.body)["point"])
        if point >= state["max_row"]:
            return True
        if state["max_row"] - point > self.ctx.config.db_max_diff_rows:
            return await self._send_copy(job, broker, state["id"], peer, report)
        while rows := await trio.to_thread.run_sync(broker.rows_since, point, rdb.BATCH_ROWS):
            new_point = rows[-1]["ROWID"]
            resp = await self._post(peer, self._url(job, peer, "rows"),
                                    {"id": state["id"], "rows": rows, "point": new_point})
            if resp.status != 204:
                raise BackendError(f"rows answered {resp.status}: {resp.body[:200]!r}")
            report.add(job.device, rows_sent=len(rows))
            point = new_point
        return True

    async def _send_copy(self, job: DBJob, broker: DatabaseBroker, db_id: str,
                         peer: dict[str, Any], report: PassReport) -> bool:
        """Stream a snapshot of the whole database to the peer."""
        def make() -> tuple[str, int, int]:
            tmp_dir = job.dev_path / "tmp"
            makedirs_durable(tmp_dir, job.dev_path)
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".dbsnap-", suffix=".db")
            os.close(fd)
            try:
                max_row = rdb.snapshot(broker, Path(tmp))
            except BaseException:
                unlink_quietly(tmp)
                raise
            return tmp, max_row, os.path.getsize(tmp)

        tmp, max_row, size = await trio.to_thread.run_sync(make)
        target = f"{self._url(job, peer, 'file')}?id={db_id}&max_row={max_row}"
        try:
            with open(tmp, "rb") as f:
                async with self.ctx.client.exchange(peer["ip"], peer["port"],
                                                    timeouts=self.ctx.timeouts) as ex:
                    early = await ex.start("PUT", target, [("Content-Type", "application/x-sqlite3")],
                                           content_length=size, expect_continue=True)
                    if early is not None:
                        resp = early
                    else:
                        while chunk := await trio.to_thread.run_sync(f.read, COPY_CHUNK):
                            await self.limiter.consume(len(chunk))
                            await ex.send(chunk)
                        resp = await ex.finish()
                    await resp.read(1 << 16)
        finally:
            await trio.to_thread.run_sync(unlink_quietly, tmp)
        if resp.status != 201:
            raise BackendError(f"copy answered {resp.status}: {resp.body[:200]!r}")
        report.add(job.device, copies_sent=1, bytes_sent=size)
        return True


def _remove_if_unchanged(broker: DatabaseBroker, synced: dict[str, Any]) -> bool:
    """Drop a handoff database the primaries have, unless it changed since it was synced."""
    if rdb.local_state(broker) != synced:
        return False
    shutil.rmtree(broker.db_dir, ignore_errors=True)
    for d in (broker.db_dir.parent, broker.db_dir.parent.parent):
        try:
            os.rmdir(d)
        except OSError:
            break
    return True
