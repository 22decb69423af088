"""The Swift v1 API on a real 3-node, 3-replica cluster (subprocesses on loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.parse

import httpx
import pytest

from proxy.s3.credentials import key_pair
from proxy.tempurl import sign
from tests.cluster import running_cluster
from tools import peerstack


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("swift"), nodes=3, replicas=3) as c:
        yield c


def login(url: str, user: str, key: str) -> tuple[str, str]:
    r = httpx.get(url, headers={"X-Auth-User": user, "X-Auth-Key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]


@pytest.fixture(scope="module")
def admin(cluster):
    url, token = login(cluster.auth_url, cluster.admin_user, cluster.admin_key)
    client = httpx.Client(headers={"X-Auth-Token": token}, timeout=30)
    yield url, client
    client.close()


def other_node_url(cluster, url: str, index: int) -> str:
    """The same storage URL, served by node ``index``."""
    path = urllib.parse.urlsplit(url).path
    return cluster.nodes[index].public_url + path


def test_auth_bad_credentials_and_tokens(cluster, admin):
    url, client = admin
    assert httpx.get(cluster.auth_url, headers={"X-Auth-User": cluster.admin_user,
                                                "X-Auth-Key": "wrong"}).status_code == 401
    assert httpx.get(cluster.auth_url, headers={"X-Auth-User": "nobody:x", "X-Auth-Key": "k"}).status_code == 401
    assert httpx.get(cluster.auth_url).status_code == 401
    assert httpx.head(url).status_code == 401
    assert httpx.head(url, headers={"X-Auth-Token": "AUTH_tkforged.deadbeef"}).status_code == 401
    token = client.headers["X-Auth-Token"]
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert httpx.head(url, headers={"X-Auth-Token": tampered}).status_code == 401
    # A token made on node 0 works on every node.
    for i in range(3):
        assert client.head(other_node_url(cluster, url, i)).status_code == 204


def test_info_sections(cluster):
    info = httpx.get(cluster.nodes[1].public_url + "/info").json()
    assert info["swift"]["max_object_name_length"] == 1024
    assert info["slo"]["max_manifest_segments"] == 1000
    assert "max_segments" in info["dlo"]
    assert "sha256" in info["tempurl"]["allowed_digests"]
    assert info["bulk_delete"]["max_deletes_per_request"] == 10000


def test_object_roundtrip_metadata_and_listing(cluster, admin):
    url, client = admin
    assert client.put(f"{url}/photos", headers={"X-Container-Meta-Owner": "me"}).status_code in (201, 202)
    body = os.urandom(70_000)
    r = client.put(f"{url}/photos/a/b.jpg", content=body, headers={"X-Object-Meta-Color": "red"})
    assert r.status_code == 201
    assert r.headers["Etag"].strip('"') == hashlib.md5(body).hexdigest()
    for i in range(3):
        got = client.get(other_node_url(cluster, url, i) + "/photos/a/b.jpg")
        assert got.status_code == 200 and got.content == body
        assert got.headers["X-Object-Meta-Color"] == "red"
        assert got.headers["Content-Type"] == "image/jpeg"
        assert "Last-Modified" in got.headers and "X-Timestamp" in got.headers
    head = client.head(f"{url}/photos/a/b.jpg")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body))
    assert client.post(f"{url}/photos/a/b.jpg", headers={"X-Object-Meta-Size": "big"}).status_code == 202
    head = client.head(f"{url}/photos/a/b.jpg")
    assert head.headers.get("X-Object-Meta-Size") == "big" and "X-Object-Meta-Color" not in head.headers
    r = client.get(f"{url}/photos/a/b.jpg", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    ch = client.head(f"{url}/photos")
    assert ch.status_code == 204 and ch.headers["X-Container-Meta-Owner"] == "me"
    listing = client.get(f"{url}/photos", params={"format": "json"})
    assert listing.status_code == 200
    assert [row["name"] for row in listing.json()] == ["a/b.jpg"]
    assert client.get(f"{url}/photos", params={"delimiter": "/"}).text == "a/\n"
    assert client.get(url, params={"format": "json"}).status_code == 200
    assert "photos" in client.get(url).text.split()
    assert client.delete(f"{url}/photos").status_code == 409
    assert client.delete(f"{url}/photos/a/b.jpg").status_code == 204
    assert client.get(f"{url}/photos/a/b.jpg").status_code == 404
    assert client.delete(f"{url}/photos/a/b.jpg").status_code == 404


def test_names_and_metadata_limits(cluster, admin):
    url, client = admin
    client.put(f"{url}/limits")
    assert client.put(f"{url}/limits/{'o' * 1025}", content=b"x").status_code == 400
    assert client.put(f"{url}/limits/{'o' * 1024}", content=b"x").status_code == 201
    assert client.put(f"{url}/{'c' * 257}").status_code == 400
    assert client.put(f"{url}/limits/bad%00name", content=b"x").status_code == 412
    assert client.put(f"{url}/bad%00container").status_code == 412
    assert client.put(f"{url}/limits/m", content=b"x",
                      headers={"X-Object-Meta-" + "k" * 129: "v"}).status_code == 400
    assert client.put(f"{url}/limits/m", content=b"x",
                      headers={"X-Object-Meta-K": "v" * 257}).status_code == 400
    many = {f"X-Object-Meta-K{i}": "v" for i in range(91)}
    assert client.put(f"{url}/limits/m", content=b"x", headers=many).status_code == 400
    assert client.put(f"{url}/limits/m", content=b"x", headers={"X-Delete-At": "12"}).status_code == 400
    assert client.put(f"{url}/limits/m", content=b"x", headers={"X-Delete-After": "soon"}).status_code == 400
    assert client.head(f"{url}/limits/m").status_code == 404
    assert client.put(f"{url}/nosuchcontainer/o", content=b"x").status_code == 404
    r = client.get(f"{url}/limits", params={"limit": "10001"})
    assert r.status_code == 412


def test_bad_ranges(cluster, admin):
    url, client = admin
    client.put(f"{url}/ranges")
    client.put(f"{url}/ranges/o", content=b"0123456789")
    r = client.get(f"{url}/ranges/o", headers={"Range": "bytes=20-30"})
    assert r.status_code == 416
    assert client.get(f"{url}/ranges/o", headers={"Range": "bytes=-3"}).content == b"789"
    # Not valid range syntax: ignored, the whole object comes back.
    r = client.get(f"{url}/ranges/o", headers={"Range": "bytes=5-2"})
    assert r.status_code == 200 and r.content == b"0123456789"


def test_other_accounts_and_acls(cluster, admin, capsys):
    url, client = admin
    assert peerstack.main(["user", "add", "proj2:alice", "--key", "alicekey",
                           "--config", str(cluster.nodes[0].layout.config_path)]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert printed["X-Auth-Key"] == "alicekey"
    assert (printed["AWS_ACCESS_KEY_ID"], printed["AWS_SECRET_ACCESS_KEY"]) == \
        key_pair(cluster.layout.cluster, "proj2", "alice")
    alice_url, alice_token = login(cluster.auth_url, "proj2:alice", "alicekey")
    assert alice_url.endswith("/v1/AUTH_proj2")
    alice = httpx.Client(headers={"X-Auth-Token": alice_token}, timeout=30)
    assert login(cluster.nodes[2].public_url + "/auth/v1.0", "proj2:alice", "alicekey")
    client.put(f"{url}/private")
    client.put(f"{url}/private/secret", content=b"s3cret")
    # alice cannot see the admin's account, or write to it.
    assert alice.get(url).status_code == 403
    assert alice.get(f"{url}/private/secret").status_code == 403
    assert alice.put(f"{url}/private/x", content=b"x").status_code == 403
    assert client.head(f"{url}/private/x").status_code == 404
    # her own account works, and the admin reaches it too (cluster admin).
    assert alice.put(f"{alice_url}/mine").status_code == 201
    assert alice.put(f"{alice_url}/mine/o", content=b"hers").status_code == 201
    assert client.get(f"{alice_url}/mine/o").content == b"hers"
    # A read grant for alice, then a public read ACL.
    client.post(f"{url}/private", headers={"X-Container-Read": "proj2:alice"})
    assert alice.get(f"{url}/private/secret").content == b"s3cret"
    assert alice.put(f"{url}/private/x", content=b"x").status_code == 403
    assert httpx.get(f"{url}/private/secret").status_code == 401
    client.post(f"{url}/private", headers={"X-Container-Read": ".r:*", "X-Container-Write": "proj2:alice"})
    assert httpx.get(f"{url}/private/secret").content == b"s3cret"
    assert httpx.get(f"{url}/private").status_code == 401  # no .rlistings
    assert alice.put(f"{url}/private/x", content=b"from alice").status_code == 201
    assert client.post(f"{url}/private", headers={"X-Container-Write": ".r:*"}).status_code == 400
    # A write grant does not let a manifest reach containers alice cannot read.
    client.put(f"{url}/hidden")
    client.put(f"{url}/hidden/seg", content=b"hidden bytes")
    sneaky = json.dumps([{"path": "/hidden/seg", "etag": None, "size_bytes": None}])
    r = alice.put(f"{url}/private/sneaky", params={"multipart-manifest": "put"}, content=sneaky)
    assert r.status_code == 400 and "403" in r.text
    assert client.head(f"{url}/private/sneaky").status_code == 404
    alice.close()


def test_lying_content_length_stores_nothing(cluster, admin):
    url, client = admin
    client.put(f"{url}/lies")
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    try:
        head = (f"PUT {parts.path}/lies/short HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"X-Auth-Token: {client.headers['X-Auth-Token']}\r\nContent-Length: 1000\r\n\r\n")
        sock.sendall(head.encode() + b"only a part of it")
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(4096).decode("latin-1")
    finally:
        sock.close()
    assert reply.startswith("HTTP/1.1 4"), reply
    assert client.head(f"{url}/lies/short").status_code == 404
    # An ETag that does not match the body: 422, nothing stored.
    r = client.put(f"{url}/lies/etag", content=b"abc", headers={"ETag": hashlib.md5(b"xyz").hexdigest()})
    assert r.status_code == 422
    assert client.head(f"{url}/lies/etag").status_code == 404


def test_copy_and_expiry(cluster, admin):
    url, client = admin
    client.put(f"{url}/cp")
    client.put(f"{url}/cp/src", content=b"copy me", headers={"X-Object-Meta-A": "1",
                                                              "Content-Type": "text/x-test"})
    r = client.request("COPY", f"{url}/cp/src", headers={"Destination": "cp/dst", "X-Object-Meta-B": "2"})
    assert r.status_code == 201 and r.headers["X-Copied-From"] == "cp/src"
    got = client.get(f"{url}/cp/dst")
    assert got.content == b"copy me" and got.headers["X-Object-Meta-A"] == "1"
    assert got.headers["X-Object-Meta-B"] == "2" and got.headers["Content-Type"] == "text/x-test"
    r = client.put(f"{url}/cp/dst2", headers={"X-Copy-From": "cp/src", "Content-Length": "0"})
    assert r.status_code == 201 and client.get(f"{url}/cp/dst2").content == b"copy me"
    assert client.put(f"{url}/cp/dst3", headers={"X-Copy-From": "cp/missing",
                                                  "Content-Length": "0"}).status_code == 404
    assert client.request("COPY", f"{url}/cp/src", headers={"Destination": "nonsense"}).status_code == 412
    r = client.put(f"{url}/cp/ephemeral", content=b"x", headers={"X-Delete-After": "3"})
    assert r.status_code == 201
    assert client.head(f"{url}/cp/ephemeral").headers.get("X-Delete-At")
    time.sleep(3.5)
    assert client.get(f"{url}/cp/ephemeral").status_code == 404


def _put_segments(client, url, container, sizes):
    segs = []
    for i, size in enumerate(sizes):
        data = bytes([65 + i]) * size
        client.put(f"{url}/{container}/seg{i:02d}", content=data)
        segs.append((f"/{container}/seg{i:02d}", hashlib.md5(data).hexdigest(), size, data))
    return segs


def test_slo_put_get_ranges_delete(cluster, admin):
    url, client = admin
    client.put(f"{url}/slo")
    segs = _put_segments(client, url, "slo", [1000, 2000, 1500])
    whole = b"".join(s[3] for s in segs)
    manifest = [{"path": p, "etag": e, "size_bytes": n} for p, e, n, _ in segs]
    r = client.put(f"{url}/slo/big", params={"multipart-manifest": "put"}, content=json.dumps(manifest))
    assert r.status_code == 201, r.text
    expected_etag = hashlib.md5("".join(s[1] for s in segs).encode()).hexdigest()
    assert r.headers["Etag"].strip('"') == expected_etag
    got = client.get(f"{url}/slo/big")
    assert got.status_code == 200 and got.content == whole
    assert got.headers["X-Static-Large-Object"] == "True"
    head = client.head(f"{url}/slo/big")
    assert head.headers["Content-Length"] == str(len(whole))
    assert head.headers["Etag"].strip('"') == expected_etag
    for first, last in ((0, 9), (990, 1010), (2990, 4499), (4000, 9999)):
        r = client.get(f"{url}/slo/big", headers={"Range": f"bytes={first}-{last}"})
        assert r.status_code == 206 and r.content == whole[first:last + 1]
    assert client.get(f"{url}/slo/big", headers={"Range": "bytes=5000-"}).status_code == 416
    raw = client.get(f"{url}/slo/big", params={"multipart-manifest": "get", "format": "raw"}).json()
    assert [m["path"] for m in raw] == [p for p, *_ in segs]
    listing = {row["name"]: row for row in client.get(f"{url}/slo", params={"format": "json"}).json()}
    assert listing["big"]["bytes"] == len(whole) and listing["big"]["hash"] == expected_etag
    r = client.delete(f"{url}/slo/big", params={"multipart-manifest": "delete"},
                      headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.json()["Number Deleted"] == 4
    assert client.get(f"{url}/slo/big").status_code == 404
    assert client.get(f"{url}/slo/seg00").status_code == 404


def test_slo_bad_manifests_store_nothing(cluster, admin):
    url, client = admin
    client.put(f"{url}/slobad")
    segs = _put_segments(client, url, "slobad", [100, 100])
    missing = [{"path": segs[0][0], "etag": segs[0][1], "size_bytes": 100},
               {"path": "/slobad/nothere", "etag": None, "size_bytes": None}]
    r = client.put(f"{url}/slobad/m", params={"multipart-manifest": "put"}, content=json.dumps(missing))
    assert r.status_code == 400 and "/slobad/nothere" in r.text
    wrong_etag = [{"path": segs[0][0], "etag": "0" * 32, "size_bytes": 100}]
    r = client.put(f"{url}/slobad/m", params={"multipart-manifest": "put"}, content=json.dumps(wrong_etag))
    assert r.status_code == 400 and "Etag Mismatch" in r.text
    wrong_size = [{"path": segs[0][0], "etag": segs[0][1], "size_bytes": 99}]
    r = client.put(f"{url}/slobad/m", params={"multipart-manifest": "put"}, content=json.dumps(wrong_size))
    assert r.status_code == 400 and "Size Mismatch" in r.text
    assert client.put(f"{url}/slobad/m", params={"multipart-manifest": "put"},
                      content=b"{not json").status_code == 400
    assert client.head(f"{url}/slobad/m").status_code == 404
    # A manifest whose segment vanished later: the GET fails cleanly.
    ok = [{"path": p, "etag": e, "size_bytes": n} for p, e, n, _ in segs]
    assert client.put(f"{url}/slobad/m", params={"multipart-manifest": "put"},
                      content=json.dumps(ok)).status_code == 201
    client.delete(f"{url}/slobad/seg00")
    assert client.get(f"{url}/slobad/m").status_code == 409


def test_dlo(cluster, admin):
    url, client = admin
    client.put(f"{url}/dlo")
    parts = [b"first-", b"second-", b"third"]
    for i, p in enumerate(parts):
        client.put(f"{url}/dlo/parts/{i:03d}", content=p)
    r = client.put(f"{url}/dlo/whole", content=b"", headers={"X-Object-Manifest": "dlo/parts/"})
    assert r.status_code == 201
    got = client.get(f"{url}/dlo/whole")
    whole = b"".join(parts)
    assert got.content == whole
    assert got.headers["Etag"].strip('"') == hashlib.md5(
        "".join(hashlib.md5(p).hexdigest() for p in parts).encode()).hexdigest()
    assert client.head(f"{url}/dlo/whole").headers["Content-Length"] == str(len(whole))
    assert client.get(f"{url}/dlo/whole", headers={"Range": "bytes=3-8"}).content == whole[3:9]
    assert client.put(f"{url}/dlo/bad", content=b"", headers={"X-Object-Manifest": "nocontainer"}).status_code == 400


def test_tempurl(cluster, admin):
    url, client = admin
    client.post(url, headers={"X-Account-Meta-Temp-URL-Key": "acctkey"})
    client.put(f"{url}/temp")
    client.put(f"{url}/temp/file.txt", content=b"temporary", headers={"X-Object-Meta-Private": "p"})
    path = urllib.parse.urlsplit(url).path + "/temp/file.txt"
    expires = int(time.time()) + 60
    sig = sign("acctkey", "GET", expires, path, "sha256")
    r = httpx.get(f"{url}/temp/file.txt", params={"temp_url_sig": sig, "temp_url_expires": expires})
    assert r.status_code == 200 and r.content == b"temporary"
    assert "attachment" in r.headers["Content-Disposition"] and "X-Object-Meta-Private" not in r.headers
    sha1 = sign("acctkey", "GET", expires, path, "sha1")
    assert httpx.get(f"{url}/temp/file.txt", params={"temp_url_sig": sha1,
                                                     "temp_url_expires": expires}).status_code == 200
    assert httpx.put(f"{url}/temp/file.txt", content=b"no", params={"temp_url_sig": sig,
                                                                     "temp_url_expires": expires}).status_code == 401
    old = int(time.time()) - 10
    assert httpx.get(f"{url}/temp/file.txt", params={"temp_url_sig": sign("acctkey", "GET", old, path),
                                                     "temp_url_expires": old}).status_code == 401
    client.post(f"{url}/temp", headers={"X-Container-Meta-Temp-URL-Key": "ckey"})
    put_sig = sign("ckey", "PUT", expires, urllib.parse.urlsplit(url).path + "/temp/up.txt")
    r = httpx.put(f"{url}/temp/up.txt", content=b"uploaded", params={"temp_url_sig": put_sig,
                                                                     "temp_url_expires": expires})
    assert r.status_code == 201
    assert client.get(f"{url}/temp/up.txt").content == b"uploaded"


def test_bulk_delete(cluster, admin):
    url, client = admin
    client.put(f"{url}/bulk")
    for i in range(5):
        client.put(f"{url}/bulk/o{i}", content=b"x")
    body = "\n".join([f"/bulk/o{i}" for i in range(5)] + ["/bulk/missing", "/bulk"])
    r = client.post(url, params={"bulk-delete": ""}, content=body,
                    headers={"Accept": "application/json", "Content-Type": "text/plain"})
    assert r.status_code == 200
    report = r.json()
    assert report["Number Deleted"] == 6 and report["Number Not Found"] == 1, report
    assert client.head(f"{url}/bulk").status_code == 404


def test_one_node_down_writes_and_reads(cluster, admin):
    url, client = admin
    client.put(f"{url}/survive")
    before = {f"before{i}": os.urandom(5000 + i) for i in range(10)}
    for name, data in before.items():
        assert client.put(f"{url}/survive/{name}", content=data).status_code == 201
    cluster.nodes[2].stop()
    try:
        during = {f"during{i}": os.urandom(7000 + i) for i in range(10)}
        for name, data in during.items():
            assert client.put(f"{url}/survive/{name}", content=data).status_code == 201
        for name, data in {**before, **during}.items():
            r = client.get(f"{url}/survive/{name}")
            assert r.status_code == 200 and r.content == data, name
        assert client.put(f"{url}/during-container").status_code == 201
    finally:
        cluster.nodes[2].start()
    for i in range(3):
        node_url = other_node_url(cluster, url, i)
        for name, data in {**before, **during}.items():
            r = client.get(f"{node_url}/survive/{name}")
            assert r.status_code == 200 and r.content == data, (i, name)
    assert client.head(f"{url}/during-container").status_code == 204


def test_request_id_follows_a_request_to_the_storage_nodes(cluster, admin):
    url, client = admin
    client.put(f"{url}/traced")
    rid = "tx" + os.urandom(10).hex() + "-traced"
    r = client.put(f"{url}/traced/o", content=b"follow me", headers={"X-Trans-Id": rid})
    assert r.status_code == 201 and r.headers["X-Trans-Id"] == rid

    def internal_lines():
        for node in cluster.nodes:
            for line in node.layout.log_path.read_text().splitlines():
                doc = json.loads(line)
                # "local": a request a node served to itself without a socket
                if doc.get("rid") == rid and doc.get("server") in ("internal", "local"):
                    yield doc

    def object_puts():
        return [d for d in internal_lines() if d["method"] == "PUT" and d["path"].endswith("/traced/o")]

    # The proxy answered after a quorum; the last replica (and the log flush) may come later.
    deadline = time.monotonic() + 10
    while len(object_puts()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    # the three object PUTs (and the container updates they sent), all under the client's id
    assert len(object_puts()) >= 3, list(internal_lines())
