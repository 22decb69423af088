"""What every identity API handler shares: the call, links, shapes and the policy check.

A handler gets a :class:`Call` (the request, the caller's token payload and
identity, the base URL for links) and returns ``(status, body)`` or a full
:class:`Response`.  The handler groups (:mod:`~proxy.identity.api_tokens`,
:mod:`~proxy.identity.api_resources`, :mod:`~proxy.identity.api_credentials`)
derive from :class:`Handlers`; :class:`proxy.identity.api.IdentityAPI`
combines them and routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from node.http_server import Request, Response
from proxy.auth import Identity
from proxy.identity import validate as v
from proxy.identity.catalog import Catalog
from proxy.identity.errors import bad_request, forbidden
from proxy.identity.policy import enforce
from proxy.identity.service import IdentityService
from proxy.identity.tokens import TokenPayload

MAX_BODY = 64 << 10
#: fields of a user or project a client may not set directly
RESERVED = frozenset({"id", "links", "password", "domain_id", "enabled", "name", "is_domain", "parent_id"})

Result = tuple[int, Any] | Response


def iso(ts: float | None) -> str | None:
    """Keystone's timestamp shape: ``2026-11-28T10:41:58.000000Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Call:
    request: Request
    base: str
    params: dict[str, str]
    token: TokenPayload | None = None
    caller: Identity | None = None
    _body: dict[str, Any] | None = None

    @property
    def query(self) -> dict[str, str]:
        return self.request.query

    async def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = v.parse_json(await self.request.read_body(MAX_BODY))
        return self._body

    def link(self, path: str) -> dict[str, Any]:
        return {"self": self.base + path}

    def collection_links(self, path: str) -> dict[str, Any]:
        return {"self": self.base + path, "previous": None, "next": None}


class Handlers:
    """State and helpers of the identity handlers."""

    def __init__(self, service: IdentityService, catalog: Catalog) -> None:
        self.svc = service
        self.catalog = catalog

    @staticmethod
    def _allow(call: Call, action: str, *, project_id: str | None = None, user_id: str | None = None) -> None:
        if not enforce(call.caller, action, project_id=project_id, user_id=user_id):
            raise forbidden()

    # -- shapes --------------------------------------------------------------------

    async def _domain_name(self, domain_id: str | None, cache: dict[str, str]) -> str | None:
        """A domain's name (``cache`` spares repeated reads within one response)."""
        if domain_id is None:
            return None
        if domain_id not in cache:
            doc = await self.svc.store.get("domains", domain_id)
            cache[domain_id] = doc["name"] if doc else domain_id
        return cache[domain_id]

    @staticmethod
    def _filter(docs: list[dict[str, Any]], query: dict[str, str], fields: tuple[str, ...]) -> list[dict[str, Any]]:
        for field in fields:
            if field in query:
                want: Any = query[field]
                if field == "enabled":
                    want = want.lower() not in ("false", "0", "no")
                docs = [d for d in docs if d.get(field, True if field == "enabled" else None) == want]
        return sorted(docs, key=lambda d: (d.get("name") or "", d["id"]))

    def _domain(self, call: Call, d: dict[str, Any]) -> dict[str, Any]:
        return {"id": d["id"], "name": d["name"], "description": d.get("description"),
                "enabled": d.get("enabled", True), "tags": d.get("tags", []), "options": {},
                "links": call.link(f"/domains/{d['id']}")}

    def _project(self, call: Call, p: dict[str, Any]) -> dict[str, Any]:
        extra = {k: val for k, val in p.items() if k not in RESERVED and k != "description"}
        return {**extra, "id": p["id"], "name": p["name"], "domain_id": p["domain_id"],
                "description": p.get("description"), "enabled": p.get("enabled", True),
                "parent_id": p.get("parent_id", p["domain_id"]), "is_domain": False,
                "tags": p.get("tags", []), "options": {}, "links": call.link(f"/projects/{p['id']}")}

    def _user(self, call: Call, u: dict[str, Any]) -> dict[str, Any]:
        extra = {k: val for k, val in u.items() if k not in RESERVED}
        return {**extra, "id": u["id"], "name": u["name"], "domain_id": u["domain_id"],
                "enabled": u.get("enabled", True), "password_expires_at": None, "options": {},
                "links": call.link(f"/users/{u['id']}")}

    def _role(self, call: Call, r: dict[str, Any]) -> dict[str, Any]:
        return {"id": r["id"], "name": r["name"], "domain_id": r.get("domain_id"),
                "description": r.get("description"), "options": {}, "links": call.link(f"/roles/{r['id']}")}

    @staticmethod
    def _extras(spec: dict[str, Any]) -> dict[str, Any]:
        """Extra attributes Keystone keeps as given (``email``, custom keys): JSON scalars only."""
        out = {}
        for key, value in spec.items():
            if key in RESERVED or key in ("description", "tags", "options", "default_project_id"):
                continue
            if not isinstance(key, str) or len(key) > 64:
                raise bad_request("Invalid attribute name.")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise bad_request(f"Invalid input for field '{key}'.")
            if isinstance(value, str) and len(value) > 4096:
                raise bad_request(f"Invalid input for field '{key}': too long.")
            out[key] = value
        return out

    @staticmethod
    def _tags(value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > 80:
            raise bad_request("Invalid input for field 'tags'.")
        return [v.name(tag, "tags", 255) for tag in value]

