"""boto3, unmodified, against a real 3-node cluster: the S3 API end to end.

Default client settings throughout (current botocore sends CRC32 checksums,
in headers or aws-chunked trailers, on its own); one test uses the legacy
SigV2 signer and one virtual-host addressing.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import time
import urllib.parse

import httpx
import pytest

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from proxy.s3.checksums import of as checksum_of  # noqa: E402
from proxy.s3.credentials import key_pair  # noqa: E402
from tests.cluster import running_cluster  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("boto3"), nodes=3, replicas=3) as c:
        yield c


@pytest.fixture(scope="module")
def keys(cluster):
    admin = cluster.layout.cluster.admin
    return key_pair(cluster.layout.cluster, admin.project, admin.user)


def make_client(cluster, keys, node=0, **config):
    return boto3.client("s3", endpoint_url=cluster.nodes[node].public_url, aws_access_key_id=keys[0],
                        aws_secret_access_key=keys[1], region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, **config))


@pytest.fixture(scope="module")
def s3(cluster, keys):
    return make_client(cluster, keys)


def code_of(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def ensure_bucket(s3, name: str) -> None:
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"


def swift_token(cluster) -> tuple[str, str]:
    r = httpx.get(cluster.auth_url, headers={"X-Auth-User": cluster.admin_user, "X-Auth-Key": cluster.admin_key})
    assert r.status_code == 200
    return r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]


def test_buckets(s3):
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="No_Such_Name")
    assert code_of(info) == "InvalidBucketName"
    s3.create_bucket(Bucket="bucket-one")
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="bucket-one")
    assert code_of(info) == "BucketAlreadyOwnedByYou"
    s3.head_bucket(Bucket="bucket-one")
    assert "bucket-one" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket="bucket-one")["LocationConstraint"] is None
    s3.put_object(Bucket="bucket-one", Key="x", Body=b"1")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="bucket-one")
    assert code_of(info) == "BucketNotEmpty"
    s3.delete_object(Bucket="bucket-one", Key="x")
    s3.delete_bucket(Bucket="bucket-one")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="bucket-one")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket="bucket-one")
    assert code_of(info) == "NoSuchBucket"
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="bucket-two", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code_of(info) == "InvalidLocationConstraint"


def test_put_get_head_delete_with_metadata(s3, cluster, keys):
    s3.create_bucket(Bucket="objects")
    put = s3.put_object(Bucket="objects", Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain",
                        Metadata={"color": "blue"}, ContentDisposition='attachment; filename="h.txt"',
                        ContentEncoding="identity", CacheControl="max-age=60", ContentLanguage="en",
                        Expires=datetime.datetime(2030, 1, 2, tzinfo=datetime.timezone.utc))
    assert put["ETag"] == '"%s"' % hashlib.md5(b"hello world").hexdigest()
    other = make_client(cluster, keys, node=2)
    got = other.get_object(Bucket="objects", Key="dir/hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"color": "blue"}
    assert got["ContentDisposition"] == 'attachment; filename="h.txt"'
    assert got["ContentEncoding"] == "identity"
    assert got["CacheControl"] == "max-age=60" and got["ContentLanguage"] == "en"
    assert got["Expires"].year == 2030
    head = s3.head_object(Bucket="objects", Key="dir/hello.txt")
    assert head["ContentLength"] == 11 and head["ETag"] == put["ETag"]
    over = s3.get_object(Bucket="objects", Key="dir/hello.txt", ResponseContentType="application/x-thing",
                         ResponseCacheControl="no-store")
    assert over["ContentType"] == "application/x-thing" and over["CacheControl"] == "no-store"
    s3.delete_object(Bucket="objects", Key="dir/hello.txt")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="objects", Key="dir/hello.txt")
    assert code_of(info) == "NoSuchKey"
    s3.delete_object(Bucket="objects", Key="dir/hello.txt")  # deleting what is gone is fine


def test_swift_and_s3_see_the_same_objects(s3, cluster):
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="from-s3", Body=b"written by s3", Metadata={"k": "v"})
    url, token = swift_token(cluster)
    r = httpx.get(f"{url}/shared/from-s3", headers={"X-Auth-Token": token})
    assert r.status_code == 200 and r.content == b"written by s3" and r.headers["X-Object-Meta-K"] == "v"
    r = httpx.put(f"{url}/shared/from-swift", headers={"X-Auth-Token": token, "X-Object-Meta-Who": "swift"},
                  content=b"written by swift")
    assert r.status_code == 201
    got = s3.get_object(Bucket="shared", Key="from-swift")
    assert got["Body"].read() == b"written by swift" and got["Metadata"] == {"who": "swift"}


try:
    import awscrt  # noqa: F401  (botocore needs it for CRC32C and CRC64NVME)
    CRT = True
except ImportError:
    CRT = False
needs_crt = pytest.mark.skipif(not CRT, reason="botocore computes CRC32C/CRC64NVME only with awscrt")


@pytest.mark.parametrize("algorithm", ["CRC32", pytest.param("CRC32C", marks=needs_crt), "SHA1", "SHA256",
                                       pytest.param("CRC64NVME", marks=needs_crt)])
def test_checksums_are_verified_stored_and_returned(s3, algorithm):
    ensure_bucket(s3, "sums")
    data = os.urandom(300_000)
    put = s3.put_object(Bucket="sums", Key=algorithm, Body=data, ChecksumAlgorithm=algorithm)
    expected = checksum_of(algorithm.lower(), data)
    assert put[f"Checksum{algorithm}"] == expected
    got = s3.get_object(Bucket="sums", Key=algorithm, ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == expected
    assert got["Body"].read() == data


def test_crc64nvme_value_given_by_the_client(s3):
    ensure_bucket(s3, "sums")
    check = (0xAE8B14860A799888).to_bytes(8, "big")  # CRC64NVME of "123456789"
    import base64
    value = base64.b64encode(check).decode()
    s3.put_object(Bucket="sums", Key="nvme", Body=b"123456789", ChecksumCRC64NVME=value)
    assert s3.head_object(Bucket="sums", Key="nvme", ChecksumMode="ENABLED")["ChecksumCRC64NVME"] == value
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="sums", Key="nvme-bad", Body=b"123456780", ChecksumCRC64NVME=value)
    assert code_of(info) == "BadDigest"
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="sums", Key="nvme-bad")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_bad_content_md5_stores_nothing(s3):
    ensure_bucket(s3, "sums")
    import base64
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="sums", Key="md5", Body=b"payload", ContentMD5=wrong)
    assert code_of(info) == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="sums", Key="md5")


def test_multipart_upload_and_ranged_download(s3, cluster, tmp_path):
    s3.create_bucket(Bucket="big")
    size = 100 * MiB
    src = tmp_path / "src.bin"
    block = os.urandom(MiB)
    with src.open("wb") as f:
        for i in range(100):
            f.write(block[i:] + block[:i])
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4)
    with src.open("rb") as f:
        s3.upload_fileobj(f, "big", "blob.bin", Config=config)
    head = s3.head_object(Bucket="big", Key="blob.bin")
    assert head["ContentLength"] == size and head["ETag"].endswith('-7"')
    listed = s3.list_objects_v2(Bucket="big")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("blob.bin", size, head["ETag"])]
    with src.open("rb") as f:
        f.seek(16 * MiB - 100)
        want = f.read(300)
    got = s3.get_object(Bucket="big", Key="blob.bin", Range=f"bytes={16 * MiB - 100}-{16 * MiB + 199}")
    assert got["ContentRange"] == f"bytes {16 * MiB - 100}-{16 * MiB + 199}/{size}"
    assert got["Body"].read() == want
    dest = tmp_path / "dest.bin"
    s3.download_file("big", "blob.bin", str(dest), Config=config)
    assert hashlib.md5(dest.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()
    url, token = swift_token(cluster)
    r = httpx.head(f"{url}/big/blob.bin", headers={"X-Auth-Token": token})
    assert r.status_code == 200 and r.headers.get("X-Static-Large-Object") == "True"
    s3.delete_object(Bucket="big", Key="blob.bin")
    s3.delete_bucket(Bucket="big")


def test_multipart_rules(s3):
    s3.create_bucket(Bucket="parts")
    up = s3.create_multipart_upload(Bucket="parts", Key="obj")["UploadId"]
    small = [s3.upload_part(Bucket="parts", Key="obj", UploadId=up, PartNumber=n, Body=b"x" * 100)["ETag"]
             for n in (1, 2)]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="parts", Key="obj", UploadId=up)["Parts"]] == [1, 2]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="parts")["Uploads"]] == [up]

    def complete(parts):
        return s3.complete_multipart_upload(Bucket="parts", Key="obj", UploadId=up,
                                            MultipartUpload={"Parts": parts})
    with pytest.raises(ClientError) as info:
        complete([{"PartNumber": 1, "ETag": small[0]}, {"PartNumber": 2, "ETag": small[1]}])
    assert code_of(info) == "EntityTooSmall"
    with pytest.raises(ClientError) as info:
        complete([{"PartNumber": 2, "ETag": small[1]}, {"PartNumber": 1, "ETag": small[0]}])
    assert code_of(info) == "InvalidPartOrder"
    with pytest.raises(ClientError) as info:
        complete([{"PartNumber": 1, "ETag": '"%s"' % ("0" * 32)}])
    assert code_of(info) == "InvalidPart"
    done = complete([{"PartNumber": 2, "ETag": small[1]}])
    assert done["ETag"] == '"%s-1"' % hashlib.md5(bytes.fromhex(small[1].strip('"'))).hexdigest()
    assert s3.get_object(Bucket="parts", Key="obj")["Body"].read() == b"x" * 100
    up2 = s3.create_multipart_upload(Bucket="parts", Key="gone")["UploadId"]
    s3.abort_multipart_upload(Bucket="parts", Key="gone", UploadId=up2)
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="parts", Key="gone", UploadId=up2, PartNumber=1, Body=b"y")
    assert code_of(info) == "NoSuchUpload"


def test_upload_part_copy(s3):
    s3.create_bucket(Bucket="pcopy")
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket="pcopy", Key="src", Body=source)
    up = s3.create_multipart_upload(Bucket="pcopy", Key="dst")["UploadId"]
    p1 = s3.upload_part_copy(Bucket="pcopy", Key="dst", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": "pcopy", "Key": "src"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]["ETag"]
    p2 = s3.upload_part(Bucket="pcopy", Key="dst", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    s3.complete_multipart_upload(Bucket="pcopy", Key="dst", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1},
                                                            {"PartNumber": 2, "ETag": p2}]})
    assert s3.get_object(Bucket="pcopy", Key="dst")["Body"].read() == source[:5 * MiB] + b"tail"


def test_presigned_urls(s3):
    s3.create_bucket(Bucket="presign")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "p"}, ExpiresIn=300)
    assert httpx.put(put_url, content=b"via presigned put").status_code == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "p"}, ExpiresIn=300)
    r = httpx.get(get_url)
    assert r.status_code == 200 and r.content == b"via presigned put"
    tampered = get_url.replace("Key=", "Key=x") if "Key=" in get_url else get_url.replace("/p?", "/q?")
    assert httpx.get(tampered).status_code == 403
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "p"}, ExpiresIn=1)
    time.sleep(2.1)
    r = httpx.get(short)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content and b"expired" in r.content


def test_copy_object(s3):
    s3.create_bucket(Bucket="copies")
    s3.put_object(Bucket="copies", Key="a", Body=b"original", Metadata={"m": "1"}, ContentType="text/x-a")
    etag = s3.head_object(Bucket="copies", Key="a")["ETag"]
    s3.copy_object(Bucket="copies", Key="b", CopySource={"Bucket": "copies", "Key": "a"})
    b = s3.get_object(Bucket="copies", Key="b")
    assert b["Body"].read() == b"original" and b["Metadata"] == {"m": "1"} and b["ContentType"] == "text/x-a"
    s3.copy_object(Bucket="copies", Key="c", CopySource="copies/a", MetadataDirective="REPLACE",
                   Metadata={"n": "2"}, ContentType="text/x-c")
    c = s3.head_object(Bucket="copies", Key="c")
    assert c["Metadata"] == {"n": "2"} and c["ContentType"] == "text/x-c"
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="copies", Key="d", CopySource="copies/a", CopySourceIfMatch='"nope"')
    assert code_of(info) == "PreconditionFailed"
    s3.copy_object(Bucket="copies", Key="d", CopySource="copies/a", CopySourceIfMatch=etag)
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="copies", Key="a", CopySource="copies/a")
    assert code_of(info) == "InvalidRequest"
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="copies", Key="e", CopySource="copies/missing")
    assert code_of(info) == "NoSuchKey"


def test_delete_objects(s3):
    s3.create_bucket(Bucket="bulk")
    for i in range(5):
        s3.put_object(Bucket="bulk", Key=f"k{i}", Body=b"x")
    verbose = s3.delete_objects(Bucket="bulk", Delete={"Objects": [{"Key": "k0"}, {"Key": "k1"}]})
    assert sorted(d["Key"] for d in verbose["Deleted"]) == ["k0", "k1"]
    quiet = s3.delete_objects(Bucket="bulk", Delete={"Objects": [{"Key": "k2"}, {"Key": "nope"}],
                                                     "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="bulk")["Contents"]] == ["k3", "k4"]


def test_listings(s3):
    s3.create_bucket(Bucket="listing")
    names = ["a/1", "a/2", "b/1", "c", "d e+f", "z/x/y"]
    for name in names:
        s3.put_object(Bucket="listing", Key=name, Body=b"")
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "z/"]
    assert [o["Key"] for o in top["Contents"]] == ["c", "d e+f"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="listing", Prefix="a/")["Contents"]] == ["a/1", "a/2"]
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="listing", MaxKeys=2, **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == names
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="listing", StartAfter="c")["Contents"]] == \
        ["d e+f", "z/x/y"]
    v1 = s3.list_objects(Bucket="listing", Marker="b/1", MaxKeys=2)
    assert [o["Key"] for o in v1["Contents"]] == ["c", "d e+f"] and v1["IsTruncated"]
    paginated = [o["Key"] for page in s3.get_paginator("list_objects").paginate(Bucket="listing", PaginationConfig={"PageSize": 1})
                 for o in page.get("Contents", [])]
    assert paginated == names
    owner = s3.list_objects_v2(Bucket="listing", FetchOwner=True, MaxKeys=1)["Contents"][0]
    assert owner["Owner"]["ID"].startswith("AUTH_")


def test_conditional_and_range_errors(s3):
    s3.create_bucket(Bucket="cond")
    etag = s3.put_object(Bucket="cond", Key="o", Body=b"0123456789")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="cond", Key="o", IfNoneMatch=etag)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="cond", Key="o", IfMatch='"abc"')
    assert code_of(info) == "PreconditionFailed"
    assert s3.get_object(Bucket="cond", Key="o", IfMatch=etag, Range="bytes=-3")["Body"].read() == b"789"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="cond", Key="o", Range="bytes=50-60")
    assert code_of(info) == "InvalidRange"


def test_wrong_keys(cluster, keys):
    bad_secret = make_client(cluster, (keys[0], keys[1][:-2] + "xx"))
    with pytest.raises(ClientError) as info:
        bad_secret.list_buckets()
    assert code_of(info) == "SignatureDoesNotMatch"
    unknown = make_client(cluster, ("AKIAIOSFODNN7EXAMPLE", keys[1]))
    with pytest.raises(ClientError) as info:
        unknown.list_buckets()
    assert code_of(info) == "InvalidAccessKeyId"


def test_sigv2_signer(cluster, keys):
    v2 = make_client(cluster, keys, signature_version="s3")
    v2.create_bucket(Bucket="legacy")
    v2.put_object(Bucket="legacy", Key="k y", Body=b"v2 body", Metadata={"a": "b"})
    assert v2.get_object(Bucket="legacy", Key="k y")["Body"].read() == b"v2 body"
    url = v2.generate_presigned_url("get_object", Params={"Bucket": "legacy", "Key": "k y"}, ExpiresIn=60)
    assert "Signature=" in url and httpx.get(url).content == b"v2 body"


def test_virtual_host_addressing(cluster, keys):
    """``Host: <bucket>.localhost``; the connection still goes to the node's address."""
    node = urllib.parse.urlsplit(cluster.nodes[1].public_url)
    client = boto3.client("s3", endpoint_url=f"http://localhost:{node.port}", aws_access_key_id=keys[0],
                          aws_secret_access_key=keys[1], region_name="us-east-1",
                          config=Config(s3={"addressing_style": "virtual"}))

    def reroute(request, **_):
        parts = urllib.parse.urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = urllib.parse.urlunsplit(parts._replace(netloc=f"{node.hostname}:{node.port}"))

    client.meta.events.register("before-send.s3", reroute)
    client.create_bucket(Bucket="vhost")
    client.put_object(Bucket="vhost", Key="dir/obj", Body=b"virtual")
    assert client.get_object(Bucket="vhost", Key="dir/obj")["Body"].read() == b"virtual"
    assert [o["Key"] for o in client.list_objects_v2(Bucket="vhost")["Contents"]] == ["dir/obj"]
