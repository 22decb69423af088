"""Signed internal RPC: what the verifier accepts and every way it refuses.

The end-to-end check (an unsigned request to a real Node's internal port gets
401, the node's own client gets through) lives with the server tests.
"""

from __future__ import annotations

import pytest

from node.signing import (
    NONCE_HEADER, SIG_HEADER, TS_HEADER, RequestSigner, SignatureVerifier,
)

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)


class Clock:
    """A settable stand-in for time.time()."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lookup(headers: list[tuple[str, str]]):
    """A case-insensitive get_header over signed headers, as the server provides."""
    table = {k.lower(): v for k, v in headers}
    return lambda name: table.get(name.lower())


def signed(method: str = "GET", target: str = "/d1/17/a/c/o?multipart-manifest=get",
           secret: bytes = SECRET, clock: Clock | None = None) -> list[tuple[str, str]]:
    return RequestSigner(secret, clock or Clock())(method, target)


def test_accepts_a_signed_request():
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    headers = signed(clock=clock)
    assert {k for k, _ in headers} == {SIG_HEADER, TS_HEADER, NONCE_HEADER}
    assert verifier.verify("GET", "/d1/17/a/c/o?multipart-manifest=get", lookup(headers)) is None


def test_each_signature_is_fresh():
    sign = RequestSigner(SECRET)
    a, b = dict(sign("GET", "/x")), dict(sign("GET", "/x"))
    assert a[NONCE_HEADER] != b[NONCE_HEADER] and a[SIG_HEADER] != b[SIG_HEADER]
    # another signer (another node, or this one restarted) never repeats them
    other = RequestSigner(SECRET)
    assert not {dict(other("GET", "/x"))[NONCE_HEADER] for _ in range(3)} & {a[NONCE_HEADER], b[NONCE_HEADER]}


@pytest.mark.parametrize("drop", [SIG_HEADER, TS_HEADER, NONCE_HEADER])
def test_rejects_unsigned_or_partly_signed(drop):
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    assert verifier.verify("GET", "/x", lookup([])) == "unsigned request"
    partial = [(k, v) for k, v in signed("GET", "/x", clock=clock) if k != drop]
    assert verifier.verify("GET", "/x", lookup(partial)) == "unsigned request"


def test_rejects_tampered_signature_method_or_target():
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    headers = signed("GET", "/d1/1/a/c/o", clock=clock)
    assert verifier.verify("DELETE", "/d1/1/a/c/o", lookup(headers)) == "bad signature"
    assert verifier.verify("GET", "/d1/1/a/c/other", lookup(headers)) == "bad signature"
    forged = [(k, "0" * 64 if k == SIG_HEADER else v) for k, v in headers]
    assert verifier.verify("GET", "/d1/1/a/c/o", lookup(forged)) == "bad signature"
    # A timestamp moved by a second no longer matches the MAC either.
    shifted = [(k, f"{float(v) + 1:.6f}" if k == TS_HEADER else v) for k, v in headers]
    assert verifier.verify("GET", "/d1/1/a/c/o", lookup(shifted)) == "bad signature"
    # Junk (non-ASCII) in the signature header is a refusal, not a crash.
    junk = [(k, "\xff\xfe" if k == SIG_HEADER else v) for k, v in headers]
    assert verifier.verify("GET", "/d1/1/a/c/o", lookup(junk)) == "bad signature"
    # The untampered request still passes: refusals did not burn its nonce.
    assert verifier.verify("GET", "/d1/1/a/c/o", lookup(headers)) is None


def test_rejects_wrong_secret():
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    other = bytes(reversed(SECRET))
    assert verifier.verify("GET", "/x", lookup(signed("GET", "/x", other, clock))) == "bad signature"


@pytest.mark.parametrize("offset", [-61.0, 61.0, -3600.0])
def test_rejects_stale_or_future_timestamps(offset):
    clock = Clock()
    verifier = SignatureVerifier(SECRET, max_skew=60, clock=clock)
    headers = signed("GET", "/x", clock=Clock(clock.now + offset))
    assert verifier.verify("GET", "/x", lookup(headers)) == "stale request"
    within = signed("GET", "/x", clock=Clock(clock.now + offset / abs(offset) * 59))
    assert verifier.verify("GET", "/x", lookup(within)) is None


@pytest.mark.parametrize("ts", ["yesterday", "nan", "inf", ""])
def test_rejects_bad_timestamps(ts):
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    headers = [(k, ts if k == TS_HEADER else v) for k, v in signed(clock=clock)]
    assert verifier.verify("GET", "/x", lookup(headers)) in ("bad timestamp", "unsigned request")


def test_rejects_replay_until_it_is_stale_and_forgets_old_nonces():
    clock = Clock()
    verifier = SignatureVerifier(SECRET, max_skew=60, clock=clock)
    headers = signed("PUT", "/d1/3/a/c/o", clock=clock)
    assert verifier.verify("PUT", "/d1/3/a/c/o", lookup(headers)) is None
    assert verifier.verify("PUT", "/d1/3/a/c/o", lookup(headers)) == "replayed request"
    clock.now += 30
    assert verifier.verify("PUT", "/d1/3/a/c/o", lookup(headers)) == "replayed request"
    clock.now += 31
    assert verifier.verify("PUT", "/d1/3/a/c/o", lookup(headers)) == "stale request"
    # Once its timestamp cannot pass any more, a nonce is no longer kept.
    fresh = signed("GET", "/y", clock=clock)
    assert verifier.verify("GET", "/y", lookup(fresh)) is None
    assert verifier.remembered == 1


def test_nonce_memory_is_capped():
    clock = Clock()
    verifier = SignatureVerifier(SECRET, clock=clock)
    verifier.max_remembered = 50
    sign = RequestSigner(SECRET, clock)
    for i in range(200):
        assert verifier.verify("GET", f"/o/{i}", lookup(sign("GET", f"/o/{i}"))) is None
    assert verifier.remembered <= 50
