"""Per-project volume quotas: ``volumes``, ``gigabytes``, ``snapshots`` (Cinder's names).

Limits are the defaults below unless an admin set others
(``PUT /os-quota-sets/<project>``, stored as ``.volumes/quotas/<project>``);
``-1`` means unlimited.  Usage is counted from the project's records at
the time of the request (snapshots count their size in ``gigabytes``, as
Cinder does), so two creates racing on two proxies can both pass the check:
the limit is a guard against mistakes, not an accounting system.
"""

from __future__ import annotations

from typing import Any

from proxy.compute_http import APIError
from proxy.volumes_store import VolumeStore

DEFAULTS = {"volumes": 10, "gigabytes": 1000, "snapshots": 10}


class Quotas:
    def __init__(self, store: VolumeStore) -> None:
        self.store = store

    async def limits(self, project_id: str) -> dict[str, int]:
        stored = await self.store.quotas.get(project_id) or {}
        return {k: int(stored.get(k, v)) for k, v in DEFAULTS.items()}

    async def usage(self, project_id: str) -> dict[str, int]:
        volumes = await self.store.project_records(self.store.volumes, project_id)
        snapshots = await self.store.project_records(self.store.snapshots, project_id)
        return {"volumes": len(volumes), "snapshots": len(snapshots),
                "gigabytes": sum(int(r.get("size", 0)) for r in volumes + snapshots)}

    async def check(self, project_id: str, **wanted: int) -> None:
        """Raise Cinder's ``413 overLimit`` if adding ``wanted`` breaks a limit."""
        limits, used = await self.limits(project_id), await self.usage(project_id)
        gigabytes = wanted.get("gigabytes", 0)
        if gigabytes and limits["gigabytes"] >= 0 and used["gigabytes"] + gigabytes > limits["gigabytes"]:
            raise APIError(413, f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot "
                                f"exceeds allowed gigabytes quota. Requested {gigabytes}G, quota is "
                                f"{limits['gigabytes']}G and {used['gigabytes']}G has been consumed.")
        if wanted.get("volumes") and 0 <= limits["volumes"] < used["volumes"] + wanted["volumes"]:
            raise APIError(413, f"VolumeLimitExceeded: Maximum number of volumes allowed "
                                f"({limits['volumes']}) exceeded for quota 'volumes'.")
        if wanted.get("snapshots") and 0 <= limits["snapshots"] < used["snapshots"] + wanted["snapshots"]:
            raise APIError(413, f"SnapshotLimitExceeded: Maximum number of snapshots allowed "
                                f"({limits['snapshots']}) exceeded.")

    async def show(self, project_id: str, usage: bool) -> dict[str, Any]:
        limits = await self.limits(project_id)
        if not usage:
            return {"id": project_id, **limits}
        used = await self.usage(project_id)
        return {"id": project_id, **{k: {"limit": v, "in_use": used[k], "reserved": 0, "allocated": 0}
                                     for k, v in limits.items()}}

    async def update(self, project_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        limits = await self.limits(project_id)
        for key, value in doc.items():
            if key not in DEFAULTS:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise APIError(400, f"Invalid input for field/attribute {key}.")
            limits[key] = value
        await self.store.quotas.put(project_id, {"project_id": project_id, **limits})
        return {"id": project_id, **limits}
