"""Swift v1 authentication: ``GET /auth/v1.0`` and stateless tokens.

A token is ``AUTH_tk`` + base64url(``expires``, ``admin``, ``project``,
``user``) + ``.`` + an HMAC-SHA256 of that payload under a key derived from
the cluster secret.  Any node can check any node's token without shared
state; a token dies at its expiry (``TOKEN_LIFE``, like tempauth's
``token_life``).  Keys are checked once per login (scrypt), never per
request.

:meth:`SwiftAuth.identify` is the single place that turns a request into an
:class:`Identity`; the Keystone issue replaces it without touching the API
handlers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

from node.config import ClusterConfig
from node.http_server import Request, Response
from node.log import log_event
from proxy.swift_responses import error
from proxy.users import UserError, UserStore, split_user

log = logging.getLogger("peerstack.proxy.auth")

TOKEN_PREFIX = "AUTH_tk"
TOKEN_LIFE = 86400
ACCOUNT_PREFIX = "AUTH_"


@dataclass(frozen=True)
class Identity:
    """Who is asking: a project member, maybe a cluster admin."""

    project: str
    user: str
    cluster_admin: bool = False

    @property
    def account(self) -> str:
        return ACCOUNT_PREFIX + self.project

    def owns(self, account: str) -> bool:
        """Full rights on ``account``: its own project's, or any for a cluster admin."""
        return self.cluster_admin or account == self.account


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


class SwiftAuth:
    """Logins (``/auth/v1.0``) and token checks for the Swift API."""

    def __init__(self, cluster: ClusterConfig, users: UserStore) -> None:
        self.users = users
        self._key = token_key(cluster)

    def identify(self, request: Request) -> Identity | None:
        """The caller's identity from ``X-Auth-Token`` (``None``: anonymous or bad token)."""
        token = request.headers.get("x-auth-token") or request.headers.get("x-storage-token")
        if not token:
            return None
        return check_token(self._key, token)

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
