"""Mounting the OpenStack-style image and compute APIs on the public port.

:func:`mount` builds the Glance v2 (``/v2/images...``), Nova v2.1
(``/v2.1...``), Cinder v3 (``/volume/v3...``, clear of Keystone's
``/v3``) and Neutron v2.0 (``/network/v2.0...``, :mod:`proxy.networks`)
handlers over the proxy's cluster client and its one identity function, registers the background service that stores snapshots, and
returns a handler that sends those paths to them and everything else to
``fallback`` (the Swift/S3 dispatch).

Glance's catalog endpoint is the node's root, which is also where
Keystone's version list lives: ``GET /`` asks both services at once, so
the answer is Keystone's list with Glance's versions added (clients pick the
major version they speak).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from node.cluster_client import ClusterClient
from node.daemon import Node
from node.http_server import Handler, Request, Response
from proxy.auth import Identity
from proxy.compute import ComputeAPI
from proxy.images import ImagesAPI, version_entries
from proxy.images_store import ImageStore
from proxy.networks import NetworksAPI
from proxy.volumes import PREFIX as VOLUMES_PREFIX
from proxy.volumes import VolumesAPI

IMAGES_PREFIX = "/v2/images"
COMPUTE_PREFIX = "/v2.1"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _root_versions(request: Request, fallback: Handler) -> Response:
    """Keystone's ``GET /`` version list (from ``fallback``) with Glance's versions added."""
    response = await fallback(request)
    try:
        doc = json.loads(response.body) if response.status == 300 else None
        values = doc["versions"]["values"]
    except (TypeError, ValueError, KeyError):
        return response
    values += version_entries(f"http://{request.headers.get('host') or 'localhost'}")
    body = json.dumps(doc).encode()
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
    return Response(300, headers, body, content_length=len(body))


def mount(node: Node, cc: ClusterClient, identify: Callable[[Request], Identity | None],
          fallback: Handler) -> Handler:
    """The public handler with images and compute in front of ``fallback``."""
    images = ImagesAPI(ImageStore(cc), identify)
    networks = NetworksAPI(cc, identify)
    compute = ComputeAPI(node, cc, images, identify, networks)
    node.add_service("compute.api_jobs", compute.run_jobs)
    volumes = VolumesAPI(node, cc, images, identify, compute.servers)
    node.add_service("volume.api_jobs", volumes.run_jobs)

    async def dispatch(request: Request) -> Response:
        path = request.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return await _root_versions(request, fallback)
        if networks.claims(path):
            return await networks(request)
        if _under(path, IMAGES_PREFIX):
            return await images(request)
        if _under(path, COMPUTE_PREFIX):
            return await compute(request)
        if _under(path, VOLUMES_PREFIX):
            return await volumes(request)
        return await fallback(request)

    return dispatch
