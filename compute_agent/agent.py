"""The compute agent: the servers of one node, from build to delete.

The proxy picks a node and talks to its agent over the internal port
(signed requests, route ``/compute``):

=================================================  ===========================================
``GET    /compute/resources``                       free vCPUs / RAM / disk, for the scheduler
``PUT    /compute/servers/<id>``                    claim resources, build in the background
``POST   /compute/servers/<id>/action``             ``stop``, ``start``, ``reboot`` (SOFT/HARD)
``GET    /compute/servers/<id>/console?length=N``   the last N lines of the serial console
``GET    /compute/servers/<id>/snapshot``           the disk as one standalone qcow2 (streamed)
``DELETE /compute/servers/<id>``                    destroy the domain, drop the overlay
=================================================  ===========================================

Each server's record (a JSON object in the ring, where the proxy wrote it in
``BUILD``) is from then on written by this agent only, at every change of
state: ``ACTIVE``, ``SHUTOFF``, ``REBOOT``/``HARD_REBOOT``, ``ERROR`` with a
``fault``, as Nova shows them.  A copy lives in ``instances/<id>/
instance.json`` next to the overlay (``disk``) and the serial console log
(``console.log``) and, with user_data, the config drive (``disk.config``,
:mod:`compute_agent.config_drive`); at start the agent reads these copies back and asks
libvirt what each domain is doing, so a restarted agent keeps track of
servers that kept running without it.  A periodic sync notices guests that
powered themselves off, domains that vanished, and DHCP addresses.

Actions answer as soon as they are accepted (state checks happen first and
answer ``409`` as Nova does); the work runs in the agent's nursery, one
operation per server at a time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from compute_agent import config_drive, disks
from compute_agent.domain_xml import DomainSpec, domain_xml
from compute_agent.hypervisor import ON_STATES, RUNNING, Hypervisor, HypervisorError, virt_type
from compute_agent.image_cache import ImageCache, ImageFetchError
from compute_agent.network import NetworkSetupError, Nic, NodeNetworks
from compute_agent.volumes import VolumeAgent
from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.daemon import Node
from node.http_client import BackendError
from node.http_server import BadRequest, ClientDisconnected, Request, Response
from node.log import log_event

log = logging.getLogger("peerstack.compute")

#: Glance disk_format -> qemu's name for it
QEMU_FORMATS = {"raw": "raw", "ami": "raw", "iso": "raw", "qcow2": "qcow2", "vmdk": "vmdk",
                "vhd": "vpc", "vhdx": "vhdx", "vdi": "vdi", "ploop": "parallels"}
POWER_NOSTATE, POWER_RUNNING, POWER_PAUSED, POWER_SHUTDOWN = 0, 1, 3, 4
MAX_CONSOLE_BYTES = 1 << 20
MAX_RPC_BODY = 1 << 20
READ_BATCH = 1 << 20
GiB = 1 << 30


class Conflict(Exception):
    """The server is in a state that does not allow the action (Nova's ``409``)."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json(status: int, doc: Any) -> Response:
    return Response(status, [("Content-Type", "application/json")],
                    json.dumps(doc, separators=(",", ":")).encode())


def _write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mem_total_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _tail_lines(path: Path, length: int | None) -> str:
    """The last ``length`` lines of a console log (all of its last MiB if ``None``)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - MAX_CONSOLE_BYTES, 0))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if length is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-length:]) if length > 0 else ""


async def _stream_file(path: Path) -> AsyncIterator[bytes]:
    """Stream a temporary file in 1 MiB reads, then remove it."""
    try:
        f = await trio.to_thread.run_sync(open, path, "rb")
        try:
            while chunk := await trio.to_thread.run_sync(f.read, READ_BATCH):
                yield chunk
        finally:
            f.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


@dataclass
class Instance:
    """One server on this node: its record, its files, and its operation lock."""

    record: dict[str, Any]
    location: dict[str, str]
    dir: Path
    lock: trio.Lock = field(default_factory=trio.Lock)
    dirty: bool = False

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def flavor(self) -> dict[str, Any]:
        return self.record.get("flavor") or {}

    @property
    def disk(self) -> Path:
        return self.dir / "disk"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


class ComputeAgent:
    """The hypervisor side of one node (see the module docstring)."""

    def __init__(self, node: Node, *, root: Path | None = None, hypervisor: Hypervisor | None = None,
                 cpu_allocation_ratio: float = 4.0, ram_allocation_ratio: float = 1.0,
                 reserved_ram_mb: int = 512, shutdown_timeout: float = 30.0,
                 sync_interval: float = 5.0, network: str = "default") -> None:
        self.node = node
        self.cc = ClusterClient(node.config, node.cluster, node.client, health=node.health)
        self.root = root or node.config.resolve(node.config.storage.root) / "compute"
        self.images = ImageCache(self.root / "_base", self.cc)
        self.hv = hypervisor or Hypervisor()
        self.cpu_allocation_ratio = cpu_allocation_ratio
        self.ram_allocation_ratio = ram_allocation_ratio
        self.reserved_ram_mb = reserved_ram_mb
        self.shutdown_timeout = shutdown_timeout
        self.sync_interval = sync_interval
        self.network = network
        self.virt_type = virt_type()
        self.instances: dict[str, Instance] = {}
        self._nursery: trio.Nursery | None = None
        self.volumes = VolumeAgent(self)
        self.networks = NodeNetworks(self.root / "networks", node.cluster.cluster_id,
                                     node.config.node_id, self._tunnel_end, self._tunnel_peers)

    def _tunnel_end(self) -> tuple[str, int]:
        """This node's VXLAN end: its internal address, its internal port number as UDP port."""
        cfg = self.node.config
        return cfg.internal.host, self.node.internal_port or cfg.internal.port

    def _tunnel_peers(self) -> list[tuple[str, int]]:
        """Every node's VXLAN end, from the ring's devices."""
        try:
            return sorted({(d["ip"], int(d["port"])) for d in self.cc.rings.object.devs if d})
        except RingUnavailable:
            return []

    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    def install(self) -> None:
        self.node.internal_routes["compute"] = self.handle
        self.node.add_service("compute.agent", self.run)

    # -- the service ----------------------------------------------------------------

    async def run(self) -> None:
        """Recover servers from disk, then keep records in step with libvirt."""
        await self._recover()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                log_event(log, "compute.agent_started", node_id=self.node.config.node_id,
                          virt_type=self.virt_type, servers=len(self.instances))
                while True:
                    await self.sync_once()
                    await trio.sleep(self.sync_interval)
            finally:
                self._nursery = None

    async def _recover(self) -> None:
        def scan() -> list[tuple[Path, dict]]:
            found = []
            self.instances_dir.mkdir(parents=True, exist_ok=True)
            for d in sorted(self.instances_dir.iterdir()):
                try:
                    found.append((d, json.loads((d / "instance.json").read_text())))
                except (OSError, ValueError):
                    continue
            return found
        for d, doc in await trio.to_thread.run_sync(scan):
            record, location = doc.get("record"), doc.get("location")
            if not isinstance(record, dict) or not isinstance(location, dict) or "id" not in record:
                continue
            inst = Instance(record, location, d)
            self.instances[inst.id] = inst
            if record.get("task_state") == "deleting":
                inst.dirty = True
            elif record.get("status") == "BUILD":
                self._set_error(inst, "Build of instance interrupted by a compute agent restart")
                inst.dirty = True
            elif record.get("task_state"):
                # An action died with the old agent: the sync decides the state.
                record["task_state"] = None
                inst.dirty = True

    async def sync_once(self) -> None:
        """One pass of power-state sync, address discovery and pending record writes."""
        for inst in list(self.instances.values()):
            if inst.lock.locked():
                continue
            async with inst.lock:
                if inst.record.get("task_state") == "deleting":
                    await self._delete_now(inst)
                    continue
                try:
                    await self._sync_instance(inst)
                except HypervisorError as exc:
                    log_event(log, "compute.sync_failed", server=inst.id, error=str(exc))
                if inst.dirty:
                    await self._persist(inst)

    async def _sync_instance(self, inst: Instance) -> None:
        rec = inst.record
        if rec.get("status") == "BUILD" or rec.get("vm_state") == "error":
            return
        state = await self.hv.state(inst.id)
        if state is None:
            if rec.get("vm_state") != "error":
                self._set_error(inst, "The domain of this server is gone from the hypervisor")
                inst.dirty = True
            return
        running = state in ON_STATES
        if rec.get("vm_state") == "active" and not running:
            self._set(inst, status="SHUTOFF", vm_state="stopped", power_state=POWER_SHUTDOWN,
                      addresses={})
            log_event(log, "compute.powered_off_by_guest", server=inst.id)
        elif rec.get("vm_state") == "stopped" and running:
            self._set(inst, status="ACTIVE", vm_state="active", power_state=POWER_RUNNING)
        if state == RUNNING and rec.get("vm_state") == "active" and not rec.get("addresses"):
            leased = await self.hv.leased_addresses(inst.id)
            if leased:
                self._set(inst, addresses={self.network: [
                    {"version": 4, "addr": ip, "OS-EXT-IPS:type": "fixed",
                     "OS-EXT-IPS-MAC:mac_addr": mac} for mac, ip in leased]})

    # -- records ---------------------------------------------------------------------

    def _set(self, inst: Instance, **changes: Any) -> None:
        inst.record.update(changes)
        inst.record["updated"] = now_iso()
        inst.dirty = True

    def _set_error(self, inst: Instance, message: str) -> None:
        self._set(inst, status="ERROR", vm_state="error", task_state=None,
                  fault={"code": 500, "message": message, "created": now_iso(), "details": ""})
        log_event(log, "compute.server_error", server=inst.id, message=message)

    async def _persist(self, inst: Instance) -> None:
        """Write the record here (fsynced) and into the ring; a ring failure is retried by the sync."""
        doc = {"record": inst.record, "location": inst.location}
        if inst.dir.exists():
            await trio.to_thread.run_sync(_write_json_atomic, inst.dir / "instance.json", doc)
        body = json.dumps(inst.record, separators=(",", ":")).encode()
        loc = inst.location
        try:
            status, _ = await self.cc.put_object(loc["account"], loc["container"], loc["object"],
                                                 [("Content-Type", "application/json")], body, len(body))
        except BackendError as exc:
            status = 503
            log_event(log, "compute.record_write_failed", server=inst.id, error=str(exc))
        inst.dirty = status // 100 != 2
        if inst.dirty:
            log_event(log, "compute.record_write_failed", server=inst.id, status=status)

    async def _save(self, inst: Instance, **changes: Any) -> None:
        self._set(inst, **changes)
        await self._persist(inst)

    # -- resources -------------------------------------------------------------------

    def resources(self) -> dict[str, Any]:
        vcpus_total = int((os.cpu_count() or 1) * self.cpu_allocation_ratio)
        ram_total = int(_mem_total_mb() * self.ram_allocation_ratio) - self.reserved_ram_mb
        vcpus_used = sum(int(i.flavor.get("vcpus", 0)) for i in self.instances.values())
        ram_used = sum(int(i.flavor.get("ram", 0)) for i in self.instances.values())
        disk_used = sum(int(i.flavor.get("disk", 0)) for i in self.instances.values())
        try:
            disk_free = shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free // GiB
        except OSError:
            disk_free = 0
        return {"node_id": self.node.config.node_id, "virt_type": self.virt_type,
                "vcpus": vcpus_total, "vcpus_used": vcpus_used,
                "vcpus_free": vcpus_total - vcpus_used,
                "memory_mb": ram_total, "memory_mb_used": ram_used,
                "memory_mb_free": ram_total - ram_used,
                "disk_gb_free": max(disk_free - disk_used, 0), "servers": len(self.instances),
                "volume_gb": self.volumes.used_gb()}

    def _fits(self, flavor: dict[str, Any]) -> bool:
        free = self.resources()
        return (int(flavor.get("vcpus", 0)) <= free["vcpus_free"]
                and int(flavor.get("ram", 0)) <= free["memory_mb_free"]
                and int(flavor.get("disk", 0)) <= free["disk_gb_free"])

    # -- RPC ---------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        try:
            if parts[1:] == ["resources"] and request.method == "GET":
                return _json(200, self.resources())
            if len(parts) >= 2 and parts[1] == "volumes":
                return await self.volumes.handle(request, parts[2:])
            if len(parts) >= 4 and parts[1] == "servers" and parts[3] == "volumes":
                return await self.volumes.handle_attachment(request, parts[2], parts[4:])
            if len(parts) >= 3 and parts[1] == "servers":
                server_id = parts[2]
                rest = parts[3:]
                if not rest and request.method == "PUT":
                    return await self._rpc_build(request, server_id)
                if not rest and request.method == "DELETE":
                    return self._rpc_delete(server_id)
                if not rest and request.method == "GET":
                    return self._rpc_show(server_id)
                if rest == ["action"] and request.method == "POST":
                    return await self._rpc_action(request, server_id)
                if rest == ["console"] and request.method == "GET":
                    return await self._rpc_console(request, server_id)
                if rest == ["snapshot"] and request.method == "GET":
                    return await self._rpc_snapshot(server_id)
            return _json(404, {"error": "no such compute call"})
        except Conflict as exc:
            return _json(409, {"error": str(exc)})
        except (BadRequest, ClientDisconnected, ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": f"bad request: {exc}"})

    def _instance(self, server_id: str) -> Instance:
        inst = self.instances.get(server_id)
        if inst is None or inst.record.get("task_state") == "deleting":
            raise KeyError(server_id)
        return inst

    def _background(self, fn, *args: Any) -> None:
        if self._nursery is None:
            raise Conflict("compute agent is starting")
        self._nursery.start_soon(fn, *args)

    async def _rpc_build(self, request: Request, server_id: str) -> Response:
        doc = json.loads(await request.read_body(MAX_RPC_BODY))
        record, location, images = doc["server"], doc["location"], doc["images"]
        if record.get("id") != server_id or str(uuidlib.UUID(server_id)) != server_id:
            raise ValueError("server id mismatch")
        if not isinstance(images, dict) or not isinstance(images.get("disk"), dict):
            raise ValueError("images.disk is required")
        if server_id in self.instances:
            return _json(202, {"server": self.instances[server_id].record})
        if self._nursery is None:
            return _json(503, {"error": "compute agent is starting"})
        if not self._fits(record.get("flavor") or {}):
            return _json(409, {"error": "not enough free resources on this node"})
        inst = Instance(record, location, self.instances_dir / server_id)
        self.instances[server_id] = inst
        self._background(self._build, inst, images)
        return _json(202, {"server": record})

    def _rpc_show(self, server_id: str) -> Response:
        return _json(200, {"server": self._instance(server_id).record})

    def _rpc_delete(self, server_id: str) -> Response:
        inst = self.instances.get(server_id)
        if inst is None:
            return _json(404, {"error": "no such server on this node"})
        if inst.record.get("task_state") != "deleting":
            self._set(inst, task_state="deleting")
            self._background(self._delete, inst)
        return _json(202, {"server": inst.record})

    async def _rpc_action(self, request: Request, server_id: str) -> Response:
        inst = self._instance(server_id)
        if self._nursery is None:
            # before the task state is set: a refused action must not leave it behind
            raise Conflict("compute agent is starting")
        doc = json.loads(await request.read_body(MAX_RPC_BODY))
        action = doc.get("action")
        rec = inst.record
        if rec.get("task_state"):
            raise Conflict(f"Cannot '{action}' instance {server_id} while it is in task_state "
                           f"{rec['task_state']}")
        vm_state = rec.get("vm_state")
        if action == "stop":
            self._allowed(inst, action, ("active", "error"))
            self._set(inst, task_state="powering-off")
            job: tuple[Any, ...] = (self._stop, inst)
        elif action == "start":
            self._allowed(inst, action, ("stopped",))
            self._set(inst, task_state="powering-on")
            job = (self._start, inst)
        elif action == "reboot":
            hard = str(doc.get("type", "SOFT")).upper() == "HARD"
            self._allowed(inst, action, ("active", "stopped", "error") if hard else ("active",))
            if hard:
                self._set(inst, status="HARD_REBOOT", task_state="reboot_started_hard")
            else:
                self._set(inst, status="REBOOT", task_state="reboot_started")
            job = (self._reboot, inst, hard, vm_state)
        else:
            raise ValueError(f"unknown action {action!r}")
        # The task state is in the ring before the 202: a client polling right after the
        # action (openstack server reboot --wait) must not read the state from before it.
        await self._persist(inst)
        self._background(*job)
        return _json(202, {"server": rec})

    @staticmethod
    def _allowed(inst: Instance, action: str, states: tuple[str, ...]) -> None:
        vm_state = inst.record.get("vm_state")
        if vm_state not in states:
            raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in vm_state {vm_state}")

    async def _rpc_console(self, request: Request, server_id: str) -> Response:
        inst = self._instance(server_id)
        raw = request.query.get("length")
        length = int(raw) if raw not in (None, "", "null") else None
        if length is not None and length < 0:
            raise ValueError("length must be >= 0")
        text = await trio.to_thread.run_sync(_tail_lines, inst.console_log, length)
        return _json(200, {"output": text})

    async def _rpc_snapshot(self, server_id: str) -> Response:
        inst = self._instance(server_id)
        async with inst.lock:
            if inst.record.get("task_state"):
                raise Conflict(f"Cannot 'createImage' instance {server_id} while it is in "
                               f"task_state {inst.record['task_state']}")
            if inst.record.get("vm_state") not in ("active", "stopped"):
                raise Conflict(f"Cannot 'createImage' instance {server_id} while it is in "
                               f"vm_state {inst.record.get('vm_state')}")
            await self._save(inst, task_state="image_snapshot")
            out = inst.dir / f"snapshot-{uuidlib.uuid4().hex}.qcow2"
            try:
                # Nova's cold snapshot: save the guest's memory (which also
                # flushes its disk), copy the disk, restore the guest.
                was_running = await self.hv.managed_save(inst.id)
                try:
                    await disks.flatten(inst.disk, out)
                finally:
                    if was_running:
                        await self.hv.start(inst.id)
                size = (await trio.to_thread.run_sync(out.stat)).st_size
            except (disks.DiskError, HypervisorError, OSError) as exc:
                await trio.to_thread.run_sync(lambda: out.unlink(missing_ok=True))
                return _json(500, {"error": f"snapshot failed: {exc}"})
            finally:
                await self._save(inst, task_state=None)
        log_event(log, "compute.snapshot", server=server_id, bytes=size, was_running=was_running)
        return Response(200, [("Content-Type", "application/octet-stream")],
                        _stream_file(out), content_length=size)

    # -- the work --------------------------------------------------------------------

    async def _build(self, inst: Instance, images: dict[str, Any]) -> None:
        async with inst.lock:
            started = time.monotonic()
            try:
                await trio.to_thread.run_sync(lambda: inst.dir.mkdir(parents=True, exist_ok=True))
                await self._save(inst, task_state="spawning")
                xml = await self._prepare(inst, images)
                await self.hv.define_and_start(xml)
            except (ImageFetchError, disks.DiskError, HypervisorError, BackendError, OSError,
                    NetworkSetupError, config_drive.ConfigDriveError, ValueError, KeyError) as exc:
                self._set_error(inst, str(exc))
                await self._persist(inst)
                return
            await self._save(inst, status="ACTIVE", vm_state="active", task_state=None,
                             power_state=POWER_RUNNING, launched_at=now_iso())
            log_event(log, "compute.server_active", server=inst.id,
                      seconds=round(time.monotonic() - started, 3))

    async def _prepare(self, inst: Instance, images: dict[str, Any]) -> str:
        """Fetch the images, make the overlay; return the domain XML."""
        disk = images["disk"]
        fmt = QEMU_FORMATS.get(str(disk.get("disk_format")))
        if fmt is None:
            raise disks.DiskError(f"cannot boot a {disk.get('disk_format')} image")
        base = await self.images.fetch(disk)
        virtual_size = await disks.check_base(base, fmt)
        kernel = initrd = None
        if isinstance(images.get("kernel"), dict):
            kernel = await self.images.fetch(images["kernel"])
        if isinstance(images.get("ramdisk"), dict):
            initrd = await self.images.fetch(images["ramdisk"])
        flavor_disk = int(inst.flavor.get("disk", 0)) * GiB
        if flavor_disk and flavor_disk < virtual_size:
            raise disks.DiskError("Flavor's disk is too small for requested image.")
        await disks.create_overlay(base, fmt, inst.disk, flavor_disk or None)
        drive = None
        if config_drive.wanted(inst.record):
            drive = await config_drive.make(inst.record, inst.dir / config_drive.FILE_NAME)
        nics = [Nic.from_dict(n) for n in inst.record.get("nics") or []]
        bridges = tuple([(await self.networks.plug(nic), nic.mac) for nic in nics])
        flavor = inst.flavor
        return domain_xml(DomainSpec(
            name=f"peerstack-{inst.id}", uuid=inst.id, vcpus=int(flavor.get("vcpus", 1)),
            ram_mb=int(flavor.get("ram", 512)), disk=str(inst.disk),
            console_log=str(inst.console_log), virt_type=self.virt_type,
            kernel=str(kernel) if kernel else None, initrd=str(initrd) if initrd else None,
            cmdline=images.get("cmdline") or None, network=self.network, bridges=bridges,
            config_drive=str(drive) if drive else None,
            description=f"peerstack server {inst.record.get('name', '')}"))

    async def _stop(self, inst: Instance) -> None:
        async with inst.lock:
            await self._persist(inst)
            try:
                if not await self.hv.shutdown(inst.id, self.shutdown_timeout):
                    await self.hv.destroy(inst.id)
            except HypervisorError as exc:
                await self._save(inst, task_state=None,
                                 fault={"code": 500, "message": str(exc), "created": now_iso()})
                return
            await self._save(inst, status="SHUTOFF", vm_state="stopped", task_state=None,
                             power_state=POWER_SHUTDOWN, addresses={})

    async def _start(self, inst: Instance) -> None:
        async with inst.lock:
            await self._persist(inst)
            try:
                # the bridges may be gone (host rebooted, last other server on the network deleted)
                for nic in inst.record.get("nics") or []:
                    await self.networks.plug(Nic.from_dict(nic))
                await self.hv.start(inst.id)
            except (HypervisorError, NetworkSetupError) as exc:
                self._set_error(inst, str(exc))
                await self._persist(inst)
                return
            await self._save(inst, status="ACTIVE", vm_state="active", task_state=None,
                             power_state=POWER_RUNNING)

    async def _reboot(self, inst: Instance, hard: bool, was: str | None) -> None:
        """Nova's reboot: soft = clean shutdown then boot (hard if the guest ignores it)."""
        async with inst.lock:
            await self._persist(inst)
            try:
                if hard or not await self.hv.shutdown(inst.id, self.shutdown_timeout):
                    await self.hv.destroy(inst.id)
                await self.hv.start(inst.id)
            except HypervisorError as exc:
                self._set_error(inst, str(exc))
                await self._persist(inst)
                return
            await self._save(inst, status="ACTIVE", vm_state="active", task_state=None,
                             power_state=POWER_RUNNING, addresses={})
            log_event(log, "compute.rebooted", server=inst.id, hard=hard, was=was)

    async def _delete(self, inst: Instance) -> None:
        async with inst.lock:
            await self._delete_now(inst)

    async def _delete_now(self, inst: Instance) -> None:
        """Destroy and undefine the domain, remove the files, then the record (lock held)."""
        try:
            await self.hv.undefine(inst.id)
        except HypervisorError as exc:
            log_event(log, "compute.delete_failed", server=inst.id, error=str(exc))
            await self._persist(inst)
            return
        await trio.to_thread.run_sync(lambda: shutil.rmtree(inst.dir, ignore_errors=True))
        for nic in inst.record.get("nics") or []:
            await self.networks.unplug(Nic.from_dict(nic))
        loc = inst.location
        try:
            resp = await self.cc.delete_object(loc["account"], loc["container"], loc["object"])
            ok = resp.status // 100 == 2 or resp.status == 404
        except BackendError:
            ok = False
        if not ok:
            # The files are gone; keep the record in memory so the sync retries the ring delete.
            inst.dirty = False
            log_event(log, "compute.record_delete_failed", server=inst.id)
            return
        self.instances.pop(inst.id, None)
        log_event(log, "compute.server_deleted", server=inst.id)
