"""Nova's ``/servers/<id>/os-volume_attachments``: a volume as a virtio disk of a server.

=========================================================  ==================================
``GET    /servers/<id>/os-volume_attachments[/<vol>]``      the server's attachments
``POST   /servers/<id>/os-volume_attachments``              attach (``volumeAttachment.volumeId``)
``DELETE /servers/<id>/os-volume_attachments/<vol>``        detach
=========================================================  ==================================

The volume and the server must be on the same node (create the volume with
the ``local_to_instance`` scheduler hint); the server's agent attaches the
file with libvirt, live and in the persistent config, so it survives
stop/start.  The volume goes ``attaching`` -> ``in-use`` (``available`` again
if libvirt refused), and ``detaching`` -> ``available`` once the guest let
go of the disk.  Devices are given in order, ``vdb``, ``vdc``...; the guest
names virtio disks in the order they appear, which matches while disks are
attached one at a time.
"""

from __future__ import annotations

import string
import uuid
from typing import Any

from node.http_server import Response
from proxy.auth import Identity
from proxy.compute_http import APIError, empty_response, json_response, require_dict
from proxy.volumes_store import VolumeStore, now_iso

DEVICES = [f"vd{c}" for c in string.ascii_lowercase[1:]]


def attachment_view(volume: dict[str, Any], attachment: dict[str, Any]) -> dict[str, Any]:
    return {"id": volume["id"], "volumeId": volume["id"], "serverId": attachment["server_id"],
            "device": attachment["device"]}


class VolumeAttachments:
    def __init__(self, store: VolumeStore) -> None:
        self.store = store

    async def of_server(self, server_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(volume, attachment)`` for every volume attached to the server."""
        return [(v, a) for v in await self.store.volumes.all()
                for a in v.get("attachments") or [] if a.get("server_id") == server_id]

    async def handle(self, method: str, server: dict[str, Any], rest: list[str], body: Any,
                     identity: Identity) -> Response:
        attached = await self.of_server(server["id"])
        if not rest and method == "GET":
            return json_response(200, {"volumeAttachments": [attachment_view(v, a) for v, a in attached]})
        if not rest and method == "POST":
            return await self.attach(server, require_dict(body, "volumeAttachment"), attached, identity)
        if len(rest) == 1:
            found = next(((v, a) for v, a in attached if v["id"] == rest[0]), None)
            if found is None:
                raise APIError(404, f"Volume {rest[0]} is not attached to server {server['id']}.")
            if method == "GET":
                return json_response(200, {"volumeAttachment": attachment_view(*found)})
            if method == "DELETE":
                return await self.detach(server, *found)
        raise APIError(404, "Not found")

    async def attach(self, server: dict[str, Any], doc: dict[str, Any],
                     attached: list[tuple[dict[str, Any], dict[str, Any]]], identity: Identity) -> Response:
        volume = await self.store.volume(str(doc.get("volumeId", "")), identity)
        if volume["status"] != "available":
            raise APIError(400, f"Invalid volume: volume {volume['id']} status must be 'available' "
                                f"(it is {volume['status']})")
        if server.get("vm_state") not in ("active", "stopped") or server.get("task_state"):
            raise APIError(409, f"Cannot 'attach_volume' instance {server['id']} while it is in "
                                f"vm_state {server.get('vm_state')}")
        if volume.get("host") != server.get("host"):
            raise APIError(409, f"Volume {volume['id']} is on node {volume.get('host')} and instance "
                                f"{server['id']} on node {server.get('host')}; create the volume with "
                                f"the scheduler hint local_to_instance.")
        used = {a["device"].rsplit("/", 1)[-1] for _, a in attached}
        device = next((d for d in DEVICES if d not in used), None)
        if device is None:
            raise APIError(400, "No free device name is left on this server.")
        await self.store.save_volume(volume, status="attaching")
        status, answer = await self.store.agent(server.get("agent"), "PUT",
                                                f"/compute/servers/{server['id']}/volumes/{volume['id']}",
                                                {"device": device})
        if status != 200:
            await self.store.save_volume(volume, status="available")
            raise APIError(409 if status in (404, 409) else 503,
                           f"Volume {volume['id']} could not be attached: {answer.get('error', status)}")
        attachment = {"server_id": server["id"], "attachment_id": str(uuid.uuid4()),
                      "device": f"/dev/{device}", "host_name": server.get("host"), "attached_at": now_iso()}
        await self.store.save_volume(volume, status="in-use", attachments=[attachment])
        return json_response(200, {"volumeAttachment": attachment_view(volume, attachment)})

    async def detach(self, server: dict[str, Any], volume: dict[str, Any], attachment: dict[str, Any]) -> Response:
        if volume["status"] != "in-use":
            raise APIError(400, f"Invalid volume: volume {volume['id']} status must be 'in-use' "
                                f"(it is {volume['status']})")
        await self.store.save_volume(volume, status="detaching")
        status, answer = await self.store.agent(server.get("agent"), "DELETE",
                                                f"/compute/servers/{server['id']}/volumes/{volume['id']}")
        if status != 200:
            await self.store.save_volume(volume, status="in-use")
            raise APIError(409 if status in (404, 409) else 503,
                           f"Volume {volume['id']} could not be detached: {answer.get('error', status)}")
        await self.store.save_volume(volume, status="available", attachments=[])
        return empty_response(202)

    async def server_deleted(self, server_id: str) -> None:
        """The server is gone with its domain: its volumes are free again (Nova detaches on delete)."""
        for volume, _ in await self.of_server(server_id):
            await self.store.save_volume(volume, status="available", attachments=[
                a for a in volume.get("attachments") or [] if a.get("server_id") != server_id])
