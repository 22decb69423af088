"""Identity records on the ring: JSON objects in the system account ``.identity``.

Layout (one container per kind, one object per record)::

    .identity/domains/<domain id>          {"id", "name", "enabled", "description"}
    .identity/projects/<project id>        {..., "domain_id", "parent_id", "is_domain"}
    .identity/users/<user id>              {..., "domain_id", "password": "scrypt$...", ...}
    .identity/roles/<role id>              {"id", "name", "domain_id": null}
    .identity/credentials/<credential id>  {"id", "type": "ec2", "user_id", "project_id", "blob"}
    .identity/app_creds/<id>               application credentials (secret hashed)
    .identity/names/<kind>/<scope>/<name>  {"id"}: name -> id, unique per domain
    .identity/assignments/user/<user id>/<project|domain>/<target id>/<role id>   (empty)
    .identity/revoked/<kind>/<key>/<issued before>                              (empty)

Assignments and revocation events carry all their data in the object
*name*, so one container listing (with a prefix) answers "which roles has
this user" or "which tokens are revoked" without reading any object.

The records are ordinary replicated objects: written with quorum through
the :class:`ClusterClient`, readable from any node, surviving lost nodes.
There is no cross-object transaction: name uniqueness is checked before a
write (two nodes racing to create the same name both win the check, and the
last index write wins), which is the price of having no central database.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.http_client import BackendError
from node.log import log_event

log = logging.getLogger("peerstack.identity")

ACCOUNT = ".identity"
KINDS = ("domains", "projects", "users", "roles", "credentials", "app_creds", "names",
         "assignments", "revoked")
#: concurrent record reads when listing a kind
FETCH_CONCURRENCY = 16
LISTING_PAGE = 10000


class StoreUnavailable(Exception):
    """The ring did not answer well enough to read or write identity data."""


def new_id() -> str:
    """Keystone's id shape: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def stable_id(cluster_id: str, *parts: str) -> str:
    """A deterministic id, the same on every node (for the bootstrap records)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "peerstack:" + cluster_id + ":" + "/".join(parts)).hex


class IdentityStore:
    """Read and write identity records through the cluster client."""

    def __init__(self, cc: ClusterClient) -> None:
        self.cc = cc
        self._containers: set[str] = set()

    async def _container(self, kind: str) -> None:
        if kind in self._containers:
            return
        resp = await self.cc.put_container(ACCOUNT, kind)
        if resp.status // 100 != 2:
            raise StoreUnavailable(f"cannot create {ACCOUNT}/{kind}: {resp.status}")
        self._containers.add(kind)

    async def get(self, kind: str, rid: str) -> dict[str, Any] | None:
        """One record, or ``None`` if it does not exist (or was deleted)."""
        if not rid:
            return None
        try:
            async with self.cc.get_object(ACCOUNT, kind, rid) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise StoreUnavailable(f"GET {kind}/{rid}: {resp.status}")
                data = b"".join([chunk async for chunk in resp])
        except BackendError as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            doc = json.loads(data)
        except ValueError:
            log_event(log, "identity.bad_record", kind=kind, id=rid)
            return None
        return doc if isinstance(doc, dict) else None

    async def exists(self, kind: str, rid: str) -> tuple[bool, bool]:
        """``(exists, was_deleted)``: a tombstone tells "deleted" from "never was"."""
        resp = await self.cc.head_object(ACCOUNT, kind, rid, newest=True)
        if resp.status // 100 == 2:
            return True, False
        if resp.status == 404:
            return False, bool(resp.headers.get("x-backend-timestamp"))
        raise StoreUnavailable(f"HEAD {kind}/{rid}: {resp.status}")

    async def put(self, kind: str, rid: str, doc: dict[str, Any] | None = None, *,
                  delete_at: float | None = None) -> None:
        """Write a record (``None``: an empty marker object), optionally expiring at ``delete_at``."""
        await self._container(kind)
        body = b"" if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if delete_at is not None:
            headers["X-Delete-At"] = str(int(delete_at))
        try:
            status, _ = await self.cc.put_object(ACCOUNT, kind, rid, headers, body, len(body))
        except BackendError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if status // 100 != 2:
            raise StoreUnavailable(f"PUT {kind}/{rid}: {status}")

    async def delete(self, kind: str, rid: str) -> None:
        resp = await self.cc.delete_object(ACCOUNT, kind, rid)
        if resp.status // 100 != 2 and resp.status != 404:
            raise StoreUnavailable(f"DELETE {kind}/{rid}: {resp.status}")

    async def names(self, kind: str, prefix: str = "") -> list[str]:
        """Object names of a kind (all pages), optionally under ``prefix``."""
        out: list[str] = []
        marker = ""
        while True:
            query = {"format": "json", "limit": str(LISTING_PAGE)}
            if prefix:
                query["prefix"] = prefix
            if marker:
                query["marker"] = marker
            resp = await self.cc.get_container(ACCOUNT, kind, query)
            if resp.status == 404:
                return out
            if resp.status // 100 != 2:
                raise StoreUnavailable(f"list {kind}: {resp.status}")
            try:
                page = [row["name"] for row in json.loads(resp.body or b"[]")]
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreUnavailable(f"list {kind}: bad listing") from exc
            out += page
            if len(page) < LISTING_PAGE:
                return out
            marker = page[-1]

    async def list(self, kind: str) -> list[dict[str, Any]]:
        """Every record of a kind, read concurrently."""
        ids = await self.names(kind)
        found: dict[str, dict[str, Any]] = {}
        limit = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def fetch(rid: str) -> None:
            async with limit:
                doc = await self.get(kind, rid)
            if doc is not None:
                found[rid] = doc

        async with trio.open_nursery() as nursery:
            for rid in ids:
                nursery.start_soon(fetch, rid)
        return [found[rid] for rid in ids if rid in found]

    # -- names -----------------------------------------------------------------

    @staticmethod
    def _name_key(kind: str, scope: str, name: str) -> str:
        return f"{kind}/{scope}/{name}"

    async def id_by_name(self, kind: str, scope: str, name: str) -> str | None:
        doc = await self.get("names", self._name_key(kind, scope, name))
        return doc.get("id") if doc else None

    async def set_name(self, kind: str, scope: str, name: str, rid: str) -> None:
        await self.put("names", self._name_key(kind, scope, name), {"id": rid})

    async def drop_name(self, kind: str, scope: str, name: str) -> None:
        await self.delete("names", self._name_key(kind, scope, name))
