"""Streaming a large object from its segments (shared by SLO and DLO).

A large object is a list of :class:`Segment` s; a read of bytes
``first..last`` of the whole opens only the segments that overlap, each with
a ``Range`` for its part, one at a time, and streams them in order.  Memory
stays at one chunk whatever the object size.

Once the response head is out, a segment that has gone missing or changed
can only be reported by cutting the connection (the client sees a short
body), which is what Swift does too; :func:`prefetch` reads the first chunk
*before* the head is sent, so the common failure (a manifest pointing at
nothing) becomes a proper ``409``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from node.cluster_client import ClusterClient
from node.http_client import BackendError
from node.http_server import ClientDisconnected
from node.log import log_event

log = logging.getLogger("peerstack.proxy.segments")


class SegmentError(Exception):
    """A segment is missing, or is not the one the manifest promised."""


@dataclass
class Segment:
    container: str
    obj: str
    #: bytes this segment contributes to the whole
    size: int
    #: expected ETag of the segment object (``None``: not checked, as for DLO)
    etag: str | None = None
    #: where the contributed bytes start inside the segment object (SLO ranges)
    offset: int = 0

    @property
    def path(self) -> str:
        return f"/{self.container}/{self.obj}"


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


async def stream_segments(cc: ClusterClient, account: str, segments: AsyncIterable[Segment],
                          first: int, last: int) -> AsyncIterator[bytes]:
    """Yield bytes ``first..last`` (inclusive) of the concatenation of ``segments``."""
    pos = 0
    async for seg in segments:
        seg_first, seg_last = pos, pos + seg.size - 1
        pos += seg.size
        if seg.size <= 0 or seg_last < first:
            continue
        if seg_first > last:
            break
        a = max(first, seg_first) - seg_first + seg.offset
        b = min(last, seg_last) - seg_first + seg.offset
        resp = await cc.open_object(account, seg.container, seg.obj, [("Range", f"bytes={a}-{b}")])
        try:
            if resp.status not in (200, 206):
                raise SegmentError(f"{seg.path}, {resp.status}")
            if seg.etag is not None and _etag(resp.headers.get("etag")) != _etag(seg.etag):
                raise SegmentError(f"{seg.path}, Etag Mismatch")
            # A 200 means the backend sent the whole segment: skip to our part.
            skip = a if resp.status == 200 else 0
            want = b - a + 1
            async for chunk in resp:
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                if len(chunk) > want:
                    chunk = chunk[:want]
                want -= len(chunk)
                yield chunk
                if want <= 0:
                    break
            if want > 0:
                raise SegmentError(f"{seg.path}, short read")
        finally:
            await resp.aclose()


async def prefetch(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the first chunk now (errors surface before the response head); return the whole stream.

    Raises :class:`SegmentError` (or :class:`BackendError`) if even the first
    chunk cannot be read.
    """
    try:
        head = await body.__anext__()
    except StopAsyncIteration:
        head = None
    return _guarded(head, body)


async def _guarded(head: bytes | None, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream, with mid-stream failures turned into a cut connection."""
    try:
        if head is not None:
            yield head
            async for chunk in body:
                yield chunk
    except (SegmentError, BackendError) as exc:
        log_event(log, "slo.segment_failed", error=str(exc))
        raise ClientDisconnected(f"large object segment failed: {exc}") from exc
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
