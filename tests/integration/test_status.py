"""`peerstack status` on a live cluster: every member, and every node's devices."""

import json
import time

from tests.cluster import running_cluster
from tools import peerstack


def status(config, capsys, *extra):
    capsys.readouterr()  # drop what came before (the ring builder's output)
    code = peerstack.main(["status", "--config", str(config), *extra])
    return code, capsys.readouterr().out


def test_status_shows_members_and_replication_per_device(tmp_path, capsys):
    with running_cluster(tmp_path, config={"replicator": {"interval": 1.0}}) as cluster:
        config = cluster.nodes[1].layout.config_path
        deadline = time.monotonic() + 30
        while True:
            code, out = status(config, capsys, "--json")
            doc = json.loads(out)
            alive = [m for m in doc["members"] if m["state"] == "alive"]
            ages = [d.get("replication_age") for r in doc["replication"].values()
                    for d in r.get("devices", {}).values()]
            if (len(alive) == 3 and len(ages) == 6 and None not in ages) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert code == 0 and len(alive) == 3
        assert set(doc["replication"]) == {n.layout.name for n in cluster.nodes}
        for node_doc in doc["replication"].values():
            assert set(node_doc["devices"]) == {"d1", "d2"}
            for dev in node_doc["devices"].values():
                assert dev["replication_age"] is not None
                assert dev["object_replication"]["last_pass"]["seconds"] >= 0
                assert dev["quarantined"] == {"objects": 0, "containers": 0, "accounts": 0}

        code, out = status(config, capsys)
        assert code == 0
        lines = out.splitlines()
        assert "as seen by node2" in lines[0]
        header = next(i for i, line in enumerate(lines) if line.startswith("NODE  ") and "DEVICE" in line)
        device_rows = lines[header + 1:]
        assert len(device_rows) == 6
        assert all("parts" in row for row in device_rows)
