"""Container listings converge after a container server missed writes (updater + DB replication)."""

from __future__ import annotations

import json

import trio

from tests.integration.test_replication import ACCOUNT, Harness, replication_cluster


async def test_listings_converge_after_a_container_server_was_down(tmp_path):
    with replication_cluster(tmp_path) as cluster:
        h = Harness(cluster)
        try:
            assert (await h.client.put_container(ACCOUNT, "docs")).status in (201, 202)
            cpart, replicas = h.rings["container"].get_nodes(ACCOUNT, "docs")
            apart, accounts = h.rings["account"].get_nodes(ACCOUNT)
            down = h.node_of(replicas[0])
            down.stop()
            for i in range(60):
                await h.put("docs", f"doc-{i:02d}", b"x" * i)
            for i in range(0, 60, 6):  # deletes are rows too
                assert (await h.client.delete_object(ACCOUNT, "docs", f"doc-{i:02d}")).status == 204
            expected = sorted(f"doc-{i:02d}" for i in range(60) if i % 6)
            pending = [await h.status(n) for n in cluster.nodes if n is not down]
            assert sum(d.get("async_pending", 0) for s in pending for d in s["devices"].values()) > 0
            down.start()

            async def listing(dev) -> list[str] | None:
                resp = await h.replica("GET", dev, f"/{cpart}/{ACCOUNT}/docs?format=json")
                if resp is None or resp.status != 200:
                    return None
                return [row["name"] for row in json.loads(resp.body)]

            async def object_count(dev) -> str | None:
                resp = await h.replica("HEAD", dev, f"/{apart}/{ACCOUNT}")
                return resp.headers.get("x-account-object-count") if resp else None

            with trio.fail_after(90):
                while [await listing(d) for d in replicas] != [expected] * len(replicas):
                    await trio.sleep(0.3)
                while True:
                    docs = [await h.status(n) for n in cluster.nodes]
                    if all(d["async_pending"] == 0 for s in docs for d in s["devices"].values()):
                        break
                    await trio.sleep(0.3)
                while [await object_count(d) for d in accounts] != [str(len(expected))] * len(accounts):
                    await trio.sleep(0.3)
        finally:
            await h.aclose()
