"""Block storage: a Cinder v3 subset on the public port, under ``/volume/v3[/<project_id>]/...``.

The catalog (:mod:`proxy.identity.catalog`) names ``/volume/v3/<project
id>`` as the ``volumev3``/``block-storage`` endpoint, as devstack does;
serving Cinder under its own ``/volume`` prefix keeps it clear of
Keystone's ``/v3``.

============================================  =============================================
``GET  /types``, ``/types/<id>|default``      the one volume type, ``__DEFAULT__``
``GET  /volumes``, ``/volumes/detail``        the project's volumes (admin: ``all_tenants``)
``POST /volumes``                             blank, ``snapshot_id`` or ``imageRef``: 202
``GET  /volumes/<id>``, ``DELETE``            show; delete (``available``/``error`` only)
``POST /volumes/<id>/action``                 ``os-extend`` (``available`` only); admins:
                                              ``os-reset_status``, ``os-force_delete``
``GET|POST /snapshots[/detail]``              list; take one (``force`` needed if in-use)
``GET|DELETE /snapshots/<id>``                show; delete (chunks collected)
``GET|PUT /os-quota-sets/<project>``          limits (``?usage=True``); admins set them
============================================  =============================================

A volume lives on one node: the node of the server named by the
``local_to_instance`` scheduler hint (Cinder's ``InstanceLocalityFilter``),
else the node with the most free disk.  Creating and snapshotting run as
jobs in the background (``creating`` -> ``available``/``error``, as Cinder
shows them); deletes and extends are single quick agent calls.  A volume
may be deleted while it has snapshots: they live in the ring, not on the
volume's node, so unlike Cinder nothing depends on the volume any more.
Attaching is Nova's (:mod:`proxy.volumes_attach`).

Limits, knowingly: a transitional status (``creating``, ``attaching``,
``deleting``...) is written by the proxy doing the work, so a proxy that
dies mid-job leaves it standing (an admin resets it with
``os-reset_status``; nothing else is lost: the file or the chunks are either there or not).  A volume does not
move: attaching it to a server on another node is refused (``409``) --
restore a snapshot next to the server instead.  Quotas count records at
request time (:mod:`proxy.volumes_quotas`).  Policy: reads need
``volume:read``, everything else ``volume:write`` (:mod:`proxy.identity.policy`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import trio

from node.cluster_client import ClusterClient
from node.daemon import Node
from node.http_client import BackendError
from node.http_server import BadRequest, Request, Response
from node.log import log_event
from proxy.auth import Identity
from proxy.compute_http import APIError, empty_response, json_response, read_json, require_dict
from proxy.compute_records import JsonRecords, StoreError
from proxy.compute_scheduler import Scheduler
from proxy.identity.policy import enforce
from proxy.images import ImagesAPI
from proxy.volumes_quotas import Quotas
from proxy.volumes_snapshots import SnapshotJobs
from proxy.volumes_store import GiB, LONG_TIMEOUTS, VolumeStore, now_iso

log = logging.getLogger("peerstack.proxy.volumes")

PREFIX = "/volume"
COLLECTIONS = frozenset({"volumes", "snapshots", "types", "os-quota-sets", "limits"})
DEFAULT_TYPE = {"id": "00000000-0000-0000-0000-00000000dea1", "name": "__DEFAULT__",
                "description": "Default Volume Type", "is_public": True, "extra_specs": {},
                "os-volume-type-access:is_public": True, "qos_specs_id": None}
MAX_NAME = 255
DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_deleting")
STATUSES = frozenset({"creating", "available", "in-use", "attaching", "detaching", "deleting", "error",
                      "error_deleting", "error_extending", "error_restoring", "extending"})
SNAPSHOT_DELETABLE = ("available", "error", "error_deleting")
LOCALITY_HINT = "local_to_instance"


def _links(kind: str, item_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"/volume/v3/{kind}/{item_id}"},
            {"rel": "bookmark", "href": f"/{kind}/{item_id}"}]


def volume_view(record: dict[str, Any], identity: Identity, detail: bool = True) -> dict[str, Any]:
    """A volume record as Cinder v3 shows it."""
    vid = record["id"]
    if not detail:
        return {"id": vid, "name": record.get("name"), "links": _links("volumes", vid)}
    view = {
        "id": vid, "name": record.get("name"), "description": record.get("description"),
        "size": record["size"], "status": record["status"], "availability_zone": "nova",
        "created_at": record.get("created_at"), "updated_at": record.get("updated_at"),
        "volume_type": DEFAULT_TYPE["name"], "volume_type_id": DEFAULT_TYPE["id"],
        "snapshot_id": record.get("snapshot_id"), "source_volid": None,
        "metadata": record.get("metadata") or {}, "bootable": str(bool(record.get("image_id"))).lower(),
        "encrypted": False, "multiattach": False, "replication_status": None,
        "consistencygroup_id": None, "group_id": None, "user_id": record.get("user_id"),
        "attachments": [{**a, "id": a["attachment_id"], "volume_id": vid} for a in record.get("attachments") or []],
        "os-vol-tenant-attr:tenant_id": record.get("project_id"), "links": _links("volumes", vid),
    }
    if record.get("image_id"):
        view["volume_image_metadata"] = {"image_id": record["image_id"]}
    if identity.cluster_admin:
        view["os-vol-host-attr:host"] = record.get("host")
    return view


def snapshot_view(record: dict[str, Any], detail: bool = True) -> dict[str, Any]:
    view = {"id": record["id"], "name": record.get("name"), "description": record.get("description"),
            "volume_id": record["volume_id"], "size": record["size"], "status": record["status"],
            "created_at": record.get("created_at"), "updated_at": record.get("updated_at"),
            "metadata": record.get("metadata") or {}}
    if detail:
        view.update({"os-extended-snapshot-attributes:project_id": record.get("project_id"),
                     "os-extended-snapshot-attributes:progress": record.get("progress", "0%"),
                     "user_id": record.get("user_id"), "group_snapshot_id": None})
    return view


def _name(doc: dict[str, Any], key: str = "name") -> str | None:
    value = doc.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
        raise APIError(400, f"Invalid input for field/attribute {key}.")
    return value


def _size(value: Any) -> int:
    """A positive whole number of GiB (Cinder also takes ``"2"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise APIError(400, f"Invalid input received: size must be an integer and greater than 0 (got {value!r}).")
    size = int(value)
    if size <= 0:
        raise APIError(400, "Invalid input received: Volume size must be greater than 0.")
    return size


class VolumesAPI:
    """The Cinder v3 handler: ``await api(request)`` for paths under ``/volume``."""

    def __init__(self, node: Node, cc: ClusterClient, images: ImagesAPI, identify,
                 servers: JsonRecords) -> None:
        self.store = VolumeStore(node, cc)
        self.quotas = Quotas(self.store)
        self.snapshot_jobs = SnapshotJobs(self.store)
        self.images = images
        self.identify = identify
        self.servers = servers
        self.scheduler = Scheduler(node, cc)
        self._jobs: trio.Nursery | None = None

    async def run_jobs(self) -> None:
        """The service owning background jobs (volume creation, snapshots)."""
        async with trio.open_nursery() as nursery:
            self._jobs = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._jobs = None

    def _start_job(self, fn, *args: Any) -> None:
        if self._jobs is None:
            raise APIError(503, "The volume service is starting.")
        self._jobs.start_soon(fn, *args)

    async def __call__(self, request: Request) -> Response:
        try:
            identity = self.identify(request)
            if identity is None:
                raise APIError(401, "The request you have made requires authentication.")
            action = "volume:read" if request.method in ("GET", "HEAD") else "volume:write"
            if not enforce(identity, action, project_id=identity.project_id):
                raise APIError(403, "Policy doesn't allow this operation to be performed.")
            response = await self._route(request, identity)
        except APIError as exc:
            response = exc.response()
        except (StoreError, BackendError) as exc:
            log_event(log, "volume.backend_error", rid=request.request_id, error=str(exc))
            response = APIError(503, "The volume service cannot reach the cluster right now.").response()
        except BadRequest as exc:
            response = APIError(400, str(exc)).response()
        response.headers += [("OpenStack-API-Version", "volume 3.0")]
        return response

    async def _route(self, request: Request, identity: Identity) -> Response:
        parts = [p for p in request.path.split("/") if p][1:]  # after "volume"
        if parts[:1] == ["v3"]:
            parts = parts[1:]
        elif parts:
            raise APIError(404, "Not found")
        if parts and parts[0] not in COLLECTIONS:
            if parts[0] != identity.project_id and not identity.cluster_admin:
                raise APIError(403, f"Project {parts[0]} is not the project of your token.")
            parts = parts[1:]
        if not parts:
            # keystoneauth's discovery skips a version without a link to itself
            base = f"http://{request.headers.get('host', '')}/volume/v3/"
            return json_response(200, {"version": {"id": "v3.0", "status": "CURRENT", "version": "3.0",
                                                   "min_version": "3.0",
                                                   "links": [{"rel": "self", "href": base}]}})
        method = request.method
        body = await read_json(request) if method in ("POST", "PUT") else None
        kind, rest = parts[0], parts[1:]
        if kind == "types" and method == "GET":
            if not rest:
                return json_response(200, {"volume_types": [DEFAULT_TYPE]})
            if len(rest) == 1 and rest[0] in ("default", DEFAULT_TYPE["id"], DEFAULT_TYPE["name"]):
                return json_response(200, {"volume_type": DEFAULT_TYPE})
            raise APIError(404, f"Volume type {rest[0]} could not be found.")
        if kind == "os-quota-sets" and len(rest) == 1:
            return await self._quota_sets(request, rest[0], body, identity)
        if kind == "limits" and method == "GET":
            return await self._limits(identity)
        if kind == "volumes":
            return await self._volumes(request, rest, body, identity)
        if kind == "snapshots":
            return await self._snapshots(request, rest, body, identity)
        raise APIError(404, "Not found")

    # -- volumes -----------------------------------------------------------------------

    async def _volumes(self, request: Request, rest: list[str], body: Any, identity: Identity) -> Response:
        method = request.method
        if rest in ([], ["detail"]) and method == "GET":
            records = await self._listed(request, self.store.volumes, identity)
            return json_response(200, {"volumes": [volume_view(r, identity, bool(rest)) for r in records]})
        if not rest and method == "POST":
            return await self.create(require_dict(body, "volume"), body, identity)
        if len(rest) == 1 and method == "GET":
            return json_response(200, {"volume": volume_view(await self.store.volume(rest[0], identity),
                                                             identity)})
        if len(rest) == 1 and method == "DELETE":
            return await self.delete(rest[0], identity)
        if rest[1:] == ["action"] and method == "POST":
            return await self.action(rest[0], require_dict(body), identity)
        raise APIError(404, "Not found")

    async def _listed(self, request: Request, records: JsonRecords, identity: Identity) -> list[dict]:
        everyone = identity.cluster_admin and request.query.get("all_tenants", "0") not in ("0", "false")
        found = await self.store.project_records(records, None if everyone else identity.project_id)
        for key in ("name", "status", "volume_id"):
            if key in request.query:
                found = [r for r in found if str(r.get(key)) == request.query[key]]
        found.sort(key=lambda r: r.get("created_at") or "", reverse=True)
        return found

    async def create(self, doc: dict[str, Any], body: dict[str, Any], identity: Identity) -> Response:
        name, description = _name(doc), _name(doc, "description")
        source: dict[str, Any] = {}
        snapshot = image = None
        if doc.get("snapshot_id"):
            snapshot = await self._snapshot_for_create(str(doc["snapshot_id"]), identity)
            source["snapshot"] = snapshot["id"]
        if doc.get("imageRef"):
            if snapshot is not None:
                raise APIError(400, "Invalid input received: give snapshot_id or imageRef, not both.")
            image = await self._image_for_create(str(doc["imageRef"]), identity)
            source["image"] = self.images.store.locator(image)
        if doc.get("source_volid"):
            raise APIError(400, "Invalid input received: cloning volumes (source_volid) is not supported.")
        if doc.get("size") is None and snapshot is not None:
            size = int(snapshot["size"])
        else:
            size = _size(doc.get("size"))
        if snapshot is not None and size < int(snapshot["size"]):
            raise APIError(400, f"Invalid input received: Volume size '{size}'GB cannot be smaller "
                                f"than the snapshot size {snapshot['size']}GB.")
        if image is not None:
            needed = -(-int(image.get("virtual_size") or image.get("size") or 0) // GiB)
            if size < needed:
                raise APIError(400, f"Invalid input received: Image virtual size is {needed}GB and "
                                    f"doesn't fit in a volume of size {size}GB.")
        volume_type = doc.get("volume_type")
        if volume_type not in (None, DEFAULT_TYPE["name"], DEFAULT_TYPE["id"]):
            raise APIError(404, f"Volume type {volume_type} could not be found.")
        metadata = doc.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise APIError(400, "Invalid input for field/attribute metadata.")
        await self.quotas.check(identity.project_id, volumes=1, gigabytes=size)
        host, agent = await self._place(size, body.get("OS-SCH-HNT:scheduler_hints"), identity)
        now = now_iso()
        record = {"id": str(uuid.uuid4()), "name": name, "description": description, "size": size,
                  "status": "creating", "project_id": identity.project_id, "user_id": identity.user_id,
                  "snapshot_id": snapshot["id"] if snapshot else None,
                  "image_id": image["id"] if image else None, "metadata": metadata,
                  "host": host, "agent": agent, "attachments": [], "created_at": now, "updated_at": now}
        await self.store.volumes.put(record["id"], record)
        self._start_job(self._build, record, source)
        log_event(log, "volume.create", volume=record["id"], host=host, size_gb=size,
                  source=next(iter(source), "blank"))
        return json_response(202, {"volume": volume_view(record, identity)})

    async def _snapshot_for_create(self, snapshot_id: str, identity: Identity) -> dict[str, Any]:
        snapshot = await self.store.snapshot(snapshot_id, identity)
        if snapshot["status"] != "available":
            raise APIError(400, f"Invalid snapshot: Originating snapshot status must be one of "
                                f"'available' values (it is {snapshot['status']}).")
        return snapshot

    async def _image_for_create(self, image_ref: str, identity: Identity) -> dict[str, Any]:
        try:
            image = await self.images._visible(image_ref, identity)
        except APIError:
            raise APIError(400, f"Invalid image identifier or unable to access requested image "
                                f"{image_ref}.") from None
        if image.get("status") != "active":
            raise APIError(400, f"Image {image_ref} is not active.")
        if image.get("disk_format") in ("aki", "ari"):
            raise APIError(400, f"Image {image_ref} is a kernel or ramdisk, not a disk.")
        return image

    async def _place(self, size: int, hints: Any, identity: Identity) -> tuple[str, str]:
        """``(node_id, agent address)`` for a new volume of ``size`` GiB."""
        if hints is not None and not isinstance(hints, dict):
            raise APIError(400, "Invalid input for field/attribute OS-SCH-HNT:scheduler_hints.")
        server_id = (hints or {}).get(LOCALITY_HINT)
        if server_id:
            server = await self.servers.get(str(server_id)) if isinstance(server_id, str) else None
            if server is None or not (identity.cluster_admin or server.get("project_id") == identity.project_id):
                raise APIError(400, f"Invalid input received: instance {server_id} could not be found.")
            if not server.get("host") or not server.get("agent"):
                raise APIError(400, f"Invalid input received: instance {server_id} has no host yet.")
            return server["host"], server["agent"]
        hosts = [h for h in await self.scheduler.hosts()
                 if int(h.resources.get("disk_gb_free", 0)) >= size]
        if not hosts:
            raise APIError(400, "No valid backend was found. No weighed backends available.")
        best = max(hosts, key=lambda h: (int(h.resources.get("disk_gb_free", 0)), h.node_id))
        return best.node_id, best.address

    async def _build(self, record: dict[str, Any], source: dict[str, Any]) -> None:
        status, answer = await self.store.agent(record["agent"], "PUT", f"/compute/volumes/{record['id']}",
                                                {"size_gb": record["size"], **source},
                                                timeouts=LONG_TIMEOUTS)
        final = "available" if status == 201 else "error"
        if status != 201:
            log_event(log, "volume.create_failed", volume=record["id"], status=status,
                      error=answer.get("error"))
        try:
            await self.store.save_volume(record, status=final)
        except (StoreError, BackendError) as exc:
            log_event(log, "volume.record_failed", volume=record["id"], error=str(exc))

    async def delete(self, volume_id: str, identity: Identity) -> Response:
        record = await self.store.volume(volume_id, identity)
        if record["status"] not in DELETABLE or record.get("attachments"):
            raise APIError(400, f"Invalid volume: Volume status must be available or error or "
                                f"error_restoring or error_extending or error_managing and must not "
                                f"be migrating, attached, belong to a group, have snapshots or be "
                                f"disassociated from snapshots after volume transfer. (it is "
                                f"{record['status']})")
        await self.store.save_volume(record, status="deleting")
        status, answer = await self.store.agent(record.get("agent"), "DELETE",
                                                f"/compute/volumes/{volume_id}")
        if status in (200, 404):
            await self.store.volumes.delete(volume_id)
            return empty_response(202)
        await self.store.save_volume(record, status="error_deleting")
        raise APIError(409 if status == 409 else 503,
                       f"Volume {volume_id} could not be deleted: {answer.get('error', status)}")

    async def action(self, volume_id: str, doc: dict[str, Any], identity: Identity) -> Response:
        if len(doc) != 1:
            raise APIError(400, "An action request names exactly one action.")
        name, arg = next(iter(doc.items()))
        record = await self.store.volume(volume_id, identity)
        if name in ("os-reset_status", "os-force_delete"):
            if not identity.cluster_admin:
                raise APIError(403, f"Policy doesn't allow volume:{name[3:]} to be performed.")
            if name == "os-force_delete":
                return await self.force_delete(record)
            return await self.reset_status(record, require_dict(arg))
        if name != "os-extend":
            raise APIError(400, f"There is no such action: {name}")
        return await self.extend(record, _size(require_dict(arg).get("new_size")), identity)

    async def reset_status(self, record: dict[str, Any], arg: dict[str, Any]) -> Response:
        """Cinder's admin repair of a status left behind (e.g. by a proxy that died mid-job)."""
        status = arg.get("status")
        if status not in STATUSES:
            raise APIError(400, f"Invalid input received: '{status}' is not a volume status.")
        changes: dict[str, Any] = {"status": status}
        if arg.get("attach_status") == "detached":
            changes["attachments"] = []
        await self.store.save_volume(record, **changes)
        return empty_response(202)

    async def force_delete(self, record: dict[str, Any]) -> Response:
        """Delete whatever the status; a node that is gone for good only leaves its file behind."""
        status, answer = await self.store.agent(record.get("agent"), "DELETE",
                                                f"/compute/volumes/{record['id']}")
        if status == 409:
            raise APIError(409, f"Volume {record['id']} is still attached: {answer.get('error')}")
        if status not in (200, 404):
            log_event(log, "volume.force_delete_left_file", volume=record["id"], host=record.get("host"),
                      status=status)
        await self.store.volumes.delete(record["id"])
        return empty_response(202)

    async def extend(self, record: dict[str, Any], new_size: int, identity: Identity) -> Response:
        volume_id = record["id"]
        if record["status"] != "available":
            raise APIError(400, f"Invalid volume: Volume status must be 'available' to extend, "
                                f"currently {record['status']}.")
        if new_size <= int(record["size"]):
            raise APIError(400, f"Invalid input received: New size for extend must be greater than "
                                f"current size. (current: {record['size']}, extended: {new_size}).")
        await self.quotas.check(identity.project_id, gigabytes=new_size - int(record["size"]))
        await self.store.save_volume(record, status="extending")
        status, answer = await self.store.agent(record["agent"], "POST",
                                                f"/compute/volumes/{volume_id}/extend", {"size_gb": new_size})
        if status != 200:
            await self.store.save_volume(record, status="error_extending")
            raise APIError(503, f"Volume {volume_id} could not be extended: {answer.get('error', status)}")
        await self.store.save_volume(record, status="available", size=new_size)
        return empty_response(202)

    # -- snapshots -----------------------------------------------------------------------

    async def _snapshots(self, request: Request, rest: list[str], body: Any, identity: Identity) -> Response:
        method = request.method
        if rest in ([], ["detail"]) and method == "GET":
            records = await self._listed(request, self.store.snapshots, identity)
            return json_response(200, {"snapshots": [snapshot_view(r, bool(rest)) for r in records]})
        if not rest and method == "POST":
            return await self.create_snapshot(require_dict(body, "snapshot"), identity)
        if len(rest) == 1 and method == "GET":
            return json_response(200, {"snapshot": snapshot_view(await self.store.snapshot(rest[0], identity))})
        if len(rest) == 1 and method == "DELETE":
            record = await self.store.snapshot(rest[0], identity)
            if record["status"] not in SNAPSHOT_DELETABLE:
                raise APIError(400, f"Invalid snapshot: Snapshot status must be available or error "
                                    f"(it is {record['status']}).")
            await self.store.save_snapshot(record, status="deleting")
            self._start_job(self.snapshot_jobs.delete, record)
            return empty_response(202)
        raise APIError(404, "Not found")

    async def create_snapshot(self, doc: dict[str, Any], identity: Identity) -> Response:
        name, description = _name(doc), _name(doc, "description")
        volume_id = doc.get("volume_id")
        if not isinstance(volume_id, str):
            raise APIError(400, "Invalid input for field/attribute volume_id.")
        volume = await self.store.volume(volume_id, identity)
        force = str(doc.get("force", False)).lower() in ("true", "1", "yes")
        if volume["status"] not in ("available", "in-use") or (volume["status"] == "in-use" and not force):
            raise APIError(400, f"Invalid volume: Volume {volume_id} status must be available, "
                                f"but current status is: {volume['status']}.")
        await self.quotas.check(identity.project_id, snapshots=1, gigabytes=int(volume["size"]))
        now = now_iso()
        record = {"id": str(uuid.uuid4()), "name": name, "description": description,
                  "volume_id": volume_id, "size": volume["size"], "status": "creating",
                  "progress": "0%", "project_id": identity.project_id, "user_id": identity.user_id,
                  "metadata": {}, "created_at": now, "updated_at": now}
        await self.store.snapshots.put(record["id"], record)
        self._start_job(self.snapshot_jobs.take, record, volume)
        return json_response(202, {"snapshot": snapshot_view(record)})

    # -- quotas and limits ---------------------------------------------------------------

    async def _quota_sets(self, request: Request, project_id: str, body: Any,
                          identity: Identity) -> Response:
        if project_id != identity.project_id and not identity.cluster_admin:
            raise APIError(403, "Policy doesn't allow this operation to be performed.")
        if request.method == "GET":
            usage = request.query.get("usage", "false").lower() in ("true", "1")
            return json_response(200, {"quota_set": await self.quotas.show(project_id, usage)})
        if request.method == "PUT":
            if not identity.cluster_admin:
                raise APIError(403, "Policy doesn't allow this operation to be performed.")
            return json_response(200, {"quota_set": await self.quotas.update(
                project_id, require_dict(body, "quota_set"))})
        raise APIError(405, "Method not allowed")

    async def _limits(self, identity: Identity) -> Response:
        limits, used = await self.quotas.limits(identity.project_id), await self.quotas.usage(identity.project_id)
        return json_response(200, {"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": limits["volumes"], "maxTotalSnapshots": limits["snapshots"],
            "maxTotalVolumeGigabytes": limits["gigabytes"], "totalVolumesUsed": used["volumes"],
            "totalSnapshotsUsed": used["snapshots"], "totalGigabytesUsed": used["gigabytes"]}}})
