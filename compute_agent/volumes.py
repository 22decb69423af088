"""Volumes on one node: sparse files, libvirt attach/detach, snapshots chunked into the ring.

The proxy (:mod:`proxy.volumes`) owns the volume and snapshot *records*;
this module owns the *bytes* and answers internal RPCs under
``/compute/volumes`` and ``/compute/servers/<id>/volumes``:

===================================================  ==========================================
``PUT    /compute/volumes/<id>``                      make the file: blank, from a snapshot
                                                      manifest, or from an image (synchronous)
``POST   /compute/volumes/<id>/extend``               grow the file (``{"size_gb": N}``)
``POST   /compute/volumes/<id>/snapshot``             chunk it into the ring, write the manifest
``DELETE /compute/volumes/<id>``                      remove the file
``PUT    /compute/servers/<sid>/volumes/<id>``        attach (live + config) as a virtio disk
``DELETE /compute/servers/<sid>/volumes/<id>``        detach (live + config)
===================================================  ==========================================

A volume is ``volumes/<id>`` under the agent's root: a raw file made with
``truncate`` so an empty 1 GiB volume takes no space.

**Snapshots** read the volume in fixed 4 MiB chunks.  A chunk of zeros is
not stored at all; any other chunk is stored once, as
``.snapshots/chunks/<sha256>``, after a ``HEAD`` shows it is not there yet,
so a second snapshot sends only what changed.  The manifest
``.snapshots/manifests/<snapshot id>`` maps chunk index -> sha256; once it
is stored, every chunk is checked (``HEAD``) once more and sent again if a
concurrent snapshot delete removed it meanwhile.  For an
attached volume the domain is suspended (qemu drains and flushes its I/O
when it stops the vCPUs), the file is copied sparsely (``cp
--sparse=always``: only data extents are copied, so this is quick), and the
domain resumes; the chunks are then read from the copy.

**Restore** creates a sparse file of the volume's size and fetches the
manifest's chunks in parallel, verifying each one's sha256 before it is
written; a missing or corrupt chunk fails the restore and removes the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from compute_agent import disks
from compute_agent.domain_xml import volume_disk_xml
from compute_agent.hypervisor import PAUSED, HypervisorError
from compute_agent.image_cache import ImageFetchError
from node.http_client import BackendError
from node.http_server import Request, Response
from node.log import log_event
from node.storage.fsutil import fsync_dir

if TYPE_CHECKING:
    from compute_agent.agent import ComputeAgent

log = logging.getLogger("peerstack.compute.volumes")
T = TypeVar("T")

SNAPSHOT_ACCOUNT = ".snapshots"
CHUNKS = "chunks"
MANIFESTS = "manifests"
CHUNK_SIZE = 4 << 20
#: chunks in flight at once, each direction (memory: this many x 4 MiB)
PARALLEL_CHUNKS = 4
GiB = 1 << 30
MAX_RPC_BODY = 1 << 20
DETACH_WAIT = 20.0


class VolumeError(Exception):
    """The volume operation failed (answered ``500`` with the reason)."""


class Conflict(Exception):
    """The volume is not in a state that allows this (``409``)."""


def _json(status: int, doc: Any) -> Response:
    return Response(status, [("Content-Type", "application/json")],
                    json.dumps(doc, separators=(",", ":")).encode())


def is_zero(data: bytes) -> bool:
    """True for a chunk of zeros (compared without building a second buffer)."""
    return not data.strip(b"\0")


def _create_sparse(path: Path, size: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.truncate(size)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _data_chunks(path: Path, size: int) -> list[int]:
    """Indexes of the chunks that hold any data extent (holes are zeros by definition)."""
    found: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first, last = start // CHUNK_SIZE, (min(end, size) - 1) // CHUNK_SIZE
            for i in range(first, last + 1):
                if not found or i > found[-1]:
                    found.append(i)
            offset = max(end, (last + 1) * CHUNK_SIZE)
    finally:
        os.close(fd)
    return found


def _pread(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _in_parallel(items: list[T], fn: Callable[[T], Awaitable[None]]) -> None:
    """``fn(item)`` for every item, :data:`PARALLEL_CHUNKS` at a time.

    The first failure cancels the rest and is raised as itself (not as an
    exception group), so callers catch :class:`VolumeError` plainly.
    """
    send, receive = trio.open_memory_channel[T](0)

    async def worker(rx: trio.MemoryReceiveChannel[T]) -> None:
        async with rx:
            async for item in rx:
                await fn(item)
    try:
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(PARALLEL_CHUNKS):
                    nursery.start_soon(worker, receive.clone())
            async with send:
                for item in items:
                    await send.send(item)
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if leaves:
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


class VolumeAgent:
    """Volume files and snapshots of one node (see the module docstring)."""

    def __init__(self, agent: ComputeAgent) -> None:
        self.agent = agent
        self.cc = agent.cc
        self.dir = agent.root / "volumes"
        self._locks: dict[str, trio.Lock] = {}
        self._containers_ok = False

    def path(self, volume_id: str) -> Path:
        if not volume_id or "/" in volume_id or volume_id.startswith("."):
            raise ValueError(f"bad volume id {volume_id!r}")
        return self.dir / volume_id

    def lock(self, volume_id: str) -> trio.Lock:
        return self._locks.setdefault(volume_id, trio.Lock())

    def used_gb(self) -> int:
        """Gigabytes promised to volumes here (their full size, sparse or not)."""
        try:
            return sum(-(-p.stat().st_size // GiB) for p in self.dir.iterdir() if not p.name.startswith("."))
        except OSError:
            return 0

    # -- RPC ---------------------------------------------------------------------------

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """``parts``: the path after ``/compute/volumes``."""
        try:
            if not parts:
                return _json(404, {"error": "no such volume call"})
            volume_id, rest, method = parts[0], parts[1:], request.method
            doc = json.loads(await request.read_body(MAX_RPC_BODY) or b"{}") \
                if method in ("PUT", "POST") else {}
            if not rest and method == "PUT":
                return _json(201, await self.create(volume_id, doc))
            if not rest and method == "DELETE":
                return _json(200, await self.delete(volume_id))
            if not rest and method == "GET":
                return _json(200, await self.show(volume_id))
            if rest == ["extend"] and method == "POST":
                return _json(200, await self.extend(volume_id, int(doc["size_gb"])))
            if rest == ["snapshot"] and method == "POST":
                return _json(200, await self.snapshot(volume_id, str(doc["snapshot_id"]),
                                                      doc.get("server_id")))
            return _json(404, {"error": "no such volume call"})
        except FileNotFoundError:
            return _json(404, {"error": "no such volume on this node"})
        except Conflict as exc:
            return _json(409, {"error": str(exc)})
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": f"bad request: {exc}"})
        except (VolumeError, disks.DiskError, HypervisorError, ImageFetchError, BackendError,
                OSError) as exc:
            log_event(log, "volume.failed", path=request.path, error=str(exc))
            return _json(500, {"error": str(exc)})

    async def handle_attachment(self, request: Request, server_id: str, parts: list[str]) -> Response:
        """``/compute/servers/<sid>/volumes/<id>``: PUT attaches, DELETE detaches."""
        try:
            if len(parts) != 1:
                return _json(404, {"error": "no such attachment call"})
            volume_id = parts[0]
            if request.method == "PUT":
                doc = json.loads(await request.read_body(MAX_RPC_BODY) or b"{}")
                return _json(200, await self.attach(server_id, volume_id, str(doc["device"])))
            if request.method == "DELETE":
                return _json(200, await self.detach(server_id, volume_id))
            return _json(404, {"error": "no such attachment call"})
        except FileNotFoundError:
            return _json(404, {"error": "no such volume on this node"})
        except Conflict as exc:
            return _json(409, {"error": str(exc)})
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": f"bad request: {exc}"})
        except (VolumeError, HypervisorError, OSError) as exc:
            log_event(log, "volume.attach_failed", server=server_id, error=str(exc))
            return _json(500, {"error": str(exc)})

    # -- files ---------------------------------------------------------------------------

    async def create(self, volume_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Make the volume file; ``doc``: ``size_gb`` and optional ``snapshot`` or ``image``."""
        size = int(doc["size_gb"]) * GiB
        if size <= 0:
            raise ValueError("size_gb must be positive")
        path = self.path(volume_id)
        async with self.lock(volume_id):
            if await trio.to_thread.run_sync(path.exists):
                return await self.show(volume_id)
            await trio.to_thread.run_sync(lambda: self.dir.mkdir(parents=True, exist_ok=True))
            started = time.monotonic()
            tmp = self.dir / f".{volume_id}.restore"
            try:
                if doc.get("snapshot"):
                    stats = await self._restore(tmp, size, str(doc["snapshot"]))
                elif isinstance(doc.get("image"), dict):
                    stats = await self._from_image(tmp, size, doc["image"])
                else:
                    await trio.to_thread.run_sync(_create_sparse, tmp, size)
                    stats = {}
                await trio.to_thread.run_sync(os.replace, tmp, path)
                await trio.to_thread.run_sync(fsync_dir, self.dir)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: tmp.unlink(missing_ok=True))
                raise
        seconds = time.monotonic() - started
        log_event(log, "volume.created", volume=volume_id, bytes=size, seconds=round(seconds, 3), **stats)
        return {**await self.show(volume_id), **stats, "seconds": round(seconds, 3)}

    async def show(self, volume_id: str) -> dict[str, Any]:
        st = await trio.to_thread.run_sync(self.path(volume_id).stat)
        return {"id": volume_id, "size": st.st_size, "allocated": st.st_blocks * 512,
                "node_id": self.agent.node.config.node_id}

    async def delete(self, volume_id: str) -> dict[str, Any]:
        path = self.path(volume_id)
        async with self.lock(volume_id):
            if await self._attached_to(volume_id):
                raise Conflict(f"volume {volume_id} is attached to a server here")
            await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        self._locks.pop(volume_id, None)
        log_event(log, "volume.deleted", volume=volume_id)
        return {"id": volume_id, "deleted": True}

    async def extend(self, volume_id: str, size_gb: int) -> dict[str, Any]:
        path = self.path(volume_id)
        async with self.lock(volume_id):
            st = await trio.to_thread.run_sync(path.stat)
            if size_gb * GiB <= st.st_size:
                raise ValueError("the new size must be larger than the current one")

            def grow() -> None:
                os.truncate(path, size_gb * GiB)
                _fsync_file(path)
            await trio.to_thread.run_sync(grow)
        return await self.show(volume_id)

    async def _from_image(self, out: Path, size: int, image: dict[str, Any]) -> dict[str, Any]:
        """The image's data as a raw file, grown to ``size``."""
        from compute_agent.agent import QEMU_FORMATS
        fmt = QEMU_FORMATS.get(str(image.get("disk_format")))
        if fmt is None:
            raise VolumeError(f"cannot make a volume of a {image.get('disk_format')} image")
        base = await self.agent.images.fetch(image)
        virtual = await disks.check_base(base, fmt)
        if virtual > size:
            raise VolumeError(f"image is {virtual} bytes, larger than the volume")
        await disks.qemu_img("convert", "-q", "-f", fmt, "-O", "raw", "-S", "4k", str(base), str(out))

        def grow() -> None:
            os.truncate(out, size)
            _fsync_file(out)
        await trio.to_thread.run_sync(grow)
        return {"image_bytes": virtual}

    # -- snapshots -------------------------------------------------------------------------

    async def _ensure_containers(self) -> None:
        if self._containers_ok:
            return
        for container in (CHUNKS, MANIFESTS):
            resp = await self.cc.put_container(SNAPSHOT_ACCOUNT, container)
            if resp.status // 100 != 2:
                raise VolumeError(f"cannot create {SNAPSHOT_ACCOUNT}/{container}: {resp.status}")
        self._containers_ok = True

    async def snapshot(self, volume_id: str, snapshot_id: str, server_id: str | None) -> dict[str, Any]:
        """Store the volume's chunks and manifest; return the manifest's summary."""
        path = self.path(volume_id)
        await self._ensure_containers()
        started = time.monotonic()
        async with self.lock(volume_id):
            size = (await trio.to_thread.run_sync(path.stat)).st_size
            source = path
            if server_id and await self._attached_to(volume_id):
                source = await self._frozen_copy(server_id, path)
            try:
                indexes = await trio.to_thread.run_sync(_data_chunks, source, size)
                chunks, stored, sent = await self._store_chunks(source, size, indexes)
                await self._put_manifest(snapshot_id, volume_id, size, chunks)
                # A snapshot delete that listed the manifests before ours existed may have
                # removed a chunk we found present; now that our manifest protects them,
                # look once more and send again whatever is gone.
                _, restored, resent = await self._store_chunks(source, size, sorted(chunks))
            finally:
                if source != path:
                    await trio.to_thread.run_sync(lambda: source.unlink(missing_ok=True))
        stored, sent = stored + restored, sent + resent
        seconds = time.monotonic() - started
        summary = {"snapshot_id": snapshot_id, "size": size, "chunks": len(chunks),
                   "chunks_stored": stored, "bytes_stored": sent, "seconds": round(seconds, 3)}
        log_event(log, "volume.snapshot", volume=volume_id, **summary)
        return summary

    async def _put_manifest(self, snapshot_id: str, volume_id: str, size: int,
                            chunks: dict[int, str]) -> None:
        manifest = {"snapshot_id": snapshot_id, "volume_id": volume_id, "size": size,
                    "chunk_size": CHUNK_SIZE, "chunks": {str(i): d for i, d in sorted(chunks.items())}}
        body = json.dumps(manifest, separators=(",", ":")).encode()
        status, _ = await self.cc.put_object(SNAPSHOT_ACCOUNT, MANIFESTS, snapshot_id,
                                             [("Content-Type", "application/json")], body, len(body))
        if status // 100 != 2:
            raise VolumeError(f"cannot store the manifest: {status}")

    async def _frozen_copy(self, server_id: str, path: Path) -> Path:
        """A consistent sparse copy of an attached volume: suspend, copy, resume."""
        copy = path.with_name(f".{path.name}.snap-{os.urandom(4).hex()}")

        def suspend(conn: Any) -> bool:
            dom = conn.lookupByUUIDString(server_id)
            if dom.isActive() and dom.state()[0] != PAUSED:
                dom.suspend()
                return True
            return False

        def resume(conn: Any) -> None:
            conn.lookupByUUIDString(server_id).resume()

        paused = await self.agent.hv.call(suspend)
        try:
            with trio.fail_after(disks.QEMU_IMG_TIMEOUT):
                proc = await trio.run_process(["cp", "--sparse=always", str(path), str(copy)],
                                              capture_stderr=True, check=False)
            if proc.returncode != 0:
                raise VolumeError(f"copy failed: {proc.stderr.decode(errors='replace').strip()}")
        finally:
            if paused:
                with trio.CancelScope(shield=True):
                    await self.agent.hv.call(resume)
        return copy

    async def _store_chunks(self, source: Path, size: int,
                            indexes: list[int]) -> tuple[dict[int, str], int, int]:
        """Hash every data chunk; upload those the ring lacks.  ``(map, uploaded, bytes)``."""
        chunks: dict[int, str] = {}
        counters = [0, 0]

        async def one(index: int) -> None:
            offset = index * CHUNK_SIZE
            length = min(CHUNK_SIZE, size - offset)

            def read_and_hash() -> tuple[bytes, str] | None:
                data = _pread(source, offset, length)
                if is_zero(data):
                    return None
                return data, hashlib.sha256(data).hexdigest()
            got = await trio.to_thread.run_sync(read_and_hash)
            if got is None:
                return
            data, digest = got
            chunks[index] = digest
            head = await self.cc.head_object(SNAPSHOT_ACCOUNT, CHUNKS, digest)
            if head.status == 200:
                return
            status, _ = await self.cc.put_object(
                SNAPSHOT_ACCOUNT, CHUNKS, digest, [("Content-Type", "application/octet-stream")],
                data, len(data))
            if status // 100 != 2:
                raise VolumeError(f"cannot store chunk {digest}: {status}")
            counters[0] += 1
            counters[1] += len(data)

        await _in_parallel(indexes, one)
        return chunks, counters[0], counters[1]

    async def _restore(self, out: Path, size: int, snapshot_id: str) -> dict[str, Any]:
        """Fill a sparse file from the snapshot's manifest, verifying every chunk."""
        manifest = await self.read_manifest(snapshot_id)
        if int(manifest["size"]) > size:
            raise VolumeError("the volume is smaller than the snapshot")
        chunk_size = int(manifest.get("chunk_size", CHUNK_SIZE))
        await trio.to_thread.run_sync(_create_sparse, out, size)
        items = [(int(i), str(d)) for i, d in manifest["chunks"].items()]
        fetched = [0]

        async def one(item: tuple[int, str]) -> None:
            index, digest = item
            data = await self._fetch_chunk(digest)
            await trio.to_thread.run_sync(_pwrite, out, index * chunk_size, data)
            fetched[0] += len(data)

        await _in_parallel(items, one)
        await trio.to_thread.run_sync(_fsync_file, out)
        return {"chunks_fetched": len(items), "bytes_fetched": fetched[0]}

    async def read_manifest(self, snapshot_id: str) -> dict[str, Any]:
        async with self.cc.get_object(SNAPSHOT_ACCOUNT, MANIFESTS, snapshot_id) as resp:
            if resp.status != 200:
                raise VolumeError(f"manifest of snapshot {snapshot_id}: {resp.status}")
            raw = b"".join([chunk async for chunk in resp])
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("chunks"), dict):
            raise VolumeError(f"manifest of snapshot {snapshot_id} is malformed")
        return manifest

    async def _fetch_chunk(self, digest: str) -> bytes:
        async with self.cc.get_object(SNAPSHOT_ACCOUNT, CHUNKS, digest) as resp:
            if resp.status != 200:
                raise VolumeError(f"chunk {digest}: {resp.status}")
            pieces, size = [], 0
            async for piece in resp:
                size += len(piece)
                if size > CHUNK_SIZE:
                    raise VolumeError(f"chunk {digest} is larger than a chunk")
                pieces.append(piece)
        data = b"".join(pieces)
        if await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest()) != digest:
            raise VolumeError(f"chunk {digest} does not match its hash")
        return data

    # -- attachments -------------------------------------------------------------------------

    async def _attached_to(self, volume_id: str) -> bool:
        """True if any domain on this node uses the volume's file."""
        path = str(self.path(volume_id))

        def scan(conn: Any) -> bool:
            return any(f"file='{path}'" in dom.XMLDesc() for dom in conn.listAllDomains())
        try:
            return await self.agent.hv.call(scan)
        except HypervisorError:
            return False

    async def attach(self, server_id: str, volume_id: str, device: str) -> dict[str, Any]:
        import libvirt
        path = self.path(volume_id)
        if not await trio.to_thread.run_sync(path.exists):
            raise FileNotFoundError(path)
        inst = self.agent.instances.get(server_id)
        if inst is None:
            raise Conflict(f"server {server_id} is not on this node")
        xml = volume_disk_xml(str(path), device, volume_id)

        def work(conn: Any) -> None:
            dom = conn.lookupByUUIDString(server_id)
            if f"file='{path}'" in dom.XMLDesc():
                return
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.attachDeviceFlags(xml, flags)
        async with self.lock(volume_id):
            await self.agent.hv.call(work)
        log_event(log, "volume.attached", volume=volume_id, server=server_id, device=device)
        return {"volume_id": volume_id, "server_id": server_id, "device": f"/dev/{device}"}

    async def detach(self, server_id: str, volume_id: str) -> dict[str, Any]:
        """Detach from the persistent config and the running guest (which must let go)."""
        import libvirt
        path = str(self.path(volume_id))

        def disk_xml(dom: Any, flags: int = 0) -> str | None:
            import xml.etree.ElementTree as ET
            for disk in ET.fromstring(dom.XMLDesc(flags)).iter("disk"):
                source = disk.find("source")
                if source is not None and source.get("file") == path:
                    return ET.tostring(disk, encoding="unicode")
            return None

        def request(conn: Any) -> bool:
            """Ask for the detach; ``True`` if the live guest still has to release it."""
            try:
                dom = conn.lookupByUUIDString(server_id)
            except libvirt.libvirtError:
                return False
            persistent = disk_xml(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            if persistent:
                dom.detachDeviceFlags(persistent, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            live = disk_xml(dom) if dom.isActive() else None
            if live:
                dom.detachDeviceFlags(live, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                return disk_xml(dom) is not None
            return False

        def still_there(conn: Any) -> bool:
            try:
                dom = conn.lookupByUUIDString(server_id)
            except libvirt.libvirtError:
                return False
            return dom.isActive() and disk_xml(dom) is not None

        async with self.lock(volume_id):
            pending = await self.agent.hv.call(request)
            with trio.move_on_after(DETACH_WAIT):
                while pending:
                    await trio.sleep(0.5)
                    pending = await self.agent.hv.call(still_there)
            if pending:
                raise VolumeError(f"the guest of {server_id} did not release volume {volume_id}")
        log_event(log, "volume.detached", volume=volume_id, server=server_id)
        return {"volume_id": volume_id, "server_id": server_id}
