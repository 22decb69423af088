"""Bad S3 input against a real cluster: the right XML error, and nothing stored.

Requests are built by hand (signed with :mod:`proxy.s3.sigv4`, which the
unit tests check against AWS's published examples) so the bodies can be
wrong in ways no well-behaved client would send.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import urllib.parse
import zlib

import httpx
import pytest

from proxy.s3 import sigv4
from proxy.s3.credentials import key_pair
from tests.cluster import running_cluster

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("s3bad"), nodes=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="module")
def send(cluster):
    admin = cluster.layout.cluster.admin
    access, secret = key_pair(cluster.layout.cluster, admin.project, admin.user)
    base = cluster.nodes[0].public_url

    def run(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            payload_hash: str | None = None, when: float | None = None) -> httpx.Response:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when or time.time()))
        cred = sigv4.Credential(access, amz_date[:8], "us-east-1", "s3")
        url = urllib.parse.urlsplit(base + path)
        h = {"host": url.netloc, "x-amz-date": amz_date,
             "x-amz-content-sha256": payload_hash or hashlib.sha256(body).hexdigest()}
        h.update({k.lower(): v for k, v in (headers or {}).items()})
        names = sorted(h)
        canonical = sigv4.canonical_request(method, urllib.parse.unquote(url.path), sigv4.split_query(url.query),
                                            lambda n: [h[n]] if n in h else [], names, h["x-amz-content-sha256"])
        signature = sigv4.sign(sigv4.signing_key(secret, cred), sigv4.string_to_sign(amz_date, cred, canonical))
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{cred.scope}, "
                              f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return httpx.request(method, base + path, content=body, headers=h, timeout=60)

    assert run("PUT", "/bad").status_code == 200
    return run


def error_code(resp: httpx.Response) -> str:
    text = resp.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else f"status {resp.status_code}"


def assert_absent(send, key: str) -> None:
    assert send("HEAD", f"/bad/{key}").status_code == 404


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["small", "streamed"])
def test_content_sha256_mismatch_stores_nothing(send, size):
    body = os.urandom(size)
    resp = send("PUT", f"/bad/sha-{size}", body, payload_hash=hashlib.sha256(b"other").hexdigest())
    assert resp.status_code == 400 and error_code(resp) == "XAmzContentSHA256Mismatch"
    assert_absent(send, f"sha-{size}")


def _trailer_body(data: bytes, crc: int, chunk: int = 256 * 1024) -> bytes:
    out = b""
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    value = base64.b64encode(crc.to_bytes(4, "big"))
    return out + b"0\r\nx-amz-checksum-crc32:" + value + b"\r\n\r\n"


def _trailer_headers(data: bytes) -> dict[str, str]:
    return {"content-encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
            "x-amz-decoded-content-length": str(len(data))}


@pytest.mark.parametrize("size", [1000, 3 * MiB], ids=["small", "streamed"])
def test_trailing_checksum(send, size):
    data = os.urandom(size)
    bad = send("PUT", f"/bad/trail-{size}", _trailer_body(data, zlib.crc32(data) ^ 1), _trailer_headers(data),
               payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    assert bad.status_code == 400 and error_code(bad) == "BadDigest"
    assert_absent(send, f"trail-{size}")
    good = send("PUT", f"/bad/trail-{size}", _trailer_body(data, zlib.crc32(data)), _trailer_headers(data),
                payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    assert good.status_code == 200
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert good.headers["x-amz-checksum-crc32"] == expected
    head = send("HEAD", f"/bad/trail-{size}", headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.headers["x-amz-checksum-crc32"] == expected
    assert int(head.headers["content-length"]) == size
    assert send("GET", f"/bad/trail-{size}").content == data


def test_truncated_chunked_body_stores_nothing(send):
    data = os.urandom(600_000)
    headers = _trailer_headers(data)
    headers["x-amz-decoded-content-length"] = str(len(data) + 1000)
    resp = send("PUT", "/bad/short", _trailer_body(data, zlib.crc32(data)), headers,
                payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    assert resp.status_code == 400 and error_code(resp) == "IncompleteBody"
    assert_absent(send, "short")
    cut = _trailer_body(data, zlib.crc32(data))[:-40]
    resp = send("PUT", "/bad/cut", cut, _trailer_headers(data), payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    assert 400 <= resp.status_code < 500
    assert_absent(send, "cut")


def test_bad_checksum_header(send):
    resp = send("PUT", "/bad/crc", b"data", {"x-amz-checksum-crc32": base64.b64encode(b"\0\0\0\0").decode()})
    assert resp.status_code == 400 and error_code(resp) == "BadDigest"
    resp = send("PUT", "/bad/crc", b"data", {"x-amz-checksum-crc32": "not base64!"})
    assert resp.status_code == 400 and error_code(resp) == "InvalidRequest"
    assert_absent(send, "crc")


def test_clock_skew_and_signatures(send, cluster):
    resp = send("GET", "/bad", when=time.time() - 3600)
    assert resp.status_code == 403 and error_code(resp) == "RequestTimeTooSkewed"
    resp = httpx.get(cluster.nodes[0].public_url + "/bad",
                     headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x/2020/us-east-1/s3/aws4_request"})
    assert resp.status_code == 400 and error_code(resp) == "AuthorizationHeaderMalformed"
    resp = httpx.get(cluster.nodes[0].public_url + "/bad?X-Amz-Signature=00&X-Amz-Algorithm=AWS4-HMAC-SHA256")
    assert resp.status_code == 400 and error_code(resp) == "AuthorizationQueryParametersError"


def test_malformed_xml_bodies(send):
    body = b"<Delete><Object><Key>a</Key></Object>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    resp = send("POST", "/bad?delete", body, {"content-md5": md5})
    assert resp.status_code == 400 and error_code(resp) == "MalformedXML"
    upload = send("POST", "/bad/mpu?uploads")
    upload_id = upload.text.split("<UploadId>")[1].split("</UploadId>")[0]
    resp = send("POST", f"/bad/mpu?uploadId={upload_id}", b"<CompleteMultipartUpload><Part>")
    assert resp.status_code == 400 and error_code(resp) == "MalformedXML"
    resp = send("PUT", "/bad2", b"<CreateBucketConfiguration><LocationConstraint>")
    assert resp.status_code == 400 and error_code(resp) == "MalformedXML"
    assert send("HEAD", "/bad2").status_code == 404
    resp = send("GET", "/bad?list-type=2&max-keys=many")
    assert resp.status_code == 400 and error_code(resp) == "InvalidArgument"
