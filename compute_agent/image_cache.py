"""The node's image cache: images from the ring in ``_base/<sha256>``.

An image is fetched once per node and shared, read-only, by every server
booted from it (each server writes to its own qcow2 overlay).  The file name
is the SHA-256 of the content, so a cached file is the image or it is not
there: a download streams the segments the proxy named into a temporary
file, hashing as it writes, and only a file whose size and SHA-256 match is
fsynced and renamed into place.  Concurrent boots of one image wait for a
single download.

What to fetch comes from the proxy as a *locator*: ``{"id", "sha256",
"size", "disk_format", "account", "segments": [{"container", "object",
"size", "etag"}]}`` -- the image service owns the layout of images in the
ring; the agent only reads the objects it is told to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.log import log_event
from node.storage.fsutil import fsync_dir

log = logging.getLogger("peerstack.compute.images")

BATCH = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ImageFetchError(Exception):
    """The image could not be read from the ring, or is not what its record promised."""


class _HashingWriter:
    """A temporary file written and hashed in ~1 MiB batches, one thread hop each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._buf: list[bytes] = []
        self._buffered = 0

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha256.update(data)

    async def add(self, chunk: bytes) -> None:
        self._buf.append(bytes(chunk))
        self._buffered += len(chunk)
        self.size += len(chunk)
        if self._buffered >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        data, self._buf, self._buffered = b"".join(self._buf), [], 0
        if data:
            await trio.to_thread.run_sync(self._write, data)

    async def finish(self) -> None:
        await self.flush()

        def sync_close() -> None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
        await trio.to_thread.run_sync(sync_close)

    def discard(self) -> None:
        self.f.close()
        self.path.unlink(missing_ok=True)


class ImageCache:
    """``_base/`` of one node."""

    def __init__(self, root: Path, cc: ClusterClient) -> None:
        self.root = root
        self.cc = cc
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256

    async def fetch(self, locator: dict[str, Any]) -> Path:
        """The cached file of the image ``locator`` describes, downloading it if needed."""
        sha = str(locator.get("sha256") or "")
        if not SHA256_RE.match(sha):
            raise ImageFetchError(f"image {locator.get('id')} has no valid sha256")
        path = self.path_for(sha)
        async with self._locks[sha]:
            if path.exists():
                return path
            await trio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
            started = time.monotonic()
            tmp = self.root / f".tmp-{sha}-{secrets.token_hex(4)}"
            writer = await trio.to_thread.run_sync(_HashingWriter, tmp)
            try:
                await self._download(locator, writer)
                await writer.finish()
            except BaseException:
                writer.discard()
                raise
            if writer.size != int(locator.get("size") or 0) or writer.sha256.hexdigest() != sha:
                tmp.unlink(missing_ok=True)
                raise ImageFetchError(f"image {locator.get('id')} from the ring does not match its "
                                      f"checksum (got {writer.size} bytes)")

            def publish() -> None:
                os.replace(tmp, path)
                fsync_dir(self.root)
            await trio.to_thread.run_sync(publish)
            log_event(log, "compute.image_cached", image=locator.get("id"), sha256=sha,
                      bytes=writer.size, seconds=round(time.monotonic() - started, 3))
            return path

    async def _download(self, locator: dict[str, Any], writer: _HashingWriter) -> None:
        account = str(locator.get("account") or "")
        for seg in locator.get("segments") or []:
            async with self.cc.get_object(account, seg["container"], seg["object"]) as resp:
                if resp.status != 200:
                    raise ImageFetchError(f"image segment {seg['object']}: {resp.status} from the ring")
                async for chunk in resp:
                    await writer.add(chunk)
