"""Password hashing for identity users: scrypt, self-describing, checked in a thread.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the
cost can be raised later without invalidating old hashes: each is checked
with the parameters it was made with.  One check costs ~16 MiB and ~50 ms
here, which is why it runs in a worker thread and happens once per login,
never per request (requests carry tokens).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import trio

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
#: the longest password accepted (Keystone's default ``max_password_length``)
MAX_PASSWORD_LENGTH = 4096

#: hashed when a user does not exist, so a wrong name costs what a wrong password costs
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * n * r * p + (1 << 20), dklen=32)


def hash_password_sync(password: str) -> str:
    """The storable hash of ``password`` (blocking: call from a thread or a command)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def _verify_sync(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


async def hash_password(password: str) -> str:
    return await trio.to_thread.run_sync(hash_password_sync, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    """Does ``password`` match ``encoded``?  ``None`` (no such user) costs the same and fails."""
    if encoded is None:
        await trio.to_thread.run_sync(_verify_sync, password, _DUMMY)
        return False
    return await trio.to_thread.run_sync(_verify_sync, password, encoded)
