"""Identity tokens: Fernet sealing, derived rotating keys, revocation events, the per-node cache."""

from __future__ import annotations

import pytest

from proxy.identity.tokens import (KEY_PERIOD, RevocationList, TokenCodec, TokenPayload, TokenValidator,
                                   fernet_key, new_audit_id)

SECRET = bytes(range(32))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload(now: float, **over) -> TokenPayload:
    base = dict(user_id="u1", user_name="alice", user_domain_id="default", methods=("password",),
                issued_at=now, expires_at=now + 3600, audit_ids=(new_audit_id(),), project_id="p1",
                project_name="proj", project_domain_id="default", roles=(("r1", "member"),))
    base.update(over)
    return TokenPayload(**base)


def test_seal_and_open_round_trip_and_tamper():
    clock = Clock(1_800_000_000.0)
    codec = TokenCodec(SECRET, clock)
    p = payload(clock.now)
    token = codec.seal(p)
    assert token.startswith("gAAAAA") and "=" not in token
    assert codec.open(token) == p
    for i in (10, len(token) // 2, len(token) - 2):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert codec.open(flipped) is None
    assert codec.open("") is None and codec.open("garbage") is None and codec.open("é" * 10) is None
    assert codec.open("x" * 100_000) is None
    # Another cluster's secret opens nothing.
    assert TokenCodec(b"other" * 8, clock).open(token) is None


def test_keys_rotate_per_epoch_and_old_tokens_survive_one_period():
    assert fernet_key(SECRET, 1) != fernet_key(SECRET, 2)
    assert fernet_key(SECRET, 7) == fernet_key(SECRET, 7)
    clock = Clock(KEY_PERIOD * 20000 + KEY_PERIOD - 5)  # 5 s before the next epoch
    codec = TokenCodec(SECRET, clock)
    token = codec.seal(payload(clock.now))
    clock.now += 10  # next epoch: the previous key still opens it
    assert codec.open(token) is not None
    clock.now += KEY_PERIOD  # two epochs later: that key is gone
    assert codec.open(token) is None
    # A peer whose clock is ahead (next epoch) made a token: still accepted here.
    ahead = TokenCodec(SECRET, Clock(clock.now + KEY_PERIOD)).seal(payload(clock.now))
    assert codec.open(ahead) is not None
    with pytest.raises(ValueError):
        codec.seal(payload(clock.now, expires_at=clock.now + KEY_PERIOD + 1))


def test_revocation_kinds():
    now = 1_800_000_000.0
    p = payload(now, app_cred_id=None)
    cases = [("audit", p.audit_ids[0]), ("user", "u1"), ("project", "p1"), ("domain", "default"),
             ("grant", "u1:p1"), ("role", "r1")]
    for kind, key in cases:
        rl = RevocationList()
        assert not rl.revoked(p)
        rl.add(kind, key, now - 1)  # an event before the token: no effect
        assert not rl.revoked(p), kind
        rl.add(kind, key, now)
        assert rl.revoked(p), kind
    rl = RevocationList()
    rl.add("grant", "u1:other", now + 5)
    rl.add("user", "u2", now + 5)
    assert not rl.revoked(p)
    rl.prune(now + 10)
    assert rl.events == {}


def test_validator_caches_decrypts_but_checks_revocation_and_expiry_every_time():
    clock = Clock(1_800_000_000.0)
    codec = TokenCodec(SECRET, clock)
    revocations = RevocationList()
    validator = TokenValidator(codec, revocations, ttl=60, clock=clock)
    p = payload(clock.now)
    token = codec.seal(p)
    assert validator.validate(token) == p
    assert validator.validate(token) == p
    assert validator.misses == 1
    revocations.add("audit", p.audit_ids[0], clock.now)
    assert validator.validate(token) is None
    other = codec.seal(payload(clock.now, audit_ids=("a2",)))
    assert validator.validate(other) is not None
    clock.now += 3601
    assert validator.validate(other) is None
    assert validator.validate("not a token") is None


def test_validator_cache_is_bounded():
    clock = Clock(1_800_000_000.0)
    codec = TokenCodec(SECRET, clock)
    validator = TokenValidator(codec, RevocationList(), size=40, clock=clock)
    tokens = [codec.seal(payload(clock.now, audit_ids=(str(i),))) for i in range(100)]
    for t in tokens:
        assert validator.validate(t) is not None
    assert len(validator._cache) <= 40
