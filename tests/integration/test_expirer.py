"""An object with X-Delete-At disappears -- from reads, the disk and the listing -- once it passes."""

from __future__ import annotations

import json
import os
import time

import trio

from node.storage.timestamp import Timestamp
from tests.integration.test_replication import ACCOUNT, Harness, data_files, replication_cluster


async def test_object_is_deleted_everywhere_after_its_delete_at(tmp_path):
    with replication_cluster(tmp_path, replicator={"expire_interval": 1.0}) as cluster:
        h = Harness(cluster)
        try:
            assert (await h.client.put_container(ACCOUNT, "tmp")).status in (201, 202)
            delete_at = int(time.time()) + 4
            await h.put("tmp", "short-lived", b"soon gone", {"X-Delete-At": str(delete_at)})
            await h.put("tmp", "keeper", b"stays")

            async def names() -> list[str]:
                resp = await h.client.get_container(ACCOUNT, "tmp", {"format": "json"})
                return [row["name"] for row in json.loads(resp.body)]

            assert await names() == ["keeper", "short-lived"]
            tombstone = f"{Timestamp(delete_at).internal}.ts"
            dirs = h.object_dirs("tmp", "short-lived")
            with trio.fail_after(60):
                while (await names() != ["keeper"]
                       or not all(os.listdir(d) == [tombstone] for d in dirs if d.is_dir())
                       or not all(d.is_dir() for d in dirs)):
                    await trio.sleep(0.3)
            assert time.time() >= delete_at
            resp = await h.client.head_object(ACCOUNT, "tmp", "short-lived")
            assert resp.status == 404
            assert all(data_files(d) for d in h.object_dirs("tmp", "keeper"))
        finally:
            await h.aclose()
