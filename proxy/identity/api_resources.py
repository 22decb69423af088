"""Admin handlers for domains, projects, users, roles, grants and role assignments.

Names are unique per domain (users, projects) or globally (domains,
roles); disabling or deleting something publishes the revocation event that
kills its tokens on every node.  The bootstrap records (default domain,
standard roles, the admin project and user) cannot be deleted or disabled,
so the cluster can never lock its operator out.
"""

from __future__ import annotations

import logging
from typing import Any

from node.log import log_event
from proxy.identity import validate as v
from proxy.identity.api_base import Call, Handlers, Result
from proxy.identity.catalog import REGION
from proxy.identity.errors import IdentityError, bad_request, forbidden, not_found
from proxy.identity.service import DEFAULT_DOMAIN_ID, GLOBAL

log = logging.getLogger("peerstack.identity.api")


class ResourceHandlers(Handlers):
    """CRUD of domains, projects, users and roles; grants; role assignments; catalog views."""

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
        domains: dict[str, str] = {}
        out = [await self._assignment(call, row, names, domains) for row in sorted(rows)]
        return 200, {"role_assignments": out, "links": call.collection_links("/role_assignments")}

    async def _assignment(self, call: Call, row: tuple[str, str, str, str], names: bool,
                          domains: dict[str, str]) -> dict[str, Any]:
        user_id, kind, target, role_id = row
        entry: dict[str, Any] = {
            "role": {"id": role_id}, "user": {"id": user_id}, "scope": {kind: {"id": target}},
            "links": {"assignment": f"{call.base}/{kind}s/{target}/users/{user_id}/roles/{role_id}"}}
        if names:
            role = await self.svc.store.get("roles", role_id) or {}
            user = await self.svc.store.get("users", user_id) or {}
            scope = await self.svc.store.get(kind + "s", target) or {}
            entry["role"]["name"] = role.get("name")
            entry["user"].update(name=user.get("name"), domain={
                "id": user.get("domain_id"), "name": await self._domain_name(user.get("domain_id"), domains)})
            entry["scope"][kind]["name"] = scope.get("name")
            if kind == "project":
                entry["scope"][kind]["domain"] = {
                    "id": scope.get("domain_id"), "name": await self._domain_name(scope.get("domain_id"), domains)}
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


