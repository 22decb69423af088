"""SigV4/SigV2 pieces and aws-chunked decoding against AWS's published examples."""

from __future__ import annotations

import base64
import hashlib

import pytest
import trio

from proxy.s3 import sigv2, sigv4
from proxy.s3.chunked import AwsChunkedDecoder, ChunkSigner
from proxy.s3.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CRED = sigv4.Credential("AKIAIOSFODNN7EXAMPLE", "20130524", "us-east-1", "s3")


def _headers(pairs: dict[str, str]):
    return lambda name: [pairs[name]] if name in pairs else []


def test_get_object_example():
    """AWS's "GET Object" example of the SigV4 header documentation."""
    headers = {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
               "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z"}
    signed = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
    canonical = sigv4.canonical_request("GET", "/test.txt", [], _headers(headers), signed, sigv4.EMPTY_SHA256)
    to_sign = sigv4.string_to_sign("20130524T000000Z", CRED, canonical)
    assert to_sign.splitlines()[-1] == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    assert sigv4.sign(sigv4.signing_key(SECRET, CRED), to_sign) == \
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_list_objects_example_sorts_and_encodes_query():
    """AWS's "GET Bucket (List Objects)" example: ``?max-keys=2&prefix=J``."""
    headers = {"host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": sigv4.EMPTY_SHA256,
               "x-amz-date": "20130524T000000Z"}
    canonical = sigv4.canonical_request("GET", "/", sigv4.split_query("prefix=J&max-keys=2"),
                                        _headers(headers), ["host", "x-amz-content-sha256", "x-amz-date"],
                                        sigv4.EMPTY_SHA256)
    assert canonical.splitlines()[2] == "max-keys=2&prefix=J"
    to_sign = sigv4.string_to_sign("20130524T000000Z", CRED, canonical)
    assert sigv4.sign(sigv4.signing_key(SECRET, CRED), to_sign) == \
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_presigned_example():
    """AWS's presigned URL example (86400 s, ``UNSIGNED-PAYLOAD``)."""
    query = sigv4.split_query(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
        "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    parsed = sigv4.parse_presigned(dict(query))
    assert parsed.expires == 86400 and parsed.credential == CRED
    canonical = sigv4.canonical_request("GET", "/test.txt", query,
                                        _headers({"host": "examplebucket.s3.amazonaws.com"}), ["host"],
                                        sigv4.UNSIGNED_PAYLOAD, presigned=True)
    to_sign = sigv4.string_to_sign("20130524T000000Z", CRED, canonical)
    assert sigv4.sign(sigv4.signing_key(SECRET, CRED), to_sign) == parsed.signature


@pytest.mark.parametrize("header", [
    "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 Credential=AKID/2013/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
    "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=ab",
    "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=date, Signature=ab",
])
def test_malformed_authorization_headers(header):
    with pytest.raises(sigv4.SigV4Error) as info:
        sigv4.parse_authorization(header, "20130524T000000Z")
    assert info.value.code == "AuthorizationHeaderMalformed"


def test_presigned_expiry_limit():
    query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": "A/20130524/us-east-1/s3/aws4_request",
             "X-Amz-Date": "20130524T000000Z", "X-Amz-Expires": "604801", "X-Amz-SignedHeaders": "host",
             "X-Amz-Signature": "00"}
    with pytest.raises(sigv4.SigV4Error):
        sigv4.parse_presigned(query)


def test_sigv2_example():
    """AWS's SigV2 "Object GET" example."""
    headers = {"date": "Tue, 27 Mar 2007 19:36:42 +0000"}
    resource = sigv2.canonical_resource("/photos/puppy.jpg", "awsexamplebucket1", [])
    to_sign = sigv2.string_to_sign("GET", headers.get, headers["date"], [], resource)
    assert to_sign == "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
    assert sigv2.sign(SECRET, to_sign) == "qgk2+6Sv9/oM7G3qLEjTH1a1l1g="
    assert sigv2.parse_authorization("AWS AKIAIOSFODNN7EXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=") == \
        ("AKIAIOSFODNN7EXAMPLE", "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=")
    assert sigv2.parse_authorization("AWS nocolon") is None


def test_sigv2_subresources_are_signed_sorted():
    resource = sigv2.canonical_resource("/b/k", None, [("uploadId", "x"), ("partNumber", "2"), ("foo", "1")])
    assert resource == "/b/k?partNumber=2&uploadId=x"


# -- aws-chunked -------------------------------------------------------------------

# AWS's STREAMING-AWS4-HMAC-SHA256-PAYLOAD example: 66560 bytes of "a" in 64 KiB chunks.
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
              "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
              "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def _signed_body(sigs=CHUNK_SIGS) -> bytes:
    data = b"a" * 66560
    return (b"10000;chunk-signature=" + sigs[0].encode() + b"\r\n" + data[:65536] + b"\r\n"
            + b"400;chunk-signature=" + sigs[1].encode() + b"\r\n" + data[65536:] + b"\r\n"
            + b"0;chunk-signature=" + sigs[2].encode() + b"\r\n\r\n")


async def _decode(body: bytes, signer: ChunkSigner | None, piece: int = 1000, trailers_signed=False):
    async def raw():
        for i in range(0, len(body), piece):
            yield body[i:i + piece]
            await trio.lowlevel.checkpoint()
    decoder = AwsChunkedDecoder(raw(), signer, trailers_signed)
    out = b"".join([chunk async for chunk in decoder])
    return out, decoder


def _signer() -> ChunkSigner:
    return ChunkSigner(sigv4.signing_key(SECRET, CRED), "20130524T000000Z", CRED, SEED)


@pytest.mark.parametrize("piece", [1, 7, 1000, 1 << 20])
async def test_signed_chunks_example(piece):
    out, _ = await _decode(_signed_body(), _signer(), piece)
    assert out == b"a" * 66560


async def test_tampered_chunk_is_refused():
    body = bytearray(_signed_body())
    body[200] = ord("b")
    with pytest.raises(S3Error) as info:
        await _decode(bytes(body), _signer())
    assert info.value.code == "SignatureDoesNotMatch"


async def test_final_chunk_signature_is_checked():
    with pytest.raises(S3Error) as info:
        await _decode(_signed_body(CHUNK_SIGS[:2] + ["0" * 64]), _signer())
    assert info.value.code == "SignatureDoesNotMatch"


async def test_unsigned_trailer_body():
    data = b"hello world" * 1000
    crc = base64.b64encode(hashlib.sha256(data).digest()).decode()
    body = (b"%x\r\n" % 5000 + data[:5000] + b"\r\n" + b"%x\r\n" % (len(data) - 5000) + data[5000:]
            + b"\r\n0\r\nx-amz-checksum-sha256:" + crc.encode() + b"\r\n\r\n")
    out, decoder = await _decode(body, None, 333)
    assert out == data
    assert decoder.trailers == {"x-amz-checksum-sha256": crc}


@pytest.mark.parametrize("body", [
    b"5\r\nhel",  # cut inside the data
    b"5\r\nhello\r\n",  # no final chunk
    b"zz\r\nhello\r\n0\r\n\r\n",  # size is not hex
    b"5\r\nhelloXX0\r\n\r\n",  # data longer than declared
])
async def test_malformed_framing(body):
    with pytest.raises(S3Error) as info:
        await _decode(body, None)
    assert info.value.code in ("IncompleteBody", "InvalidRequest")
