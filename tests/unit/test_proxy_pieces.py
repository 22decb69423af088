"""Pure pieces of the Swift proxy and the cluster client: no network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from node.cluster_client import best_status, pair_by_node, quorum_size
from node.cluster_health import ErrorLimiter
from node.headers import Headers
from proxy import tempurl
from proxy.acl import allows_read, allows_write, check_acl_syntax
from proxy.auth import Identity, check_token, make_token
from proxy.ranges import parse_range, resolve
from proxy.slo import _parse_range as slo_range
from proxy.slo import entry_size, manifest_etag
from proxy.swift_limits import (check_container_name, check_metadata, check_object_name,
                                delete_at_header, parse_listing_limit)


def headers(**kv: str) -> Headers:
    return Headers([(k.replace("_", "-").encode(), v.encode()) for k, v in kv.items()])


def test_quorum_and_best_status():
    assert [quorum_size(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert best_status([201, 201, 503], 3) == 201
    assert best_status([201, 503, 503], 3) == 503
    assert best_status([201, 404], 3) == 503
    assert best_status([404, 404, 204], 3) == 404
    assert best_status([201, 202, 202], 3) == 202


def test_container_replicas_pair_with_object_primaries_on_their_node():
    def nodes(*ports: int) -> list[dict]:
        return [{"ip": "127.0.0.1", "port": p, "device": "d1"} for p in ports]

    # the same three nodes, in another order: every update stays on its node
    assert pair_by_node(nodes(3, 1, 2), nodes(1, 2, 3)) == [2, 0, 1]
    # two shared nodes; the third replica takes the slot left over
    assert pair_by_node(nodes(9, 2, 1), nodes(1, 2, 3)) == [2, 1, 0]
    # nothing shared: replica i to slot i, as Swift's proxy does
    assert pair_by_node(nodes(7, 8, 9), nodes(1, 2, 3)) == [0, 1, 2]
    # more replicas than slots wrap around; every slot is used
    assert pair_by_node(nodes(2, 7, 8), nodes(1, 2)) == [1, 0, 0]
    for cnodes in (nodes(3, 1, 2), nodes(9, 2, 1), nodes(7, 8, 9)):
        assert sorted(pair_by_node(cnodes, nodes(1, 2, 3))) == [0, 1, 2]


def test_error_limiter_suppresses_then_forgives():
    now = [1000.0]
    limiter = ErrorLimiter(limit=3, interval=10, suppress=5, clock=lambda: now[0])
    dev = {"ip": "127.0.0.1", "port": 6200, "device": "d1"}
    limiter.error(dev)
    limiter.error(dev)
    assert not limiter.is_limited(dev)
    now[0] += 11  # the first two errors age out of the window
    limiter.error(dev)
    limiter.error(dev)
    assert not limiter.is_limited(dev)
    limiter.error(dev)
    assert limiter.is_limited(dev)
    now[0] += 6
    assert not limiter.is_limited(dev)
    limiter.fatal(dev)
    assert limiter.is_limited(dev)
    limiter.success(dev)
    assert not limiter.is_limited(dev)
    other = {"ip": "127.0.0.2", "port": 6200, "device": "d1"}
    limiter.fatal(dev)
    limiter.fatal(other)
    limiter.peer_alive("127.0.0.1", 6200)  # membership heard that node again
    assert not limiter.is_limited(dev) and limiter.is_limited(other)


def test_tokens_roundtrip_expire_and_resist_tampering():
    key = b"k" * 32
    who = Identity("proj", "alice", cluster_admin=False)
    token = make_token(key, who, int(time.time()) + 60)
    assert check_token(key, token) == who
    assert check_token(b"x" * 32, token) is None
    assert check_token(key, token, now=time.time() + 120) is None
    forged = make_token(key, Identity("proj", "alice", True), int(time.time()) + 60)
    body, sig = forged.split(".")
    original_sig = token.split(".")[1]
    assert check_token(key, f"{body}.{original_sig}") is None
    assert check_token(key, "AUTH_tk") is None and check_token(key, "garbage") is None
    assert who.owns("AUTH_proj") and not who.owns("AUTH_other")
    assert Identity("a", "b", True).owns("AUTH_anything")


def test_acls():
    alice = Identity("p1", "alice")
    bob = Identity("p2", "bob")
    assert allows_read("p1:alice", alice, listing=True)
    assert not allows_read("p1:alice", bob, listing=False)
    assert allows_read("p2", bob, listing=False) and allows_read("*:bob", bob, listing=False)
    assert allows_read(".r:*", None, listing=False)
    assert not allows_read(".r:*", None, listing=True)
    assert allows_read(".r:*,.rlistings", None, listing=True)
    assert allows_write("p1:*", alice) and not allows_write("p1:*", None)
    assert check_acl_syntax(".r:*", read=False) is not None
    assert check_acl_syntax(".r:", read=True) is not None
    assert check_acl_syntax(".r:*,.rlistings,p1:alice", read=True) is None


def test_ranges():
    assert parse_range("bytes=0-9") == [(0, 9)]
    assert parse_range("bytes=-5,10-") == [(None, 5), (10, None)]
    for bad in ("bytes=5-2", "bytes=a-b", "items=0-1", "bytes=", "bytes=-", None):
        assert parse_range(bad) is None
    assert resolve([(0, 9)], 5) == [(0, 4)]
    assert resolve([(10, None)], 5) == []
    assert resolve([(None, 3)], 10) == [(7, 9)]
    assert resolve([(None, 30)], 10) == [(0, 9)]


def test_name_and_metadata_limits():
    assert check_object_name("o" * 1024) is None
    assert check_object_name("o" * 1025).status == 400
    assert check_object_name("é" * 513).status == 400  # bytes, not characters
    assert check_object_name("a\x00b").status == 412
    assert check_container_name("c" * 257).status == 400
    assert check_container_name("a/b").status == 400
    assert check_metadata(headers(x_object_meta_color="red"), "object") is None
    assert check_metadata(headers(**{"x_object_meta_" + "k" * 129: "v"}), "object").status == 400
    assert check_metadata(headers(x_object_meta_k="v" * 257), "object").status == 400
    assert check_metadata(headers(**{f"x_object_meta_k{i}": "v" for i in range(91)}), "object").status == 400
    big = {f"x_object_meta_k{i}": "v" * 200 for i in range(21)}
    assert "Total metadata too large" in check_metadata(headers(**big), "object").message
    assert parse_listing_limit("10001", 10000)[1].status == 412
    assert parse_listing_limit("-1", 10000)[1].status == 412
    assert parse_listing_limit(None, 10000) == (10000, None)


def test_delete_at():
    now = 1_000_000.0
    assert delete_at_header(headers(x_delete_after="60"), now) == ("1000060", None)
    assert delete_at_header(headers(x_delete_at="1000100"), now) == ("1000100", None)
    assert delete_at_header(headers(x_delete_at="999"), now)[1].message == "X-Delete-At in past"
    assert delete_at_header(headers(x_delete_after="x"), now)[1].message == "Non-integer X-Delete-After"
    assert delete_at_header(headers(), now) == (None, None)


@pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
def test_tempurl_signatures(digest):
    path = "/v1/AUTH_p/c/o"
    expires = int(time.time()) + 100
    sig = tempurl.sign("key", "GET", expires, path, digest)
    query = {"temp_url_sig": sig, "temp_url_expires": str(expires)}
    assert tempurl.validate(query, "GET", path, ["other", "key"])
    assert tempurl.validate(query, "HEAD", path, ["key"])  # a GET signature also opens HEAD
    assert not tempurl.validate(query, "PUT", path, ["key"])
    assert not tempurl.validate(query, "GET", "/v1/AUTH_p/c/other", ["key"])
    assert not tempurl.validate(query, "GET", path, ["wrong"])
    assert not tempurl.validate(query, "GET", path, ["key"], now=expires + 1)


def test_tempurl_prefix_and_base64_signatures():
    expires = int(time.time()) + 100
    body = f"GET\n{expires}\nprefix:/v1/AUTH_p/c/photos/"
    raw = hmac.new(b"key", body.encode(), hashlib.sha256).digest()
    sig = "sha256:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    query = {"temp_url_sig": sig, "temp_url_expires": str(expires), "temp_url_prefix": "photos/"}
    assert tempurl.validate(query, "GET", "/v1/AUTH_p/c/photos/cat.jpg", ["key"])
    assert not tempurl.validate(query, "GET", "/v1/AUTH_p/c/other/cat.jpg", ["key"])


def test_slo_manifest_math():
    entries = [{"hash": "a" * 32, "bytes": 100}, {"hash": "b" * 32, "bytes": 50, "range": "10-19"}]
    expected = hashlib.md5(("a" * 32 + "b" * 32 + ":10-19;").encode()).hexdigest()
    assert manifest_etag(entries) == expected
    assert [entry_size(e) for e in entries] == [100, 10]
    assert slo_range("-5", 50) == (45, 49)
    assert slo_range("40-", 50) == (40, 49)
    assert slo_range("60-70", 50) is None
