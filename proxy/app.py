"""Mounting the public API on a node.

``tools`` calls :func:`install` when it composes a node: the node's public
port then serves the Swift v1 API, backed by a :class:`ClusterClient` that
uses the node's signed internal client.
"""

from __future__ import annotations

from collections.abc import Awaitable

from node.cluster_client import ClusterClient
from node.daemon import Node
from node.http_server import Request, Response
from proxy import compute_routes
from proxy.auth import SwiftAuth
from proxy.identity.api import mount as mount_identity
from proxy.identity.service import IdentityService
from proxy.s3.handler import S3API
from proxy.swift_api import SwiftAPI
from proxy.users import UserStore


def build_swift_api(node: Node) -> SwiftAPI:
    cc = ClusterClient(node.config, node.cluster, node.client, health=node.health)
    identity = IdentityService(cc, node.cluster)
    return SwiftAPI(cc, SwiftAuth(node.cluster, UserStore(cc, node.cluster), identity))


def install(node: Node) -> None:
    """Serve the Swift v1 API (``/auth/v1.0``, ``/info``, ``/v1/...``) and identity (``/v3``) on the public port."""
    swift = build_swift_api(node)
    s3 = S3API(swift.cc, swift.auth.users, identity=swift.auth.identity)
    keystone = mount_identity(node, swift.auth.identity)

    def storage(request: Request) -> Awaitable[Response]:
        if s3.is_s3_request(request):
            return s3.handle(request)
        return (keystone if keystone.claims(request.path) else swift)(request)

    node.public_handler = compute_routes.mount(node, swift.cc, swift.auth.identify, storage)
