"""S3 checksums: known check values, multipart combination, header parsing."""

from __future__ import annotations

import base64
import os
import zlib

import pytest

from proxy.s3 import checksums
from proxy.s3.credentials import access_key_for, user_of
from proxy.s3.xml import XMLError, element, parse, render

# The CRC catalogue's check values: the CRC of b"123456789".
CHECK = {"crc32": 0xCBF43926, "crc32c": 0xE3069283, "crc64nvme": 0xAE8B14860A799888}


@pytest.mark.parametrize("algorithm", sorted(CHECK))
def test_check_values(algorithm):
    width = checksums.digest_size(algorithm)
    assert checksums.of(algorithm, b"123456789") == \
        base64.b64encode(CHECK[algorithm].to_bytes(width, "big")).decode()


@pytest.mark.parametrize("algorithm", sorted(CHECK))
def test_incremental_equals_whole(algorithm):
    data = os.urandom(100_000)
    h = checksums.new_hasher(algorithm)
    for i in range(0, len(data), 7777):
        h.update(data[i:i + 7777])
    assert checksums.encode(h.digest()) == checksums.of(algorithm, data)


@pytest.mark.parametrize("algorithm", sorted(CHECK))
def test_full_object_combination(algorithm):
    parts = [os.urandom(n) for n in (5000, 1, 77777, 12)]
    combined = checksums.full_object(algorithm, [(checksums.of(algorithm, p), len(p)) for p in parts])
    assert combined == checksums.of(algorithm, b"".join(parts))


def test_composite_is_checksum_of_digests():
    parts = [b"a" * 10, b"b" * 20]
    values = [checksums.of("crc32", p) for p in parts]
    digests = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    assert checksums.composite("crc32", values) == \
        base64.b64encode(zlib.crc32(digests).to_bytes(4, "big")).decode() + "-2"


@pytest.mark.parametrize("algorithm,value", [("crc32", "!!!!"), ("crc32", "AAAAAAAA"), ("sha256", "AAAA")])
def test_malformed_values(algorithm, value):
    with pytest.raises(checksums.ChecksumError):
        checksums.decode(algorithm, value)


def test_content_md5():
    assert checksums.content_md5("XUFAKrxLKna5cZ2REBfFkg==") == "5d41402abc4b2a76b9719d911017c592"
    with pytest.raises(checksums.ChecksumError):
        checksums.content_md5("aGVsbG8=")


def test_access_keys_name_their_user():
    key = access_key_for("proj", "alice")
    assert user_of(key) == ("proj", "alice")
    assert user_of("AKIAIOSFODNN7EXAMPLE") is None
    assert user_of("PS!!") is None


def test_xml_roundtrip_and_refusals():
    doc = render(element("Delete", [element("Object", [element("Key", "a<b&c")])]))
    root = parse(doc, "Delete")
    assert root[0][0].text == "a<b&c"
    with pytest.raises(XMLError):
        parse(b"<Delete><Object>", "Delete")
    with pytest.raises(XMLError):
        parse(b"<Other/>", "Delete")
    with pytest.raises(XMLError):
        parse(b'<!DOCTYPE x [<!ENTITY a "b">]><Delete>&a;</Delete>', "Delete")
