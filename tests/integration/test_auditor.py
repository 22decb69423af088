"""The auditor finds a flipped byte, quarantines the object, and the replicator restores it."""

from __future__ import annotations

import hashlib
import os

import trio

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
