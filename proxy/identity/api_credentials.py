"""Credential handlers: EC2 keys (the S3 keys), generic credentials, application credentials.

An EC2 credential is stored as Keystone stores it: a credential of type
``ec2`` whose id is the sha256 of its access key, so the S3 API finds a key
with one read (:meth:`proxy.identity.service.IdentityService.secret_for_access_key`).
"""

from __future__ import annotations

import json
from typing import Any

from proxy.identity import validate as v
from proxy.identity.api_base import Call, Handlers, Result, iso
from proxy.identity.errors import IdentityError, bad_request, forbidden, not_found
from proxy.identity.service import ec2_credential_id
from proxy.identity.store import new_id


class CredentialHandlers(Handlers):
    """EC2, generic and application credentials."""

    def _ec2(self, call: Call, cred: dict[str, Any]) -> dict[str, Any]:
        blob = cred["blob"]
        return {"user_id": cred["user_id"], "tenant_id": cred["project_id"], "access": blob["access"],
                "secret": blob["secret"], "trust_id": blob.get("trust_id"),
                "links": call.link(f"/users/{cred['user_id']}/credentials/OS-EC2/{blob['access']}")}

    async def list_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_list", user_id=call.params["id"])
        creds = await self.svc.ec2_credentials(call.params["id"])
        return 200, {"credentials": [self._ec2(call, c) for c in creds],
                     "links": call.collection_links(f"/users/{call.params['id']}/credentials/OS-EC2")}

    async def create_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_create", user_id=call.params["id"])
        spec = await call.body()
        project_id = v.ident(spec.get("tenant_id") or spec.get("project_id"), "tenant_id")
        user = await self.svc.get("users", call.params["id"], "user")
        await self.svc.get("projects", project_id, "project")
        if not (call.caller and call.caller.cluster_admin) and not await self.svc.roles_on(
                user["id"], "project", project_id):
            raise forbidden("The user has no role on that project.")
        cred = await self.svc.create_ec2(user["id"], project_id)
        return 201, {"credential": self._ec2(call, cred)}

    async def _ec2_of(self, call: Call) -> dict[str, Any]:
        cred = await self.svc.store.get("credentials", ec2_credential_id(call.params["access"]))
        if cred is None or cred.get("type") != "ec2" or cred.get("user_id") != call.params["id"]:
            raise not_found("credential", call.params["access"])
        return cred

    async def get_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_get", user_id=call.params["id"])
        return 200, {"credential": self._ec2(call, await self._ec2_of(call))}

    async def delete_ec2(self, call: Call) -> Result:
        self._allow(call, "identity:ec2_delete", user_id=call.params["id"])
        cred = await self._ec2_of(call)
        await self.svc.store.delete("credentials", cred["id"])
        self.svc.forget_ec2()
        return 204, None

    # -- generic credentials -------------------------------------------------------

    def _credential(self, call: Call, cred: dict[str, Any]) -> dict[str, Any]:
        blob = cred["blob"]
        return {"id": cred["id"], "type": cred["type"], "user_id": cred["user_id"],
                "project_id": cred.get("project_id"),
                "blob": blob if isinstance(blob, str) else json.dumps(blob),
                "links": call.link(f"/credentials/{cred['id']}")}

    async def list_credentials(self, call: Call) -> Result:
        assert call.token is not None
        user_filter = call.query.get("user_id")
        if not (call.caller and call.caller.cluster_admin):
            if user_filter not in (None, call.token.user_id):
                raise forbidden()
            user_filter = call.token.user_id
        creds = [c for c in await self.svc.store.list("credentials")
                 if (user_filter is None or c.get("user_id") == user_filter)
                 and ("type" not in call.query or c.get("type") == call.query["type"])]
        return 200, {"credentials": [self._credential(call, c) for c in creds],
                     "links": call.collection_links("/credentials")}

    async def create_credential(self, call: Call) -> Result:
        spec = v.section(await call.body(), "credential")
        user_id = v.ident(spec.get("user_id"), "user_id")
        self._allow(call, "identity:create_credential", user_id=user_id)
        ctype = v.name(spec.get("type"), "type", 255)
        blob_text = v.string(spec.get("blob"), "blob", 8192)
        project_id = v.optional_ident(spec.get("project_id"), "project_id")
        await self.svc.get("users", user_id, "user")
        if ctype == "ec2":
            try:
                blob = json.loads(blob_text)
            except ValueError:
                raise bad_request("Invalid blob in credential: not JSON.") from None
            if (not isinstance(blob, dict) or not isinstance(blob.get("access"), str) or not blob["access"]
                    or not isinstance(blob.get("secret"), str) or len(blob["access"]) > 128):
                raise bad_request("Invalid blob in credential: an ec2 blob needs access and secret.")
            if project_id is None:
                raise bad_request("Expecting to find project_id in an ec2 credential.")
            await self.svc.get("projects", project_id, "project")
            cred_id = ec2_credential_id(blob["access"])
            if await self.svc.store.get("credentials", cred_id) is not None:
                raise IdentityError(409, "Conflict occurred attempting to store credential: duplicate access key.")
            cred = {"id": cred_id, "type": "ec2", "user_id": user_id, "project_id": project_id,
                    "blob": {"access": blob["access"], "secret": blob["secret"], "trust_id": blob.get("trust_id")}}
        else:
            cred = {"id": new_id(), "type": ctype, "user_id": user_id, "project_id": project_id, "blob": blob_text}
        await self.svc.store.put("credentials", cred["id"], cred)
        return 201, {"credential": self._credential(call, cred)}

    async def _credential_of(self, call: Call, action: str) -> dict[str, Any]:
        cred = await self.svc.store.get("credentials", call.params["id"])
        if cred is None:
            raise not_found("credential", call.params["id"])
        self._allow(call, action, user_id=cred.get("user_id"))
        return cred

    async def get_credential(self, call: Call) -> Result:
        return 200, {"credential": self._credential(call, await self._credential_of(call, "identity:get_credential"))}

    async def delete_credential(self, call: Call) -> Result:
        cred = await self._credential_of(call, "identity:delete_credential")
        await self.svc.store.delete("credentials", cred["id"])
        self.svc.forget_ec2()
        return 204, None

    # -- application credentials -------------------------------------------------

    def _app_cred(self, call: Call, c: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
        out = {"id": c["id"], "name": c["name"], "description": c.get("description"),
               "user_id": c["user_id"], "project_id": c["project_id"], "unrestricted": False,
               "expires_at": iso(c.get("expires_at")), "access_rules": [],
               "roles": [{"id": rid, "name": name} for rid, name in c["roles"]],
               "links": call.link(f"/users/{c['user_id']}/application_credentials/{c['id']}")}
        if secret is not None:
            out["secret"] = secret
        return out

    async def create_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_create", user_id=call.params["id"])
        assert call.token is not None
        spec = v.section(await call.body(), "application_credential")
        created = await self.svc.create_app_cred(call.token, spec)
        return 201, {"application_credential": self._app_cred(call, created, created["secret"])}

    async def list_app_creds(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_list", user_id=call.params["id"])
        creds = [c for c in await self.svc.store.list("app_creds") if c.get("user_id") == call.params["id"]]
        if "name" in call.query:
            creds = [c for c in creds if c.get("name") == call.query["name"]]
        return 200, {"application_credentials": [self._app_cred(call, c) for c in creds],
                     "links": call.collection_links(f"/users/{call.params['id']}/application_credentials")}

    async def _app_cred_of(self, call: Call) -> dict[str, Any]:
        cred = await self.svc.store.get("app_creds", call.params["cred"])
        if cred is None or cred.get("user_id") != call.params["id"]:
            raise not_found("application credential", call.params["cred"])
        return cred

    async def get_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_get", user_id=call.params["id"])
        return 200, {"application_credential": self._app_cred(call, await self._app_cred_of(call))}

    async def delete_app_cred(self, call: Call) -> Result:
        self._allow(call, "identity:application_credential_delete", user_id=call.params["id"])
        cred = await self._app_cred_of(call)
        await self.svc.store.delete("app_creds", cred["id"])
        await self.svc.revoke("appcred", cred["id"])
        return 204, None

