"""Swift v1 users, kept in the ring like any other data.

Each user is one small JSON object in the system account ``.peerstack``,
container ``users``, named ``<project>:<user>``.  It holds the scrypt hash
of the user's key (never the key) and whether the user is a cluster admin.
Because it is an ordinary replicated object, a user added on one node can
log in on every node, and losing a node loses no user.

The system account does not start with ``AUTH_``, so no Swift request can
reach it: the proxy only serves ``AUTH_*`` accounts.

The cluster's bootstrap admin (``[admin]`` in the cluster file) is not
stored: every node knows it from the cluster file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

import trio

from node.cluster_client import ClusterClient
from node.config import ClusterConfig

SYSTEM_ACCOUNT = ".peerstack"
USERS_CONTAINER = "users"

# scrypt cost: ~16 MiB and ~50 ms per check here, run in a thread.
_SCRYPT_N = 2 ** 14
_SCRYPT_R = 8
_SCRYPT_P = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


class UserError(Exception):
    """A user name is malformed or the user store could not be written."""


@dataclass
class User:
    project: str
    user: str
    admin: bool
    salt: str
    key_hash: str

    @property
    def name(self) -> str:
        return f"{self.project}:{self.user}"

    def to_json(self) -> bytes:
        return json.dumps({"project": self.project, "user": self.user, "admin": self.admin,
                           "scrypt": {"n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P,
                                      "salt": self.salt, "hash": self.key_hash}}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> User:
        doc = json.loads(data)
        return cls(doc["project"], doc["user"], bool(doc.get("admin")),
                   doc["scrypt"]["salt"], doc["scrypt"]["hash"])


def split_user(name: str) -> tuple[str, str]:
    """``project:user`` -> ``(project, user)``; :class:`UserError` if malformed."""
    project, sep, user = name.partition(":")
    if not sep or not _NAME_RE.match(project) or not _NAME_RE.match(user):
        raise UserError(f"user must be project:user (letters, digits, _.@+-), got {name!r}")
    return project, user


def hash_key(key: str, salt: bytes) -> str:
    digest = hashlib.scrypt(key.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=64 << 20, dklen=32)
    return base64.b64encode(digest).decode()


def make_user(project: str, user: str, key: str, admin: bool) -> User:
    salt = secrets.token_bytes(16)
    return User(project, user, admin, base64.b64encode(salt).decode(), hash_key(key, salt))


async def check_key(user: User, key: str) -> bool:
    """Constant-time comparison of ``key`` with the stored hash (scrypt in a thread)."""
    expected = await trio.to_thread.run_sync(hash_key, key, base64.b64decode(user.salt))
    return hmac.compare_digest(expected, user.key_hash)


class UserStore:
    """Read and write user records through the cluster client."""

    def __init__(self, cc: ClusterClient, cluster: ClusterConfig) -> None:
        self.cc = cc
        self.cluster = cluster

    def bootstrap_admin(self, project: str, user: str) -> bool:
        admin = self.cluster.admin
        return bool(admin.password) and (project, user) == (admin.project, admin.user)

    async def verify(self, project: str, user: str, key: str) -> tuple[bool, bool]:
        """``(valid, cluster_admin)`` for a login attempt."""
        if self.bootstrap_admin(project, user):
            return hmac.compare_digest(key.encode(), self.cluster.admin.password.encode()), True
        record = await self.get(project, user)
        if record is None:
            # Spend the same time as a real check so timing does not reveal users.
            await trio.to_thread.run_sync(hash_key, key, b"\0" * 16)
            return False, False
        ok = await check_key(record, key)
        return ok, ok and record.admin

    async def get(self, project: str, user: str) -> User | None:
        async with self.cc.get_object(SYSTEM_ACCOUNT, USERS_CONTAINER, f"{project}:{user}") as resp:
            if resp.status != 200:
                return None
            data = b"".join([chunk async for chunk in resp])
        try:
            return User.from_json(data)
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, record: User) -> None:
        made = await self.cc.put_container(SYSTEM_ACCOUNT, USERS_CONTAINER)
        if made.status // 100 != 2:
            raise UserError(f"cannot create the user store: {made.status}")
        body = record.to_json()
        status, _ = await self.cc.put_object(SYSTEM_ACCOUNT, USERS_CONTAINER, record.name,
                                             {"Content-Type": "application/json"}, body, len(body))
        if status // 100 != 2:
            raise UserError(f"cannot store user {record.name}: {status}")

    async def list(self) -> list[str]:
        resp = await self.cc.get_container(SYSTEM_ACCOUNT, USERS_CONTAINER, {"format": "json"})
        if resp.status == 404:
            return []
        if resp.status // 100 != 2:
            raise UserError(f"cannot list users: {resp.status}")
        return [row["name"] for row in json.loads(resp.body or b"[]")]
