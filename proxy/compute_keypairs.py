"""Keypairs (``/os-keypairs``): SSH public keys per user, kept in the ring.

Import one (``public_key`` given) or let the service make an Ed25519 pair
and return the private key once, as Nova does.  Records live in
``.compute/keypairs/<project>:<user>/<name>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.auth import Identity
from proxy.compute_http import APIError, json_response, require_dict
from proxy.compute_records import JsonRecords

NAME_RE = re.compile(r"^[\w .@-]{1,255}$")
KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-dss")


def fingerprint(public_key: str) -> str:
    """Nova's fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise APIError(400, "Keypair data is invalid: not an OpenSSH public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "Keypair data is invalid: bad base64") from None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate() -> tuple[str, str]:
    """A new Ed25519 key pair: (OpenSSH public key, OpenSSH private key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return public + " peerstack", private


class Keypairs:
    def __init__(self, records: JsonRecords) -> None:
        self.records = records

    @staticmethod
    def _prefix(identity: Identity) -> str:
        return f"{identity.user_id}/"

    async def get(self, identity: Identity, name: str) -> dict[str, Any] | None:
        if not NAME_RE.match(name):
            return None
        return await self.records.get(self._prefix(identity) + name)

    async def handle(self, method: str, parts: list[str], body: Any, identity: Identity):
        if not parts and method == "GET":
            found = await self.records.all(self._prefix(identity))
            return json_response(200, {"keypairs": [
                {"keypair": {k: kp[k] for k in ("name", "public_key", "fingerprint", "type")}}
                for kp in found]})
        if not parts and method == "POST":
            return await self.create(body, identity)
        if len(parts) == 1:
            keypair = await self.get(identity, parts[0])
            if keypair is None:
                raise APIError(404, f"Keypair {parts[0]} not found for user {identity.user}")
            if method == "GET":
                return json_response(200, {"keypair": keypair})
            if method == "DELETE":
                await self.records.delete(self._prefix(identity) + parts[0])
                return json_response(202, {})
        raise APIError(404, "Not found")

    async def create(self, body: Any, identity: Identity):
        doc = require_dict(body, "keypair")
        name = doc.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise APIError(400, "Keypair name contains unsafe characters or is too long")
        if await self.get(identity, name) is not None:
            raise APIError(409, f"Key pair '{name}' already exists.")
        public_key = doc.get("public_key")
        private_key = None
        if public_key is None:
            public_key, private_key = generate()
        elif not isinstance(public_key, str):
            raise APIError(400, "public_key must be a string")
        keypair = {"name": name, "public_key": public_key.strip(),
                   "fingerprint": fingerprint(public_key), "type": doc.get("type") or "ssh",
                   "user_id": identity.user_id, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "deleted": False, "id": 0}
        await self.records.put(self._prefix(identity) + name, keypair)
        shown = dict(keypair)
        if private_key is not None:
            shown["private_key"] = private_key
        return json_response(200, {"keypair": shown})
