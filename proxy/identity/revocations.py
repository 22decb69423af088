"""Revocation events, replicated through the ring and mirrored in every node's memory.

Revoking writes one empty object ``.identity/revoked/<kind>/<key>/<time>``
(the event is its name) and applies the event locally at once.  Every node
lists that container every :data:`SYNC_INTERVAL` seconds and merges what it
finds into its :class:`RevocationList`, so a token revoked on one node is
refused by all within about a second, while validating a token never waits
for the ring.  Events expire (``X-Delete-At``) once no token they could
match can still be alive.
"""

from __future__ import annotations

import logging
import time

import trio

from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.log import log_event
from proxy.identity.store import IdentityStore, StoreUnavailable
from proxy.identity.tokens import KEY_PERIOD, RevocationList

log = logging.getLogger("peerstack.identity.revocations")

SYNC_INTERVAL = 1.0
#: events outlive the longest token by this much (clock skew between nodes)
RETENTION = KEY_PERIOD + 600
KINDS = frozenset({"audit", "user", "project", "domain", "grant", "role", "appcred"})


def event_name(kind: str, key: str, issued_before: float) -> str:
    return f"{kind}/{key}/{issued_before:.6f}"


def parse_event(name: str) -> tuple[str, str, float] | None:
    parts = name.split("/")
    if len(parts) != 3 or parts[0] not in KINDS:
        return None
    try:
        return parts[0], parts[1], float(parts[2])
    except ValueError:
        return None


class RevocationSync:
    """Publish revocation events and keep this node's list in step with the ring."""

    def __init__(self, store: IdentityStore, revocations: RevocationList,
                 interval: float = SYNC_INTERVAL) -> None:
        self.store = store
        self.revocations = revocations
        self.interval = interval
        #: completed syncs with the ring (tests wait on it)
        self.synced = 0

    async def publish(self, kind: str, key: str, issued_before: float | None = None) -> None:
        """Revoke now: locally at once, on every node within ``interval``."""
        at = time.time() if issued_before is None else issued_before
        self.revocations.add(kind, key, at)
        await self.store.put("revoked", event_name(kind, key, at), delete_at=at + RETENTION)

    async def sync_once(self) -> None:
        names = await self.store.names("revoked")
        for name in names:
            event = parse_event(name)
            if event is not None:
                self.revocations.add(*event)
        self.revocations.prune(time.time() - RETENTION)
        self.synced += 1

    async def run(self) -> None:
        """The background service: sync forever; a sick ring only delays it."""
        while True:
            try:
                await self.sync_once()
            except (StoreUnavailable, BackendError, RingUnavailable) as exc:
                log_event(log, "identity.revocation_sync_failed", level=logging.WARNING, error=str(exc))
            await trio.sleep(self.interval)
