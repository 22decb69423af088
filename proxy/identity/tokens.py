"""Stateless tokens: Fernet under keys derived from the cluster secret, plus revocations.

A token is a Fernet token (AES-128-CBC + HMAC-SHA256) whose plaintext is a
compact JSON :class:`TokenPayload`: who (user id, name, domain), the scope
(project or domain, names included), the role names granted on that scope
at issue time, the auth methods, issue and expiry times, and the audit ids.
Because the roles ride inside the authenticated ciphertext, any node can
turn a token into an identity with no backend request: that is the hot path
of every API call.

**Keys.**  Fernet keys come from HKDF-SHA256 over the cluster secret, one per
:data:`KEY_PERIOD` epoch (``info = "peerstack fernet <epoch>"``).  New tokens
use the current epoch's key; the previous and next epochs' keys are
accepted too (a token lives at most one period; the next key tolerates a
peer whose clock runs ahead).  So keys rotate by themselves every period on
every node, in step, with nothing to distribute, and a derived key leaks
nothing about the secret or about other epochs' keys.

**Revocation.**  Tokens cannot be recalled, so validity also needs the
absence of a matching revocation event (Keystone's model): a token by audit
id, everything of a user (disable, password change, delete), of a project,
of a domain, or of one user on one scope (a role removed).  Events are held
in memory (:class:`RevocationList`) and replicated through the ring by
:class:`proxy.identity.revocations.RevocationSync`.

**Cache.**  :class:`TokenValidator` remembers decrypted payloads for
:data:`CACHE_TTL` seconds; a hit costs two dict lookups, a miss one AES
decrypt.  Revocation is checked on every use, cached or not.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: seconds between key rotations; no token may live longer than this
KEY_PERIOD = 86400
#: Keystone's default ``[token] expiration``
DEFAULT_TOKEN_LIFE = 3600
#: how long a decrypted token is remembered by one node
CACHE_TTL = 60.0
CACHE_SIZE = 20000
#: Fernet tokens are ~200-600 characters; refuse absurd ones before decrypting
MAX_TOKEN_LENGTH = 8192


def fernet_key(secret: bytes, epoch: int) -> bytes:
    """The Fernet key of one rotation epoch (urlsafe base64 of 32 derived bytes)."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"peerstack identity tokens",
               info=f"peerstack fernet {epoch}".encode()).derive(secret)
    return base64.urlsafe_b64encode(raw)


def new_audit_id() -> str:
    """Keystone's audit id shape: 16 random bytes, urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


@dataclass(frozen=True)
class TokenPayload:
    """What a token says; ``project_id`` xor ``domain_id`` (or neither: unscoped)."""

    user_id: str
    user_name: str
    user_domain_id: str
    methods: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_ids: tuple[str, ...]
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None
    #: role ``(id, name)`` pairs on the scope, as granted when the token was made
    roles: tuple[tuple[str, str], ...] = ()
    #: the application credential that made this token, if any
    app_cred_id: str | None = None

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.roles)

    def to_bytes(self) -> bytes:
        doc = {"u": [self.user_id, self.user_name, self.user_domain_id], "m": list(self.methods),
               "t": [round(self.issued_at, 6), round(self.expires_at, 6)], "a": list(self.audit_ids),
               "r": [list(r) for r in self.roles]}
        if self.project_id is not None:
            doc["p"] = [self.project_id, self.project_name, self.project_domain_id]
        if self.domain_id is not None:
            doc["d"] = [self.domain_id, self.domain_name]
        if self.app_cred_id is not None:
            doc["c"] = self.app_cred_id
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenPayload:
        doc = json.loads(data)
        project = doc.get("p") or [None, None, None]
        domain = doc.get("d") or [None, None]
        return cls(user_id=doc["u"][0], user_name=doc["u"][1], user_domain_id=doc["u"][2],
                   methods=tuple(doc["m"]), issued_at=float(doc["t"][0]), expires_at=float(doc["t"][1]),
                   audit_ids=tuple(doc["a"]), project_id=project[0], project_name=project[1],
                   project_domain_id=project[2], domain_id=domain[0], domain_name=domain[1],
                   roles=tuple((r[0], r[1]) for r in doc.get("r", [])), app_cred_id=doc.get("c"))


class TokenCodec:
    """Seal payloads into tokens and open them again, with rotating derived keys."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._keys: dict[int, Fernet] = {}

    def _fernet(self, epoch: int) -> Fernet:
        key = self._keys.get(epoch)
        if key is None:
            if len(self._keys) > 8:
                self._keys.clear()
            key = self._keys[epoch] = Fernet(fernet_key(self._secret, epoch))
        return key

    def _epoch(self) -> int:
        return int(self._clock() // KEY_PERIOD)

    def seal(self, payload: TokenPayload) -> str:
        if payload.expires_at - payload.issued_at > KEY_PERIOD:
            raise ValueError("a token may not outlive one key period")
        return self._fernet(self._epoch()).encrypt(payload.to_bytes()).decode().rstrip("=")

    def open(self, token: str) -> TokenPayload | None:
        """The payload of a genuine token (even an expired one); ``None`` if forged or garbled."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        epoch = self._epoch()
        keys = MultiFernet([self._fernet(epoch), self._fernet(epoch - 1), self._fernet(epoch + 1)])
        try:
            padded = token + "=" * (-len(token) % 4)
            return TokenPayload.from_bytes(keys.decrypt(padded.encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, ValueError, KeyError, IndexError, TypeError):
            return None


@dataclass
class RevocationList:
    """Revocation events in memory: ``(kind, key) -> revoke tokens issued at or before``.

    Kinds: ``audit`` (one token chain), ``user``, ``project``, ``domain`` and
    ``grant`` (``<user id>:<project or domain id>``: a role was removed),
    ``role`` (a role was deleted) and ``appcred`` (an application credential
    was deleted).
    """

    events: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, kind: str, key: str, issued_before: float) -> None:
        old = self.events.get((kind, key), 0.0)
        self.events[(kind, key)] = max(old, issued_before)

    def prune(self, older_than: float) -> None:
        """Forget events no live token can match (older than the longest token life)."""
        self.events = {k: v for k, v in self.events.items() if v >= older_than}

    def _hit(self, kind: str, key: str | None, issued_at: float) -> bool:
        if key is None:
            return False
        cutoff = self.events.get((kind, key))
        return cutoff is not None and issued_at <= cutoff

    def revoked(self, p: TokenPayload) -> bool:
        at = p.issued_at
        scope = p.project_id or p.domain_id
        return (any(self._hit("audit", a, at) for a in p.audit_ids)
                or self._hit("user", p.user_id, at)
                or self._hit("project", p.project_id, at)
                or self._hit("domain", p.user_domain_id, at)
                or self._hit("domain", p.project_domain_id, at)
                or self._hit("domain", p.domain_id, at)
                or (scope is not None and self._hit("grant", f"{p.user_id}:{scope}", at))
                or any(self._hit("role", rid, at) for rid, _ in p.roles)
                or self._hit("appcred", p.app_cred_id, at))


class TokenValidator:
    """Token string -> payload, cached per node, checked against expiry and revocations."""

    def __init__(self, codec: TokenCodec, revocations: RevocationList, *, ttl: float = CACHE_TTL,
                 size: int = CACHE_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.codec = codec
        self.revocations = revocations
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenPayload]] = {}
        #: decrypts performed (cache misses), for tests and metrics
        self.misses = 0

    def validate(self, token: str) -> TokenPayload | None:
        """The payload of a live token; ``None`` if forged, expired or revoked."""
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            payload = hit[1]
        else:
            self.misses += 1
            payload = self.codec.open(token)
            if payload is None:
                return None
            if len(self._cache) >= self.size:
                # Drop the oldest quarter: insertion order is age order.
                for stale in list(self._cache)[: self.size // 4]:
                    del self._cache[stale]
            self._cache[token] = (now + self.ttl, payload)
        if payload.expires_at <= now or self.revocations.revoked(payload):
            return None
        return payload
