"""The object replicator: every partition on this node converges with its peers.

A pass visits every partition directory on every local device (handoff
partitions first, so data held for a down node goes home as early as
possible):

1. For a partition this device is a *primary* of, the peers are the other
   primaries; for a *handoff* partition (the device is not in the ring for
   it, e.g. it took writes while a primary was down), the peers are all the
   primaries.
2. ``REPLICATE /<dev>/<part>`` gives each peer's per-suffix hashes (kept by
   the storage server, invalidated by every write); suffixes whose hash
   differs from ours need syncing.
3. For those suffixes we offer the peer our inventory (``{hash: [files]}``);
   it answers with the files it lacks and would keep
   (:mod:`node.storage.replication_objects`), and we push each one --
   metadata and bytes, streamed, signed, paced by the bytes/s limit.
4. A handoff partition is removed, file by file, once *every* primary has
   answered and taken what it wanted; otherwise it stays for the next pass.

A primary that answers ``507`` (its disk is gone) is replaced by a handoff
device, as Swift does, so the replica count holds while the disk is out.
Push-only is enough: every node runs this, so every copy is pushed to
wherever it is missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.cluster_rings import RingUnavailable
from node.http_client import BackendError, StaleConnection
from node.log import log_event
from node.storage.diskfile import DiskFileError, read_metadata
from node.storage.hashes import get_hashes
from node.storage.replication_objects import Inventory, inventory, remove_reverted
from replicator.context import Context
from replicator.ratelimit import RateLimiter
from replicator.report import PassReport, PassService
from replicator.walk import partitions

log = logging.getLogger("peerstack.replicator")

PUSH_CHUNK = 1 << 20


@dataclass
class PartitionJob:
    device: str
    dev_path: Path
    partition: int
    handoff: bool
    #: ring devices to sync with
    peers: list[dict[str, Any]]

    @property
    def part_dir(self) -> Path:
        return self.dev_path / "objects" / str(self.partition)


class ObjectReplicator(PassService):
    """One node's object replication service (``run`` forever, or ``run_pass`` once)."""

    name = "object_replication"
    log = log

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.limiter = RateLimiter(ctx.config.bytes_per_second)

    def interval(self) -> float:
        return self.ctx.config.interval

    async def work(self, report: PassReport) -> None:
        try:
            ring = self.ctx.rings.object
        except RingUnavailable as exc:
            log_event(log, "object_replication.no_ring", level=logging.WARNING, error=str(exc))
            return
        jobs = await self._jobs(ring)
        slots = trio.CapacityLimiter(max(1, self.ctx.config.concurrency))

        async def one(job: PartitionJob) -> None:
            async with slots:
                try:
                    await self._replicate(ring, job, report)
                except (OSError, ValueError) as exc:
                    report.add(job.device, errors=1)
                    log_event(log, "object_replication.partition_failed", level=logging.WARNING,
                              device=job.device, partition=job.partition, error=repr(exc))

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)

    async def _jobs(self, ring) -> list[PartitionJob]:
        local = self.ctx.local

        def scan() -> list[tuple[str, Path, list[int]]]:
            return [(d, local.path(d), partitions(local.path(d), "object")) for d in local.mounted()]

        jobs: list[PartitionJob] = []
        for device, dev_path, parts in await trio.to_thread.run_sync(scan):
            for part in parts:
                if part >= ring.partition_count:
                    continue  # a directory that is not a partition of this ring
                primaries = ring.get_part_nodes(part)
                peers = [d for d in primaries if not local.is_me(d, device)]
                jobs.append(PartitionJob(device, dev_path, part, len(peers) == len(primaries), peers))
        jobs.sort(key=lambda j: not j.handoff)
        return jobs

    async def _replicate(self, ring, job: PartitionJob, report: PassReport) -> None:
        report.add(job.device, partitions=1, handoffs=int(job.handoff))
        # A handoff lists what it holds *before* hashing, so everything it may
        # later delete is covered by what the primaries were compared against.
        held = await trio.to_thread.run_sync(inventory, job.part_dir) if job.handoff else None
        hashes = await trio.to_thread.run_sync(get_hashes, job.part_dir)
        results: list[bool] = []

        async def with_peer(peer: dict[str, Any]) -> None:
            results.append(await self._sync_peer(ring, job, peer, hashes, held, report))

        async with trio.open_nursery() as nursery:
            for peer in job.peers:
                nursery.start_soon(with_peer, peer)
        if job.handoff and held is not None and all(results):
            removed = await trio.to_thread.run_sync(remove_reverted, job.part_dir, held)
            report.add(job.device, reverted=1, files_removed=removed)

    async def _sync_peer(self, ring, job: PartitionJob, peer: dict[str, Any],
                         hashes: dict[str, str], held: Inventory | None,
                         report: PassReport) -> bool:
        remote = await self._remote_hashes(peer, job.partition)
        if remote == 507 and not job.handoff:
            peer = self._stand_in(ring, job)
            remote = await self._remote_hashes(peer, job.partition) if peer else None
        if not isinstance(remote, dict):
            report.add(job.device, peer_errors=1)
            return False
        diff = sorted(s for s, h in hashes.items() if remote.get(s) != h)
        if not diff:
            return True
        if held is not None:
            offered = {h: names for h, names in held.items() if h[-3:] in diff}
        else:
            offered = await trio.to_thread.run_sync(inventory, job.part_dir, diff)
        report.add(job.device, suffixes_synced=len(diff))
        if not offered:
            return True
        want = await self._missing_check(peer, job.partition, offered)
        if want is None:
            report.add(job.device, peer_errors=1)
            return False
        ok = True
        for name_hash, names in want.items():
            for name in names:
                if name not in offered.get(name_hash, ()):
                    continue  # only ever push what we offered
                sent = await self._push(peer, job, name_hash, name)
                if sent is None:
                    ok = False
                    report.add(job.device, push_errors=1)
                else:
                    report.add(job.device, files_pushed=1, bytes_pushed=sent)
        return ok

    def _stand_in(self, ring, job: PartitionJob) -> dict[str, Any] | None:
        """The first handoff that is not this device, for a primary whose disk failed."""
        busy = {d["id"] for d in job.peers}
        for dev in ring.get_more_nodes(job.partition):
            if dev["id"] not in busy and not self.ctx.local.is_me(dev, job.device):
                return dev
        return None

    async def _remote_hashes(self, peer: dict[str, Any], part: int) -> dict[str, str] | int | None:
        """The peer's suffix hashes; its status if it refused; None if unreachable."""
        try:
            resp = await self.ctx.client.request("REPLICATE", peer["ip"], peer["port"],
                                                 f"/{peer['device']}/{part}",
                                                 timeouts=self.ctx.timeouts)
        except BackendError as exc:
            log_event(log, "object_replication.peer_unreachable", level=logging.WARNING,
                      peer=_name(peer), partition=part, error=str(exc))
            return None
        if resp.status != 200:
            log_event(log, "object_replication.peer_refused", level=logging.WARNING,
                      peer=_name(peer), partition=part, status=resp.status)
            return resp.status
        try:
            doc = json.loads(resp.body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    async def _missing_check(self, peer: dict[str, Any], part: int,
                             offered: Inventory) -> Inventory | None:
        try:
            resp = await self.ctx.client.request(
                "POST", peer["ip"], peer["port"], f"/replication/objects/{peer['device']}/{part}",
                [("Content-Type", "application/json")], json.dumps(offered).encode(),
                timeouts=self.ctx.timeouts)
            if resp.status != 200:
                raise BackendError(f"missing check answered {resp.status}: {resp.body[:200]!r}")
            want = json.loads(resp.body)
        except (BackendError, ValueError) as exc:
            log_event(log, "object_replication.missing_check_failed", level=logging.WARNING,
                      peer=_name(peer), partition=part, error=str(exc))
            return None
        return want if isinstance(want, dict) else None

    async def _push(self, peer: dict[str, Any], job: PartitionJob, name_hash: str,
                    name: str) -> int | None:
        """Stream one file to the peer; bytes sent, or None if it failed."""
        path = job.part_dir / name_hash[-3:] / name_hash / name
        try:
            fd, meta, size = await trio.to_thread.run_sync(_open_file, path)
        except FileNotFoundError:
            return 0  # replaced by something newer since the inventory: next pass
        except DiskFileError as exc:
            log_event(log, "object_replication.unreadable", level=logging.WARNING,
                      path=str(path), error=str(exc))
            return None
        target = f"/replication/objects/{peer['device']}/{job.partition}/{name_hash}/{name}"
        headers = [("X-Replication-Metadata-Length", str(len(meta))),
                   ("Content-Type", "application/octet-stream")]
        try:
            for fresh in (False, True):
                try:
                    status = await self._send(peer, target, headers, meta, fd, size, fresh)
                    break
                except StaleConnection:
                    if fresh:
                        raise
        except (BackendError, OSError) as exc:
            log_event(log, "object_replication.push_failed", level=logging.WARNING,
                      peer=_name(peer), file=name, error=str(exc))
            return None
        finally:
            os.close(fd)
        if status == 409:
            return 0  # the peer got it (or something newer) meanwhile
        if status != 201:
            log_event(log, "object_replication.push_refused", level=logging.WARNING,
                      peer=_name(peer), file=name, status=status)
            return None
        return size

    async def _send(self, peer: dict[str, Any], target: str, headers: list[tuple[str, str]],
                    meta: bytes, fd: int, size: int, fresh: bool) -> int:
        async with self.ctx.client.exchange(peer["ip"], peer["port"], timeouts=self.ctx.timeouts,
                                            fresh=fresh) as ex:
            early = await ex.start("PUT", target, headers, content_length=len(meta) + size,
                                   expect_continue=True)
            if early is not None:
                await early.read(1 << 16)
                return early.status
            await ex.send(meta)
            pos = 0
            while pos < size:
                n = min(PUSH_CHUNK, size - pos)
                await self.limiter.consume(n)
                chunk = await trio.to_thread.run_sync(os.pread, fd, n, pos)
                if not chunk:
                    raise OSError(f"{target}: file shrank while being pushed")
                await ex.send(chunk)
                pos += len(chunk)
            resp = await ex.finish()
            await resp.read(1 << 16)
            return resp.status


def _open_file(path: Path) -> tuple[int, bytes, int]:
    """An open descriptor, the metadata to push and the size of one object file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        meta = json.dumps(read_metadata(path, fd), separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
        return fd, meta, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


def _name(peer: dict[str, Any]) -> str:
    return f"{peer['ip']}:{peer['port']}/{peer['device']}"
