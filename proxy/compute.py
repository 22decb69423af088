"""Compute: a Nova v2.1 subset on the public port (``/v2.1[/<project>]/...``).

================================================  =========================================
``GET  /servers``, ``/servers/detail``             the caller's servers (admin: ``all_tenants``)
``POST /servers``                                  validate, schedule, hand to an agent: 202 BUILD
``GET  /servers/<id>``                             show (``fault`` when ``ERROR``)
``DELETE /servers/<id>``                           the agent destroys domain and overlay
``POST /servers/<id>/action``                      ``os-start``, ``os-stop``, ``reboot``,
                                                   ``os-getConsoleOutput``, ``createImage``
``/servers/<id>/os-volume_attachments[/<vol>]``   :mod:`proxy.volumes_attach`
``/flavors``, ``/os-keypairs``                     :mod:`proxy.compute_flavors`, ``..._keypairs``
================================================  =========================================

A server is a record in the ring (``.compute/servers/<id>``).  The proxy
writes it once, in ``BUILD`` with the chosen host; from then on that host's
agent owns it and writes every change.  Scheduling is
:mod:`proxy.compute_scheduler`; if the chosen agent turns the build down
(it filled up meanwhile) the next host is tried, and with no host left the
server goes to ``ERROR`` with Nova's "No valid host was found" fault.

``createImage`` makes a ``queued`` image at once (202, ``image_id``), then
a background job pulls the agent's flattened qcow2 and stores it through
the image service's own upload path (same inspector, same checksums); the
new image inherits the server image's ``kernel_id``/``ramdisk_id`` and
``os_command_line`` so it boots the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.daemon import Node
from node.http_client import BackendError, Timeouts
from node.http_server import BadRequest, Request, Response
from node.log import log_event
from proxy.auth import Identity
from proxy.compute_flavors import Flavors
from proxy.compute_http import APIError, caller, empty_response, json_response, read_json, require_dict
from proxy.compute_keypairs import Keypairs
from proxy.compute_records import JsonRecords, StoreError
from proxy.compute_scheduler import Host, Scheduler
from proxy.image_inspector import ImageRejected, check_declared
from proxy.images import ImagesAPI, now_iso
from proxy.images_store import ImageStore
from proxy.networks import NetworksAPI
from proxy.volumes_attach import VolumeAttachments
from proxy.volumes_store import VolumeStore

log = logging.getLogger("peerstack.proxy.compute")

ACCOUNT = ".compute"
AGENT_TIMEOUTS = Timeouts(connect=2.0, node=30.0)
SNAPSHOT_TIMEOUTS = Timeouts(connect=2.0, node=600.0)
MAX_USER_DATA = 65535
MAX_NAME = 255
MAX_METADATA_ITEMS = 128
COLLECTIONS = frozenset({"servers", "flavors", "os-keypairs", "images", "limits", "extensions"})
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


def _links(kind: str, item_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"/v2.1/{kind}/{item_id}"},
            {"rel": "bookmark", "href": f"/{kind}/{item_id}"}]


def server_view(record: dict[str, Any], identity: Identity, detail: bool = True) -> dict[str, Any]:
    """A server record as Nova v2.1 shows it."""
    sid = record["id"]
    if not detail:
        return {"id": sid, "name": record.get("name"), "links": _links("servers", sid)}
    flavor = record.get("flavor") or {}
    view = {
        "id": sid, "name": record.get("name"), "status": record.get("status"),
        "tenant_id": record.get("project_id"), "user_id": record.get("user_id"),
        "metadata": record.get("metadata") or {}, "hostId": record.get("host_id", ""),
        "image": {"id": record.get("image_id"), "links": _links("images", record.get("image_id", ""))},
        "flavor": {"id": flavor.get("id"), "links": _links("flavors", flavor.get("id", ""))},
        "created": record.get("created"), "updated": record.get("updated"),
        "addresses": _addresses(record), "accessIPv4": "", "accessIPv6": "",
        "links": _links("servers", sid), "OS-DCF:diskConfig": "MANUAL", "progress": 0,
        "OS-EXT-STS:vm_state": record.get("vm_state"),
        "OS-EXT-STS:task_state": record.get("task_state"),
        "OS-EXT-STS:power_state": record.get("power_state", 0),
        "OS-EXT-AZ:availability_zone": "nova", "key_name": record.get("key_name"),
        "config_drive": "True" if record.get("config_drive") else "",
        "OS-SRV-USG:launched_at": record.get("launched_at"),
        "OS-SRV-USG:terminated_at": None, "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": [],
    }
    if identity.cluster_admin:
        view["OS-EXT-SRV-ATTR:host"] = record.get("host")
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = record.get("host")
        view["OS-EXT-SRV-ATTR:instance_name"] = f"peerstack-{sid}"
    if record.get("status") == "ERROR" and record.get("fault"):
        view["fault"] = record["fault"]
    return view


def _addresses(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Nova's ``addresses``: a server's ports (as Neutron has them), else its leases on ``default``."""
    if not record.get("nics"):
        return record.get("addresses") or {}
    out: dict[str, list[dict[str, Any]]] = {}
    for nic in record["nics"]:
        out.setdefault(nic["network_name"], []).append(
            {"version": 4, "addr": nic["ip"], "OS-EXT-IPS:type": "fixed",
             "OS-EXT-IPS-MAC:mac_addr": nic["mac"]})
    return out


def _agent_address(record: dict[str, Any]) -> tuple[str, int] | None:
    host, _, port = str(record.get("agent") or "").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


class ComputeAPI:
    """The Nova v2.1 handler: ``await api(request)`` for paths under ``/v2.1``."""

    def __init__(self, node: Node, cc: ClusterClient, images: ImagesAPI, identify,
                 networks: NetworksAPI | None = None) -> None:
        self.node = node
        self.networks = networks
        self.cc = cc
        self.images = images
        self.image_store: ImageStore = images.store
        self.identify = identify
        self.servers = JsonRecords(cc, ACCOUNT, "servers")
        self.flavors = Flavors(JsonRecords(cc, ACCOUNT, "flavors"))
        self.keypairs = Keypairs(JsonRecords(cc, ACCOUNT, "keypairs"))
        self.scheduler = Scheduler(node, cc)
        self.attachments = VolumeAttachments(VolumeStore(node, cc))
        self._jobs: trio.Nursery | None = None

    async def run_jobs(self) -> None:
        """The service that owns background jobs (snapshots being stored)."""
        async with trio.open_nursery() as nursery:
            self._jobs = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._jobs = None

    async def __call__(self, request: Request) -> Response:
        try:
            identity = caller(self.identify, request)
            response = await self._route(request, identity)
        except APIError as exc:
            response = exc.response()
        except (StoreError, BackendError) as exc:
            log_event(log, "compute.backend_error", rid=request.request_id, error=str(exc))
            response = APIError(503, "The compute service cannot reach the cluster right now.").response()
        except BadRequest as exc:
            response = APIError(400, str(exc)).response()
        response.headers += [("OpenStack-API-Version", "compute 2.1"),
                             ("X-OpenStack-Nova-API-Version", "2.1")]
        return response

    async def _route(self, request: Request, identity: Identity) -> Response:
        parts = [p for p in request.path.split("/") if p][1:]  # after "v2.1"
        if parts and parts[0] not in COLLECTIONS and len(parts) > 1:
            parts = parts[1:]  # the legacy /v2.1/<project_id>/... form
        if not parts:
            return json_response(200, {"version": {"id": "v2.1", "status": "CURRENT",
                                                   "version": "2.1", "min_version": "2.1"}})
        method = request.method
        body = await read_json(request) if method in ("POST", "PUT") else None
        kind, rest = parts[0], parts[1:]
        if kind == "flavors":
            return await self.flavors.handle(method, rest, body, identity)
        if kind == "os-keypairs":
            return await self.keypairs.handle(method, rest, body, identity)
        if kind != "servers":
            raise APIError(404, "Not found")
        if rest in ([], ["detail"]) and method == "GET":
            return await self.list(request, identity, detail=bool(rest))
        if not rest and method == "POST":
            return await self.create(body, identity)
        if len(rest) == 1 and method == "GET":
            view = server_view(await self._server(rest[0], identity), identity)
            view["os-extended-volumes:volumes_attached"] = [
                {"id": volume["id"], "delete_on_termination": False}
                for volume, _ in await self.attachments.of_server(rest[0])]
            return json_response(200, {"server": view})
        if len(rest) == 1 and method == "DELETE":
            return await self.delete(rest[0], identity)
        if rest[1:] == ["action"] and method == "POST":
            return await self.action(rest[0], body, identity)
        if rest[1:2] == ["os-volume_attachments"]:
            return await self.attachments.handle(method, await self._server(rest[0], identity), rest[2:],
                                                 body, identity)
        raise APIError(404, "Not found")

    # -- servers -------------------------------------------------------------------------

    async def _server(self, server_id: str, identity: Identity) -> dict[str, Any]:
        try:
            valid = str(uuid.UUID(server_id)) == server_id
        except ValueError:
            valid = False
        record = await self.servers.get(server_id) if valid else None
        if record is None or not (identity.cluster_admin or record.get("project_id") == identity.project_id):
            raise APIError(404, f"Instance {server_id} could not be found.")
        return record

    async def list(self, request: Request, identity: Identity, detail: bool) -> Response:
        everyone = identity.cluster_admin and request.query.get("all_tenants", "0") not in ("0", "false")
        records = [r for r in await self.servers.all()
                   if everyone or r.get("project_id") == identity.project_id]
        for key in ("name", "status"):
            if key in request.query:
                records = [r for r in records if str(r.get(key)) == request.query[key]]
        records.sort(key=lambda r: r.get("created") or "", reverse=True)
        return json_response(200, {"servers": [server_view(r, identity, detail) for r in records]})

    async def _bootable_image(self, image_ref: Any, identity: Identity) -> dict[str, Any]:
        ref = str(image_ref or "").rstrip("/").rsplit("/", 1)[-1]
        try:
            record = await self.images._visible(ref, identity)
        except APIError:
            raise APIError(400, f"Image {ref} could not be found.") from None
        if record.get("status") != "active":
            raise APIError(400, f"Image {ref} is not active.")
        return record

    async def _image_locators(self, image: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """Where the agent finds the disk (and kernel/ramdisk for direct kernel boot)."""
        out: dict[str, Any] = {"disk": self.image_store.locator(image),
                               "cmdline": image.get("os_command_line")}
        for role in ("kernel", "ramdisk"):
            ref = image.get(f"{role}_id")
            if ref:
                out[role] = self.image_store.locator(await self._bootable_image(ref, identity))
        return out

    async def create(self, body: Any, identity: Identity) -> Response:
        doc = require_dict(body, "server")
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise APIError(400, "Invalid input for field/attribute name.")
        flavor = await self.flavors.find(doc.get("flavorRef") or "")
        if flavor is None:
            raise APIError(400, f"Flavor {doc.get('flavorRef')} could not be found.")
        image = await self._bootable_image(doc.get("imageRef"), identity)
        if image.get("disk_format") in ("aki", "ari"):
            raise APIError(400, f"Image {image['id']} is a kernel or ramdisk, not a disk.")
        if flavor["disk"] and int(image.get("virtual_size") or image.get("size") or 0) > flavor["disk"] << 30:
            raise APIError(400, "Flavor's disk is too small for requested image.")
        if int(image.get("min_ram") or 0) > flavor["ram"]:
            raise APIError(400, "Flavor's memory is too small for requested image.")
        metadata = doc.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_ITEMS or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 255 and len(v) <= 255
                for k, v in metadata.items()):
            raise APIError(400, "Invalid input for field/attribute metadata.")
        user_data = doc.get("user_data")
        if user_data is not None:
            try:
                if not isinstance(user_data, str) or len(user_data) > MAX_USER_DATA:
                    raise ValueError
                base64.b64decode(user_data, validate=True)
            except (ValueError, binascii.Error):
                raise APIError(400, "User data needs to be valid base 64.") from None
        drive = doc.get("config_drive", False)
        if not isinstance(drive, bool):
            raise APIError(400, "Invalid input for field/attribute config_drive.")
        key_name = doc.get("key_name")
        if key_name is not None and await self.keypairs.get(identity, str(key_name)) is None:
            raise APIError(400, f"Invalid key_name provided.")
        networks = doc.get("networks", "auto")
        if networks not in ("auto", "none") and not isinstance(networks, list):
            raise APIError(400, "Invalid input for field/attribute networks.")
        images = await self._image_locators(image, identity)
        server_id = str(uuid.uuid4())
        nics: list[dict[str, Any]] = []
        if isinstance(networks, list) and networks:
            if self.networks is None:
                raise APIError(400, "This cloud has no network service.")
            nics = await self.networks.server_nics(networks, server_id, identity)
        now = now_iso()
        record: dict[str, Any] = {
            "id": server_id, "name": name, "nics": nics, "project_id": identity.project_id,
            "user_id": identity.user_id, "status": "BUILD", "vm_state": "building",
            "task_state": "scheduling", "power_state": 0, "image_id": image["id"], "flavor": flavor,
            "metadata": metadata, "key_name": key_name, "user_data": user_data,
            "config_drive": drive or user_data is not None, "networks": networks,
            "created": now, "updated": now, "addresses": {}, "fault": None}
        await self.servers.put(record["id"], record)
        chosen = await self._place(record, images)
        log_event(log, "compute.server_created", server=record["id"], host=chosen)
        return json_response(202, {"server": {"id": record["id"], "links": _links("servers", record["id"]),
                                              "OS-DCF:diskConfig": "MANUAL",
                                              "security_groups": [{"name": "default"}]}},
                             [("Location", f"/v2.1/servers/{record['id']}")])

    async def _place(self, record: dict[str, Any], images: dict[str, Any]) -> str | None:
        """Hand the server to the best host that takes it; ``ERROR`` if none does."""
        location = {"account": ACCOUNT, "container": "servers", "object": record["id"]}
        hosts = await self.scheduler.select(record["flavor"])
        for host in hosts:
            record.update(host=host.node_id, agent=host.address, task_state="spawning",
                          host_id=uuid.uuid5(uuid.NAMESPACE_URL, host.node_id).hex)
            if record["nics"] and self.networks is not None:
                await self.networks.bind_host(record["nics"], host.node_id)
            await self.servers.put(record["id"], record)
            if await self._send_build(host, record, location, images):
                return host.node_id
        record.update(status="ERROR", vm_state="error", task_state=None, host=None, agent=None,
                      fault={"code": 500, "message": NO_VALID_HOST, "created": now_iso(),
                             "details": f"{len(hosts)} host(s) fit the flavor; none took the server"})
        await self.servers.put(record["id"], record)
        return None

    async def _send_build(self, host: Host, record: dict[str, Any], location: dict[str, str],
                          images: dict[str, Any]) -> bool:
        body = json.dumps({"server": record, "location": location, "images": images}).encode()
        try:
            resp = await self.node.client.request(
                "PUT", host.ip, host.port, f"/compute/servers/{record['id']}",
                [("Content-Type", "application/json")], body, timeouts=AGENT_TIMEOUTS)
        except BackendError as exc:
            log_event(log, "compute.agent_unreachable", host=host.address, error=str(exc))
            return False
        if resp.status != 202:
            log_event(log, "compute.agent_refused", host=host.address, status=resp.status,
                      body=resp.body[:200].decode(errors="replace"))
        return resp.status == 202

    async def _agent(self, record: dict[str, Any], method: str, target: str, doc: Any = None):
        """One call to the server's agent: the response, or ``None`` if unreachable."""
        address = _agent_address(record)
        if address is None:
            return None
        body = json.dumps(doc).encode() if doc is not None else b""
        try:
            return await self.node.client.request(method, address[0], address[1], target,
                                                  [("Content-Type", "application/json")], body,
                                                  timeouts=AGENT_TIMEOUTS)
        except BackendError as exc:
            log_event(log, "compute.agent_unreachable", host=f"{address[0]}:{address[1]}",
                      error=str(exc))
            return None

    async def delete(self, server_id: str, identity: Identity) -> Response:
        record = await self._server(server_id, identity)
        resp = await self._agent(record, "DELETE", f"/compute/servers/{server_id}")
        if resp is None or resp.status == 404:
            # No agent has it (never placed, or its node is gone): Nova's local delete.
            await self.servers.delete(server_id)
        elif resp.status // 100 != 2:
            raise APIError(409, f"Cannot delete instance {server_id} now.")
        await self.attachments.server_deleted(server_id)
        if record.get("nics") and self.networks is not None:
            await self.networks.release(server_id)
        return empty_response(204)

    async def action(self, server_id: str, body: Any, identity: Identity) -> Response:
        doc = require_dict(body)
        if len(doc) != 1:
            raise APIError(400, "An action request names exactly one action.")
        name, arg = next(iter(doc.items()))
        record = await self._server(server_id, identity)
        if name in ("os-start", "os-stop", "reboot"):
            rpc: dict[str, Any] = {"action": {"os-start": "start", "os-stop": "stop"}.get(name, "reboot")}
            if name == "reboot":
                kind = str(require_dict(arg).get("type", "")).upper()
                if kind not in ("SOFT", "HARD"):
                    raise APIError(400, "Invalid input for field/attribute type.")
                rpc["type"] = kind
            return await self._forward_action(record, rpc)
        if name == "os-getConsoleOutput":
            length = (arg or {}).get("length") if isinstance(arg, dict) else None
            if length is not None and (isinstance(length, bool) or not str(length).lstrip("-").isdigit()):
                raise APIError(400, "Invalid input for field/attribute length.")
            if length is not None and int(length) < -1:
                raise APIError(400, "Invalid input for field/attribute length.")
            query = "" if length in (None, -1, "-1") else f"?length={int(length)}"
            resp = await self._agent(record, "GET", f"/compute/servers/{server_id}/console{query}")
            if resp is None or resp.status != 200:
                raise APIError(409, f"Cannot get console output of instance {server_id} now.")
            return json_response(200, {"output": json.loads(resp.body)["output"]})
        if name == "createImage":
            return await self.create_image(record, require_dict(arg), identity)
        raise APIError(400, f"There is no such action: {name}")

    async def _forward_action(self, record: dict[str, Any], rpc: dict[str, Any]) -> Response:
        resp = await self._agent(record, "POST", f"/compute/servers/{record['id']}/action", rpc)
        if resp is None:
            raise APIError(409, f"Instance {record['id']} is on a host that cannot be reached.")
        if resp.status == 409:
            raise APIError(409, json.loads(resp.body).get("error", "Conflict"))
        if resp.status == 404:
            raise APIError(409, f"Cannot '{rpc['action']}' instance {record['id']} while it is in "
                                f"vm_state {record.get('vm_state')}")
        if resp.status != 202:
            raise APIError(503, "The compute agent did not accept the action.")
        return empty_response(202)

    # -- createImage ---------------------------------------------------------------------

    async def create_image(self, server: dict[str, Any], arg: dict[str, Any],
                           identity: Identity) -> Response:
        name = arg.get("name")
        if not isinstance(name, str) or not name.strip():
            raise APIError(400, "Invalid input for field/attribute name.")
        metadata = arg.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise APIError(400, "Invalid input for field/attribute metadata.")
        if server.get("vm_state") not in ("active", "stopped") or server.get("task_state"):
            raise APIError(409, f"Cannot 'createImage' instance {server['id']} while it is in "
                                f"vm_state {server.get('vm_state')}")
        if self._jobs is None:
            raise APIError(503, "The compute service is starting.")
        source = await self.image_store.get(server.get("image_id", "")) or {}
        props = {k: source[k] for k in ("kernel_id", "ramdisk_id", "os_command_line") if k in source}
        doc = {**props, **metadata, "name": name, "disk_format": "qcow2", "container_format": "bare",
               "image_type": "snapshot", "instance_uuid": server["id"],
               "base_image_ref": server.get("image_id", ""), "min_disk": server["flavor"]["disk"],
               "min_ram": int(source.get("min_ram") or 0)}
        try:
            image = self.images.new_record(doc, identity)
        except APIError as exc:
            raise APIError(400, exc.message) from None
        image["status"] = "saving"
        await self.image_store.put(image)
        self._jobs.start_soon(self._store_snapshot, server, image)
        return json_response(202, {"image_id": image["id"]},
                             [("Location", f"/v2/images/{image['id']}")])

    async def _store_snapshot(self, server: dict[str, Any], image: dict[str, Any]) -> None:
        """Pull the agent's snapshot into the image (``active``), or mark it ``killed``."""
        address = _agent_address(server)
        started = time.monotonic()
        try:
            if address is None:
                raise APIError(409, "server has no host")
            async with self.node.client.stream("GET", address[0], address[1],
                                               f"/compute/servers/{server['id']}/snapshot", [],
                                               timeouts=SNAPSHOT_TIMEOUTS) as resp:
                if resp.status != 200:
                    raise APIError(resp.status, (await resp.read(1 << 16)).decode(errors="replace"))
                result = await self.image_store.write_data(
                    image["id"], resp.iter_body(), lambda head: check_declared(head, "qcow2", "bare"))
        except (APIError, BackendError, StoreError, ImageRejected) as exc:
            log_event(log, "compute.snapshot_failed", server=server["id"], image=image["id"],
                      error=str(exc))
            image["status"] = "killed"
            image["updated_at"] = now_iso()
            await self._put_quietly(image)
            return
        image.update(status="active", size=result.size, virtual_size=result.size,
                     checksum=result.md5, os_hash_algo="sha512", os_hash_value=result.sha512,
                     updated_at=now_iso(),
                     _data={"segments": result.segments, "sha256": result.sha256})
        await self._put_quietly(image)
        log_event(log, "compute.snapshot_stored", server=server["id"], image=image["id"],
                  bytes=result.size, seconds=round(time.monotonic() - started, 3))

    async def _put_quietly(self, image: dict[str, Any]) -> None:
        try:
            await self.image_store.put(image)
        except (StoreError, BackendError) as exc:
            log_event(log, "compute.image_record_failed", image=image["id"], error=str(exc))
