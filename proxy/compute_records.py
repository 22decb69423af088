"""Small JSON documents kept as objects in the ring (one container of them).

Images, servers, flavors and keypairs are all records of this kind: one
object per record, replicated and quorum-written like any object, listed by
the container.  Listing-then-fetching costs one GET per record, fetched a
few at a time; fine for the thousands of records a small cloud has.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from node.cluster_client import ClusterClient

MAX_RECORD_BYTES = 1 << 20
LIST_PAGE = 10000
FETCH_CONCURRENCY = 16


class StoreError(Exception):
    """The ring did not take (or give back) what was asked: a ``503`` for the client."""


class JsonRecords:
    """Records in ``account/container``, one JSON object each."""

    def __init__(self, cc: ClusterClient, account: str, container: str) -> None:
        self.cc = cc
        self.account = account
        self.container = container
        self._container_ok = False

    async def ensure_container(self) -> None:
        if self._container_ok:
            return
        resp = await self.cc.put_container(self.account, self.container)
        if resp.status // 100 != 2:
            raise StoreError(f"cannot create {self.account}/{self.container}: {resp.status}")
        self._container_ok = True

    async def get(self, name: str) -> dict[str, Any] | None:
        """The record, or ``None`` if there is none (or it is not a JSON object)."""
        async with self.cc.get_object(self.account, self.container, name) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise StoreError(f"{self.container}/{name}: {resp.status}")
            raw = bytearray()
            async for chunk in resp:
                raw += chunk
                if len(raw) > MAX_RECORD_BYTES:
                    raise StoreError(f"{self.container}/{name} is too large")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{self.container}/{name} is not JSON") from None
        return doc if isinstance(doc, dict) else None

    async def put(self, name: str, record: dict[str, Any]) -> None:
        await self.ensure_container()
        body = json.dumps(record, separators=(",", ":")).encode()
        status, _ = await self.cc.put_object(self.account, self.container, name,
                                             [("Content-Type", "application/json")], body, len(body))
        if status // 100 != 2:
            raise StoreError(f"cannot store {self.container}/{name}: {status}")

    async def delete(self, name: str) -> None:
        resp = await self.cc.delete_object(self.account, self.container, name)
        if resp.status // 100 != 2 and resp.status != 404:
            raise StoreError(f"cannot delete {self.container}/{name}: {resp.status}")

    async def names(self, prefix: str = "") -> list[str]:
        """Every record name (with ``prefix``), one listing request per 10k."""
        names: list[str] = []
        marker = ""
        while True:
            query = {"format": "json", "marker": marker, "limit": str(LIST_PAGE)}
            if prefix:
                query["prefix"] = prefix
            resp = await self.cc.get_container(self.account, self.container, query)
            if resp.status == 404:
                return names
            if resp.status // 100 != 2:
                raise StoreError(f"cannot list {self.container}: {resp.status}")
            page = [row["name"] for row in json.loads(resp.body or b"[]")]
            names += page
            if len(page) < LIST_PAGE:
                return names
            marker = page[-1]

    async def get_many(self, names: list[str]) -> list[dict[str, Any]]:
        """Records of ``names`` in that order (missing ones skipped)."""
        found: dict[str, dict[str, Any]] = {}
        limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def one(name: str) -> None:
            async with limiter:
                record = await self.get(name)
            if record is not None:
                found[name] = record

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        return [found[n] for n in names if n in found]

    async def all(self, prefix: str = "") -> list[dict[str, Any]]:
        return await self.get_many(await self.names(prefix))
