"""The ring and builder files of one node, and the only code that replaces them.

A node's rings live in ``rings_path`` as ``<type>.ring.gz`` (signed by the
ring package) next to ``<type>.builder`` (the builder that made it, held by
every node so that any of them can become steward).  :class:`RingStore`

* knows what this node holds (:class:`~node.membership.RingState`: version,
  content hash, and whether the builder beside it made exactly this ring),
  re-reading the files when an operator changes them;
* installs a ring or builder received from a peer only after checking it:
  a ring must carry this cluster's signature and be newer (by
  :attr:`RingState.key`) than the one held; a builder must carry this
  cluster's MAC and produce exactly the ring held.  Files are replaced by
  write-tmp, fsync, rename, fsync-dir, so a reader (the cluster client
  reloads rings when their files change) sees the old or the new file, never
  a torn one.

Builder files are numpy archives with no signature of their own, so on the
wire they travel framed as ``MAGIC + bytes + HMAC(secret, MAGIC + bytes)``.

Every method that touches the disk is async and runs its work in a thread,
one hop per operation, under one lock so that two installs never race.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import trio

from node.log import log_event
from node.membership import RING_TYPES, RingState
from ring.atomic import atomic_write
from ring.builder import RingBuilder
from ring.errors import RingError, RingFormatError, RingSignatureError
from ring.ringfile import RingData, parse_ring, serialize_ring

log = logging.getLogger("peerstack.gossip")

BUILDER_MAGIC = b"PSBUILD1\n"
#: no ring or builder this large is real; refuse before buffering more
MAX_RING_BYTES = 256 << 20


class RingRefused(Exception):
    """A ring or builder was not installed; ``status`` is the HTTP answer for it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def ring_hash(data: bytes) -> str:
    """Content hash of a ring file's bytes (128 bits, hex): the tie-breaker."""
    return hashlib.sha256(data).hexdigest()[:32]


def frame_builder(secret: bytes, data: bytes) -> bytes:
    """Sign builder bytes for the wire."""
    payload = BUILDER_MAGIC + data
    return payload + hmac.new(secret, payload, hashlib.sha256).digest()


def unframe_builder(secret: bytes, blob: bytes) -> bytes:
    """Check and strip the frame of :func:`frame_builder`; raises RingSignatureError."""
    if not blob.startswith(BUILDER_MAGIC) or len(blob) < len(BUILDER_MAGIC) + 32:
        raise RingFormatError("not a framed peerstack builder")
    payload, sig = blob[:-32], blob[-32:]
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), sig):
        raise RingSignatureError("builder MAC does not match the cluster secret")
    return payload[len(BUILDER_MAGIC):]


def ring_matches_builder(ring: RingData, builder: RingBuilder) -> bool:
    """True when ``builder`` would write exactly ``ring`` (same version, devices, placement)."""
    try:
        made = builder.to_ring_data()
    except RingError:
        return False
    if (made.version, made.builder_id, made.part_power, made.replicas) != \
            (ring.version, ring.builder_id, ring.part_power, ring.replicas):
        return False
    if made.devices != ring.devices or made.assign.shape != ring.assign.shape:
        return False
    held = ring.assign.astype(np.int64)
    if ring.assign.dtype.kind == "u":
        held[ring.assign == np.iinfo(ring.assign.dtype).max] = -1
    return bool(np.array_equal(np.where(made.assign >= 0, made.assign, -1), held))


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RingStore:
    """What this node holds of each ring, and safe replacement of those files."""

    def __init__(self, rings_path: Path, secret: bytes) -> None:
        self.rings_path = Path(rings_path)
        self._secret = secret
        self.states: dict[str, RingState] = {}
        self._seen: dict[str, tuple[object, object]] = {}
        self._lock = trio.Lock()

    def ring_path(self, ring_type: str) -> Path:
        return self.rings_path / f"{ring_type}.ring.gz"

    def builder_path(self, ring_type: str) -> Path:
        return self.rings_path / f"{ring_type}.builder"

    # -- reading ---------------------------------------------------------------

    async def refresh(self) -> list[str]:
        """Re-read files changed since last look (an operator, or a shared ring dir).

        Returns the ring types whose state changed.
        """
        async with self._lock:
            return await trio.to_thread.run_sync(self._refresh_sync)

    def _refresh_sync(self) -> list[str]:
        changed = []
        for t in RING_TYPES:
            seen = (_stat_key(self.ring_path(t)), _stat_key(self.builder_path(t)))
            if seen == self._seen.get(t):
                continue
            self._seen[t] = seen
            before = self.states.get(t)
            self._reload_sync(t)
            if self.states.get(t) != before:
                changed.append(t)
        return changed

    def _reload_sync(self, ring_type: str) -> RingData | None:
        path = self.ring_path(ring_type)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.states.pop(ring_type, None)
            return None
        try:
            ring = parse_ring(data, self._secret)
        except RingError as exc:
            # A tampered or foreign file is not ours to advertise; gossip
            # replaces it with the newest good ring a peer holds.
            log_event(log, "ring.local_invalid", level=logging.WARNING, ring=ring_type,
                      path=str(path), error=str(exc))
            self.states.pop(ring_type, None)
            return None
        self.states[ring_type] = RingState(ring.version, ring_hash(data),
                                           self._builder_matches_sync(ring_type, ring))
        return ring

    def _builder_matches_sync(self, ring_type: str, ring: RingData) -> bool:
        path = self.builder_path(ring_type)
        if not path.exists():
            return False
        try:
            return ring_matches_builder(ring, RingBuilder.load(str(path)))
        except (RingError, OSError) as exc:
            log_event(log, "builder.local_invalid", level=logging.WARNING, ring=ring_type,
                      path=str(path), error=str(exc))
            return False

    async def read_ring(self, ring_type: str) -> bytes | None:
        """The ring file's bytes as held, or None."""
        try:
            return await trio.to_thread.run_sync(self.ring_path(ring_type).read_bytes)
        except FileNotFoundError:
            return None

    async def read_builder(self, ring_type: str) -> bytes | None:
        """The framed builder, only if it matches the ring held (else it misleads)."""
        state = self.states.get(ring_type)
        if state is None or not state.builder:
            return None
        try:
            raw = await trio.to_thread.run_sync(self.builder_path(ring_type).read_bytes)
        except FileNotFoundError:
            return None
        return frame_builder(self._secret, raw)

    async def load_builder(self, ring_type: str) -> RingBuilder | None:
        """The builder behind the held ring, for the steward; None if there is none."""
        state = self.states.get(ring_type)
        if state is None or not state.builder:
            return None
        return await trio.to_thread.run_sync(RingBuilder.load, str(self.builder_path(ring_type)))

    # -- replacing ---------------------------------------------------------------

    async def install_ring(self, ring_type: str, data: bytes) -> RingState:
        """Verify ``data`` and install it if newer than what is held.

        Raises :class:`RingRefused`: 422 for a ring that is unsigned, tampered,
        from another cluster or not a ring; 409 for one that is not newer.
        """
        async with self._lock:
            return await trio.to_thread.run_sync(self._install_ring_sync, ring_type, data)

    def _install_ring_sync(self, ring_type: str, data: bytes) -> RingState:
        try:
            ring = parse_ring(data, self._secret)
        except RingError as exc:
            raise RingRefused(422, f"ring refused: {exc}") from None
        new = RingState(ring.version, ring_hash(data))
        held = self.states.get(ring_type)
        if held is not None and new.key <= held.key:
            raise RingRefused(409, f"ring version {new.version} ({new.hash[:8]}) is not newer "
                                   f"than held {held.version} ({held.hash[:8]})")
        self.rings_path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.ring_path(ring_type), data)
        new.builder = self._builder_matches_sync(ring_type, ring)
        self.states[ring_type] = new
        self._seen[ring_type] = (_stat_key(self.ring_path(ring_type)),
                                 _stat_key(self.builder_path(ring_type)))
        return new

    async def install_builder(self, ring_type: str, blob: bytes) -> None:
        """Verify a framed builder and install it if it made exactly the held ring.

        Raises :class:`RingRefused` (422 bad frame or file, 409 not this ring's builder).
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._install_builder_sync, ring_type, blob)

    def _install_builder_sync(self, ring_type: str, blob: bytes) -> None:
        try:
            raw = unframe_builder(self._secret, blob)
        except RingError as exc:
            raise RingRefused(422, f"builder refused: {exc}") from None
        ring_path = self.ring_path(ring_type)
        try:
            ring = parse_ring(ring_path.read_bytes(), self._secret)
        except (OSError, RingError):
            raise RingRefused(409, "no valid ring held for this builder") from None
        final = self.builder_path(ring_type)
        fd, tmp = tempfile.mkstemp(dir=self.rings_path, prefix=f".{final.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            try:
                builder = RingBuilder.load(tmp)
            except (RingError, OSError, ValueError, KeyError) as exc:
                raise RingRefused(422, f"builder refused: {exc}") from None
            if not ring_matches_builder(ring, builder):
                raise RingRefused(409, "builder does not match the ring held")
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(self.rings_path)
        state = self.states.get(ring_type)
        if state is not None:
            state.builder = True
        self._seen[ring_type] = (_stat_key(ring_path), _stat_key(final))

    async def write_from_builder(self, ring_type: str, builder: RingBuilder) -> RingState:
        """The steward's write: builder first, then the ring it makes.

        The builder goes first so that a crash in between leaves a builder
        that does not match the ring (this node then simply is not steward)
        rather than a published ring whose builder is lost.
        """
        async with self._lock:
            return await trio.to_thread.run_sync(self._write_from_builder_sync, ring_type, builder)

    def _write_from_builder_sync(self, ring_type: str, builder: RingBuilder) -> RingState:
        self.rings_path.mkdir(parents=True, exist_ok=True)
        data = serialize_ring(builder.to_ring_data(), self._secret)
        new = RingState(builder.version, ring_hash(data), builder=True)
        held = self.states.get(ring_type)
        if held is not None and new.key <= held.key:
            raise RingRefused(409, f"steward's ring {new.version} is not newer than held {held.version}")
        builder.save(str(self.builder_path(ring_type)))
        atomic_write(self.ring_path(ring_type), data)
        self.states[ring_type] = new
        self._seen[ring_type] = (_stat_key(self.ring_path(ring_type)),
                                 _stat_key(self.builder_path(ring_type)))
        return new


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
