"""The S3 API entry point: recognise, authenticate, route, answer in S3's XML.

``proxy.app`` asks :meth:`S3API.is_s3_request` for every public request and
hands the S3 ones to :meth:`S3API.handle`.  Addressing:

* **path style** ``/<bucket>/<key>`` (``/`` is the service: ListBuckets);
* **virtual-host style** ``Host: <bucket>.<domain>`` for a configured
  domain (``S3Settings.domains``), the path then being ``/<key>``.

Buckets are the containers of the caller's account ``AUTH_<project>``
(the same ones the Swift API shows), so every object is reachable through
both APIs.  Every answer carries ``x-amz-request-id`` (the node's
transaction id) and errors are S3's ``<Error>`` documents; no client
mistake produces a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.http_server import BadRequest, ClientDisconnected, Request, Response
from node.log import log_event
from proxy.auth import with_rights
from proxy.identity.service import IdentityService
from proxy.s3 import buckets, listing, multipart, objects
from proxy.s3.auth import authenticate, has_credentials
from proxy.s3.context import S3Call, S3Settings
from proxy.s3.credentials import Credentials
from proxy.s3.errors import S3Error
from proxy.s3.sigv4 import split_query
from proxy.swift_call import ContainerInfoCache
from proxy.users import UserStore

log = logging.getLogger("peerstack.proxy.s3")

Route = Callable[[S3Call], Awaitable[Response]]


class S3API:
    """``is_s3_request(request)`` and ``async handle(request) -> Response``."""

    def __init__(self, cc: ClusterClient, users: UserStore, settings: S3Settings | None = None,
                 identity: IdentityService | None = None) -> None:
        self.cc = cc
        self.settings = settings or S3Settings()
        self.credentials = Credentials(cc.cluster, users, identity=identity)
        self.containers = ContainerInfoCache()

    def bucket_from_host(self, request: Request) -> str | None:
        """``mybucket`` for ``Host: mybucket.<domain>[:port]``, else ``None``."""
        host = (request.headers.get("host") or "").lower()
        if host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0] if ":" in host else host
        for domain in self.settings.domains:
            suffix = "." + domain.lower()
            if host.endswith(suffix) and len(host) > len(suffix):
                return host[:-len(suffix)]
        return None

    def is_s3_request(self, request: Request) -> bool:
        return has_credentials(request) or self.bucket_from_host(request) is not None

    async def handle(self, request: Request) -> Response:
        resource = request.raw_path
        try:
            response = await self._handle(request)
        except S3Error as exc:
            if exc.status >= 500:
                log_event(log, "s3.error", rid=request.request_id, code=exc.code, error=exc.message)
            response = exc.response(resource, request.request_id, request.method)
        except RingUnavailable as exc:
            log_event(log, "s3.no_ring", rid=request.request_id, error=str(exc))
            response = S3Error("ServiceUnavailable", status=503).response(resource, request.request_id,
                                                                          request.method)
        except BackendError as exc:
            log_event(log, "s3.backend_error", rid=request.request_id, error=str(exc))
            response = S3Error("ServiceUnavailable", status=503).response(resource, request.request_id,
                                                                          request.method)
        except BadRequest as exc:
            response = S3Error("InvalidRequest", str(exc)).response(resource, request.request_id,
                                                                    request.method)
        except ClientDisconnected as exc:
            log_event(log, "s3.client_gone", rid=request.request_id, error=str(exc))
            response = S3Error("RequestTimeout").response(resource, request.request_id, request.method)
        response.headers.append(("x-amz-request-id", request.request_id))
        return response

    async def _handle(self, request: Request) -> Response:
        try:
            query = split_query(request.query_string)
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "The query is not valid UTF-8") from None
        host_bucket = self.bucket_from_host(request)
        auth = await authenticate(request, query, self.credentials, bucket_from_host=host_bucket,
                                  max_skew=self.settings.max_skew)
        if host_bucket is not None:
            bucket, key = host_bucket, request.path[1:] or None
        else:
            bucket, _, key = request.path[1:].partition("/")
        identity = with_rights(auth.identity, request.method)
        if not identity.owns(identity.account):
            raise S3Error("AccessDenied", "Your role does not allow this request")
        call = S3Call(request, self.cc, self.containers, self.settings, identity, auth.payload,
                      bucket or None, key or None, dict(query))
        route = self._route(call)
        return await route(call)

    def _route(self, call: S3Call) -> Route:
        method, q = call.method, call.query
        if call.bucket is None:
            if method in ("GET", "HEAD"):
                return listing.list_buckets
            raise S3Error("MethodNotAllowed", ResourceType="SERVICE", Method=method)
        if call.key is None:
            return self._bucket_route(method, q)
        return self._object_route(call, method, q)

    @staticmethod
    def _bucket_route(method: str, q: dict[str, str]) -> Route:
        if method == "GET":
            if "location" in q:
                return buckets.get_location
            if "uploads" in q:
                return multipart.list_uploads
            if "versioning" in q:
                return buckets.get_versioning
            if "acl" in q:
                return buckets.get_acl
            for unsupported in ("policy", "cors", "lifecycle", "tagging", "website", "versions",
                                "replication", "encryption", "logging", "notification", "object-lock"):
                if unsupported in q:
                    return _not_implemented
            if q.get("list-type") == "2":
                return listing.list_objects_v2
            return listing.list_objects_v1
        if method == "HEAD":
            return buckets.head_bucket
        if method == "PUT":
            if any(sub in q for sub in ("acl", "versioning", "policy", "cors", "lifecycle", "tagging",
                                        "website", "replication", "encryption", "logging", "notification")):
                return _not_implemented
            return buckets.create_bucket
        if method == "DELETE":
            if q:
                return _not_implemented
            return buckets.delete_bucket
        if method == "POST" and "delete" in q:
            return objects.delete_objects
        raise S3Error("MethodNotAllowed", ResourceType="BUCKET", Method=method)

    @staticmethod
    def _object_route(call: S3Call, method: str, q: dict[str, str]) -> Route:
        copy = call.request.headers.get("x-amz-copy-source") is not None
        if method in ("GET", "HEAD"):
            if "uploadId" in q and method == "GET":
                return multipart.list_parts
            if "acl" in q and method == "GET":
                return objects.get_acl
            if "tagging" in q or "retention" in q or "legal-hold" in q or "torrent" in q:
                return _not_implemented
            return objects.get_object
        if method == "PUT":
            if "uploadId" in q or "partNumber" in q:
                return multipart.upload_part_copy if copy else multipart.upload_part
            if "acl" in q or "tagging" in q or "retention" in q or "legal-hold" in q:
                return _not_implemented
            return objects.copy_object if copy else objects.put_object
        if method == "DELETE":
            return multipart.abort_upload if "uploadId" in q else objects.delete_object
        if method == "POST":
            if "uploads" in q:
                return multipart.create_upload
            if "uploadId" in q:
                return multipart.complete_upload
        raise S3Error("MethodNotAllowed", ResourceType="OBJECT", Method=method)


async def _not_implemented(call: S3Call) -> Response:
    raise S3Error("NotImplemented", "This feature of S3 is not offered by this cluster.")
