"""The auditor finds a flipped byte, quarantines the object, and the replicator restores it."""

from __future__ import annotations

import hashlib
import os

import trio
import xxhash

from node.etag_footer import BODY_CHECK_KEY
from node.storage.diskfile import read_metadata
from tests.integration.test_replication import ACCOUNT, Harness, data_files, replication_cluster


async def test_corrupt_object_is_quarantined_and_a_good_copy_restored(tmp_path):
    with replication_cluster(tmp_path, replicator={"audit_interval": 1.0}) as cluster:
        h = Harness(cluster)
        try:
            body = os.urandom(300_000)
            assert (await h.client.put_container(ACCOUNT, "c")).status in (201, 202)
            await h.put("c", "victim", body)
            primary = h.rings["object"].get_nodes(ACCOUNT, "c", "victim")[1][0]
            hash_dir = h.object_dirs("c", "victim")[0]
            (name,) = data_files(hash_dir)
            with open(hash_dir / name, "r+b") as f:  # same size: only the MD5 can tell
                f.seek(150_000)
                good = f.read(64)
                f.seek(150_000)
                f.write(bytes(b ^ 0xFF for b in good))
            device = hash_dir.parents[3]
            quarantined = device / "quarantined" / "objects" / hash_dir.name / name

            with trio.fail_after(90):
                while not quarantined.exists():
                    await trio.sleep(0.2)
                while data_files(hash_dir) != [name]:
                    await trio.sleep(0.2)

            assert hashlib.md5(quarantined.read_bytes()).hexdigest() != hashlib.md5(body).hexdigest()
            assert (hash_dir / name).read_bytes() == body
            for other in h.object_dirs("c", "victim")[1:]:
                assert (other / name).read_bytes() == body
            doc = await h.status(h.node_of(primary))
            assert doc["devices"][primary["device"]]["quarantined"]["objects"] == 1
            assert doc["devices"][primary["device"]]["audit"]["since_start"]["objects_quarantined"] == 1
        finally:
            await h.aclose()


async def test_reads_never_return_corrupt_bytes(tmp_path):
    """Before any auditor pass: the object server checks the bytes as it reads
    (against the body's XXH3-64 stored at write time, or the MD5 without one).

    A small object is checked before it is sent; a large one is cut short
    before its last chunk, and the cluster client resumes from another
    replica.  Either way the reader gets the good bytes and the bad copy is
    quarantined by the read itself.
    """
    with replication_cluster(tmp_path, replicator={"interval": 3600.0, "audit_interval": 3600.0}) as cluster:
        h = Harness(cluster)
        try:
            assert (await h.client.put_container(ACCOUNT, "c")).status in (201, 202)
            bodies = {"small": os.urandom(4096), "large": os.urandom(5 * 1024 * 1024 + 17)}
            bad: dict[str, tuple] = {}
            for obj, body in bodies.items():
                await h.put("c", obj, body)
                # the large body came with the proxy's footer: each copy keeps its XXH3-64
                for hash_dir in h.object_dirs("c", obj):
                    (name,) = data_files(hash_dir)
                    stored = read_metadata(hash_dir / name).get(BODY_CHECK_KEY)
                    assert stored == (xxhash.xxh3_64_hexdigest(body) if obj == "large" else None)
                # flip bytes in every primary's copy but the last, so only one good copy is left
                for hash_dir in h.object_dirs("c", obj)[:-1]:
                    (name,) = data_files(hash_dir)
                    with open(hash_dir / name, "r+b") as f:
                        f.seek(len(body) - 10)
                        tail = f.read(10)
                        f.seek(len(body) - 10)
                        f.write(bytes(b ^ 0xFF for b in tail))
                    bad.setdefault(obj, []).append((hash_dir, name))

            with trio.fail_after(60):
                for obj, body in bodies.items():
                    async with h.client.get_object(ACCOUNT, "c", obj) as resp:
                        assert resp.status == 200
                        got = b"".join([bytes(chunk) async for chunk in resp])
                    assert got == body, obj
            for obj, copies in bad.items():
                for hash_dir, name in copies:
                    device = hash_dir.parents[3]
                    assert (device / "quarantined" / "objects" / hash_dir.name / name).exists(), obj
        finally:
            await h.aclose()
