"""The Keystone v3 HTTP API on the public port: ``/v3/...`` and ``/identity/v3/...``.

Routes are a table of ``(methods, pattern, handler)``; the handlers live in
:mod:`~proxy.identity.api_tokens`, :mod:`~proxy.identity.api_resources` and
:mod:`~proxy.identity.api_credentials`.
Every refusal is an :class:`IdentityError` rendered in Keystone's JSON
error shape; a ring in trouble is ``503``; nothing a client sends makes a
``500``.  Authorization is :func:`proxy.identity.policy.enforce` with the
rule names Keystone uses.

``GET /`` and ``GET /identity`` answer the version list and ``GET /v3`` the
version document, which is all keystoneauth's discovery needs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from node.cluster_rings import RingUnavailable
from node.http_client import BackendError
from node.http_server import BadRequest, Request, Response
from node.log import log_event
from proxy.identity.api_base import Call, Result
from proxy.identity.api_credentials import CredentialHandlers
from proxy.identity.api_resources import ResourceHandlers
from proxy.identity.api_tokens import TokenHandlers
from proxy.identity.catalog import Catalog, ClusterNodes
from proxy.identity.errors import IdentityError, error_response, not_found, unauthorized
from proxy.identity.service import IdentityService
from proxy.identity.store import StoreUnavailable

log = logging.getLogger("peerstack.identity.api")

PREFIXES = ("/identity/v3", "/v3")
VERSION_ROOTS = frozenset({"/", "/identity", "/identity/"})
API_VERSION = "v3.14"

Handler = Callable[[Call], Awaitable[Result]]


class IdentityAPI(TokenHandlers, ResourceHandlers, CredentialHandlers):
    """``async def __call__(request) -> Response`` for the identity API."""

    def __init__(self, service: IdentityService, catalog: Catalog) -> None:
        super().__init__(service, catalog)
        self.routes: list[tuple[frozenset[str], re.Pattern[str], Handler, bool]] = []
        r = self._route
        r("GET HEAD", "", self.version, token=False)
        r("POST", "/auth/tokens", self.issue_token, token=False)
        r("GET HEAD", "/auth/tokens", self.check_token)
        r("DELETE", "/auth/tokens", self.revoke_token)
        r("GET HEAD", "/auth/catalog", self.auth_catalog)
        r("GET HEAD", "/auth/projects", self.auth_projects)
        r("GET HEAD", "/auth/domains", self.auth_domains)
        r("GET HEAD", "/domains", self.list_domains)
        r("POST", "/domains", self.create_domain)
        r("GET HEAD", "/domains/{id}", self.get_domain)
        r("PATCH", "/domains/{id}", self.update_domain)
        r("DELETE", "/domains/{id}", self.delete_domain)
        r("GET HEAD", "/projects", self.list_projects)
        r("POST", "/projects", self.create_project)
        r("GET HEAD", "/projects/{id}", self.get_project)
        r("PATCH", "/projects/{id}", self.update_project)
        r("DELETE", "/projects/{id}", self.delete_project)
        r("GET HEAD", "/users", self.list_users)
        r("POST", "/users", self.create_user)
        r("GET HEAD", "/users/{id}", self.get_user)
        r("PATCH", "/users/{id}", self.update_user)
        r("DELETE", "/users/{id}", self.delete_user)
        r("POST", "/users/{id}/password", self.change_password)
        r("GET HEAD", "/users/{id}/projects", self.user_projects)
        r("GET HEAD", "/users/{id}/credentials/OS-EC2", self.list_ec2)
        r("POST", "/users/{id}/credentials/OS-EC2", self.create_ec2)
        r("GET HEAD", "/users/{id}/credentials/OS-EC2/{access}", self.get_ec2)
        r("DELETE", "/users/{id}/credentials/OS-EC2/{access}", self.delete_ec2)
        r("GET HEAD", "/users/{id}/application_credentials", self.list_app_creds)
        r("POST", "/users/{id}/application_credentials", self.create_app_cred)
        r("GET HEAD", "/users/{id}/application_credentials/{cred}", self.get_app_cred)
        r("DELETE", "/users/{id}/application_credentials/{cred}", self.delete_app_cred)
        r("GET HEAD", "/roles", self.list_roles)
        r("POST", "/roles", self.create_role)
        r("GET HEAD", "/roles/{id}", self.get_role)
        r("PATCH", "/roles/{id}", self.update_role)
        r("DELETE", "/roles/{id}", self.delete_role)
        grants = "/(?P<kind>project|domain)s/{target}/users/{user}/roles"
        r("GET HEAD", grants, self.list_grants)
        r("PUT", grants + "/{role}", self.create_grant)
        r("GET HEAD", grants + "/{role}", self.check_grant)
        r("DELETE", grants + "/{role}", self.delete_grant)
        r("GET HEAD", "/role_assignments", self.list_assignments)
        r("GET HEAD", "/credentials", self.list_credentials)
        r("POST", "/credentials", self.create_credential)
        r("GET HEAD", "/credentials/{id}", self.get_credential)
        r("DELETE", "/credentials/{id}", self.delete_credential)
        r("GET HEAD", "/services", self.list_services)
        r("GET HEAD", "/endpoints", self.list_endpoints)
        r("GET HEAD", "/regions", self.list_regions)

    def _route(self, methods: str, template: str, handler: Handler, *, token: bool = True) -> None:
        """Add a route; ``{name}`` matches one path segment; ``token``: needs ``X-Auth-Token``."""
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append((frozenset(methods.split()), re.compile(f"^{pattern}/?$"), handler, token))

    @staticmethod
    def claims(path: str) -> bool:
        """Is ``path`` the identity API's (so the router sends it here)?"""
        return path in VERSION_ROOTS or any(path == p or path.startswith(p + "/") for p in PREFIXES)

    # -- dispatch ----------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except IdentityError as exc:
            return error_response(exc.status, exc.message)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except (StoreUnavailable, BackendError, RingUnavailable) as exc:
            log_event(log, "identity.unavailable", rid=request.request_id, error=str(exc))
            return error_response(503, "The identity store is unavailable; try again.")

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        host = request.headers.get("host") or "localhost"
        if path in VERSION_ROOTS:
            prefix = "/identity/v3" if path.startswith("/identity") else "/v3"
            body = {"versions": {"values": [self._version_doc(f"http://{host}{prefix}/")]}}
            return _json(300, body)
        prefix = next(p for p in PREFIXES if path == p or path.startswith(p + "/"))
        rest = path[len(prefix):]
        base = f"http://{host}{prefix}"
        matching = [(ms, m, h, t) for ms, p, h, t in self.routes if (m := p.match(rest)) is not None]
        if matching and not any(request.method in ms for ms, *_ in matching):
            allowed = sorted({m for ms, *_ in matching for m in ms})
            return error_response(405, f"The method {request.method} is not allowed here.",
                                  [("Allow", ", ".join(allowed))])
        for methods, match, handler, needs_token in matching:
            if request.method not in methods:
                continue
            call = Call(request, base, match.groupdict())
            if needs_token:
                self._authenticate(call)
                await self.svc.ready()
            result = await handler(call)
            if isinstance(result, Response):
                return result
            status, body = result
            return _json(status, body) if body is not None else Response(status, [("Vary", "X-Auth-Token")])
        raise not_found("resource", rest or "/")

    def _authenticate(self, call: Call) -> None:
        token = call.request.headers.get("x-auth-token")
        if not token:
            raise unauthorized()
        payload = self.svc.validate(token)
        if payload is None:
            raise unauthorized("The request you have made requires authentication: invalid or expired token.")
        call.token = payload
        call.caller = self.svc.identity_of(payload)

    def _version_doc(self, href: str) -> dict[str, Any]:
        return {"id": API_VERSION, "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": href}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.identity-v3+json"}]}

    async def version(self, call: Call) -> Result:
        return 200, {"version": self._version_doc(call.base + "/")}


def _json(status: int, doc: Any) -> Response:
    return Response(status, [("Content-Type", "application/json"), ("Vary", "X-Auth-Token")],
                    json.dumps(doc).encode())


def mount(node: Any, service: IdentityService) -> IdentityAPI:
    """The identity API for ``node`` (its catalog lists the cluster's nodes), plus its background sync."""
    nodes = ClusterNodes(node, service.store.cc.rings)
    node.add_service("identity.revocations", service.sync.run)
    node.add_service("identity.catalog", nodes.run)
    catalog = Catalog(node.cluster.cluster_id, nodes.current)
    return IdentityAPI(service, catalog)

