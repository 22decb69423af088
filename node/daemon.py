"""The node daemon: one trio program serving both ports and running services.

:class:`Node` holds what every part of a node shares -- configuration, the
cluster secret, the pooled client that signs internal requests, the verifier
that checks them -- and runs:

* the **internal** server (storage servers, ring and membership endpoints,
  compute-agent RPC), where every request except ``/healthcheck`` must carry
  a valid signature or gets ``401``;
* the **public** server (the proxy), if one was mounted;
* background services under :func:`node.supervisor.supervise`.

The parts are mounted by ``tools`` (``peerstack node run``), which is the
only place that knows about proxy, replicator and compute agent; ``node``
itself never imports them.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING
import trio

from node.cluster_health import ErrorLimiter
from node.config import ClusterConfig, ConfigError, NodeConfig
from node.http_client import HTTPClient
from node.http_server import Handler, HTTPServer, Request, Response, text_response
from node.local_call import LocalRoute
from node.log import log_event
from node.membership import advertised_host
from node.signing import RequestSigner, SignatureVerifier
from node.supervisor import ServiceFn, supervise

if TYPE_CHECKING:
    from node.membership_service import MembershipService

log = logging.getLogger("peerstack.node")

async def healthcheck(request: Request) -> Response:
    return Response(200, [("Content-Type", "text/plain")], b"OK")

class Node:
    """One peerstack node: shared state, both servers and the services."""

    def __init__(self, config: NodeConfig, cluster: ClusterConfig) -> None:
        self.config = config
        self.cluster = cluster
        self.secret = cluster.secret_bytes
        self.client = HTTPClient(signer=RequestSigner(self.secret))
        #: one error limiter for every cluster client in this process, so a
        #: device found dead by one service is skipped by all, and membership
        #: can lift the suppression the moment the peer is heard again
        self.health = ErrorLimiter()
        self.verifier = SignatureVerifier(self.secret)
        #: first path segment -> handler, for the internal port
        self.internal_routes: dict[str, Handler] = {"healthcheck": healthcheck}
        #: handler for paths no route claims (the storage servers' /<device>/...)
        self.internal_default: Handler | None = None
        self.public_handler: Handler | None = None
        self.services: list[tuple[str, ServiceFn]] = []
        #: set when membership is installed; the proxy reads peers from it
        self.membership_service: MembershipService | None = None
        self.internal_port: int | None = None
        self.public_port: int | None = None
        self._servers: list[HTTPServer] = []
        self.stopping = trio.Event()

    def add_service(self, name: str, fn: ServiceFn) -> None:
        self.services.append((name, fn))

    async def internal_handler(self, request: Request) -> Response:
        first = request.path.split("/", 2)[1] if request.path.startswith("/") else ""
        if first == "healthcheck":
            return await healthcheck(request)
        reason = self.verifier.verify(request.method, request.target, request.headers.get)
        if reason is not None:
            log_event(log, "internal.reject", rid=request.request_id, reason=reason,
                      client=request.client, path=request.raw_path)
            return text_response(401, f"{reason}\n")
        return await self.internal_route(request)

    async def internal_route(self, request: Request) -> Response:
        """The internal handler past the signature check; requests from this node
        itself come here directly (:mod:`node.local_call`)."""
        first = request.path.split("/", 2)[1] if request.path.startswith("/") else ""
        route = self.internal_routes.get(first)
        if route is not None:
            return await route(request)
        if self.internal_default is not None:
            return await self.internal_default(request)
        return text_response(404, "Not Found\n")

    def _serve_self_locally(self, nursery: trio.Nursery) -> None:
        """Let this node's own client reach its internal port without a socket."""
        try:
            host = advertised_host(self.config)
        except ConfigError:
            return  # no address peers use for us, so nothing to recognise
        address = f"[{host}]:{self.internal_port}" if ":" in host else f"{host}:{self.internal_port}"
        self.client.local[(host, self.internal_port)] = LocalRoute(self.internal_route, address, nursery)

    async def public_with_health(self, request: Request) -> Response:
        if request.path == "/healthcheck":
            return await healthcheck(request)
        if self.public_handler is None:
            return text_response(404, "Not Found\n")
        return await self.public_handler(request)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; then shut down gracefully."""
        cfg = self.config
        internal = HTTPServer(self.internal_handler, cfg.internal.host, cfg.internal.port,
                              name="internal")
        public = HTTPServer(self.public_with_health, cfg.public.host, cfg.public.port,
                            name="public", reuse_port=cfg.public.workers > 1)
        self._servers = [internal, public]
        async with trio.open_nursery() as nursery:
            self.internal_port = await nursery.start(internal.serve)
            self._serve_self_locally(nursery)
            self.public_port = await nursery.start(public.serve)
            for name, fn in self.services:
                nursery.start_soon(supervise, name, fn)
            nursery.start_soon(self._watch_signals)
            log_event(log, "node.started", node_id=cfg.node_id,
                      internal=f"{cfg.internal.host}:{self.internal_port}",
                      public=f"{cfg.public.host}:{self.public_port}")
            task_status.started(self)
            await self.stopping.wait()
            log_event(log, "node.stopping", node_id=cfg.node_id)
            with trio.move_on_after(15):
                async with trio.open_nursery() as stopper:
                    for server in self._servers:
                        stopper.start_soon(server.shutdown)
            nursery.cancel_scope.cancel()
        await self.client.aclose()
        log_event(log, "node.stopped", node_id=cfg.node_id)

    def stop(self) -> None:
        self.stopping.set()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.stop()
                return
