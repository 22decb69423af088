"""Volume and snapshot records in the ring, and calls to the agent that holds a volume.

Records are JSON objects (:class:`proxy.compute_records.JsonRecords`) in the
``.volumes`` account: ``volumes/<id>`` and ``snapshots/<id>``, written by
the proxy that handles the request (unlike servers, a volume's agent never
writes its record: each volume operation is one synchronous agent call,
and the proxy records the outcome).  A volume record names its node
(``host``) and that node's internal address (``agent``).  The snapshot's
data lives elsewhere: chunks and manifest in ``.snapshots`` (see
:mod:`compute_agent.volumes`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from node.cluster_client import ClusterClient
from node.daemon import Node
from node.http_client import BackendError, Timeouts
from node.log import log_event
from proxy.auth import Identity
from proxy.compute_http import APIError
from proxy.compute_records import JsonRecords

log = logging.getLogger("peerstack.proxy.volumes")

ACCOUNT = ".volumes"
#: attach, detach, delete, extend: quick calls
QUICK_TIMEOUTS = Timeouts(connect=2.0, node=60.0)
#: create (restore, image copy) and snapshot read whole volumes
LONG_TIMEOUTS = Timeouts(connect=2.0, node=1800.0)
GiB = 1 << 30


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime())


def valid_uuid(value: Any) -> bool:
    try:
        return str(uuid.UUID(str(value))) == str(value)
    except ValueError:
        return False


class VolumeStore:
    """The records, visibility rules, and the agent RPC shared by the volume APIs."""

    def __init__(self, node: Node, cc: ClusterClient) -> None:
        self.node = node
        self.cc = cc
        self.volumes = JsonRecords(cc, ACCOUNT, "volumes")
        self.snapshots = JsonRecords(cc, ACCOUNT, "snapshots")
        self.quotas = JsonRecords(cc, ACCOUNT, "quotas")

    async def volume(self, volume_id: str, identity: Identity) -> dict[str, Any]:
        """The caller's volume, else Cinder's ``404``."""
        record = await self.volumes.get(volume_id) if valid_uuid(volume_id) else None
        if record is None or not (identity.cluster_admin or record.get("project_id") == identity.project_id):
            raise APIError(404, f"Volume {volume_id} could not be found.")
        return record

    async def snapshot(self, snapshot_id: str, identity: Identity) -> dict[str, Any]:
        record = await self.snapshots.get(snapshot_id) if valid_uuid(snapshot_id) else None
        if record is None or not (identity.cluster_admin or record.get("project_id") == identity.project_id):
            raise APIError(404, f"Snapshot {snapshot_id} could not be found.")
        return record

    async def project_records(self, records: JsonRecords, project_id: str | None) -> list[dict[str, Any]]:
        """Every record of ``project_id`` (all of them for ``None``)."""
        return [r for r in await records.all() if project_id is None or r.get("project_id") == project_id]

    async def save_volume(self, record: dict[str, Any], **changes: Any) -> None:
        record.update(changes, updated_at=now_iso())
        await self.volumes.put(record["id"], record)

    async def save_snapshot(self, record: dict[str, Any], **changes: Any) -> None:
        record.update(changes, updated_at=now_iso())
        await self.snapshots.put(record["id"], record)

    async def agent(self, agent: str | None, method: str, target: str, doc: Any = None,
                    timeouts: Timeouts = QUICK_TIMEOUTS) -> tuple[int, dict[str, Any]]:
        """One call to a node's agent: ``(status, answer)``; ``(503, ...)`` if unreachable."""
        host, _, port = str(agent or "").rpartition(":")
        if not host or not port.isdigit():
            return 503, {"error": "the volume has no host"}
        body = json.dumps(doc).encode() if doc is not None else b""
        try:
            resp = await self.node.client.request(method, host, int(port), target,
                                                  [("Content-Type", "application/json")], body,
                                                  timeouts=timeouts)
        except BackendError as exc:
            log_event(log, "volume.agent_unreachable", agent=agent, target=target, error=str(exc))
            return 503, {"error": f"the volume's node {agent} cannot be reached"}
        try:
            answer = json.loads(resp.body or b"{}")
        except ValueError:
            answer = {"error": resp.body[:200].decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {}
