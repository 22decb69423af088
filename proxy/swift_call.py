"""One Swift API request after routing: who asks, for what, with which tools.

Handlers get a :class:`SwiftCall` instead of a bare request so they share
the parsed path, the caller's identity and the per-process caches without
passing half a dozen arguments around.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from node.cluster_client import ClusterClient, ClusterResponse
from node.http_server import Request
from proxy.auth import Identity


class ContainerInfoCache:
    """Container HEADs remembered for a few seconds, per process.

    Object requests need the container's existence, ACLs and tempurl keys;
    asking the container ring on every object PUT would double the backend
    work.  Entries live ``ttl`` seconds and are dropped at once when this
    process changes the container; another node's change is seen within
    ``ttl`` (Swift's memcached container info lags the same way, for longer).
    """

    def __init__(self, ttl: float = 3.0, max_entries: int = 10000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, ClusterResponse]] = {}

    async def get(self, cc: ClusterClient, account: str, container: str) -> ClusterResponse:
        key = (account, container)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        resp = await cc.head_container(account, container)
        if 200 <= resp.status < 300:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, resp)
        else:
            self._entries.pop(key, None)
        return resp

    def forget(self, account: str, container: str) -> None:
        self._entries.pop((account, container), None)


@dataclass
class SwiftCall:
    request: Request
    cc: ClusterClient
    containers: ContainerInfoCache
    identity: Identity | None
    account: str
    container: str | None = None
    obj: str | None = None
    #: the object path a valid temp URL signature granted (then no token is needed)
    tempurl: bool = False
    #: set by authorization: the caller has the owner's rights on this account
    owner: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def query(self) -> dict[str, str]:
        return self.request.query

    @property
    def rid(self) -> str:
        return self.request.request_id
