"""Swift v1 authentication: ``GET /auth/v1.0`` and stateless tokens.

A token is ``AUTH_tk`` + base64url(``expires``, ``admin``, ``project``,
``user``) + ``.`` + an HMAC-SHA256 of that payload under a key derived from
the cluster secret.  Any node can check any node's token without shared
state; a token dies at its expiry (``TOKEN_LIFE``, like tempauth's
``token_life``).  Keys are checked once per login (scrypt), never per
request.

:meth:`SwiftAuth.identify` is the single place that turns a request into an
:class:`Identity`; with the identity service (:mod:`proxy.identity`) it also
accepts Keystone tokens and applies the policy table's roles.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.config import ClusterConfig
from node.http_server import Request, Response
from node.log import log_event
from proxy.identity.errors import IdentityError
from proxy.identity.policy import enforce
from proxy.swift_responses import error
from proxy.users import UserError, UserStore, split_user

if TYPE_CHECKING:
    from proxy.identity.service import IdentityService

log = logging.getLogger("peerstack.proxy.auth")

TOKEN_PREFIX = "AUTH_tk"
TOKEN_LIFE = 86400
ACCOUNT_PREFIX = "AUTH_"


@dataclass(frozen=True)
class Identity:
    """Who is asking: a user acting in one project with that project's roles.

    ``project`` and ``user`` are names (container ACLs grant by name);
    ``project_id`` names the Swift account, ``AUTH_<project_id>``.  Users of
    the older Swift-only user store have no separate ids: their names serve.
    ``roles`` holds role names with implied ones included (``admin`` ->
    ``member`` -> ``reader``), as :mod:`proxy.identity.policy` reads them.
    """

    project: str
    user: str
    cluster_admin: bool = False
    project_id: str = ""
    user_id: str = ""
    roles: frozenset[str] = frozenset({"member", "reader"})
    #: whether this request gets the owner's rights on the project's account
    #: (``False`` for a request the roles do not allow, e.g. a reader's PUT)
    owner: bool = True

    def __post_init__(self) -> None:
        if not self.project_id:
            object.__setattr__(self, "project_id", self.project)
        if not self.user_id:
            object.__setattr__(self, "user_id", self.user)

    @property
    def account(self) -> str:
        return ACCOUNT_PREFIX + self.project_id

    def owns(self, account: str) -> bool:
        """Owner's rights on ``account``: its own project's (if allowed), or any for a cluster admin."""
        return self.cluster_admin or (self.owner and bool(self.project_id) and account == self.account)


def token_key(cluster: ClusterConfig) -> bytes:
    """The token MAC key: derived, so a token never exposes the cluster secret."""
    return hmac.new(cluster.secret_bytes, b"peerstack swift v1 token", hashlib.sha256).digest()


def make_token(key: bytes, identity: Identity, expires: int) -> str:
    payload = f"{expires}\n{int(identity.cluster_admin)}\n{identity.project}\n{identity.user}"
    body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    sig = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return f"{TOKEN_PREFIX}{body}.{sig}"


def check_token(key: bytes, token: str, now: float | None = None) -> Identity | None:
    """The identity a token proves, or ``None`` if forged, malformed or expired."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    body, _, sig = token[len(TOKEN_PREFIX):].rpartition(".")
    expected = hmac.new(key, body.encode("latin-1", "replace"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        return None
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        expires, admin, project, user = payload.split("\n")
        if int(expires) <= (time.time() if now is None else now):
            return None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return Identity(project, user, admin == "1")


def with_rights(who: Identity, method: str) -> Identity:
    """``who``, keeping owner's rights only where the policy table grants them for ``method``.

    One rule for every object API (Swift and S3): reads need
    ``object-store:read``, anything else ``object-store:write`` -- so a
    ``reader`` reads its project's data but cannot change it.
    """
    action = "object-store:read" if method in ("GET", "HEAD") else "object-store:write"
    if enforce(who, action, project_id=who.project_id):
        return who
    return dataclasses.replace(who, owner=False)


class SwiftAuth:
    """Logins (``/auth/v1.0``) and token checks for the Swift API.

    With an identity service, tokens are Keystone tokens (from ``/v3`` or
    from ``/auth/v1.0``, which then logs identity users in), and the policy
    table decides whether the token's roles give the owner's rights for
    this request: a ``reader`` gets them for reads only.  ``AUTH_tk``
    tokens of the older Swift-only users keep working beside them.
    """

    def __init__(self, cluster: ClusterConfig, users: UserStore,
                 identity: IdentityService | None = None) -> None:
        self.users = users
        self.identity = identity
        self._key = token_key(cluster)

    def identify(self, request: Request) -> Identity | None:
        """The caller's identity from ``X-Auth-Token`` (``None``: anonymous or bad token)."""
        token = request.headers.get("x-auth-token") or request.headers.get("x-storage-token")
        if not token:
            return None
        if token.startswith(TOKEN_PREFIX) or self.identity is None:
            return check_token(self._key, token)
        who = self.identity.caller(token)
        return None if who is None else with_rights(who, request.method)

    async def _identity_login(self, request: Request, project: str, user: str, key: str) -> Response | None:
        """Log an identity user in; ``None`` if there is no such identity user."""
        assert self.identity is not None
        try:
            payload = await self.identity.login_v1(project, user, key, TOKEN_LIFE)
        except IdentityError as exc:
            log_event(log, "auth.failed", rid=request.request_id, user=f"{project}:{user}", reason=exc.message)
            return error(401)
        if payload is None:
            return None
        token = self.identity.issue(payload)
        host = request.headers.get("host") or "localhost"
        url = f"http://{host}/v1/{ACCOUNT_PREFIX}{payload.project_id}"
        log_event(log, "auth.login", rid=request.request_id, user=f"{project}:{user}", identity=True)
        return Response(200, [("X-Auth-Token", token), ("X-Storage-Token", token),
                              ("X-Storage-Url", url),
                              ("X-Auth-Token-Expires", str(int(payload.expires_at - time.time()))),
                              ("Content-Type", "text/plain; charset=UTF-8")], b"")

    async def login(self, request: Request) -> Response:
        """``GET /auth/v1.0`` with ``X-Auth-User: project:user`` and ``X-Auth-Key``."""
        name = request.headers.get("x-auth-user") or request.headers.get("x-storage-user")
        key = request.headers.get("x-auth-key") or request.headers.get("x-storage-pass")
        if not name or not key:
            return error(401)
        try:
            project, user = split_user(name)
        except UserError:
            return error(401)
        if self.identity is not None:
            answer = await self._identity_login(request, project, user, key)
            if answer is not None:
                return answer
            if self.users.bootstrap_admin(project, user):
                # The admin lives in identity now; its password may have changed there.
                return error(401)
        ok, admin = await self.users.verify(project, user, key)
        if not ok:
            log_event(log, "auth.failed", rid=request.request_id, user=name)
            return error(401)
        expires = int(time.time()) + TOKEN_LIFE
        identity = Identity(project, user, admin)
        token = make_token(self._key, identity, expires)
        host = request.headers.get("host") or "localhost"
        url = f"http://{host}/v1/{identity.account}"
        log_event(log, "auth.login", rid=request.request_id, user=name, admin=admin)
        return Response(200, [("X-Auth-Token", token), ("X-Storage-Token", token),
                              ("X-Storage-Url", url), ("X-Auth-Token-Expires", str(TOKEN_LIFE)),
                              ("Content-Type", "text/plain; charset=UTF-8")], b"")
