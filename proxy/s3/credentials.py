"""S3 access keys: one access/secret pair per user, derived from the cluster secret.

The access key names the user (``PS`` + base32 of ``project:user``), so
any node can find whose key it is without a lookup table; the secret is an
HMAC of that name under a key derived from the cluster secret, so every
node computes the same secret and none has to be stored or replicated.
``peerstack user add`` prints the pair (:func:`key_pair`); the bootstrap
admin of the cluster file has one too.

Keys the identity service made (EC2 credentials, ``openstack ec2
credentials create``) work too: any access key that is not one of the
derived ones is looked up there, and the bootstrap admin's derived key acts
in the identity service's admin project, so S3 and Swift see the same
account ``AUTH_<project id>``.

A key is honoured only while its user exists: the user record is looked up
(and remembered for :data:`CACHE_TTL` seconds, so a deleted user's key dies
within that time).  Rotating a user's S3 secret is not offered here; the
identity service's EC2 credentials take that over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from node.config import ClusterConfig
from proxy.auth import Identity
from proxy.identity.service import IdentityService
from proxy.users import UserError, UserStore, split_user

ACCESS_PREFIX = "PS"
CACHE_TTL = 10.0


def _secret_key(cluster: ClusterConfig) -> bytes:
    return hmac.new(cluster.secret_bytes, b"peerstack s3 secret keys", hashlib.sha256).digest()


def access_key_for(project: str, user: str) -> str:
    name = f"{project}:{user}".encode()
    return ACCESS_PREFIX + base64.b32encode(name).decode().rstrip("=")


def secret_for(cluster: ClusterConfig, project: str, user: str) -> str:
    mac = hmac.new(_secret_key(cluster), f"{project}:{user}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:30]).decode()


def key_pair(cluster: ClusterConfig, project: str, user: str) -> tuple[str, str]:
    """``(access key, secret key)`` of ``project:user``."""
    return access_key_for(project, user), secret_for(cluster, project, user)


def user_of(access_key: str) -> tuple[str, str] | None:
    """``(project, user)`` an access key names, or ``None`` if it is not one of ours."""
    if not access_key.startswith(ACCESS_PREFIX):
        return None
    body = access_key[len(ACCESS_PREFIX):]
    try:
        name = base64.b32decode(body + "=" * (-len(body) % 8)).decode()
        return split_user(name)
    except (binascii.Error, ValueError, UnicodeDecodeError, UserError):
        return None


class Credentials:
    """Access key -> ``(identity, secret)`` for the request signature checks."""

    def __init__(self, cluster: ClusterConfig, users: UserStore, ttl: float = CACHE_TTL,
                 identity: IdentityService | None = None) -> None:
        self.cluster = cluster
        self.users = users
        self.identity = identity
        self.ttl = ttl
        self._known: dict[str, tuple[float, Identity | None]] = {}

    async def lookup(self, access_key: str) -> tuple[Identity, str] | None:
        """The key's owner and secret; ``None`` if no such key (InvalidAccessKeyId)."""
        who = user_of(access_key)
        if who is None:
            return await self.identity.ec2_identity(access_key) if self.identity is not None else None
        project, user = who
        if self.users.bootstrap_admin(project, user):
            if self.identity is not None:
                ids = {"project_id": self.identity.admin_project_id, "user_id": self.identity.admin_user_id}
            else:
                ids = {}
            return Identity(project, user, True, **ids), secret_for(self.cluster, project, user)
        now = time.monotonic()
        hit = self._known.get(access_key)
        if hit is None or hit[0] < now:
            record = await self.users.get(project, user)
            identity = Identity(project, user, record.admin) if record is not None else None
            if len(self._known) > 10000:
                self._known.clear()
            self._known[access_key] = (now + self.ttl, identity)
            hit = self._known[access_key]
        if hit[1] is None:
            return None
        return hit[1], secret_for(self.cluster, project, user)
