"""The receiving side of replication, on the internal port under ``/replication/``.

Paths (every request signed, like all internal traffic):

=====================================================================  ==========================
``POST /replication/objects/<dev>/<part>``                             body: an inventory
                                                                       ``{hash: [files]}``;
                                                                       answer: the files wanted
``PUT  /replication/objects/<dev>/<part>/<hash>/<file>``               push one file (below)
``POST /replication/db/<kind>/<dev>/<part>/<hash>/sync``               sender's state -> our
                                                                       sync point (404: no db)
``POST /replication/db/<kind>/<dev>/<part>/<hash>/rows``               ``{"id", "rows", "point"}``
``PUT  /replication/db/<kind>/<dev>/<part>/<hash>/file?id=&max_row=``  a whole database copy
=====================================================================  ==========================

``<kind>`` is ``container`` or ``account``.  A pushed object file's body is
its metadata JSON (``X-Replication-Metadata-Length`` bytes) followed by the
file's bytes; a file we already have, or that something newer makes
obsolete, is refused with ``409`` before ``100 Continue``, so its bytes are
never sent.  See :mod:`node.storage.replication_objects` and
:mod:`node.storage.replication_db` for the rules.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import trio

from node.config import ClusterConfig, NodeConfig
from node.http_server import BadRequest, Request, Response, text_response
from node.log import log_event
from node.storage import replication_db as rdb
from node.storage import replication_objects as robj
from node.storage.db import ConnectionPool, DatabaseBroker
from node.storage.devices import Devices, DeviceUnavailable
from node.storage.diskfile import ObjectLocation
from node.storage.fsutil import makedirs_durable, unlink_quietly
from node.storage.paths import BadPath, parse_partition, valid_device
from node.storage.replication_objects import ReplicationError

log = logging.getLogger("peerstack.storage")

#: bodies of control requests (inventories, row batches)
MAX_CONTROL_BODY = 64 << 20
WRITE_BATCH = 1 << 20
META_LENGTH = "x-replication-metadata-length"


def _json_response(status: int, doc: Any) -> Response:
    return Response(status, [("Content-Type", "application/json")], json.dumps(doc).encode())


async def _read_json(request: Request) -> Any:
    try:
        return json.loads(await request.read_body(MAX_CONTROL_BODY))
    except ValueError:
        raise ReplicationError(400, "body is not JSON") from None


class ReplicationServer:
    """``await server(request)`` for the ``/replication/...`` paths above.

    ``pool`` should be the storage server's connection pool, so both see
    the same open databases.
    """

    def __init__(self, config: NodeConfig, cluster: ClusterConfig,
                 pool: ConnectionPool | None = None) -> None:
        self.devices = Devices(config)
        self.hash_prefix = cluster.hash_prefix
        self.hash_suffix = cluster.hash_suffix
        self.pool = pool or ConnectionPool()

    async def __call__(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")[1:]
        try:
            return await self._route(request, parts)
        except ReplicationError as exc:
            return text_response(exc.status, f"{exc}\n")
        except (BadPath, BadRequest) as exc:
            return text_response(400, f"{exc}\n")
        except DeviceUnavailable as exc:
            return text_response(507, f"{exc}\n")

    async def _route(self, request: Request, parts: list[str]) -> Response:
        method = request.method
        if len(parts) >= 3 and parts[0] == "objects":
            device_path, part = await self._device(parts[1], parts[2])
            if len(parts) == 3 and method == "POST":
                return await self._missing_check(request, device_path, part)
            if len(parts) == 5 and method == "PUT":
                return await self._receive_object(request, parts[1], device_path, part,
                                                  parts[3], parts[4])
        elif len(parts) == 6 and parts[0] == "db" and parts[1] in rdb.BROKERS:
            if not robj.HASH_RE.match(parts[4]):
                raise BadPath("Invalid hash")
            device_path, part = await self._device(parts[2], parts[3])
            broker = rdb.make_broker(parts[1], self.pool, device_path, part, parts[4])
            op = parts[5]
            if op == "sync" and method == "POST":
                return await self._db_sync(request, broker)
            if op == "rows" and method == "POST":
                return await self._db_rows(request, broker)
            if op == "file" and method == "PUT":
                return await self._db_file(request, parts[2], broker)
        return text_response(404, "Not Found\n")

    async def _device(self, device: str, partition: str) -> tuple[Path, int]:
        if not valid_device(device):
            raise BadPath("Invalid device")
        part = parse_partition(partition)
        return await trio.to_thread.run_sync(self.devices.path, device), part

    # ---- objects -----------------------------------------------------------

    async def _missing_check(self, request: Request, device_path: Path, part: int) -> Response:
        offered = robj.parse_inventory(await _read_json(request))
        part_dir = device_path / "objects" / str(part)
        want = await trio.to_thread.run_sync(robj.wanted, part_dir, offered)
        return _json_response(200, want)

    async def _receive_object(self, request: Request, device: str, device_path: Path,
                              part: int, name_hash: str, name: str) -> Response:
        if not robj.HASH_RE.match(name_hash):
            raise BadPath("Invalid hash")
        try:
            meta_length = int(request.headers.get(META_LENGTH) or "")
        except ValueError:
            raise ReplicationError(400, f"missing or bad {META_LENGTH}") from None
        length = request.content_length
        if length is None:
            raise ReplicationError(411, "Content-Length required")
        if not 0 < meta_length <= min(length, robj.MAX_METADATA_BYTES):
            raise ReplicationError(400, f"bad {META_LENGTH}")
        loc = ObjectLocation(device_path, part, name_hash)
        # Name-only checks first: a refusal here goes out before 100 Continue.
        pushed = robj.PushedFile(loc, name, {})

        def admit() -> bool:
            self.devices.check_space(device_path, device, length)
            return bool(robj.wanted(loc.part_dir, {name_hash: [name]}))

        if not await trio.to_thread.run_sync(admit):
            return text_response(409, "Already have it or something newer\n")
        head = bytearray()
        body = request.iter_body()
        try:
            async for chunk in body:
                head += chunk
                if len(head) >= meta_length:
                    break
            if len(head) < meta_length:
                raise ReplicationError(400, "body shorter than its metadata")
            try:
                metadata = json.loads(bytes(head[:meta_length]))
            except ValueError:
                raise ReplicationError(400, "metadata is not JSON") from None
            pushed.metadata = robj.check_metadata(metadata, name_hash, pushed.timestamp, pushed.kind,
                                                  self.hash_prefix, self.hash_suffix)
            if not await trio.to_thread.run_sync(pushed.start):
                return text_response(409, "Already have it or something newer\n")
            batch = [bytes(head[meta_length:])]
            size = len(batch[0])
            async for chunk in body:
                batch.append(chunk)
                size += len(chunk)
                if size >= WRITE_BATCH:
                    await trio.to_thread.run_sync(pushed.write, batch)
                    batch, size = [], 0
            await trio.to_thread.run_sync(pushed.write, batch)
            await trio.to_thread.run_sync(pushed.commit)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pushed.abort)
            raise
        finally:
            await body.aclose()
        return text_response(201, "Created\n")

    # ---- databases ---------------------------------------------------------

    async def _db_sync(self, request: Request, broker: DatabaseBroker) -> Response:
        state = rdb.parse_state(await _read_json(request))

        def apply() -> dict[str, Any] | None:
            if not broker.exists():
                return None
            return rdb.receive_sync(broker, state)

        answer = await trio.to_thread.run_sync(apply)
        if answer is None:
            return text_response(404, "Not Found\n")
        return _json_response(200, answer)

    async def _db_rows(self, request: Request, broker: DatabaseBroker) -> Response:
        doc = await _read_json(request)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) \
                or not isinstance(doc.get("point"), int):
            raise ReplicationError(400, "rows need an id and a point")
        rows = rdb.parse_rows(broker.kind, doc.get("rows"))

        def apply() -> bool:
            if not broker.exists():
                return False
            rdb.receive_rows(broker, doc["id"], rows, doc["point"])
            return True

        if not await trio.to_thread.run_sync(apply):
            return text_response(404, "Not Found\n")
        return Response(204, [], b"")

    async def _db_file(self, request: Request, device: str, broker: DatabaseBroker) -> Response:
        sender_id = request.query.get("id") or ""
        try:
            max_row = int(request.query.get("max_row") or "")
        except ValueError:
            raise ReplicationError(400, "max_row must be an integer") from None
        if not sender_id or request.content_length is None:
            raise ReplicationError(400, "a copy needs ?id=, ?max_row= and a Content-Length")
        length = request.content_length

        def open_tmp() -> tuple[int, str]:
            self.devices.check_space(broker.device_path, device, length)
            tmp_dir = broker.device_path / "tmp"
            makedirs_durable(tmp_dir, broker.device_path)
            return tempfile.mkstemp(dir=tmp_dir, prefix=".dbcopy-", suffix=".db")

        fd, tmp = await trio.to_thread.run_sync(open_tmp)
        try:
            with open(fd, "wb", closefd=True) as f:
                batch: list[bytes] = []
                size = 0
                async for chunk in request.iter_body():
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_BATCH:
                        await trio.to_thread.run_sync(f.writelines, batch)
                        batch, size = [], 0
                await trio.to_thread.run_sync(f.writelines, batch)
                await trio.to_thread.run_sync(f.flush)
            result = await trio.to_thread.run_sync(
                rdb.receive_copy, broker, Path(tmp), sender_id, max_row,
                self.hash_prefix, self.hash_suffix)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(unlink_quietly, tmp)
        log_event(log, "replication.db_copy_received", rid=request.request_id,
                  db=str(broker.db_file), result=result)
        return _json_response(201, {"result": result})
