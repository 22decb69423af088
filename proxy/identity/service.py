"""Identity operations: authentication, scoping, and records that keep their invariants.

:class:`IdentityService` is what the rest of the proxy holds: the HTTP layer
(:mod:`proxy.identity.api`) calls it for ``/v3``, the Swift API for
``/auth/v1.0`` logins and token checks, S3 for EC2 keys.  It owns the
record store, the token codec and validator, and the revocation list.

**Bootstrap.**  ``peerstack cluster init`` writes only the cluster file,
whose ``[admin]`` table names the first project, user and password.  The
identity records for them -- domain ``default``, roles ``admin``,
``member``, ``reader``, the admin project and user, and the user's
``admin`` role on that project -- are created lazily by the first identity
operation on each node (:meth:`IdentityService.ready`).  Their ids are
derived from the cluster id (the admin project's id is its name, so the
Swift account ``AUTH_<name>`` the admin used before stays the admin's), so
every node writes the very same ids and
the step is idempotent: a record that exists is left alone (the admin may
have changed the password since), and one that was deleted on purpose (a
tombstone) is not resurrected.  Nothing needs to run at ``cluster init``,
and a cluster made before identity existed gets it on first use.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.config import ClusterConfig
from proxy.auth import Identity
from proxy.identity import passwords, validate
from proxy.identity.errors import IdentityError, bad_request, conflict, not_found, unauthorized
from proxy.identity.policy import effective_roles
from proxy.identity.revocations import RevocationSync
from proxy.identity.store import IdentityStore, new_id, stable_id
from proxy.identity.tokens import (DEFAULT_TOKEN_LIFE, KEY_PERIOD, RevocationList, TokenCodec,
                                   TokenPayload, TokenValidator, new_audit_id)

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
STANDARD_ROLES = ("admin", "member", "reader")
GLOBAL = "global"
#: role id -> name map reuse (roles change rarely; local changes drop it at once)
ROLES_TTL = 5.0
#: EC2 key lookups are remembered this long per node (a deleted key dies within it)
EC2_TTL = 10.0


def ec2_credential_id(access: str) -> str:
    """Keystone's id of an EC2 credential: the sha256 of its access key."""
    return hashlib.sha256(access.encode("utf-8")).hexdigest()


def assignment_name(user_id: str, target_kind: str, target_id: str, role_id: str) -> str:
    return f"user/{user_id}/{target_kind}/{target_id}/{role_id}"


def parse_assignment(name: str) -> tuple[str, str, str, str] | None:
    """``(user id, "project"|"domain", target id, role id)`` from an assignment object name."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != "user" or parts[2] not in ("project", "domain"):
        return None
    return parts[1], parts[2], parts[3], parts[4]


class IdentityService:
    """Keystone's data and rules for one node; every node's instance sees the same ring."""

    def __init__(self, cc: ClusterClient, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.store = IdentityStore(cc)
        self.codec = TokenCodec(cluster.secret_bytes)
        self.revocations = RevocationList()
        self.validator = TokenValidator(self.codec, self.revocations)
        self.sync = RevocationSync(self.store, self.revocations)
        cid = cluster.cluster_id
        # The bootstrap project's id is its name (as the default domain's id is
        # "default"), so data stored under AUTH_<admin project> before identity
        # existed stays the admin's.
        self.admin_project_id = cluster.admin.project
        self.admin_user_id = stable_id(cid, "user", DEFAULT_DOMAIN_ID, cluster.admin.user)
        self.role_ids = {name: stable_id(cid, "role", name) for name in STANDARD_ROLES}
        self._bootstrapped = False
        self._boot_lock = trio.Lock()
        self._roles: tuple[float, dict[str, str]] | None = None
        self._ec2: dict[str, tuple[float, tuple[str, dict[str, Any], dict[str, Any], frozenset[str]] | None]] = {}

    # -- bootstrap ---------------------------------------------------------------

    async def ready(self) -> None:
        """Make sure the bootstrap records exist (once per process; see the module doc)."""
        if self._bootstrapped:
            return
        async with self._boot_lock:
            if not self._bootstrapped:
                await self._bootstrap()
                self._bootstrapped = True

    def _bootstrap_records(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        admin = self.cluster.admin
        records: list[tuple[str, str, dict[str, Any] | None]] = [
            ("domains", DEFAULT_DOMAIN_ID, {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME,
                                             "enabled": True, "description": "The default domain"}),
            ("names", f"domain/{GLOBAL}/{DEFAULT_DOMAIN_NAME}", {"id": DEFAULT_DOMAIN_ID}),
        ]
        for name, rid in self.role_ids.items():
            records += [("roles", rid, {"id": rid, "name": name, "domain_id": None, "description": None}),
                        ("names", f"role/{GLOBAL}/{name}", {"id": rid})]
        if admin.password:
            pid, uid = self.admin_project_id, self.admin_user_id
            records += [
                ("projects", pid, {"id": pid, "name": admin.project, "domain_id": DEFAULT_DOMAIN_ID,
                                   "enabled": True, "description": "Bootstrap project for the cluster admin",
                                   "parent_id": DEFAULT_DOMAIN_ID, "is_domain": False}),
                ("names", f"project/{DEFAULT_DOMAIN_ID}/{admin.project}", {"id": pid}),
                ("users", uid, {"id": uid, "name": admin.user, "domain_id": DEFAULT_DOMAIN_ID,
                                "enabled": True, "default_project_id": pid}),
                ("names", f"user/{DEFAULT_DOMAIN_ID}/{admin.user}", {"id": uid}),
                ("assignments", assignment_name(uid, "project", pid, self.role_ids["admin"]), None),
            ]
        return records

    async def _bootstrap(self) -> None:
        async def ensure(kind: str, rid: str, doc: dict[str, Any] | None) -> None:
            exists, deleted = await self.store.exists(kind, rid)
            if exists or deleted:
                return
            if kind == "users":
                doc = {**(doc or {}), "password": await passwords.hash_password(self.cluster.admin.password)}
            await self.store.put(kind, rid, doc)

        async with trio.open_nursery() as nursery:
            for record in self._bootstrap_records():
                nursery.start_soon(ensure, *record)

    # -- lookups -----------------------------------------------------------------

    async def role_map(self) -> dict[str, str]:
        """Role id -> name, cached for :data:`ROLES_TTL`."""
        now = time.monotonic()
        if self._roles is None or self._roles[0] < now:
            roles = await self.store.list("roles")
            self._roles = (now + ROLES_TTL, {r["id"]: r["name"] for r in roles})
        return self._roles[1]

    def forget_roles(self) -> None:
        self._roles = None

    async def get(self, kind: str, rid: str, label: str) -> dict[str, Any]:
        """A record that must exist (``404`` in Keystone's words otherwise)."""
        doc = await self.store.get(kind, rid)
        if doc is None:
            raise not_found(label, rid)
        return doc

    async def by_name(self, kind: str, scope: str, name: str) -> dict[str, Any] | None:
        container = {"domain": "domains", "project": "projects", "user": "users", "role": "roles"}[kind]
        rid = await self.store.id_by_name(kind, scope, name)
        if rid is None:
            return None
        doc = await self.store.get(container, rid)
        # A stale index entry (record deleted, index write lost) names nobody.
        return doc if doc is not None and doc.get("name") == name else None

    async def resolve_domain(self, ref: Any) -> dict[str, Any] | None:
        """A ``{"id": ...}`` or ``{"name": ...}`` domain reference -> record (``None``: none such)."""
        if not isinstance(ref, dict):
            return None
        if isinstance(ref.get("id"), str):
            return await self.store.get("domains", ref["id"])
        if isinstance(ref.get("name"), str):
            return await self.by_name("domain", GLOBAL, ref["name"])
        return None

    async def roles_on(self, user_id: str, target_kind: str, target_id: str) -> list[tuple[str, str]]:
        """``(role id, role name)`` pairs directly assigned to a user on a project or domain."""
        names = await self.store.names("assignments", prefix=f"user/{user_id}/{target_kind}/{target_id}/")
        role_map = await self.role_map()
        rids = sorted({n.rsplit("/", 1)[1] for n in names})
        missing = [rid for rid in rids if rid not in role_map]
        if missing:
            self.forget_roles()
            role_map = await self.role_map()
        return [(rid, role_map[rid]) for rid in rids if rid in role_map]

    async def assignments(self) -> list[tuple[str, str, str, str]]:
        return [a for a in map(parse_assignment, await self.store.names("assignments")) if a is not None]

    # -- authentication ----------------------------------------------------------

    async def check_password(self, user: dict[str, Any] | None, password: str) -> dict[str, Any]:
        """The user if ``password`` is theirs and they may log in; else one uniform ``401``.

        An unknown user costs a full scrypt too, so a wrong name and a wrong
        password look the same from outside, in body and in timing.
        """
        ok = await passwords.verify_password(password, user.get("password") if user else None)
        if not ok or user is None:
            raise unauthorized()
        if not user.get("enabled", True):
            raise unauthorized(f"The account is disabled for user: {user['id']}.")
        domain = await self.store.get("domains", user.get("domain_id", ""))
        if domain is None or not domain.get("enabled", True):
            raise unauthorized()
        return user

    async def password_user(self, ident: dict[str, Any]) -> dict[str, Any]:
        """The user of a ``password`` auth method, authenticated."""
        spec = ident.get("password")
        user_ref = spec.get("user") if isinstance(spec, dict) else None
        if not isinstance(user_ref, dict) or not isinstance(user_ref.get("password"), str):
            raise bad_request("Expecting to find password.user.password in the auth request.")
        password = user_ref["password"]
        if len(password) > passwords.MAX_PASSWORD_LENGTH:
            raise unauthorized()
        user: dict[str, Any] | None = None
        if isinstance(user_ref.get("id"), str):
            user = await self.store.get("users", user_ref["id"])
        elif isinstance(user_ref.get("name"), str):
            domain = await self.resolve_domain(user_ref.get("domain"))
            if "domain" not in user_ref:
                raise bad_request("Expecting to find domain in user: a user name needs its domain.")
            if domain is not None:
                user = await self.by_name("user", domain["id"], user_ref["name"])
        else:
            raise bad_request("Expecting to find id or name in user.")
        return await self.check_password(user, password)

    async def user_by_names(self, user_name: str, domain_id: str = DEFAULT_DOMAIN_ID) -> dict[str, Any] | None:
        return await self.by_name("user", domain_id, user_name)

    async def _scope_project(self, ref: dict[str, Any]) -> dict[str, Any]:
        project: dict[str, Any] | None = None
        if isinstance(ref.get("id"), str):
            project = await self.store.get("projects", ref["id"])
        elif isinstance(ref.get("name"), str):
            domain = await self.resolve_domain(ref.get("domain"))
            if domain is not None:
                project = await self.by_name("project", domain["id"], ref["name"])
        else:
            raise bad_request("Expecting to find id or name in project scope.")
        if project is None:
            raise unauthorized("The project of the requested scope was not found.")
        if not project.get("enabled", True):
            raise unauthorized(f"Project {project['id']} is disabled.")
        domain = await self.store.get("domains", project.get("domain_id", ""))
        if domain is None or not domain.get("enabled", True):
            raise unauthorized(f"The domain of project {project['id']} is disabled.")
        return project

    async def scoped_payload(self, user: dict[str, Any], methods: tuple[str, ...], scope: Any, *,
                             expires_at: float | None = None, audit_ids: tuple[str, ...] = (),
                             life: float = DEFAULT_TOKEN_LIFE) -> TokenPayload:
        """The payload of a new token for an authenticated ``user`` and a requested scope.

        ``scope`` is the ``auth.scope`` of the request: ``{"project": ...}``,
        ``{"domain": ...}``, ``"unscoped"``, or ``None`` (then the user's
        ``default_project_id`` if they have a role there, else unscoped).
        """
        now = time.time()
        base = {"user_id": user["id"], "user_name": user["name"], "user_domain_id": user["domain_id"],
                "methods": methods, "issued_at": now,
                "expires_at": min(expires_at or now + life, now + KEY_PERIOD),
                "audit_ids": (new_audit_id(), *audit_ids[:1])}
        if scope is None and user.get("default_project_id"):
            project = await self.store.get("projects", user["default_project_id"])
            if project is not None and project.get("enabled", True):
                roles = await self.roles_on(user["id"], "project", project["id"])
                if roles:
                    return TokenPayload(**base, project_id=project["id"], project_name=project["name"],
                                        project_domain_id=project["domain_id"], roles=tuple(roles))
        if scope is None or scope == "unscoped":
            return TokenPayload(**base)
        if not isinstance(scope, dict):
            raise bad_request("Invalid scope in the auth request.")
        if isinstance(scope.get("project"), dict):
            project = await self._scope_project(scope["project"])
            roles = await self.roles_on(user["id"], "project", project["id"])
            if not roles:
                raise unauthorized(f"User {user['id']} has no access to project {project['id']}.")
            return TokenPayload(**base, project_id=project["id"], project_name=project["name"],
                                project_domain_id=project["domain_id"], roles=tuple(roles))
        if "domain" in scope:
            domain = await self.resolve_domain(scope["domain"])
            if domain is None or not domain.get("enabled", True):
                raise unauthorized("The domain of the requested scope was not found or is disabled.")
            roles = await self.roles_on(user["id"], "domain", domain["id"])
            if not roles:
                raise unauthorized(f"User {user['id']} has no access to domain {domain['id']}.")
            return TokenPayload(**base, domain_id=domain["id"], domain_name=domain["name"], roles=tuple(roles))
        if "system" in scope:
            raise unauthorized("System scope is not offered by this cloud; use the admin project.")
        raise bad_request("Invalid scope in the auth request.")

    async def authenticate(self, auth: dict[str, Any]) -> TokenPayload:
        """``POST /v3/auth/tokens``'s ``auth`` object -> the payload of the new token."""
        await self.ready()
        ident = auth.get("identity")
        if not isinstance(ident, dict) or not isinstance(ident.get("methods"), list) or not ident["methods"]:
            raise bad_request("Expecting to find identity.methods in the auth request.")
        methods = ident["methods"]
        scope = auth.get("scope")
        if "password" in methods:
            user = await self.password_user(ident)
            return await self.scoped_payload(user, ("password",), scope)
        if "token" in methods:
            spec = ident.get("token")
            token = spec.get("id") if isinstance(spec, dict) else None
            if not isinstance(token, str):
                raise bad_request("Expecting to find token.id in the auth request.")
            old = self.validator.validate(token)
            if old is None:
                raise unauthorized("The token is not valid.")
            if old.app_cred_id is not None:
                raise unauthorized("A token from an application credential may not be rescoped.")
            user = await self.store.get("users", old.user_id)
            if user is None or not user.get("enabled", True):
                raise unauthorized()
            return await self.scoped_payload(user, tuple(dict.fromkeys((*old.methods, "token"))),
                                             scope if scope is not None else "unscoped",
                                             expires_at=old.expires_at, audit_ids=old.audit_ids)
        if "application_credential" in methods:
            return await self._app_cred_payload(ident.get("application_credential"))
        raise unauthorized(f"Unsupported authentication method: {methods[0]!s:.40}.")

    def issue(self, payload: TokenPayload) -> str:
        return self.codec.seal(payload)

    def validate(self, token: str) -> TokenPayload | None:
        return self.validator.validate(token)

    def identity_of(self, p: TokenPayload) -> Identity:
        """The proxy's view of a token: who, in which project, with which (implied) roles."""
        roles = effective_roles(p.role_names)
        return Identity(project=p.project_name or "", user=p.user_name,
                        cluster_admin=p.project_id == self.admin_project_id and "admin" in roles,
                        project_id=p.project_id or "", user_id=p.user_id, roles=roles)

    def caller(self, token: str) -> Identity | None:
        """The identity a token proves, or ``None`` (forged, expired, revoked): no backend call."""
        payload = self.validator.validate(token)
        return None if payload is None else self.identity_of(payload)

    async def login_v1(self, project_name: str, user_name: str, password: str,
                       life: float) -> TokenPayload | None:
        """A Swift ``/auth/v1.0`` login (``project:user`` in the default domain).

        ``None`` when no identity user has that name (the caller may try
        older user stores); :class:`IdentityError` ``401`` for a wrong
        password, a disabled user, or no role on the project.
        """
        await self.ready()
        user = await self.by_name("user", DEFAULT_DOMAIN_ID, user_name)
        if user is None:
            return None
        user = await self.check_password(user, password)
        scope = {"project": {"name": project_name, "domain": {"id": DEFAULT_DOMAIN_ID}}}
        return await self.scoped_payload(user, ("password",), scope, life=life)

    async def ec2_identity(self, access: str) -> tuple[Identity, str] | None:
        """``(identity, secret)`` of an EC2 access key: the S3 API's signature lookup."""
        found = await self._ec2_lookup(access)
        if found is None:
            return None
        secret, user, project, roles = found
        return Identity(project=project["name"], user=user["name"],
                        cluster_admin=project["id"] == self.admin_project_id and "admin" in roles,
                        project_id=project["id"], user_id=user["id"], roles=roles), secret

    # -- application credentials -------------------------------------------------

    async def create_app_cred(self, caller: TokenPayload, spec: dict[str, Any]) -> dict[str, Any]:
        """An application credential for the caller's current project (and a subset of its roles)."""
        if caller.project_id is None:
            raise bad_request("Application credentials need a project-scoped token.")
        if caller.app_cred_id is not None:
            raise IdentityError(403, "An application credential cannot create another one.")
        cname = validate.name(spec.get("name"), "name", 255)
        have = dict(caller.roles)
        wanted = spec.get("roles")
        if wanted is None:
            roles = list(caller.roles)
        else:
            if not isinstance(wanted, list):
                raise bad_request("Invalid input for field 'roles'.")
            by_name = {n: i for i, n in have.items()}
            roles = []
            for ref in wanted:
                rid = ref.get("id") if isinstance(ref, dict) else None
                rid = rid or (by_name.get(ref.get("name")) if isinstance(ref, dict) else None)
                if rid not in have:
                    raise IdentityError(403, "An application credential cannot hold roles its user lacks.")
                roles.append((rid, have[rid]))
        secret = spec.get("secret") or secrets.token_urlsafe(48)
        if not isinstance(secret, str) or len(secret) > passwords.MAX_PASSWORD_LENGTH:
            raise bad_request("Invalid input for field 'secret'.")
        expires = spec.get("expires_at")
        expires_at = _parse_time(expires) if expires is not None else None
        cred_id = new_id()
        record = {"id": cred_id, "name": cname, "user_id": caller.user_id, "project_id": caller.project_id,
                  "roles": [list(r) for r in roles], "expires_at": expires_at,
                  "description": spec.get("description") if isinstance(spec.get("description"), str) else None,
                  "unrestricted": False, "secret_hash": await passwords.hash_password(secret)}
        await self.store.put("app_creds", cred_id, record)
        return {**record, "secret": secret}

    async def _app_cred_payload(self, spec: Any) -> TokenPayload:
        if not isinstance(spec, dict) or not isinstance(spec.get("secret"), str):
            raise bad_request("Expecting to find application_credential.secret in the auth request.")
        record = None
        if isinstance(spec.get("id"), str):
            record = await self.store.get("app_creds", spec["id"])
        ok = await passwords.verify_password(spec["secret"], record.get("secret_hash") if record else None)
        if not ok or record is None:
            raise unauthorized()
        if record.get("expires_at") is not None and record["expires_at"] <= time.time():
            raise unauthorized("The application credential has expired.")
        user = await self.store.get("users", record["user_id"])
        project = await self.store.get("projects", record["project_id"])
        if user is None or not user.get("enabled", True) or project is None or not project.get("enabled", True):
            raise unauthorized()
        current = dict(await self.roles_on(user["id"], "project", project["id"]))
        roles = tuple((rid, name) for rid, name in record["roles"] if rid in current)
        if not roles:
            raise unauthorized("The application credential's user lost its roles on the project.")
        now = time.time()
        expires_at = now + DEFAULT_TOKEN_LIFE
        if record.get("expires_at") is not None:
            expires_at = min(expires_at, record["expires_at"])
        return TokenPayload(user_id=user["id"], user_name=user["name"], user_domain_id=user["domain_id"],
                            methods=("application_credential",), issued_at=now, expires_at=expires_at,
                            audit_ids=(new_audit_id(),), project_id=project["id"],
                            project_name=project["name"], project_domain_id=project["domain_id"],
                            roles=roles, app_cred_id=record["id"])

    # -- records with invariants -------------------------------------------------

    async def create_named(self, kind: str, scope: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Store a new domain/project/user/role whose name must be unique in ``scope``."""
        container = kind + "s"
        if await self.by_name(kind, scope, doc["name"]) is not None:
            raise conflict(f"{kind}: a {kind} named {doc['name']!r} already exists")
        doc = {**doc, "id": doc.get("id") or new_id()}
        await self.store.put(container, doc["id"], doc)
        await self.store.set_name(kind, scope, doc["name"], doc["id"])
        if kind == "role":
            self.forget_roles()
        return doc

    async def rename(self, kind: str, scope: str, old: dict[str, Any], new_name: str) -> None:
        if new_name == old["name"]:
            return
        if await self.by_name(kind, scope, new_name) is not None:
            raise conflict(f"{kind}: a {kind} named {new_name!r} already exists")
        await self.store.set_name(kind, scope, new_name, old["id"])
        await self.store.drop_name(kind, scope, old["name"])

    async def grant(self, user_id: str, target_kind: str, target_id: str, role_id: str) -> None:
        await self.store.put("assignments", assignment_name(user_id, target_kind, target_id, role_id))

    async def revoke_grant(self, user_id: str, target_kind: str, target_id: str, role_id: str) -> None:
        await self.store.delete("assignments", assignment_name(user_id, target_kind, target_id, role_id))
        await self.sync.publish("grant", f"{user_id}:{target_id}")
        self._ec2.clear()

    async def drop_assignments(self, match) -> None:
        """Delete every assignment ``match(user, kind, target, role)`` selects."""
        doomed = [a for a in await self.assignments() if match(*a)]
        async with trio.open_nursery() as nursery:
            for a in doomed:
                nursery.start_soon(self.store.delete, "assignments", assignment_name(*a))

    async def revoke(self, kind: str, key: str) -> None:
        await self.sync.publish(kind, key)
        self._ec2.clear()

    async def set_password(self, user: dict[str, Any], password: Any) -> dict[str, Any]:
        if not isinstance(password, str) or not password or len(password) > passwords.MAX_PASSWORD_LENGTH:
            raise bad_request("Invalid input for field 'password'.")
        return {**user, "password": await passwords.hash_password(password)}

    # -- EC2 credentials (the S3 keys) -------------------------------------------

    async def create_ec2(self, user_id: str, project_id: str) -> dict[str, Any]:
        access, secret = new_id(), new_id()
        record = {"id": ec2_credential_id(access), "type": "ec2", "user_id": user_id,
                  "project_id": project_id, "blob": {"access": access, "secret": secret, "trust_id": None}}
        await self.store.put("credentials", record["id"], record)
        return record

    async def ec2_credentials(self, user_id: str | None = None) -> list[dict[str, Any]]:
        creds = await self.store.list("credentials")
        return [c for c in creds if c.get("type") == "ec2" and (user_id is None or c.get("user_id") == user_id)]

    async def secret_for_access_key(self, access: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """``(secret, user record, project record)`` of an EC2 access key, or ``None``.

        This is the S3 API's key lookup: ``None`` for an unknown key, a deleted
        or disabled user or project, or a user without any role on the
        credential's project any more.  Answers are cached per node for
        :data:`EC2_TTL` seconds (local changes drop the cache at once).
        """
        found = await self._ec2_lookup(access)
        return None if found is None else found[:3]

    async def ec2_roles(self, access: str) -> tuple[str, dict[str, Any], dict[str, Any], frozenset[str]] | None:
        """As :meth:`secret_for_access_key`, plus the role names the user holds on the project."""
        return await self._ec2_lookup(access)

    async def _ec2_lookup(self, access: str):
        if not access or len(access) > 128:
            return None
        now = time.monotonic()
        hit = self._ec2.get(access)
        if hit is not None and hit[0] > now:
            return hit[1]
        await self.ready()
        result = None
        cred = await self.store.get("credentials", ec2_credential_id(access))
        blob = cred.get("blob") if cred else None
        if cred and cred.get("type") == "ec2" and isinstance(blob, dict) and blob.get("access") == access:
            user = await self.store.get("users", cred["user_id"])
            project = await self.store.get("projects", cred.get("project_id") or "")
            if user and project and user.get("enabled", True) and project.get("enabled", True):
                roles = await self.roles_on(user["id"], "project", project["id"])
                if roles:
                    result = (blob["secret"], user, project, effective_roles({n for _, n in roles}))
        if len(self._ec2) > 10000:
            self._ec2.clear()
        self._ec2[access] = (now + EC2_TTL, result)
        return result

    def forget_ec2(self) -> None:
        self._ec2.clear()


def _parse_time(value: Any) -> float:
    """An ISO 8601 time (``2030-01-01T00:00:00Z``) -> epoch seconds; ``400`` if malformed."""
    if not isinstance(value, str):
        raise bad_request("Invalid input for field 'expires_at'.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request("Invalid input for field 'expires_at'.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
