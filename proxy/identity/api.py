"""The Keystone v3 HTTP API on the public port: ``/v3/...`` and ``/identity/v3/...``.

Routes are a table of ``(methods, pattern, handler)``; each handler reads a
:class:`Call` (the request, the caller's token payload and identity, the
base URL for links) and returns ``(status, body)`` or a full response.
Every refusal is an :class:`IdentityError` rendered in Keystone's JSON
error shape; a ring in trouble is ``503``; nothing a client sends makes a
``500``.  Authorization is :func:`proxy.identity.policy.enforce` with the
rule names Keystone uses.

``GET /`` and ``GET /identity`` answer the version list and ``GET /v3`` the
version document, which is all keystoneauth's discovery needs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.http_server import BadRequest, Request, Response
from node.log import log_event
from proxy.auth import Identity
from proxy.identity import validate as v
from proxy.identity.catalog import REGION, Catalog
from proxy.identity.errors import (IdentityError, bad_request, error_response, forbidden, not_found,
                                   unauthorized)
from proxy.identity.policy import enforce
from proxy.identity.service import DEFAULT_DOMAIN_ID, GLOBAL, IdentityService, ec2_credential_id
from proxy.identity.store import StoreUnavailable, new_id
from proxy.identity.tokens import TokenPayload

log = logging.getLogger("peerstack.identity.api")

PREFIXES = ("/identity/v3", "/v3")
VERSION_ROOTS = frozenset({"/", "/identity", "/identity/"})
MAX_BODY = 64 << 10
API_VERSION = "v3.14"
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


Handler = Callable[[Call], Awaitable[Result]]


class IdentityAPI:
    """``async def __call__(request) -> Response`` for the identity API."""

    def __init__(self, service: IdentityService, catalog: Catalog) -> None:
        self.svc = service
        self.catalog = catalog
        self.routes: list[tuple[frozenset[str], re.Pattern[str], Handler, bool]] = []
        r = self._route
        r("GET HEAD", "", self.version, token=False)
        r("POST", "/auth/tokens", self.issue_token, token=False)
        r("GET HEAD", "/auth/tokens", self.check_token)
        r("DELETE", "/auth/tokens", self.revoke_token)
        r("GET HEAD", "/auth/catalog", self.auth_catalog)
        r("GET HEAD", "/auth/projects", self.auth_projects)
        r("GET HEAD", "/auth/domains", self.auth_domains)
        r("GET HEAD", "/domains", self.list_domains)
        r("POST", "/domains", self.create_domain)
        r("GET HEAD", "/domains/{id}", self.get_domain)
        r("PATCH", "/domains/{id}", self.update_domain)
        r("DELETE", "/domains/{id}", self.delete_domain)
        r("GET HEAD", "/projects", self.list_projects)
        r("POST", "/projects", self.create_project)
        r("GET HEAD", "/projects/{id}", self.get_project)
        r("PATCH", "/projects/{id}", self.update_project)
        r("DELETE", "/projects/{id}", self.delete_project)
        r("GET HEAD", "/users", self.list_users)
        r("POST", "/users", self.create_user)
        r("GET HEAD", "/users/{id}", self.get_user)
        r("PATCH", "/users/{id}", self.update_user)
        r("DELETE", "/users/{id}", self.delete_user)
        r("POST", "/users/{id}/password", self.change_password)
        r("GET HEAD", "/users/{id}/projects", self.user_projects)
        r("GET HEAD", "/users/{id}/credentials/OS-EC2", self.list_ec2)
        r("POST", "/users/{id}/credentials/OS-EC2", self.create_ec2)
        r("GET HEAD", "/users/{id}/credentials/OS-EC2/{access}", self.get_ec2)
        r("DELETE", "/users/{id}/credentials/OS-EC2/{access}", self.delete_ec2)
        r("GET HEAD", "/users/{id}/application_credentials", self.list_app_creds)
        r("POST", "/users/{id}/application_credentials", self.create_app_cred)
        r("GET HEAD", "/users/{id}/application_credentials/{cred}", self.get_app_cred)
        r("DELETE", "/users/{id}/application_credentials/{cred}", self.delete_app_cred)
        r("GET HEAD", "/roles", self.list_roles)
        r("POST", "/roles", self.create_role)
        r("GET HEAD", "/roles/{id}", self.get_role)
        r("PATCH", "/roles/{id}", self.update_role)
        r("DELETE", "/roles/{id}", self.delete_role)
        grants = "/(?P<kind>project|domain)s/{target}/users/{user}/roles"
        r("GET HEAD", grants, self.list_grants)
        r("PUT", grants + "/{role}", self.create_grant)
        r("GET HEAD", grants + "/{role}", self.check_grant)
        r("DELETE", grants + "/{role}", self.delete_grant)
        r("GET HEAD", "/role_assignments", self.list_assignments)
        r("GET HEAD", "/credentials", self.list_credentials)
        r("POST", "/credentials", self.create_credential)
        r("GET HEAD", "/credentials/{id}", self.get_credential)
        r("DELETE", "/credentials/{id}", self.delete_credential)
        r("GET HEAD", "/services", self.list_services)
        r("GET HEAD", "/endpoints", self.list_endpoints)
        r("GET HEAD", "/regions", self.list_regions)

    def _route(self, methods: str, template: str, handler: Handler, *, token: bool = True) -> None:
        """Add a route; ``{name}`` matches one path segment; ``token``: needs ``X-Auth-Token``."""
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append((frozenset(methods.split()), re.compile(f"^{pattern}/?$"), handler, token))

    @staticmethod
    def claims(path: str) -> bool:
        """Is ``path`` the identity API's (so the router sends it here)?"""
        return path in VERSION_ROOTS or any(path == p or path.startswith(p + "/") for p in PREFIXES)

    # -- dispatch ----------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except IdentityError as exc:
            return error_response(exc.status, exc.message)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except (StoreUnavailable, BackendError, RingUnavailable) as exc:
            log_event(log, "identity.unavailable", rid=request.request_id, error=str(exc))
            return error_response(503, "The identity store is unavailable; try again.")

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        host = request.headers.get("host") or "localhost"
        if path in VERSION_ROOTS:
            prefix = "/identity/v3" if path.startswith("/identity") else "/v3"
            body = {"versions": {"values": [self._version_doc(f"http://{host}{prefix}/")]}}
            return _json(300, body)
        prefix = next(p for p in PREFIXES if path == p or path.startswith(p + "/"))
        rest = path[len(prefix):]
        base = f"http://{host}{prefix}"
        matching = [(ms, m, h, t) for ms, p, h, t in self.routes if (m := p.match(rest)) is not None]
        if matching and not any(request.method in ms for ms, *_ in matching):
            allowed = sorted({m for ms, *_ in matching for m in ms})
            return error_response(405, f"The method {request.method} is not allowed here.",
                                  [("Allow", ", ".join(allowed))])
        for methods, match, handler, needs_token in matching:
            if request.method not in methods:
                continue
            call = Call(request, base, match.groupdict())
            if needs_token:
                self._authenticate(call)
                await self.svc.ready()
            result = await handler(call)
            if isinstance(result, Response):
                return result
            status, body = result
            return _json(status, body) if body is not None else Response(status, [("Vary", "X-Auth-Token")])
        raise not_found("resource", rest or "/")

    def _authenticate(self, call: Call) -> None:
        token = call.request.headers.get("x-auth-token")
        if not token:
            raise unauthorized()
        payload = self.svc.validate(token)
        if payload is None:
            raise unauthorized("The request you have made requires authentication: invalid or expired token.")
        call.token = payload
        call.caller = self.svc.identity_of(payload)

    @staticmethod
    def _allow(call: Call, action: str, *, project_id: str | None = None, user_id: str | None = None) -> None:
        if not enforce(call.caller, action, project_id=project_id, user_id=user_id):
            raise forbidden()

    def _version_doc(self, href: str) -> dict[str, Any]:
        return {"id": API_VERSION, "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": href}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.identity-v3+json"}]}

    async def version(self, call: Call) -> Result:
        return 200, {"version": self._version_doc(call.base + "/")}

    # -- tokens ------------------------------------------------------------------

    async def _domain_name(self, domain_id: str | None, cache: dict[str, str]) -> str | None:
        if domain_id is None:
            return None
        if domain_id not in cache:
            doc = await self.svc.store.get("domains", domain_id)
            cache[domain_id] = doc["name"] if doc else domain_id
        return cache[domain_id]

    async def token_body(self, p: TokenPayload, *, with_catalog: bool) -> dict[str, Any]:
        names: dict[str, str] = {}
        token: dict[str, Any] = {
            "methods": list(p.methods), "audit_ids": list(p.audit_ids),
            "expires_at": iso(p.expires_at), "issued_at": iso(p.issued_at),
            "user": {"id": p.user_id, "name": p.user_name, "password_expires_at": None,
                     "domain": {"id": p.user_domain_id,
                                "name": await self._domain_name(p.user_domain_id, names)}},
        }
        if p.project_id is not None or p.domain_id is not None:
            token["roles"] = [{"id": rid, "name": name} for rid, name in p.roles]
        if p.project_id is not None:
            token["project"] = {"id": p.project_id, "name": p.project_name,
                                "domain": {"id": p.project_domain_id,
                                           "name": await self._domain_name(p.project_domain_id, names)}}
            token["is_domain"] = False
            token["is_admin_project"] = p.project_id == self.svc.admin_project_id
        if p.domain_id is not None:
            token["domain"] = {"id": p.domain_id, "name": p.domain_name}
        if p.app_cred_id is not None:
            token["application_credential"] = {"id": p.app_cred_id, "restricted": True}
        if with_catalog:
            token["catalog"] = self.catalog.document(p.project_id)
        return {"token": token}

    async def issue_token(self, call: Call) -> Result:
        doc = await call.body()
        started = time.monotonic()
        try:
            payload = await self.svc.authenticate(v.section(doc, "auth"))
        except IdentityError as exc:
            if exc.status == 401:
                log_event(log, "identity.auth_failed", rid=call.request.request_id,
                          seconds=round(time.monotonic() - started, 3))
            raise
        token = self.svc.issue(payload)
        body = await self.token_body(payload, with_catalog="nocatalog" not in call.query)
        log_event(log, "identity.token_issued", rid=call.request.request_id, user=payload.user_id,
                  project=payload.project_id, methods=list(payload.methods))
        return Response(201, [("Content-Type", "application/json"), ("X-Subject-Token", token),
                              ("Vary", "X-Auth-Token")], json.dumps(body).encode())

    def _subject(self, call: Call) -> TokenPayload:
        subject = call.request.headers.get("x-subject-token")
        if not subject:
            raise bad_request("Expecting to find X-Subject-Token in the request headers.")
        payload = self.svc.validate(subject)
        if payload is None:
            raise IdentityError(404, "Could not find token: the token is invalid, expired or revoked.")
        assert call.token is not None
        if not (call.caller and call.caller.cluster_admin) and payload.user_id != call.token.user_id:
            raise forbidden()
        return payload

    async def check_token(self, call: Call) -> Result:
        payload = self._subject(call)
        body = await self.token_body(payload, with_catalog="nocatalog" not in call.query)
        return Response(200, [("Content-Type", "application/json"), ("Vary", "X-Auth-Token"),
                              ("X-Subject-Token", call.request.headers.get("x-subject-token") or "")],
                        json.dumps(body).encode())

    async def revoke_token(self, call: Call) -> Result:
        payload = self._subject(call)
        await self.svc.revoke("audit", payload.audit_ids[0])
        log_event(log, "identity.token_revoked", rid=call.request.request_id, user=payload.user_id)
        return 204, None

    async def auth_catalog(self, call: Call) -> Result:
        assert call.token is not None
        return 200, {"catalog": self.catalog.document(call.token.project_id),
                     "links": call.collection_links("/auth/catalog")}

    async def _user_targets(self, user_id: str, kind: str) -> list[dict[str, Any]]:
        ids = {a[2] for a in await self.svc.assignments() if a[0] == user_id and a[1] == kind}
        out = []
        for tid in sorted(ids):
            doc = await self.svc.store.get(kind + "s", tid)
            if doc is not None:
                out.append(doc)
        return out

    async def auth_projects(self, call: Call) -> Result:
        assert call.token is not None
        projects = [p for p in await self._user_targets(call.token.user_id, "project") if p.get("enabled", True)]
        return 200, {"projects": [self._project(call, p) for p in projects],
                     "links": call.collection_links("/auth/projects")}

    async def auth_domains(self, call: Call) -> Result:
        assert call.token is not None
        domains = [d for d in await self._user_targets(call.token.user_id, "domain") if d.get("enabled", True)]
        return 200, {"domains": [self._domain(call, d) for d in domains],
                     "links": call.collection_links("/auth/domains")}

    # -- shapes --------------------------------------------------------------------

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

    # -- domains -----------------------------------------------------------------

    async def list_domains(self, call: Call) -> Result:
        self._allow(call, "identity:list_domains")
        docs = self._filter(await self.svc.store.list("domains"), call.query, ("name", "enabled"))
        return 200, {"domains": [self._domain(call, d) for d in docs], "links": call.collection_links("/domains")}

    async def create_domain(self, call: Call) -> Result:
        self._allow(call, "identity:create_domain")
        spec = v.section(await call.body(), "domain")
        doc = {"name": v.name(spec.get("name")), "description": v.description(spec.get("description")),
               "enabled": v.boolean(spec.get("enabled", True), "enabled")}
        created = await self.svc.create_named("domain", GLOBAL, doc)
        return 201, {"domain": self._domain(call, created)}

    async def get_domain(self, call: Call) -> Result:
        self._allow(call, "identity:get_domain")
        return 200, {"domain": self._domain(call, await self.svc.get("domains", call.params["id"], "domain"))}

    async def update_domain(self, call: Call) -> Result:
        self._allow(call, "identity:update_domain")
        domain = await self.svc.get("domains", call.params["id"], "domain")
        spec = v.section(await call.body(), "domain")
        new = dict(domain)
        if "name" in spec:
            new["name"] = v.name(spec["name"])
            await self.svc.rename("domain", GLOBAL, domain, new["name"])
        if "description" in spec:
            new["description"] = v.description(spec["description"])
        if "enabled" in spec:
            new["enabled"] = v.boolean(spec["enabled"], "enabled")
            if domain["id"] == DEFAULT_DOMAIN_ID and not new["enabled"]:
                raise forbidden("The default domain cannot be disabled.")
        await self.svc.store.put("domains", domain["id"], new)
        if domain.get("enabled", True) and not new["enabled"]:
            await self.svc.revoke("domain", domain["id"])
        return 200, {"domain": self._domain(call, new)}

    async def delete_domain(self, call: Call) -> Result:
        self._allow(call, "identity:delete_domain")
        domain = await self.svc.get("domains", call.params["id"], "domain")
        if domain["id"] == DEFAULT_DOMAIN_ID:
            raise forbidden("The default domain cannot be deleted.")
        if domain.get("enabled", True):
            raise forbidden("Cannot delete a domain that is enabled, please disable it first.")
        for kind in ("projects", "users"):
            if any(d.get("domain_id") == domain["id"] for d in await self.svc.store.list(kind)):
                raise IdentityError(409, f"Domain {domain['id']} still holds {kind}; delete them first.")
        await self.svc.store.delete("domains", domain["id"])
        await self.svc.store.drop_name("domain", GLOBAL, domain["name"])
        await self.svc.drop_assignments(lambda u, k, t, r: k == "domain" and t == domain["id"])
        await self.svc.revoke("domain", domain["id"])
        return 204, None

    async def _domain_for_create(self, call: Call, spec: dict[str, Any]) -> str:
        """``domain_id`` of a new user/project: given, else the caller's domain (Keystone's rule)."""
        assert call.token is not None
        domain_id = v.optional_ident(spec.get("domain_id"), "domain_id")
        if domain_id is None:
            domain_id = call.token.project_domain_id or call.token.domain_id or DEFAULT_DOMAIN_ID
        if await self.svc.store.get("domains", domain_id) is None:
            raise bad_request(f"Could not find domain: {domain_id}.")
        return domain_id

    # -- projects ----------------------------------------------------------------

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

    async def list_projects(self, call: Call) -> Result:
        self._allow(call, "identity:list_projects")
        docs = self._filter(await self.svc.store.list("projects"), call.query,
                            ("name", "domain_id", "enabled", "parent_id"))
        return 200, {"projects": [self._project(call, p) for p in docs],
                     "links": call.collection_links("/projects")}

    async def create_project(self, call: Call) -> Result:
        self._allow(call, "identity:create_project")
        spec = v.section(await call.body(), "project")
        if spec.get("is_domain"):
            raise bad_request("Projects acting as domains are not supported; create a domain.")
        domain_id = await self._domain_for_create(call, spec)
        parent = v.optional_ident(spec.get("parent_id"), "parent_id")
        if parent is not None and parent != domain_id:
            raise bad_request("Project hierarchies are not supported: parent_id must be the domain.")
        doc = {**self._extras(spec), "name": v.name(spec.get("name")), "domain_id": domain_id,
               "description": v.description(spec.get("description")),
               "enabled": v.boolean(spec.get("enabled", True), "enabled"),
               "parent_id": domain_id, "is_domain": False, "tags": self._tags(spec.get("tags"))}
        created = await self.svc.create_named("project", domain_id, doc)
        log_event(log, "identity.project_created", rid=call.request.request_id, id=created["id"])
        return 201, {"project": self._project(call, created)}

    async def get_project(self, call: Call) -> Result:
        self._allow(call, "identity:get_project", project_id=call.params["id"])
        return 200, {"project": self._project(call, await self.svc.get("projects", call.params["id"], "project"))}

    async def update_project(self, call: Call) -> Result:
        self._allow(call, "identity:update_project", project_id=call.params["id"])
        project = await self.svc.get("projects", call.params["id"], "project")
        spec = v.section(await call.body(), "project")
        new = {**project, **self._extras(spec)}
        if "name" in spec:
            new["name"] = v.name(spec["name"])
            await self.svc.rename("project", project["domain_id"], project, new["name"])
        if "description" in spec:
            new["description"] = v.description(spec["description"])
        if "tags" in spec:
            new["tags"] = self._tags(spec["tags"])
        if "enabled" in spec:
            new["enabled"] = v.boolean(spec["enabled"], "enabled")
            if project["id"] == self.svc.admin_project_id and not new["enabled"]:
                raise forbidden("The cluster's admin project cannot be disabled.")
        if "domain_id" in spec and spec["domain_id"] != project["domain_id"]:
            raise bad_request("A project cannot move to another domain.")
        await self.svc.store.put("projects", project["id"], new)
        if project.get("enabled", True) and not new["enabled"]:
            await self.svc.revoke("project", project["id"])
        return 200, {"project": self._project(call, new)}

    async def delete_project(self, call: Call) -> Result:
        self._allow(call, "identity:delete_project", project_id=call.params["id"])
        project = await self.svc.get("projects", call.params["id"], "project")
        if project["id"] == self.svc.admin_project_id:
            raise forbidden("The cluster's admin project cannot be deleted.")
        await self.svc.store.delete("projects", project["id"])
        await self.svc.store.drop_name("project", project["domain_id"], project["name"])
        await self.svc.drop_assignments(lambda u, k, t, r: k == "project" and t == project["id"])
        await self.svc.revoke("project", project["id"])
        return 204, None

    # -- users -------------------------------------------------------------------

    async def _default_project(self, value: Any) -> str | None:
        pid = v.optional_ident(value, "default_project_id")
        if pid is not None and await self.svc.store.get("projects", pid) is None:
            raise bad_request(f"Could not find project: {pid}.")
        return pid

    async def list_users(self, call: Call) -> Result:
        self._allow(call, "identity:list_users")
        docs = self._filter(await self.svc.store.list("users"), call.query, ("name", "domain_id", "enabled"))
        return 200, {"users": [self._user(call, u) for u in docs], "links": call.collection_links("/users")}

    async def create_user(self, call: Call) -> Result:
        self._allow(call, "identity:create_user")
        spec = v.section(await call.body(), "user")
        domain_id = await self._domain_for_create(call, spec)
        doc = {**self._extras(spec), "name": v.name(spec.get("name"), limit=v.MAX_USER_NAME),
               "domain_id": domain_id, "enabled": v.boolean(spec.get("enabled", True), "enabled"),
               "description": v.description(spec.get("description")),
               "default_project_id": await self._default_project(spec.get("default_project_id"))}
        if spec.get("password") is not None:
            doc = await self.svc.set_password(doc, spec["password"])
        created = await self.svc.create_named("user", domain_id, doc)
        log_event(log, "identity.user_created", rid=call.request.request_id, id=created["id"])
        return 201, {"user": self._user(call, created)}

    async def get_user(self, call: Call) -> Result:
        self._allow(call, "identity:get_user", user_id=call.params["id"])
        return 200, {"user": self._user(call, await self.svc.get("users", call.params["id"], "user"))}

    async def update_user(self, call: Call) -> Result:
        self._allow(call, "identity:update_user", user_id=call.params["id"])
        user = await self.svc.get("users", call.params["id"], "user")
        spec = v.section(await call.body(), "user")
        new = {**user, **self._extras(spec)}
        revoke = False
        if "name" in spec:
            new["name"] = v.name(spec["name"], limit=v.MAX_USER_NAME)
            await self.svc.rename("user", user["domain_id"], user, new["name"])
        if "description" in spec:
            new["description"] = v.description(spec["description"])
        if "default_project_id" in spec:
            new["default_project_id"] = await self._default_project(spec["default_project_id"])
        if "enabled" in spec:
            new["enabled"] = v.boolean(spec["enabled"], "enabled")
            if user["id"] == self.svc.admin_user_id and not new["enabled"]:
                raise forbidden("The cluster's admin user cannot be disabled.")
            revoke = user.get("enabled", True) and not new["enabled"]
        if "password" in spec:
            new = await self.svc.set_password(new, spec["password"])
            revoke = True
        if "domain_id" in spec and spec["domain_id"] != user["domain_id"]:
            raise bad_request("A user cannot move to another domain.")
        await self.svc.store.put("users", user["id"], new)
        if revoke:
            await self.svc.revoke("user", user["id"])
        return 200, {"user": self._user(call, new)}

    async def delete_user(self, call: Call) -> Result:
        self._allow(call, "identity:delete_user", user_id=call.params["id"])
        user = await self.svc.get("users", call.params["id"], "user")
        if user["id"] == self.svc.admin_user_id:
            raise forbidden("The cluster's admin user cannot be deleted.")
        await self.svc.store.delete("users", user["id"])
        await self.svc.store.drop_name("user", user["domain_id"], user["name"])
        await self.svc.drop_assignments(lambda u, k, t, r: u == user["id"])
        for cred in await self.svc.ec2_credentials(user["id"]):
            await self.svc.store.delete("credentials", cred["id"])
        await self.svc.revoke("user", user["id"])
        return 204, None

    async def change_password(self, call: Call) -> Result:
        self._allow(call, "identity:change_password", user_id=call.params["id"])
        spec = v.section(await call.body(), "user")
        original = spec.get("original_password")
        if not isinstance(original, str):
            raise bad_request("Expecting to find original_password in user.")
        user = await self.svc.get("users", call.params["id"], "user")
        await self.svc.check_password(user, original)
        await self.svc.store.put("users", user["id"], await self.svc.set_password(user, spec.get("password")))
        await self.svc.revoke("user", user["id"])
        return 204, None

    async def user_projects(self, call: Call) -> Result:
        self._allow(call, "identity:list_user_projects", user_id=call.params["id"])
        await self.svc.get("users", call.params["id"], "user")
        projects = await self._user_targets(call.params["id"], "project")
        return 200, {"projects": [self._project(call, p) for p in projects],
                     "links": call.collection_links(f"/users/{call.params['id']}/projects")}

    # -- EC2 credentials -----------------------------------------------------------

    def _ec2(self, call: Call, cred: dict[str, Any]) -> dict[str, Any]:
        blob = cred["blob"]
        return {"user_id": cred["user_id"], "tenant_id": cred["project_id"], "access": blob["access"],
                "secret": blob["secret"], "trust_id": blob.get("trust_id"),
                "links": call.link(f"/users/{cred['user_id']}/credentials/OS-EC2/{blob['access']}")}

    async def list_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_list", user_id=call.params["id"])
        creds = await self.svc.ec2_credentials(call.params["id"])
        return 200, {"credentials": [self._ec2(call, c) for c in creds],
                     "links": call.collection_links(f"/users/{call.params['id']}/credentials/OS-EC2")}

    async def create_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_create", user_id=call.params["id"])
        spec = await call.body()
        project_id = v.ident(spec.get("tenant_id") or spec.get("project_id"), "tenant_id")
        user = await self.svc.get("users", call.params["id"], "user")
        await self.svc.get("projects", project_id, "project")
        if not (call.caller and call.caller.cluster_admin) and not await self.svc.roles_on(
                user["id"], "project", project_id):
            raise forbidden("The user has no role on that project.")
        cred = await self.svc.create_ec2(user["id"], project_id)
        return 201, {"credential": self._ec2(call, cred)}

    async def _ec2_of(self, call: Call) -> dict[str, Any]:
        cred = await self.svc.store.get("credentials", ec2_credential_id(call.params["access"]))
        if cred is None or cred.get("type") != "ec2" or cred.get("user_id") != call.params["id"]:
            raise not_found("credential", call.params["access"])
        return cred

    async def get_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_get", user_id=call.params["id"])
        return 200, {"credential": self._ec2(call, await self._ec2_of(call))}

    async def delete_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_delete", user_id=call.params["id"])
        cred = await self._ec2_of(call)
        await self.svc.store.delete("credentials", cred["id"])
        self.svc.forget_ec2()
        return 204, None

    # -- generic credentials -------------------------------------------------------

    def _credential(self, call: Call, cred: dict[str, Any]) -> dict[str, Any]:
        blob = cred["blob"]
        return {"id": cred["id"], "type": cred["type"], "user_id": cred["user_id"],
                "project_id": cred.get("project_id"),
                "blob": blob if isinstance(blob, str) else json.dumps(blob),
                "links": call.link(f"/credentials/{cred['id']}")}

    async def list_credentials(self, call: Call) -> Result:
        assert call.token is not None
        user_filter = call.query.get("user_id")
        if not (call.caller and call.caller.cluster_admin):
            if user_filter not in (None, call.token.user_id):
                raise forbidden()
            user_filter = call.token.user_id
        creds = [c for c in await self.svc.store.list("credentials")
                 if (user_filter is None or c.get("user_id") == user_filter)
                 and ("type" not in call.query or c.get("type") == call.query["type"])]
        return 200, {"credentials": [self._credential(call, c) for c in creds],
                     "links": call.collection_links("/credentials")}

    async def create_credential(self, call: Call) -> Result:
        spec = v.section(await call.body(), "credential")
        user_id = v.ident(spec.get("user_id"), "user_id")
        self._allow(call, "identity:create_credential", user_id=user_id)
        ctype = v.name(spec.get("type"), "type", 255)
        blob_text = v.string(spec.get("blob"), "blob", 8192)
        project_id = v.optional_ident(spec.get("project_id"), "project_id")
        await self.svc.get("users", user_id, "user")
        if ctype == "ec2":
            try:
                blob = json.loads(blob_text)
            except ValueError:
                raise bad_request("Invalid blob in credential: not JSON.") from None
            if (not isinstance(blob, dict) or not isinstance(blob.get("access"), str) or not blob["access"]
                    or not isinstance(blob.get("secret"), str) or len(blob["access"]) > 128):
                raise bad_request("Invalid blob in credential: an ec2 blob needs access and secret.")
            if project_id is None:
                raise bad_request("Expecting to find project_id in an ec2 credential.")
            await self.svc.get("projects", project_id, "project")
            cred_id = ec2_credential_id(blob["access"])
            if await self.svc.store.get("credentials", cred_id) is not None:
                raise IdentityError(409, "Conflict occurred attempting to store credential: duplicate access key.")
            cred = {"id": cred_id, "type": "ec2", "user_id": user_id, "project_id": project_id,
                    "blob": {"access": blob["access"], "secret": blob["secret"], "trust_id": blob.get("trust_id")}}
        else:
            cred = {"id": new_id(), "type": ctype, "user_id": user_id, "project_id": project_id, "blob": blob_text}
        await self.svc.store.put("credentials", cred["id"], cred)
        return 201, {"credential": self._credential(call, cred)}

    async def _credential_of(self, call: Call, action: str) -> dict[str, Any]:
        cred = await self.svc.store.get("credentials", call.params["id"])
        if cred is None:
            raise not_found("credential", call.params["id"])
        self._allow(call, action, user_id=cred.get("user_id"))
        return cred

    async def get_credential(self, call: Call) -> Result:
        return 200, {"credential": self._credential(call, await self._credential_of(call, "identity:get_credential"))}

    async def delete_credential(self, call: Call) -> Result:
        cred = await self._credential_of(call, "identity:delete_credential")
        await self.svc.store.delete("credentials", cred["id"])
        self.svc.forget_ec2()
        return 204, None

    # -- application credentials -------------------------------------------------

    def _app_cred(self, call: Call, c: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
        out = {"id": c["id"], "name": c["name"], "description": c.get("description"),
               "user_id": c["user_id"], "project_id": c["project_id"], "unrestricted": False,
               "expires_at": iso(c.get("expires_at")), "access_rules": [],
               "roles": [{"id": rid, "name": name} for rid, name in c["roles"]],
               "links": call.link(f"/users/{c['user_id']}/application_credentials/{c['id']}")}
        if secret is not None:
            out["secret"] = secret
        return out

    async def create_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_create", user_id=call.params["id"])
        assert call.token is not None
        spec = v.section(await call.body(), "application_credential")
        created = await self.svc.create_app_cred(call.token, spec)
        return 201, {"application_credential": self._app_cred(call, created, created["secret"])}

    async def list_app_creds(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_list", user_id=call.params["id"])
        creds = [c for c in await self.svc.store.list("app_creds") if c.get("user_id") == call.params["id"]]
        if "name" in call.query:
            creds = [c for c in creds if c.get("name") == call.query["name"]]
        return 200, {"application_credentials": [self._app_cred(call, c) for c in creds],
                     "links": call.collection_links(f"/users/{call.params['id']}/application_credentials")}

    async def _app_cred_of(self, call: Call) -> dict[str, Any]:
        cred = await self.svc.store.get("app_creds", call.params["cred"])
        if cred is None or cred.get("user_id") != call.params["id"]:
            raise not_found("application credential", call.params["cred"])
        return cred

    async def get_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_get", user_id=call.params["id"])
        return 200, {"application_credential": self._app_cred(call, await self._app_cred_of(call))}

    async def delete_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_delete", user_id=call.params["id"])
        cred = await self._app_cred_of(call)
        await self.svc.store.delete("app_creds", cred["id"])
        await self.svc.revoke("appcred", cred["id"])
        return 204, None

    # -- roles -------------------------------------------------------------------

    async def list_roles(self, call: Call) -> Result:
        self._allow(call, "identity:list_roles")
        docs = self._filter(await self.svc.store.list("roles"), call.query, ("name",))
        if "domain_id" in call.query:
            docs = []  # every role here is global; domain-specific roles are not offered
        return 200, {"roles": [self._role(call, r) for r in docs], "links": call.collection_links("/roles")}

    async def create_role(self, call: Call) -> Result:
        self._allow(call, "identity:create_role")
        spec = v.section(await call.body(), "role")
        if spec.get("domain_id") is not None:
            raise bad_request("Domain-specific roles are not supported.")
        doc = {"name": v.name(spec.get("name"), limit=255), "domain_id": None,
               "description": v.description(spec.get("description"))}
        return 201, {"role": self._role(call, await self.svc.create_named("role", GLOBAL, doc))}

    async def get_role(self, call: Call) -> Result:
        self._allow(call, "identity:get_role")
        return 200, {"role": self._role(call, await self.svc.get("roles", call.params["id"], "role"))}

    async def update_role(self, call: Call) -> Result:
        self._allow(call, "identity:update_role")
        role = await self.svc.get("roles", call.params["id"], "role")
        spec = v.section(await call.body(), "role")
        new = dict(role)
        if "name" in spec:
            if role["id"] in self.svc.role_ids.values() and spec["name"] != role["name"]:
                raise forbidden("The standard roles (admin, member, reader) cannot be renamed.")
            new["name"] = v.name(spec["name"], limit=255)
            await self.svc.rename("role", GLOBAL, role, new["name"])
        if "description" in spec:
            new["description"] = v.description(spec["description"])
        await self.svc.store.put("roles", role["id"], new)
        self.svc.forget_roles()
        return 200, {"role": self._role(call, new)}

    async def delete_role(self, call: Call) -> Result:
        self._allow(call, "identity:delete_role")
        role = await self.svc.get("roles", call.params["id"], "role")
        if role["id"] in self.svc.role_ids.values():
            raise forbidden("The standard roles (admin, member, reader) cannot be deleted.")
        await self.svc.store.delete("roles", role["id"])
        await self.svc.store.drop_name("role", GLOBAL, role["name"])
        await self.svc.drop_assignments(lambda u, k, t, r: r == role["id"])
        self.svc.forget_roles()
        await self.svc.revoke("role", role["id"])
        return 204, None

    # -- grants and assignments --------------------------------------------------

    async def _grant_target(self, call: Call, action: str) -> tuple[str, str, str]:
        kind, target, user_id = call.params["kind"], call.params["target"], call.params["user"]
        self._allow(call, action, project_id=target if kind == "project" else None)
        await self.svc.get(kind + "s", target, kind)
        await self.svc.get("users", user_id, "user")
        return kind, target, user_id

    async def list_grants(self, call: Call) -> Result:
        kind, target, user_id = await self._grant_target(call, "identity:list_grants")
        role_map = {r["id"]: r for r in await self.svc.store.list("roles")}
        rids = [rid for rid, _ in await self.svc.roles_on(user_id, kind, target)]
        return 200, {"roles": [self._role(call, role_map[rid]) for rid in rids if rid in role_map],
                     "links": call.collection_links(f"/{kind}s/{target}/users/{user_id}/roles")}

    async def create_grant(self, call: Call) -> Result:
        kind, target, user_id = await self._grant_target(call, "identity:create_grant")
        role = await self.svc.get("roles", call.params["role"], "role")
        await self.svc.grant(user_id, kind, target, role["id"])
        log_event(log, "identity.grant", rid=call.request.request_id, user=user_id, target=target, role=role["name"])
        return 204, None

    async def check_grant(self, call: Call) -> Result:
        kind, target, user_id = await self._grant_target(call, "identity:check_grant")
        if call.params["role"] not in {rid for rid, _ in await self.svc.roles_on(user_id, kind, target)}:
            raise not_found("role grant", call.params["role"])
        return 204, None

    async def delete_grant(self, call: Call) -> Result:
        kind, target, user_id = await self._grant_target(call, "identity:revoke_grant")
        if call.params["role"] not in {rid for rid, _ in await self.svc.roles_on(user_id, kind, target)}:
            raise not_found("role grant", call.params["role"])
        await self.svc.revoke_grant(user_id, kind, target, call.params["role"])
        return 204, None

    async def list_assignments(self, call: Call) -> Result:
        q = call.query
        project_filter = q.get("scope.project.id")
        self._allow(call, "identity:list_role_assignments", project_id=project_filter)
        if "group.id" in q:
            return 200, {"role_assignments": [], "links": call.collection_links("/role_assignments")}
        rows = []
        for user_id, kind, target, role_id in await self.svc.assignments():
            if ("user.id" in q and q["user.id"] != user_id or "role.id" in q and q["role.id"] != role_id
                    or project_filter is not None and (kind, target) != ("project", project_filter)
                    or "scope.domain.id" in q and (kind, target) != ("domain", q["scope.domain.id"])):
                continue
            rows.append((user_id, kind, target, role_id))
        names = "include_names" in q and q["include_names"].lower() not in ("false", "0")
        out = [await self._assignment(call, row, names) for row in sorted(rows)]
        return 200, {"role_assignments": out, "links": call.collection_links("/role_assignments")}

    async def _assignment(self, call: Call, row: tuple[str, str, str, str], names: bool) -> dict[str, Any]:
        user_id, kind, target, role_id = row
        entry: dict[str, Any] = {
            "role": {"id": role_id}, "user": {"id": user_id}, "scope": {kind: {"id": target}},
            "links": {"assignment": f"{call.base}/{kind}s/{target}/users/{user_id}/roles/{role_id}"}}
        if names:
            role = await self.svc.store.get("roles", role_id) or {}
            user = await self.svc.store.get("users", user_id) or {}
            scope = await self.svc.store.get(kind + "s", target) or {}
            entry["role"]["name"] = role.get("name")
            entry["user"].update(name=user.get("name"), domain={"id": user.get("domain_id")})
            entry["scope"][kind]["name"] = scope.get("name")
            if kind == "project":
                entry["scope"][kind]["domain"] = {"id": scope.get("domain_id")}
        return entry

    # -- catalog views -------------------------------------------------------------

    async def list_services(self, call: Call) -> Result:
        self._allow(call, "identity:list_services")
        services = self.catalog.services()
        if "type" in call.query:
            services = [s for s in services if s["type"] == call.query["type"]]
        return 200, {"services": [{**s, "links": call.link(f"/services/{s['id']}")} for s in services],
                     "links": call.collection_links("/services")}

    async def list_endpoints(self, call: Call) -> Result:
        self._allow(call, "identity:list_endpoints")
        assert call.token is not None
        rows = [{**ep, "enabled": True, "links": call.link(f"/endpoints/{ep['id']}")}
                for _, ep in self.catalog.endpoints(call.token.project_id)]
        for key in ("interface", "service_id", "region_id"):
            if key in call.query:
                rows = [r for r in rows if r[key] == call.query[key]]
        return 200, {"endpoints": rows, "links": call.collection_links("/endpoints")}

    async def list_regions(self, call: Call) -> Result:
        return 200, {"regions": [{"id": REGION, "description": "", "parent_region_id": None,
                                  "links": call.link(f"/regions/{REGION}")}],
                     "links": call.collection_links("/regions")}


def _json(status: int, doc: Any) -> Response:
    return Response(status, [("Content-Type", "application/json"), ("Vary", "X-Auth-Token")],
                    json.dumps(doc).encode())
