"""Images in the ring: JSON records and segmented data in the ``.images`` account.

* ``.images/records/<image id>``: the image record, Glance's JSON shape plus
  a private ``_data`` entry (segment list, SHA-256) that the API never shows;
* ``.images/data/<image id>/<nnnnnnnn>``: the image bytes in segments of
  :data:`SEGMENT_SIZE`, each an ordinary replicated object.

:meth:`ImageStore.write_data` streams an upload into segments with bounded
memory: the first :data:`~proxy.image_inspector.INSPECT_BYTES` are held back
until the caller's check (the format inspector) accepts them, so a refused
image stores nothing; after that every ~1 MiB is hashed (MD5, SHA-512,
SHA-256, one thread hop) and sent on.  :meth:`ImageStore.locator` tells a
compute agent which objects make up an image, so only this module knows the
layout.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.log import log_event
from proxy.compute_records import JsonRecords, StoreError
from proxy.image_inspector import INSPECT_BYTES
from proxy.segments import Segment, stream_segments

log = logging.getLogger("peerstack.proxy.images")

ACCOUNT = ".images"
RECORDS = "records"
DATA = "data"
SEGMENT_SIZE = 64 << 20
BATCH = 1 << 20


@dataclass
class DataResult:
    """What an upload stored."""

    size: int = 0
    md5: str = ""
    sha512: str = ""
    sha256: str = ""
    segments: list[dict[str, Any]] = field(default_factory=list)


class _Hashes:
    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.sha512 = hashlib.sha512()
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.sha512.update(data)
        self.sha256.update(data)


async def _batches(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``head`` then ``rest``, regrouped into pieces of about :data:`BATCH` bytes."""
    if head:
        yield head
    buf: list[bytes] = []
    size = 0
    async for chunk in rest:
        buf.append(bytes(chunk))
        size += len(chunk)
        if size >= BATCH:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


class ImageStore:
    """Records and data of images, through the cluster client."""

    def __init__(self, cc: ClusterClient, *, segment_size: int = SEGMENT_SIZE) -> None:
        self.cc = cc
        self.segment_size = segment_size
        self.records = JsonRecords(cc, ACCOUNT, RECORDS)
        self._data = JsonRecords(cc, ACCOUNT, DATA)

    # -- records -------------------------------------------------------------------

    async def get(self, image_id: str) -> dict[str, Any] | None:
        """The record, or ``None`` if there is no such image."""
        return await self.records.get(image_id)

    async def put(self, record: dict[str, Any]) -> None:
        await self.records.put(record["id"], record)

    async def delete(self, image_id: str) -> None:
        await self.records.delete(image_id)

    async def all(self) -> list[dict[str, Any]]:
        return await self.records.all()

    # -- data ------------------------------------------------------------------------

    async def write_data(self, image_id: str, body: AsyncIterable[bytes],
                         check: Callable[[bytes], Any]) -> DataResult:
        """Store ``body`` as the image's segments; ``check(head)`` may raise to refuse it first."""
        await self._data.ensure_container()
        stream = body.__aiter__()
        head = bytearray()
        async for chunk in stream:
            head += chunk
            if len(head) >= INSPECT_BYTES:
                break
        check(bytes(head[:INSPECT_BYTES]))
        pieces = _batches(bytes(head), stream)
        hashes = _Hashes()
        result = DataResult()
        carry: bytes | None = await anext(pieces, None)
        exhausted = carry is None
        try:
            while carry is not None:
                name = f"{image_id}/{len(result.segments):08d}"
                sent = 0

                async def segment() -> AsyncIterator[bytes]:
                    nonlocal carry, sent, exhausted
                    while sent < self.segment_size:
                        if carry is None:
                            carry = await anext(pieces, None)
                            if carry is None:
                                exhausted = True
                                return
                        room = self.segment_size - sent
                        piece, carry = (carry, None) if len(carry) <= room else (carry[:room], carry[room:])
                        await trio.to_thread.run_sync(hashes.update, piece)
                        sent += len(piece)
                        yield piece

                status, headers = await self.cc.put_object(
                    ACCOUNT, DATA, name, [("Content-Type", "application/octet-stream")],
                    segment(), None)
                if status // 100 != 2:
                    raise StoreError(f"cannot store image segment {name}: {status}")
                result.segments.append({"object": name, "size": sent,
                                        "etag": (headers.get("etag") or "").strip('"')})
                result.size += sent
                if carry is None and not exhausted:
                    carry = await anext(pieces, None)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.delete_data(result.segments)
            raise
        result.md5 = hashes.md5.hexdigest()
        result.sha512 = hashes.sha512.hexdigest()
        result.sha256 = hashes.sha256.hexdigest()
        return result

    async def delete_data(self, segments: list[dict[str, Any]]) -> None:
        """Remove data segments (best effort: a leftover is garbage, never a broken image)."""
        for seg in segments:
            resp = await self.cc.delete_object(ACCOUNT, DATA, seg["object"])
            if resp.status // 100 != 2 and resp.status != 404:
                log_event(log, "images.segment_delete_failed", segment=seg["object"],
                          status=resp.status)

    def open_data(self, record: dict[str, Any]) -> AsyncIterator[bytes]:
        """The image bytes, streamed segment by segment (ETags checked)."""
        segments = data_of(record).get("segments") or []
        size = sum(int(s["size"]) for s in segments)

        async def listed() -> AsyncIterator[Segment]:
            for s in segments:
                yield Segment(DATA, s["object"], int(s["size"]), s.get("etag") or None)

        return stream_segments(self.cc, ACCOUNT, listed(), 0, size - 1)

    @staticmethod
    def locator(record: dict[str, Any]) -> dict[str, Any]:
        """What a compute agent needs to fetch this image from the ring."""
        data = data_of(record)
        return {"id": record["id"], "sha256": data.get("sha256"), "size": record.get("size") or 0,
                "disk_format": record.get("disk_format"), "account": ACCOUNT,
                "segments": [{"container": DATA, "object": s["object"], "size": s["size"],
                              "etag": s.get("etag")} for s in data.get("segments") or []]}


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    """The private part of a record (segments, SHA-256)."""
    data = record.get("_data")
    return data if isinstance(data, dict) else {}
