"""Snapshot jobs: taking one (on the volume's node) and deleting one (here).

Taking a snapshot is the agent's work (:meth:`compute_agent.volumes.VolumeAgent.snapshot`);
the record goes ``creating`` -> ``available`` (or ``error``).

Deleting removes the manifest first, then every chunk it named that no
other manifest names.  The reference check scans the remaining manifests
(one GET each, a few at a time): no reference index to keep consistent
across proxies, at the cost of reading every manifest per delete -- fine
for the tens to thousands of snapshots of a small cloud.  A delete that
finds another snapshot still ``creating`` removes no chunks at all (that
snapshot may be about to reuse one it already found present); chunks it
leaves that no manifest names stay as garbage (there is no sweeper yet),
never as a gap in a snapshot.  A snapshot that starts after that
check is covered on its side: once its manifest is stored, it checks every
chunk again and re-sends any that a delete removed meanwhile.  What is
left is a snapshot that starts *and* finishes while a delete is removing
chunks (between one chunk's last check and its removal): not closed.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from compute_agent.volumes import CHUNKS, MANIFESTS, SNAPSHOT_ACCOUNT
from node.http_client import BackendError
from node.log import log_event
from proxy.compute_records import JsonRecords, StoreError
from proxy.volumes_store import LONG_TIMEOUTS, VolumeStore

log = logging.getLogger("peerstack.proxy.volumes")


class SnapshotJobs:
    def __init__(self, store: VolumeStore) -> None:
        self.store = store
        self.manifests = JsonRecords(store.cc, SNAPSHOT_ACCOUNT, MANIFESTS)

    async def take(self, snapshot: dict[str, Any], volume: dict[str, Any]) -> None:
        """Have the volume's agent store the snapshot; record the outcome."""
        server_id = next((a["server_id"] for a in volume.get("attachments") or []), None)
        status, answer = await self.store.agent(
            volume.get("agent"), "POST", f"/compute/volumes/{volume['id']}/snapshot",
            {"snapshot_id": snapshot["id"], "server_id": server_id}, timeouts=LONG_TIMEOUTS)
        try:
            if status == 200:
                await self.store.save_snapshot(snapshot, status="available", progress="100%",
                                               stored={k: answer.get(k) for k in (
                                                   "chunks", "chunks_stored", "bytes_stored", "seconds")})
            else:
                log_event(log, "volume.snapshot_failed", snapshot=snapshot["id"], status=status,
                          error=answer.get("error"))
                await self.store.save_snapshot(snapshot, status="error")
        except (StoreError, BackendError) as exc:
            log_event(log, "volume.snapshot_record_failed", snapshot=snapshot["id"], error=str(exc))

    async def delete(self, snapshot: dict[str, Any]) -> None:
        """Manifest, unreferenced chunks, then the record (``error_deleting`` on failure)."""
        sid = snapshot["id"]
        try:
            mine = await self.manifests.get(sid)
            await self.manifests.delete(sid)
            removed = 0
            if mine is not None and isinstance(mine.get("chunks"), dict):
                removed = await self._collect(set(mine["chunks"].values()), sid)
            await self.store.snapshots.delete(sid)
            log_event(log, "volume.snapshot_deleted", snapshot=sid, chunks_removed=removed)
        except (StoreError, BackendError, ValueError) as exc:
            log_event(log, "volume.snapshot_delete_failed", snapshot=sid, error=str(exc))
            try:
                await self.store.save_snapshot(snapshot, status="error_deleting")
            except (StoreError, BackendError):
                pass

    async def _collect(self, candidates: set[str], deleted: str) -> int:
        """Remove the chunks in ``candidates`` that no other manifest uses; how many went."""
        if any(r.get("status") == "creating" for r in await self.store.snapshots.all()):
            return 0
        others = [n for n in await self.manifests.names() if n != deleted]
        for manifest in await self.manifests.get_many(others):
            candidates -= set((manifest.get("chunks") or {}).values())
        removed = 0
        limiter = trio.CapacityLimiter(8)

        async def drop(digest: str) -> None:
            nonlocal removed
            async with limiter:
                resp = await self.store.cc.delete_object(SNAPSHOT_ACCOUNT, CHUNKS, digest)
            if resp.status // 100 == 2:
                removed += 1

        async with trio.open_nursery() as nursery:
            for digest in candidates:
                nursery.start_soon(drop, digest)
        return removed

