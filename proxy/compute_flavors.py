"""Flavors: Nova's default set, plus flavors an admin creates (kept in the ring).

``m1.tiny`` .. ``m1.xlarge`` are the sizes every OpenStack user knows, with
their usual ids ``1`` .. ``5``; ``m1.nano`` (id ``0``, 128 MiB) suits
test guests.  ``POST /flavors`` (admin) adds more, stored as records in
``.compute/flavors``; defaults cannot be deleted or shadowed.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from proxy.auth import Identity
from proxy.compute_http import APIError, json_response, require_dict
from proxy.compute_records import JsonRecords

DEFAULT_FLAVORS: list[dict[str, Any]] = [
    {"id": "0", "name": "m1.nano", "vcpus": 1, "ram": 128, "disk": 1},
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
    {"id": "4", "name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80},
    {"id": "5", "name": "m1.xlarge", "vcpus": 8, "ram": 16384, "disk": 160},
]
NAME_RE = re.compile(r"^[\w .:-]{1,255}$")


def flavor_view(flavor: dict[str, Any], detail: bool = True) -> dict[str, Any]:
    link = [{"rel": "self", "href": f"/v2.1/flavors/{flavor['id']}"}]
    if not detail:
        return {"id": flavor["id"], "name": flavor["name"], "links": link}
    return {"id": flavor["id"], "name": flavor["name"], "vcpus": flavor["vcpus"], "ram": flavor["ram"],
            "disk": flavor["disk"], "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False, "links": link}


def _positive_int(doc: dict[str, Any], key: str, minimum: int) -> int:
    value = doc.get(key)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise APIError(400, f"Invalid input for field '{key}': must be an integer >= {minimum}")
    return value


class Flavors:
    def __init__(self, records: JsonRecords) -> None:
        self.records = records

    async def all(self) -> list[dict[str, Any]]:
        return DEFAULT_FLAVORS + await self.records.all()

    async def find(self, ref: Any) -> dict[str, Any] | None:
        """A flavor by id (or by the last path segment of a flavor link)."""
        ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
        for flavor in DEFAULT_FLAVORS:
            if flavor["id"] == ref:
                return flavor
        if not re.fullmatch(r"[\w.-]{1,255}", ref):
            return None
        return await self.records.get(ref)

    async def handle(self, method: str, parts: list[str], body: Any, identity: Identity):
        """``/flavors[/detail|/<id>]``; ``body`` is the parsed JSON of a POST."""
        if parts in ([], ["detail"]) and method == "GET":
            return json_response(200, {"flavors": [flavor_view(f, bool(parts)) for f in await self.all()]})
        if parts == [] and method == "POST":
            return await self.create(body, identity)
        if len(parts) == 1 and method == "GET":
            flavor = await self.find(parts[0])
            if flavor is None:
                raise APIError(404, f"Flavor {parts[0]} could not be found.")
            return json_response(200, {"flavor": flavor_view(flavor)})
        if len(parts) == 1 and method == "DELETE":
            return await self.delete(parts[0], identity)
        raise APIError(404, "Not found")

    async def create(self, body: Any, identity: Identity):
        if not identity.cluster_admin:
            raise APIError(403, "Policy doesn't allow os_compute_api:os-flavor-manage:create to be "
                                "performed.")
        doc = require_dict(body, "flavor")
        name = doc.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise APIError(400, "Invalid input for field 'name'")
        flavor_id = str(doc.get("id") or uuid.uuid4())
        if not re.fullmatch(r"[\w.-]{1,255}", flavor_id):
            raise APIError(400, "Invalid input for field 'id'")
        flavor = {"id": flavor_id, "name": name, "vcpus": _positive_int(doc, "vcpus", 1),
                  "ram": _positive_int(doc, "ram", 1), "disk": _positive_int(doc, "disk", 0)}
        for existing in await self.all():
            if existing["id"] == flavor_id or existing["name"] == name:
                raise APIError(409, f"Flavor with name {name} or id {flavor_id} already exists.")
        await self.records.put(flavor_id, flavor)
        return json_response(200, {"flavor": flavor_view(flavor)})

    async def delete(self, flavor_id: str, identity: Identity):
        if not identity.cluster_admin:
            raise APIError(403, "Policy doesn't allow os_compute_api:os-flavor-manage:delete to be "
                                "performed.")
        if any(f["id"] == flavor_id for f in DEFAULT_FLAVORS):
            raise APIError(403, "Default flavors cannot be deleted.")
        if await self.find(flavor_id) is None:
            raise APIError(404, f"Flavor {flavor_id} could not be found.")
        await self.records.delete(flavor_id)
        return json_response(202, {})
