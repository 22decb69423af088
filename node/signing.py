"""Signed internal RPC: every request between nodes carries an HMAC.

The signature covers the method, the request target (path and query, as
sent), a timestamp and a random nonce, keyed by the cluster secret.  A
receiver rejects a request that is unsigned, signed with another key, older
or newer than ``max_skew`` seconds, or whose nonce it has already seen within
that window (a replay).  Bodies are not signed: the signature proves the
sender holds the secret and pins what it asked for; the transport is trusted
not to splice bodies, as for Swift's internal network.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

SIG_HEADER = "X-Peerstack-Signature"
TS_HEADER = "X-Peerstack-Timestamp"
NONCE_HEADER = "X-Peerstack-Nonce"


def _mac(secret: bytes, method: str, target: str, ts: str, nonce: str) -> str:
    msg = "\n".join((method.upper(), target, ts, nonce)).encode("utf-8", "surrogateescape")
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


class RequestSigner:
    """Makes the signature headers for outgoing internal requests.

    ``clock`` returns the current Unix time; tests pass a fake one.
    """

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        # A nonce only has to be unique, not unpredictable (the MAC covers it):
        # a random prefix per signer and a counter, instead of a call into the
        # kernel's random source per request.
        self._nonce_prefix = secrets.token_hex(8)
        self._nonces = itertools.count()

    def __call__(self, method: str, target: str) -> list[tuple[str, str]]:
        ts = f"{self._clock():.6f}"
        nonce = f"{self._nonce_prefix}{next(self._nonces):x}"
        return [(TS_HEADER, ts), (NONCE_HEADER, nonce),
                (SIG_HEADER, _mac(self._secret, method, target, ts, nonce))]


class SignatureVerifier:
    """Checks signature headers and remembers nonces to refuse replays.

    Nonces are kept only as long as their timestamp could still pass the skew
    check, so memory is bounded by the request rate times ``2 * max_skew``.
    """

    #: beyond this many remembered nonces the oldest are forgotten early, so
    #: a flood cannot exhaust memory (at the price of replay protection for
    #: the forgotten ones)
    max_remembered = 1_000_000

    def __init__(self, secret: bytes, max_skew: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.max_skew = max_skew
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    @property
    def remembered(self) -> int:
        """How many nonces are currently kept for replay detection."""
        return len(self._seen)

    def verify(self, method: str, target: str,
               get_header: Callable[[str], str | None]) -> str | None:
        """Return ``None`` if the request is authentic, else the reason it is not."""
        sig = get_header(SIG_HEADER)
        ts = get_header(TS_HEADER)
        nonce = get_header(NONCE_HEADER)
        if not (sig and ts and nonce):
            return "unsigned request"
        try:
            sent = float(ts)
        except ValueError:
            return "bad timestamp"
        if not math.isfinite(sent):
            return "bad timestamp"
        now = self._clock()
        if abs(now - sent) > self.max_skew:
            return "stale request"
        expected = _mac(self._secret, method, target, ts, nonce)
        # Bytes, not str: compare_digest refuses non-ASCII str (a junk header).
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "surrogateescape")):
            return "bad signature"
        self._expire(now)
        if nonce in self._seen:
            return "replayed request"
        self._seen[nonce] = sent
        return None

    def _expire(self, now: float) -> None:
        horizon = now - self.max_skew
        seen = self._seen
        while seen:
            nonce, sent = next(iter(seen.items()))
            if sent >= horizon and len(seen) < self.max_remembered:
                break
            seen.popitem(last=False)
