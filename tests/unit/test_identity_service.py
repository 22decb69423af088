"""The identity service without a ring: tokens from one node validate on another with no backend.

The services here have no ring files at all, so any backend request would
raise :class:`RingUnavailable`: a token check that succeeds proves the hot
path needs nothing but the cluster secret and the in-memory revocation list.
"""

from __future__ import annotations

import time

import pytest

from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.config import Admin, ClusterConfig, NodeConfig
from node.http_client import HTTPClient
from proxy.auth import SwiftAuth
from proxy.identity.catalog import Catalog, NodeEndpoint
from proxy.identity.service import IdentityService, parse_assignment
from proxy.identity.tokens import TokenPayload, new_audit_id
from proxy.users import UserStore


def service(tmp_path, node: str) -> IdentityService:
    cluster = ClusterConfig(cluster_id="c-1", name="t", secret="ab" * 32, hash_prefix="p", hash_suffix="s",
                            admin=Admin("admin", "admin", "pw"))
    config = NodeConfig(node_id=node, ring_dir=str(tmp_path / "no-rings"))
    return IdentityService(ClusterClient(config, cluster, HTTPClient()), cluster)


def admin_payload(svc: IdentityService, **over) -> TokenPayload:
    now = time.time()
    fields = dict(user_id=svc.admin_user_id, user_name="admin", user_domain_id="default",
                  methods=("password",), issued_at=now, expires_at=now + 600, audit_ids=(new_audit_id(),),
                  project_id=svc.admin_project_id, project_name="admin", project_domain_id="default",
                  roles=((svc.role_ids["admin"], "admin"),))
    fields.update(over)
    return TokenPayload(**fields)


async def test_token_from_node1_validates_on_node3_without_any_backend(tmp_path):
    node1, node3 = service(tmp_path, "node1"), service(tmp_path, "node3")
    assert node1.admin_project_id == node3.admin_project_id  # deterministic bootstrap ids
    with pytest.raises(RingUnavailable):
        await node3.store.get("users", node3.admin_user_id)
    token = node1.issue(admin_payload(node1))
    who = node3.caller(token)
    assert who is not None and who.cluster_admin and who.roles == {"admin", "member", "reader"}
    assert who.account == f"AUTH_{node1.admin_project_id}"
    # The same roles on another project make a project admin, not a cloud admin.
    other = node3.caller(node1.issue(admin_payload(node1, project_id="p2", project_name="p2")))
    assert other is not None and not other.cluster_admin and other.owns("AUTH_p2")
    assert not other.owns(f"AUTH_{node1.admin_project_id}")


async def test_revocation_and_reader_rights_on_the_swift_path(tmp_path):
    svc = service(tmp_path, "n")
    p = admin_payload(svc, project_id="p9", project_name="p9", roles=(("rr", "reader"),))
    token = svc.issue(p)
    auth = SwiftAuth(svc.cluster, UserStore(svc.store.cc, svc.cluster), svc)

    class Req:
        def __init__(self, method: str) -> None:
            self.method = method
            self.headers = {"x-auth-token": token}

    reader_get, reader_put = auth.identify(Req("GET")), auth.identify(Req("PUT"))
    assert reader_get is not None and reader_get.owns("AUTH_p9")
    assert reader_put is not None and not reader_put.owns("AUTH_p9")
    svc.revocations.add("user", p.user_id, time.time())
    assert auth.identify(Req("GET")) is None
    assert svc.caller("gAAAAAforged") is None


def test_catalog_lists_every_node_with_this_node_first():
    nodes = [NodeEndpoint("n1", "http://127.0.0.1:8080"), NodeEndpoint("n2", "http://127.0.0.2:8080")]
    doc = Catalog("c-1", lambda: nodes).document("p1")
    types = {entry["type"] for entry in doc}
    assert {"identity", "object-store", "image", "compute", "volumev3", "network"} <= types
    store = next(e for e in doc if e["type"] == "object-store")
    public = [ep["url"] for ep in store["endpoints"] if ep["interface"] == "public"]
    assert public == ["http://127.0.0.1:8080/v1/AUTH_p1", "http://127.0.0.2:8080/v1/AUTH_p1"]
    assert len({ep["id"] for e in doc for ep in e["endpoints"]}) == sum(len(e["endpoints"]) for e in doc)
    unscoped = Catalog("c-1", lambda: nodes).document(None)
    assert all("{" not in ep["url"] and "AUTH_" not in ep["url"] for e in unscoped for ep in e["endpoints"])


def test_assignment_names_round_trip():
    assert parse_assignment("user/u1/project/p1/r1") == ("u1", "project", "p1", "r1")
    assert parse_assignment("user/u1/system/all/r1") is None
    assert parse_assignment("garbage") is None
