"""Images: a Glance v2 subset on the public port.

=====================================  ==============================================
``GET    /v2/images``                   list (filters, ``sort``, ``marker``/``limit``)
``POST   /v2/images``                   create a record (``queued``)
``GET    /v2/images/<id>``              show
``PATCH  /v2/images/<id>``              update (JSON patch, ``openstack-images-v2.1``)
``DELETE /v2/images/<id>``              delete record and data (not if ``protected``)
``PUT    /v2/images/<id>/file``         upload: ``saving`` -> ``active`` (or ``killed``)
``GET    /v2/images/<id>/file``         download (``Content-MD5`` = ``checksum``)
``PUT/DELETE /v2/images/<id>/tags/<t>`` add/remove a tag
=====================================  ==============================================

Records and bytes live in the ring (:mod:`proxy.images_store`), so every
node serves every image.  An upload passes the format inspector
(:mod:`proxy.image_inspector`) before any byte is stored: an unsafe image or
one whose bytes are not its ``disk_format`` is a ``400`` and the image stays
``queued``.  Callers are identified by ``X-Auth-Token`` through the proxy's
one identity function; an image is visible to its owner (project), to
cluster admins, and to everyone when ``public`` or ``community``.  Making an
image ``public`` takes an admin, as Glance's default policy says.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from node.http_client import BackendError
from node.http_server import BadRequest, ClientDisconnected, Request, Response
from node.log import log_event
from proxy.auth import Identity
from proxy.compute_http import APIError, caller, empty_response, json_response, read_json
from proxy.image_inspector import CONTAINER_FORMATS, DISK_FORMATS, ImageRejected, check_declared
from proxy.compute_records import StoreError
from proxy.images_store import ImageStore, data_of
from proxy.segments import SegmentError, prefetch

log = logging.getLogger("peerstack.proxy.images")

VISIBILITIES = ("public", "private", "shared", "community")
#: properties only the service sets
READ_ONLY = frozenset({"id", "status", "checksum", "os_hash_algo", "os_hash_value", "size",
                       "virtual_size", "created_at", "updated_at", "self", "file", "schema",
                       "direct_url", "locations", "owner"})
#: properties with a type of their own (everything else is a string "extra property")
CORE = frozenset({"name", "visibility", "protected", "min_ram", "min_disk", "disk_format",
                  "container_format", "tags", "os_hidden"}) | READ_ONLY
SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at", "min_ram", "min_disk", "visibility", "owner")
FILTERS = ("name", "status", "visibility", "owner", "disk_format", "container_format", "id")
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
MAX_PROPERTY_LENGTH = 255
PATCH_TYPES = ("application/openstack-images-v2.1-json-patch",
               "application/openstack-images-v2.0-json-patch")


#: Glance API versions this service speaks (all one implementation: v2.0 plus later additions)
API_VERSIONS = ("2.9", "2.8", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0")


def version_entries(base_url: str) -> list[dict[str, Any]]:
    """Glance's version list (``GET /``) rows, newest ``CURRENT`` first, links under ``base_url``."""
    return [{"id": f"v{v}", "status": "CURRENT" if i == 0 else "SUPPORTED",
             "links": [{"rel": "self", "href": f"{base_url}/v2/"}]}
            for i, v in enumerate(API_VERSIONS)]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record as Glance shows it (private bookkeeping removed)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _sort_value(record: dict[str, Any], key: str) -> tuple[bool, Any]:
    """A sort key that orders missing values last and numbers as numbers."""
    value = record.get(key)
    if key in ("size", "min_ram", "min_disk"):
        return value is None, value or 0
    return value is None, str(value or "")


def _uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise APIError(400, f"Invalid value for {name}: must be a non-negative integer")
    return value


def _check_property(name: str, value: Any, identity: Identity) -> Any:
    """Validate one settable property; returns the value to store."""
    if name in READ_ONLY:
        raise APIError(403, f"Attribute '{name}' is read-only.")
    if name == "name":
        if value is not None and (not isinstance(value, str) or len(value) > MAX_PROPERTY_LENGTH):
            raise APIError(400, "Invalid value for name")
        return value
    if name == "visibility":
        if value not in VISIBILITIES:
            raise APIError(400, f"Invalid visibility value: {value}")
        if value == "public" and not identity.cluster_admin:
            raise APIError(403, "You are not authorized to set visibility to public")
        return value
    if name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise APIError(400, f"Invalid value for {name}: must be a boolean")
        return value
    if name in ("min_ram", "min_disk"):
        return _non_negative_int(name, value)
    if name == "disk_format":
        if value not in DISK_FORMATS:
            raise APIError(400, f"Invalid disk format '{value}' for image.")
        return value
    if name == "container_format":
        if value not in CONTAINER_FORMATS:
            raise APIError(400, f"Invalid container format '{value}' for image.")
        return value
    if name == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
            raise APIError(400, "tags must be a list of strings")
        return sorted(set(value))
    if not isinstance(value, str) or not name or len(name) > MAX_PROPERTY_LENGTH \
            or len(value) > MAX_PROPERTY_LENGTH * 256 or name.startswith("_"):
        raise APIError(400, f"Invalid extra property '{name}': values are strings")
    return value


class ImagesAPI:
    """The Glance v2 handler: ``await api(request)`` for paths under ``/v2/images``."""

    def __init__(self, store: ImageStore, identify: Callable[[Request], Identity | None]) -> None:
        self.store = store
        self.identify = identify

    async def __call__(self, request: Request) -> Response:
        try:
            identity = caller(self.identify, request)
            return await self._route(request, identity)
        except APIError as exc:
            return exc.response()
        except (StoreError, BackendError) as exc:
            log_event(log, "images.backend_error", rid=request.request_id, error=str(exc))
            return APIError(503, "The image service cannot reach the cluster right now.").response()
        except BadRequest as exc:
            return APIError(400, str(exc)).response()

    async def _route(self, request: Request, identity: Identity) -> Response:
        parts = [p for p in request.path.split("/") if p][2:]  # after "v2", "images"
        method = request.method
        if not parts:
            if method in ("GET", "HEAD"):
                return await self.list(request, identity)
            if method == "POST":
                return await self.create(request, identity)
            raise APIError(405, "Method not allowed")
        image_id = parts[0]
        rest = parts[1:]
        if not rest:
            if method in ("GET", "HEAD"):
                return json_response(200, public_view(await self._visible(image_id, identity)))
            if method == "PATCH":
                return await self.update(request, identity, image_id)
            if method == "DELETE":
                return await self.delete(identity, image_id)
        elif rest == ["file"]:
            if method == "PUT":
                return await self.upload(request, identity, image_id)
            if method in ("GET", "HEAD"):
                return await self.download(identity, image_id)
        elif len(rest) == 2 and rest[0] == "tags" and method in ("PUT", "DELETE"):
            return await self.tag(identity, image_id, rest[1], add=method == "PUT")
        else:
            raise APIError(404, "Not found")
        raise APIError(405, "Method not allowed")

    # -- access ----------------------------------------------------------------------

    @staticmethod
    def can_see(record: dict[str, Any], identity: Identity) -> bool:
        return (identity.cluster_admin or record.get("owner") == identity.project_id
                or record.get("visibility") in ("public", "community"))

    async def _visible(self, image_id: str, identity: Identity) -> dict[str, Any]:
        record = await self.store.get(image_id) if _uuid(image_id) == image_id else None
        if record is None or not self.can_see(record, identity):
            raise APIError(404, f"No image found with ID {image_id}")
        return record

    async def _owned(self, image_id: str, identity: Identity) -> dict[str, Any]:
        record = await self._visible(image_id, identity)
        if not identity.cluster_admin and record.get("owner") != identity.project_id:
            raise APIError(403, "You are not permitted to modify this image.")
        return record

    async def _save(self, record: dict[str, Any]) -> None:
        record["updated_at"] = now_iso()
        await self.store.put(record)

    # -- records ---------------------------------------------------------------------

    def new_record(self, doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """A ``queued`` record from a create request's body (validated)."""
        image_id = doc.pop("id", None)
        if image_id is not None and _uuid(image_id) != image_id:
            raise APIError(400, f"Invalid image id {image_id!r}: must be a UUID")
        image_id = image_id or str(uuid.uuid4())
        created = now_iso()
        record: dict[str, Any] = {
            "id": image_id, "name": None, "status": "queued", "visibility": "shared",
            "protected": False, "os_hidden": False, "checksum": None, "os_hash_algo": None,
            "os_hash_value": None, "owner": identity.project_id, "size": None, "virtual_size": None,
            "min_ram": 0, "min_disk": 0, "disk_format": None, "container_format": None,
            "tags": [], "created_at": created, "updated_at": created,
            "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image"}
        for name, value in doc.items():
            if name == "owner" and identity.cluster_admin and isinstance(value, str):
                record["owner"] = value
                continue
            if name in ("status", "locations"):
                raise APIError(403, f"Attribute '{name}' is read-only.")
            record[name] = _check_property(name, value, identity)
        return record

    async def create(self, request: Request, identity: Identity) -> Response:
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise APIError(400, "Request body must be a JSON object")
        record = self.new_record(dict(doc), identity)
        if await self.store.get(record["id"]) is not None:
            raise APIError(409, f"Image with identifier {record['id']} already exists!")
        await self.store.put(record)
        log_event(log, "images.created", rid=request.request_id, image=record["id"],
                  owner=record["owner"])
        return json_response(201, public_view(record),
                             [("Location", f"/v2/images/{record['id']}")])

    async def list(self, request: Request, identity: Identity) -> Response:
        q = request.query
        limit = q.get("limit", str(DEFAULT_LIMIT))
        if not limit.isdigit():
            raise APIError(400, "limit param must be an integer")
        limit_n = min(int(limit), MAX_LIMIT)
        sort = self._sort_spec(q)
        records = [r for r in await self.store.all()
                   if self.can_see(r, identity) and self._matches(r, q, identity)]
        for key, direction in reversed(sort):
            records.sort(key=lambda r, k=key: _sort_value(r, k), reverse=direction == "desc")
        marker = q.get("marker")
        if marker:
            ids = [r["id"] for r in records]
            if marker not in ids:
                raise APIError(400, f"marker {marker} could not be found.")
            records = records[ids.index(marker) + 1:]
        page = records[:limit_n]
        doc: dict[str, Any] = {"images": [public_view(r) for r in page], "schema": "/v2/schemas/images",
                               "first": "/v2/images"}
        if len(records) > limit_n and page:
            # the next page keeps the filters and sort of this one, as Glance's does
            kept = {k: v for k, v in q.items() if k not in ("marker", "limit")}
            doc["next"] = "/v2/images?" + urllib.parse.urlencode(
                {**kept, "marker": page[-1]["id"], "limit": limit_n})
        return json_response(200, doc)

    @staticmethod
    def _sort_spec(q: dict[str, str]) -> list[tuple[str, str]]:
        if "sort" in q:
            spec = []
            for item in q["sort"].split(","):
                key, _, direction = item.strip().partition(":")
                spec.append((key, direction or "desc"))
        else:
            spec = [(q.get("sort_key", "created_at"), q.get("sort_dir", "desc"))]
        for key, direction in spec:
            if key not in SORT_KEYS or direction not in ("asc", "desc"):
                raise APIError(400, f"Invalid sort {key}:{direction}")
        return spec

    @staticmethod
    def _matches(record: dict[str, Any], q: dict[str, str], identity: Identity) -> bool:
        for name in FILTERS:
            wanted = q.get(name)
            if wanted is None:
                continue
            # Glance's "in:" operator: any of a comma-separated list (openstack server list
            # looks up the names of all its servers' images this way)
            choices = wanted[3:].split(",") if wanted.startswith("in:") else [wanted]
            if str(record.get(name)) not in choices:
                return False
        if "visibility" not in q and record.get("visibility") == "community" \
                and record.get("owner") != identity.project_id:
            return False  # Glance lists community images only when asked for them
        if "tag" in q and q["tag"] not in (record.get("tags") or []):
            return False
        if q.get("os_hidden", "false").lower() != "true" and record.get("os_hidden"):
            return False
        for key, value in q.items():
            if key not in CORE and key not in ("limit", "marker", "sort", "sort_key", "sort_dir",
                                               "tag", "os_hidden", "member_status") \
                    and record.get(key) != value:
                return False
        return True

    async def update(self, request: Request, identity: Identity, image_id: str) -> Response:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip()
        if ctype not in PATCH_TYPES:
            raise APIError(415, f"Unsupported Content-Type {ctype!r}; use {PATCH_TYPES[0]}")
        ops = await read_json(request)
        if not isinstance(ops, list):
            raise APIError(400, "A JSON patch is a list of operations")
        record = await self._owned(image_id, identity)
        for op in ops:
            self._apply(record, op, identity)
        await self._save(record)
        return json_response(200, public_view(record))

    def _apply(self, record: dict[str, Any], op: Any, identity: Identity) -> None:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove") \
                or not isinstance(op.get("path"), str) or not re.fullmatch(r"/[^/]+", op["path"]):
            raise APIError(400, f"Invalid JSON patch operation: {op!r}")
        name = op["path"][1:].replace("~1", "/").replace("~0", "~")
        if name in READ_ONLY:
            raise APIError(403, f"Attribute '{name}' is read-only.")
        if name in ("disk_format", "container_format") and record.get("status") != "queued":
            raise APIError(403, f"Attribute {name} can be only replaced for a queued image.")
        if op["op"] == "remove":
            if name in CORE:
                raise APIError(403, f"Attribute '{name}' is reserved.")
            if name not in record:
                raise APIError(409, f"Property {name} does not exist.")
            del record[name]
            return
        if "value" not in op:
            raise APIError(400, "Operation needs a 'value'")
        if op["op"] == "replace" and name not in record:
            raise APIError(409, f"Property {name} does not exist.")
        record[name] = _check_property(name, op["value"], identity)

    async def tag(self, identity: Identity, image_id: str, tag: str, *, add: bool) -> Response:
        record = await self._owned(image_id, identity)
        tags = set(record.get("tags") or [])
        if add:
            if len(tag) > MAX_PROPERTY_LENGTH:
                raise APIError(400, "Tag is too long")
            tags.add(tag)
        elif tag not in tags:
            raise APIError(404, f"Tag {tag} not found")
        else:
            tags.discard(tag)
        record["tags"] = sorted(tags)
        await self._save(record)
        return empty_response(204)

    async def delete(self, identity: Identity, image_id: str) -> Response:
        record = await self._owned(image_id, identity)
        if record.get("protected"):
            raise APIError(403, f"Image {image_id} is protected and cannot be deleted.")
        await self.store.delete(image_id)
        await self.store.delete_data(data_of(record).get("segments") or [])
        log_event(log, "images.deleted", image=image_id)
        return empty_response(204)

    # -- data --------------------------------------------------------------------------

    async def upload(self, request: Request, identity: Identity, image_id: str) -> Response:
        record = await self._owned(image_id, identity)
        if record.get("status") != "queued":
            raise APIError(409, f"Image status transition from {record.get('status')} to saving "
                                "is not allowed")
        disk_format, container_format = record.get("disk_format"), record.get("container_format")
        if not disk_format or not container_format:
            raise APIError(400, "Properties disk_format, container_format must be set prior to "
                                "saving data.")
        record["status"] = "saving"
        await self._save(record)
        try:
            inspected: list[Any] = []
            result = await self.store.write_data(
                image_id, request.iter_body(),
                lambda head: inspected.append(check_declared(head, disk_format, container_format)))
        except ImageRejected as exc:
            record["status"] = "queued"
            await self._save(record)
            log_event(log, "images.rejected", rid=request.request_id, image=image_id, reason=str(exc))
            raise APIError(400, f"Image content does not match disk_format {disk_format} or is "
                                f"unsafe: {exc}") from None
        except (ClientDisconnected, BadRequest, StoreError, BackendError) as exc:
            record["status"] = "killed"
            await self._save(record)
            log_event(log, "images.upload_failed", rid=request.request_id, image=image_id,
                      error=str(exc))
            if isinstance(exc, (StoreError, BackendError)):
                raise APIError(503, "The cluster could not store the image data.") from None
            raise APIError(400, f"Upload failed: {exc}") from None
        current = await self.store.get(image_id)
        if current is None:
            await self.store.delete_data(result.segments)
            raise APIError(410, "Image was deleted during the upload.")
        virtual = inspected[0].virtual_size if inspected and inspected[0].virtual_size else result.size
        record.update({"status": "active", "size": result.size, "virtual_size": virtual,
                       "checksum": result.md5, "os_hash_algo": "sha512",
                       "os_hash_value": result.sha512,
                       "_data": {"segments": result.segments, "sha256": result.sha256}})
        await self._save(record)
        log_event(log, "images.uploaded", rid=request.request_id, image=image_id, bytes=result.size,
                  segments=len(result.segments))
        return empty_response(204)

    async def download(self, identity: Identity, image_id: str) -> Response:
        record = await self._visible(image_id, identity)
        if record.get("status") != "active":
            return empty_response(204)
        headers = [("Content-Type", "application/octet-stream"),
                   ("Content-MD5", record.get("checksum") or "")]
        size = int(record.get("size") or 0)
        if size == 0:
            return Response(200, headers, b"", content_length=0)
        try:
            body = await prefetch(self.store.open_data(record))
        except SegmentError as exc:
            log_event(log, "images.data_missing", image=image_id, error=str(exc))
            raise APIError(503, "Image data is not available right now.") from None
        return Response(200, headers, body, content_length=size)
