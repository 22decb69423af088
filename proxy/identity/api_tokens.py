"""Token handlers: issue (``POST /v3/auth/tokens``), validate (GET/HEAD), revoke (DELETE).

Also the ``/v3/auth/*`` views of the caller's own catalog, projects and
domains, which clients read right after logging in.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from node.http_server import Response
from node.log import log_event
from proxy.identity import validate as v
from proxy.identity.api_base import Call, Handlers, Result, iso
from proxy.identity.errors import IdentityError, bad_request, forbidden
from proxy.identity.tokens import TokenPayload

log = logging.getLogger("peerstack.identity.api")


class TokenHandlers(Handlers):
    """Token issue, validation and revocation, and the caller's own views."""

    async def token_body(self, p: TokenPayload, *, with_catalog: bool) -> dict[str, Any]:
        names: dict[str, str] = {}
        token: dict[str, Any] = {
            "methods": list(p.methods), "audit_ids": list(p.audit_ids),
            "expires_at": iso(p.expires_at), "issued_at": iso(p.issued_at),
            "user": {"id": p.user_id, "name": p.user_name, "password_expires_at": None,
                     "domain": {"id": p.user_domain_id,
                                "name": await self._domain_name(p.user_domain_id, names)}},
        }
        if p.project_id is not None or p.domain_id is not None:
            token["roles"] = [{"id": rid, "name": name} for rid, name in p.roles]
        if p.project_id is not None:
            token["project"] = {"id": p.project_id, "name": p.project_name,
                                "domain": {"id": p.project_domain_id,
                                           "name": await self._domain_name(p.project_domain_id, names)}}
            token["is_domain"] = False
            token["is_admin_project"] = p.project_id == self.svc.admin_project_id
        if p.domain_id is not None:
            token["domain"] = {"id": p.domain_id, "name": p.domain_name}
        if p.app_cred_id is not None:
            token["application_credential"] = {"id": p.app_cred_id, "restricted": True}
        if with_catalog:
            token["catalog"] = self.catalog.document(p.project_id)
        return {"token": token}

    async def issue_token(self, call: Call) -> Result:
        doc = await call.body()
        started = time.monotonic()
        try:
            payload = await self.svc.authenticate(v.section(doc, "auth"))
        except IdentityError as exc:
            if exc.status == 401:
                log_event(log, "identity.auth_failed", rid=call.request.request_id,
                          seconds=round(time.monotonic() - started, 3))
            raise
        token = self.svc.issue(payload)
        body = await self.token_body(payload, with_catalog="nocatalog" not in call.query)
        log_event(log, "identity.token_issued", rid=call.request.request_id, user=payload.user_id,
                  project=payload.project_id, methods=list(payload.methods))
        return Response(201, [("Content-Type", "application/json"), ("X-Subject-Token", token),
                              ("Vary", "X-Auth-Token")], json.dumps(body).encode())

    def _subject(self, call: Call) -> TokenPayload:
        subject = call.request.headers.get("x-subject-token")
        if not subject:
            raise bad_request("Expecting to find X-Subject-Token in the request headers.")
        payload = self.svc.validate(subject)
        if payload is None:
            raise IdentityError(404, "Could not find token: the token is invalid, expired or revoked.")
        assert call.token is not None
        if not (call.caller and call.caller.cluster_admin) and payload.user_id != call.token.user_id:
            raise forbidden()
        return payload

    async def check_token(self, call: Call) -> Result:
        payload = self._subject(call)
        body = await self.token_body(payload, with_catalog="nocatalog" not in call.query)
        return Response(200, [("Content-Type", "application/json"), ("Vary", "X-Auth-Token"),
                              ("X-Subject-Token", call.request.headers.get("x-subject-token") or "")],
                        json.dumps(body).encode())

    async def revoke_token(self, call: Call) -> Result:
        payload = self._subject(call)
        await self.svc.revoke("audit", payload.audit_ids[0])
        log_event(log, "identity.token_revoked", rid=call.request.request_id, user=payload.user_id)
        return 204, None

    async def auth_catalog(self, call: Call) -> Result:
        assert call.token is not None
        return 200, {"catalog": self.catalog.document(call.token.project_id),
                     "links": call.collection_links("/auth/catalog")}

    async def _user_targets(self, user_id: str, kind: str) -> list[dict[str, Any]]:
        ids = {a[2] for a in await self.svc.assignments() if a[0] == user_id and a[1] == kind}
        out = []
        for tid in sorted(ids):
            doc = await self.svc.store.get(kind + "s", tid)
            if doc is not None:
                out.append(doc)
        return out

    async def auth_projects(self, call: Call) -> Result:
        assert call.token is not None
        projects = [p for p in await self._user_targets(call.token.user_id, "project") if p.get("enabled", True)]
        return 200, {"projects": [self._project(call, p) for p in projects],
                     "links": call.collection_links("/auth/projects")}

    async def auth_domains(self, call: Call) -> Result:
        assert call.token is not None
        domains = [d for d in await self._user_targets(call.token.user_id, "domain") if d.get("enabled", True)]
        return 200, {"domains": [self._domain(call, d) for d in domains],
                     "links": call.collection_links("/auth/domains")}

