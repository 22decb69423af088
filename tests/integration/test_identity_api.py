"""The Keystone v3 subset on a live 3-node cluster: tokens, CRUD, RBAC on Swift, revocation everywhere."""

from __future__ import annotations

import time

import boto3
import httpx
from botocore.exceptions import ClientError
import pytest

from tests.cluster import running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("identity"), nodes=3, replicas=3) as c:
        yield c


def auth_body(user: str, password: str, project: str | None = None, *, domain: str = "Default") -> dict:
    body: dict = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "domain": {"name": domain}, "password": password}}}}}
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return body


def login(base: str, user: str, password: str, project: str | None = None) -> tuple[str, dict]:
    r = httpx.post(f"{base}/v3/auth/tokens", json=auth_body(user, password, project), timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"], r.json()["token"]


@pytest.fixture(scope="module")
def admin(cluster):
    a = cluster.layout.cluster.admin
    token, body = login(cluster.nodes[0].public_url, a.user, a.password, a.project)
    return token, body


def api(cluster, token: str, node: int = 0) -> httpx.Client:
    return httpx.Client(base_url=cluster.nodes[node].public_url + "/v3",
                        headers={"X-Auth-Token": token}, timeout=30)


def wait_until(predicate, timeout: float = 5.0) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


def test_discovery_documents(cluster):
    base = cluster.nodes[1].public_url
    r = httpx.get(f"{base}/v3")
    assert r.status_code == 200 and r.json()["version"]["id"].startswith("v3")
    assert r.json()["version"]["links"][0]["href"].endswith("/v3/")
    r = httpx.get(f"{base}/")
    assert r.status_code == 300 and r.json()["versions"]["values"][0]["status"] == "stable"
    assert httpx.get(f"{base}/identity/v3").json()["version"]["links"][0]["href"].endswith("/identity/v3/")


def test_admin_token_body_and_catalog(cluster, admin):
    token, body = admin
    assert token.startswith("gAAAAA")
    assert {r["name"] for r in body["roles"]} == {"admin"}
    assert body["project"]["name"] == cluster.layout.cluster.admin.project
    assert body["user"]["domain"] == {"id": "default", "name": "Default"}
    assert body["expires_at"].endswith("Z") and body["methods"] == ["password"]
    by_type = {entry["type"]: entry for entry in body["catalog"]}
    assert {"identity", "object-store", "image", "compute", "volumev3", "network"} <= set(by_type)
    urls = [ep["url"] for ep in by_type["object-store"]["endpoints"] if ep["interface"] == "public"]
    # The answering node first; every node of the ring listed (ports as membership knows them).
    assert urls[0] == f"{cluster.nodes[0].public_url}/v1/AUTH_{body['project']['id']}"
    assert sorted(httpx.URL(u).host for u in urls) == sorted(n.layout.ip for n in cluster.nodes)
    assert all(u.endswith(f"/v1/AUTH_{body['project']['id']}") for u in urls)
    assert len({ep["id"] for e in body["catalog"] for ep in e["endpoints"]}) == 3 * 3 * len(body["catalog"])


def test_bad_input_is_keystone_shaped(cluster, admin):
    base = cluster.nodes[0].public_url
    a = cluster.layout.cluster.admin
    wrong = httpx.post(f"{base}/v3/auth/tokens", json=auth_body(a.user, "wrong", a.project))
    nobody = httpx.post(f"{base}/v3/auth/tokens", json=auth_body("nobody", "wrong", a.project))
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json()
    assert wrong.json()["error"] == {"code": 401, "title": "Unauthorized",
                                     "message": "The request you have made requires authentication."}
    for content in (b"{not json", b"[]", b'{"auth": 5}', b'{"auth": {"identity": {"methods": "password"}}}',
                    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": 3}}}}'):
        r = httpx.post(f"{base}/v3/auth/tokens", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (content, r.text)
        assert r.json()["error"]["code"] == 400
    token = admin[0]
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with api(cluster, tampered) as c:
        r = c.get("/projects")
        assert r.status_code == 401 and r.json()["error"]["title"] == "Unauthorized"
    with api(cluster, token) as c:
        assert c.post("/projects", json={"project": {"name": ""}}).status_code == 400
        assert c.post("/projects", json={"project": {"name": "x", "enabled": "yes"}}).status_code == 400
        assert c.post("/users", content=b"\xff\xfe").status_code == 400
        assert c.get("/users/nosuchuser").json()["error"]["code"] == 404
        assert c.get("/nothing/here").status_code == 404
        assert c.put("/projects").status_code == 405
        assert c.get("/auth/tokens").status_code == 400  # no X-Subject-Token


def test_crud_rbac_and_swift_accounts(cluster, admin):
    token, body = admin
    admin_account = f"AUTH_{body['project']['id']}"
    with api(cluster, token) as c:
        pa = c.post("/projects", json={"project": {"name": "alpha", "description": "A"}}).json()["project"]
        pb = c.post("/projects", json={"project": {"name": "beta"}}).json()["project"]
        assert c.post("/projects", json={"project": {"name": "alpha"}}).status_code == 409
        assert {p["name"] for p in c.get("/projects").json()["projects"]} >= {"alpha", "beta", "admin"}
        assert [p["id"] for p in c.get("/projects", params={"name": "alpha"}).json()["projects"]] == [pa["id"]]
        users = {}
        for name in ("mem", "rdr"):
            r = c.post("/users", json={"user": {"name": name, "password": f"{name}-pw", "email": f"{name}@x"}})
            assert r.status_code == 201 and "password" not in r.json()["user"]
            users[name] = r.json()["user"]
        roles = {r["name"]: r["id"] for r in c.get("/roles").json()["roles"]}
        assert {"admin", "member", "reader"} <= set(roles)
        grant = f"/projects/{pa['id']}/users/{users['mem']['id']}/roles/{roles['member']}"
        assert c.put(grant).status_code == 204
        assert c.head(grant).status_code == 204
        assert c.put(f"/projects/{pa['id']}/users/{users['rdr']['id']}/roles/{roles['reader']}").status_code == 204
        listed = c.get("/role_assignments", params={"scope.project.id": pa["id"]}).json()["role_assignments"]
        assert sorted((a["user"]["id"], a["role"]["id"]) for a in listed) == sorted(
            [(users["mem"]["id"], roles["member"]), (users["rdr"]["id"], roles["reader"])])
        named = c.get("/role_assignments", params={"user.id": users["mem"]["id"], "include_names": "1"})
        assert named.json()["role_assignments"][0]["role"]["name"] == "member"

    # A member logged in on node 1 writes in alpha from node 3, and cannot touch beta or admin.
    mem_token, mem_body = login(cluster.nodes[0].public_url, "mem", "mem-pw", "alpha")
    assert [r["name"] for r in mem_body["roles"]] == ["member"]
    h = {"X-Auth-Token": mem_token}
    alpha = f"{cluster.nodes[2].public_url}/v1/AUTH_{pa['id']}"
    assert httpx.put(f"{alpha}/c1", headers=h).status_code == 201
    assert httpx.put(f"{alpha}/c1/o", headers=h, content=b"hello").status_code == 201
    assert httpx.put(f"{cluster.nodes[2].public_url}/v1/AUTH_{pb['id']}/c1", headers=h).status_code == 403
    assert httpx.get(f"{cluster.nodes[1].public_url}/v1/{admin_account}", headers=h).status_code == 403
    # The member is no admin of identity.
    with api(cluster, mem_token) as c:
        r = c.get("/users")
        assert r.status_code == 403 and r.json()["error"]["title"] == "Forbidden"
        assert c.get(f"/users/{users['mem']['id']}").status_code == 200  # self
        assert c.post("/projects", json={"project": {"name": "mine"}}).status_code == 403
    # A member of alpha has no token for beta.
    r = httpx.post(f"{cluster.nodes[1].public_url}/v3/auth/tokens", json=auth_body("mem", "mem-pw", "beta"))
    assert r.status_code == 401

    # The reader reads alpha but cannot write.
    rdr_token, _ = login(cluster.nodes[1].public_url, "rdr", "rdr-pw", "alpha")
    rh = {"X-Auth-Token": rdr_token}
    assert httpx.get(f"{alpha}/c1/o", headers=rh).content == b"hello"
    assert httpx.get(alpha, headers=rh).status_code == 200
    assert httpx.put(f"{alpha}/c1/o2", headers=rh, content=b"x").status_code == 403
    assert httpx.delete(f"{alpha}/c1/o", headers=rh).status_code == 403
    assert httpx.put(f"{alpha}/c2", headers=rh).status_code == 403
    # The same rule holds for the reader's S3 keys (EC2 credentials).
    with api(cluster, rdr_token, node=1) as c:
        r = c.post(f"/users/{users['rdr']['id']}/credentials/OS-EC2", json={"tenant_id": pa["id"]})
        assert r.status_code == 201
        ec2 = r.json()["credential"]
    s3 = boto3.client("s3", endpoint_url=cluster.nodes[0].public_url, region_name="us-east-1",
                      aws_access_key_id=ec2["access"], aws_secret_access_key=ec2["secret"])
    assert s3.get_object(Bucket="c1", Key="o")["Body"].read() == b"hello"
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket="c1", Key="o3", Body=b"x")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert httpx.head(f"{alpha}/c1/o3", headers=h).status_code == 404

    # /auth/v1.0 logs identity users in as project:user, onto the same account.
    r = httpx.get(f"{cluster.nodes[1].public_url}/auth/v1.0", headers={"X-Auth-User": "alpha:mem",
                                                                      "X-Auth-Key": "mem-pw"})
    assert r.status_code == 200 and r.headers["X-Storage-Url"].endswith(f"/v1/AUTH_{pa['id']}")
    assert httpx.get(f"{alpha}/c1/o", headers={"X-Auth-Token": r.headers["X-Auth-Token"]}).content == b"hello"
    assert httpx.get(f"{cluster.nodes[1].public_url}/auth/v1.0",
                     headers={"X-Auth-User": "alpha:mem", "X-Auth-Key": "bad"}).status_code == 401
    assert httpx.get(f"{cluster.nodes[1].public_url}/auth/v1.0",
                     headers={"X-Auth-User": "beta:mem", "X-Auth-Key": "mem-pw"}).status_code == 401

    # Taking the member role away kills the member's tokens on every node.
    with api(cluster, token, node=1) as c:
        assert c.delete(f"/projects/{pa['id']}/users/{users['mem']['id']}/roles/{roles['member']}").status_code == 204
    for node in cluster.nodes:
        url = f"{node.public_url}/v1/AUTH_{pa['id']}/c1/o"
        wait_until(lambda: httpx.get(url, headers=h).status_code == 401)


def test_revoked_token_fails_on_every_node(cluster, admin):
    a = cluster.layout.cluster.admin
    victim, body = login(cluster.nodes[0].public_url, a.user, a.password, a.project)
    account = f"AUTH_{body['project']['id']}"
    for node in cluster.nodes:
        assert httpx.head(f"{node.public_url}/v1/{account}", headers={"X-Auth-Token": victim}).status_code == 204
    with api(cluster, admin[0], node=2) as c:
        assert c.get("/auth/tokens", headers={"X-Subject-Token": victim}).status_code == 200
        assert c.head("/auth/tokens", headers={"X-Subject-Token": victim}).status_code == 200
        assert c.delete("/auth/tokens", headers={"X-Subject-Token": victim}).status_code == 204
    took = []
    for node in cluster.nodes:
        url = f"{node.public_url}/v1/{account}"
        took.append(wait_until(lambda: httpx.head(url, headers={"X-Auth-Token": victim}).status_code == 401))
        with api(cluster, admin[0], node=cluster.nodes.index(node)) as c:
            assert c.get("/auth/tokens", headers={"X-Subject-Token": victim}).status_code == 404
    # The admin's other token is untouched.
    assert httpx.head(f"{cluster.nodes[0].public_url}/v1/{account}",
                      headers={"X-Auth-Token": admin[0]}).status_code == 204


def test_disable_user_and_change_password(cluster, admin):
    with api(cluster, admin[0]) as c:
        proj = c.post("/projects", json={"project": {"name": "gamma"}}).json()["project"]
        user = c.post("/users", json={"user": {"name": "dis", "password": "pw1",
                                               "default_project_id": proj["id"]}}).json()["user"]
        role = c.get("/roles", params={"name": "member"}).json()["roles"][0]
        c.put(f"/projects/{proj['id']}/users/{user['id']}/roles/{role['id']}")
    # No scope asked: the default project is used.
    tok, body = login(cluster.nodes[2].public_url, "dis", "pw1")
    assert body["project"]["id"] == proj["id"]
    account = f"{cluster.nodes[0].public_url}/v1/AUTH_{proj['id']}"
    assert httpx.head(account, headers={"X-Auth-Token": tok}).status_code in (204, 404)
    # The user changes their own password: old password refused, old tokens revoked.
    with api(cluster, tok, node=1) as c:
        r = c.post(f"/users/{user['id']}/password", json={"user": {"password": "pw2", "original_password": "nope"}})
        assert r.status_code == 401
        r = c.post(f"/users/{user['id']}/password", json={"user": {"password": "pw2", "original_password": "pw1"}})
        assert r.status_code == 204
    wait_until(lambda: httpx.head(account, headers={"X-Auth-Token": tok}).status_code == 401)
    assert httpx.post(f"{cluster.nodes[0].public_url}/v3/auth/tokens", json=auth_body("dis", "pw1")).status_code == 401
    tok2, _ = login(cluster.nodes[0].public_url, "dis", "pw2")
    with api(cluster, admin[0], node=1) as c:
        r = c.patch(f"/users/{user['id']}", json={"user": {"enabled": False}})
        assert r.status_code == 200 and r.json()["user"]["enabled"] is False
    for node in cluster.nodes:
        url = f"{node.public_url}/v1/AUTH_{proj['id']}"
        wait_until(lambda: httpx.head(url, headers={"X-Auth-Token": tok2}).status_code == 401)
    r = httpx.post(f"{cluster.nodes[0].public_url}/v3/auth/tokens", json=auth_body("dis", "pw2"))
    assert r.status_code == 401


def test_rescope_and_ec2_credentials(cluster, admin):
    a = cluster.layout.cluster.admin
    unscoped, body = login(cluster.nodes[0].public_url, a.user, a.password)
    assert body["project"]["name"] == a.project  # the admin's default project
    rescope = {"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}},
                        "scope": {"project": {"id": body["project"]["id"]}}}}
    r = httpx.post(f"{cluster.nodes[1].public_url}/v3/auth/tokens", json=rescope)
    assert r.status_code == 201 and r.json()["token"]["methods"] == ["password", "token"]
    assert r.json()["token"]["audit_ids"][1] == body["audit_ids"][0]
    user_id = body["user"]["id"]
    with api(cluster, admin[0], node=1) as c:
        r = c.post(f"/users/{user_id}/credentials/OS-EC2", json={"tenant_id": body["project"]["id"]})
        assert r.status_code == 201
        cred = r.json()["credential"]
        assert cred["tenant_id"] == body["project"]["id"] and len(cred["secret"]) >= 32
        listed = c.get(f"/users/{user_id}/credentials/OS-EC2").json()["credentials"]
        assert cred["access"] in {x["access"] for x in listed}
        generic = c.get("/credentials", params={"type": "ec2"}).json()["credentials"]
        assert any(cred["access"] in g["blob"] for g in generic)
        assert c.get(f"/users/{user_id}/credentials/OS-EC2/{cred['access']}").json()["credential"]["secret"] == cred["secret"]
        assert c.delete(f"/users/{user_id}/credentials/OS-EC2/{cred['access']}").status_code == 204
        assert c.get(f"/users/{user_id}/credentials/OS-EC2/{cred['access']}").status_code == 404
        bad = c.post("/credentials", json={"credential": {"type": "ec2", "user_id": user_id, "blob": "{oops"}})
        assert bad.status_code == 400


def test_application_credentials(cluster, admin):
    token, body = admin
    user_id = body["user"]["id"]
    with api(cluster, token) as c:
        r = c.post(f"/users/{user_id}/application_credentials",
                   json={"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}})
        assert r.status_code == 403  # the admin holds "admin" only, not "reader" as such
        r = c.post(f"/users/{user_id}/application_credentials", json={"application_credential": {"name": "ci"}})
        assert r.status_code == 201
        cred = r.json()["application_credential"]
        assert cred["secret"] and cred["project_id"] == body["project"]["id"]
        assert "secret" not in c.get(f"/users/{user_id}/application_credentials/{cred['id']}").json()[
            "application_credential"]
    auth = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}}
    r = httpx.post(f"{cluster.nodes[2].public_url}/v3/auth/tokens?nocatalog", json=auth)
    assert r.status_code == 201 and "catalog" not in r.json()["token"]
    app_token = r.headers["X-Subject-Token"]
    assert r.json()["token"]["project"]["id"] == body["project"]["id"]
    bad = {"auth": {"identity": {"methods": ["application_credential"],
                                 "application_credential": {"id": cred["id"], "secret": "wrong"}}}}
    assert httpx.post(f"{cluster.nodes[2].public_url}/v3/auth/tokens", json=bad).status_code == 401
    with api(cluster, token, node=1) as c:
        assert c.delete(f"/users/{user_id}/application_credentials/{cred['id']}").status_code == 204
    assert httpx.post(f"{cluster.nodes[0].public_url}/v3/auth/tokens", json=auth).status_code == 401
    account = f"{cluster.nodes[2].public_url}/v1/AUTH_{body['project']['id']}"
    wait_until(lambda: httpx.head(account, headers={"X-Auth-Token": app_token}).status_code == 401)
