"""The storage servers behind one handler on a node's internal port.

Swift runs object, container and account servers on separate ports; a
peerstack node has one internal port, so :class:`StorageServer` picks the
server from the path depth and, for the row updates the servers send each
other, an explicit ``X-Backend-Server`` header:

====================================  ====================================
request                               served by
====================================  ====================================
``* /<dev>/<part>/<a>/<c>/<o>``       object server
``PUT|DELETE .../<a>/<c>/<o>`` with   container server (an object row)
``X-Backend-Server: container``
``* /<dev>/<part>/<a>/<c>``           container server
``PUT .../<a>/<c>`` with              account server (a container row)
``X-Backend-Server: account``
``* /<dev>/<part>/<a>``               account server
``REPLICATE /<dev>/<part>[/<s>-<s>]`` object suffix hashes
====================================  ====================================
"""

from __future__ import annotations

import errno
import logging

from node.config import ClusterConfig, NodeConfig, load_cluster_config
from node.http_client import HTTPClient
from node.http_server import Request, Response, text_response
from node.log import log_event
from node.storage.account_server import AccountServer
from node.storage.container_server import ContainerServer
from node.storage.db import ConnectionPool
from node.storage.devices import Devices
from node.storage.object_server import ObjectServer
from node.storage.paths import BadPath, parse_storage_path
from node.storage.updates import UpdateSender

log = logging.getLogger("peerstack.storage")

_ROW_LEVELS = {"container": "object", "account": "container"}


class StorageServer:
    """``await server(request) -> Response`` for every storage path on this node.

    ``client`` (the node's signed client) carries container and account
    updates.  Run :meth:`run_background` as a node service so changed
    container totals reach the account servers.
    """

    def __init__(self, config: NodeConfig, client: HTTPClient,
                 cluster: ClusterConfig | None = None) -> None:
        if cluster is None:
            cluster = load_cluster_config(config.resolve(config.cluster_file))
        self.devices = Devices(config)
        self.pool = ConnectionPool()
        updates = UpdateSender(client)
        args = (self.devices, cluster.hash_prefix, cluster.hash_suffix)
        self.objects = ObjectServer(*args, updates)
        self.containers = ContainerServer(*args, self.pool, updates)
        self.accounts = AccountServer(*args, self.pool, updates)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log_event(log, "storage.disk_full", level=logging.WARNING,
                          rid=request.request_id, path=request.raw_path)
                return text_response(507, "Insufficient Storage\n")
            raise

    async def _dispatch(self, request: Request) -> Response:
        if request.method == "REPLICATE":
            return await self.objects.replicate(request)
        try:
            sp = parse_storage_path(request.path)
        except BadPath as exc:
            return text_response(400, f"{exc}\n")
        wanted = request.headers.get("x-backend-server")
        level = sp.level
        if wanted is not None and wanted != level:
            if _ROW_LEVELS.get(wanted) != level:
                return text_response(400, f"X-Backend-Server {wanted!r} cannot serve a {level} path\n")
            server = self.containers if wanted == "container" else self.accounts
            return await server.handle(request, sp, row=True)
        if level == "object":
            return await self.objects.handle(request, sp)
        if level == "container":
            return await self.containers.handle(request, sp, row=False)
        return await self.accounts.handle(request, sp, row=False)

    async def run_background(self) -> None:
        """Report container totals to account servers (a node service; runs forever)."""
        await self.containers.report_loop()

    def close(self) -> None:
        self.pool.close_all()
