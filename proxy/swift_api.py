"""The Swift v1 API handler: routing, authentication and authorization.

``/auth/v1.0`` logs in, ``/info`` describes the cluster, and
``/v1/<account>[/<container>[/<object>]]`` goes to the account, container
or object handlers once the caller is known (a token, a temp URL signature,
or nobody) and allowed.  Only ``AUTH_*`` accounts are served: system
accounts (``.peerstack`` and friends) are out of reach of the API.

Nothing a client sends may produce a 500: a missing ring is ``503``, an
unreachable cluster ``503``, a malformed body ``400``.
"""

from __future__ import annotations

import logging

from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.http_server import BadRequest, Request, Response
from node.log import log_event
from proxy import swift_container, swift_object, tempurl
from proxy.auth import ACCOUNT_PREFIX, SwiftAuth
from proxy.info import info_document
from proxy.swift_authz import authorize, denied
from proxy.swift_call import ContainerInfoCache, SwiftCall
from proxy.swift_limits import MAX_ACCOUNT_NAME_LENGTH, check_name_chars
from proxy.swift_responses import error

log = logging.getLogger("peerstack.proxy.swift")

AUTH_PATHS = frozenset({"/auth/v1.0", "/auth/v1.0/", "/auth/v1", "/auth/v1/", "/v1.0"})
API_PREFIXES = ("/v1/", "/v1.0/")


class SwiftAPI:
    """``async def __call__(request) -> Response`` for the Swift v1 API."""

    def __init__(self, cc: ClusterClient, auth: SwiftAuth) -> None:
        self.cc = cc
        self.auth = auth
        self.containers = ContainerInfoCache()

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except RingUnavailable as exc:
            log_event(log, "swift.no_ring", rid=request.request_id, error=str(exc))
            return error(503)
        except BackendError as exc:
            log_event(log, "swift.backend_error", rid=request.request_id, error=str(exc))
            return error(503)
        except BadRequest as exc:
            return error(400, str(exc))

    async def _route(self, request: Request) -> Response:
        path = request.path
        if path in AUTH_PATHS:
            if request.method not in ("GET", "HEAD"):
                return error(405, headers=[("Allow", "GET")])
            return await self.auth.login(request)
        if path == "/info":
            if request.method not in ("GET", "HEAD"):
                return error(405, headers=[("Allow", "GET, HEAD")])
            return Response(200, [("Content-Type", "application/json; charset=UTF-8")], info_document())
        prefix = next((p for p in API_PREFIXES if path.startswith(p)), None)
        if prefix is None:
            return error(404)
        bad = check_name_chars(path)
        if bad:
            return error(bad.status, bad.message)
        parts = path[len(prefix):].split("/", 2)
        account = parts[0]
        container = parts[1] if len(parts) > 1 and parts[1] else None
        obj = parts[2] if len(parts) > 2 and parts[2] else None
        if not account:
            return error(404)
        if container is None and obj is not None:
            return error(404)
        if len(account.encode("utf-8")) > MAX_ACCOUNT_NAME_LENGTH:
            return error(400, f"Account name length of {len(account.encode())} longer than "
                              f"{MAX_ACCOUNT_NAME_LENGTH}")
        identity = self.auth.identify(request)
        call = SwiftCall(request, self.cc, self.containers, identity, account, container, obj)
        if not account.startswith(ACCOUNT_PREFIX):
            return denied(call)
        if obj is not None and "temp_url_sig" in request.query:
            return await self._tempurl(call)
        token = request.headers.get("x-auth-token") or request.headers.get("x-storage-token")
        if token and identity is None:
            return error(401)
        call.owner = identity is not None and identity.owns(account)
        if container is None:
            return await swift_container.handle_account(call)
        if obj is None:
            if not call.owner:
                if request.method not in ("GET", "HEAD"):
                    return denied(call)
                refused = await authorize(call, account, container, write=False, listing=True)
                if refused is not None:
                    return refused
            return await swift_container.handle_container(call)
        if not call.owner:
            write = request.method not in ("GET", "HEAD")
            refused = await authorize(call, account, container, write=write)
            if refused is not None:
                return refused
        return await swift_object.handle(call)

    async def _tempurl(self, call: SwiftCall) -> Response:
        """A temp URL request: the signature, not a token, grants this one object."""
        request = call.request
        if request.method not in tempurl.METHODS:
            return error(401, "401 Unauthorized: Temp URL invalid\n")
        keys: list[str] = []
        acct = await self.cc.head_account(call.account)
        if acct.status // 100 == 2:
            keys += tempurl.keys_from(acct.headers, "account")
        info = await self.containers.get(self.cc, call.account, call.container or "")
        if info.status // 100 == 2:
            keys += tempurl.keys_from(info.headers, "container")
        # Clients sign the decoded path, as Swift's tempurl reads PATH_INFO.
        if not keys or not tempurl.validate(request.query, request.method, request.path, keys,
                                            request.client):
            return error(401, "401 Unauthorized: Temp URL invalid\n")
        call.tempurl = True
        call.owner = True
        call.identity = None
        # A temp URL grants object data only, never manifest surgery.
        call.request.query.pop("multipart-manifest", None)
        return await swift_object.handle(call)
