"""Nodes in separate network namespaces find each other by mDNS and share one ring.

Real processes, real multicast over a bridge, no default route.  Timeouts are
generous bounds for a noisy 2-core machine, never performance assertions.
"""

from __future__ import annotations

import time

import pytest

from ring.ringfile import load_ring, save_ring

FAST = {"heartbeat_interval": 0.3, "suspect_after": 1.5, "dead_after": 3.0,
        "announce_interval": 2.0, "part_power": 6, "min_part_hours": 0}


def wait_for(predicate, what: str, timeout: float = 40.0, every: float = 0.3):
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def table(node) -> dict[str, dict]:
    doc = node.members()
    return {} if doc is None else {m["node_id"]: m for m in doc["members"]}


def ring_nodes(node, secret: bytes) -> set[str]:
    try:
        ring = load_ring(str(node.rings / "object.ring.gz"), secret)
    except (OSError, ValueError):
        return set()
    return {d["node_id"] for d in ring.devices if d is not None}


def everyone_agrees(nodes, ids: set[str], secret: bytes) -> bool:
    """Every node lists ``ids`` alive and holds the same object ring holding all of them."""
    hashes = set()
    for node in nodes:
        members = table(node)
        if {k for k, m in members.items() if m["state"] == "alive"} != ids:
            return False
        hashes.add(members[node.node_id]["rings"].get("object", {}).get("hash"))
        if ring_nodes(node, secret) != ids:
            return False
    return len(hashes) == 1 and None not in hashes


@pytest.mark.parametrize("size", [3, 7])
def test_namespaced_nodes_discover_join_and_notice_a_death(netlab, size):
    lab = netlab(**FAST)
    secret = lab.cluster.secret_bytes
    nodes = [lab.add_node() for _ in range(size)]
    for node in nodes:
        node.start()
    ids = {n.node_id for n in nodes}
    wait_for(lambda: everyone_agrees(nodes, ids, secret), f"{size} nodes to agree on members and ring")
    # They found each other by mDNS: no seeds were configured.
    assert all(n.log_events("discovery.peer") for n in nodes)
    # The ring they made on their own stores data: write through one node, read through another.
    wait_for(lambda: nodes[0].swift("PUT", "/photos")[0] in (201, 202), "a container PUT")
    body = b"written in one namespace, read in another " * 1000
    assert nodes[0].swift("PUT", "/photos/cat.jpg", body)[0] == 201
    assert nodes[-1].swift("GET", "/photos/cat.jpg") == (200, body)

    newcomer = lab.add_node()
    started = time.monotonic()
    newcomer.start()
    nodes.append(newcomer)
    ids.add(newcomer.node_id)
    wait_for(lambda: all(newcomer.node_id in ring_nodes(n, secret) for n in nodes),
             "every node to hold a ring with the newcomer")
    print(f"\n{size}->{size + 1}: {time.monotonic() - started:.1f}s from starting a node to "
          "every node holding a ring with it")
    wait_for(lambda: everyone_agrees(nodes, ids, secret), f"{size + 1} nodes to agree")
    # After the join, nothing became unreadable, through the newcomer too.
    assert newcomer.swift("GET", "/photos/cat.jpg") == (200, body)

    victim = nodes[1]
    victim.kill()
    seen: list[str] = []

    def victim_dead() -> bool:
        state = table(nodes[0]).get(victim.node_id, {}).get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state == "dead"

    wait_for(victim_dead, "the killed node to be dead", timeout=20, every=0.1)
    assert "suspect" in seen, seen
    others = table(nodes[2])
    assert others[victim.node_id]["state"] in ("suspect", "dead")
    assert all(others[n.node_id]["state"] == "alive" for n in nodes if n is not victim)


def test_opt_out_strangers_and_tampered_rings_stay_out(netlab, tmp_path):
    lab = netlab(**FAST)
    secret = lab.cluster.secret_bytes
    nodes = [lab.add_node() for _ in range(3)]
    manual = lab.add_node(auto_join=False)
    other_file = tmp_path / "other-cluster.toml"
    other_file.write_text(lab.cluster_file.read_text().replace(lab.cluster.secret, "cd" * 32))
    stranger = lab.add_node(cluster_file=other_file)
    for node in (*nodes, manual, stranger):
        node.start()
    ids = {n.node_id for n in nodes}
    wait_for(lambda: all(ring_nodes(n, secret) == ids for n in (*nodes, manual)),
             "the ring of the three auto-join nodes on all four")
    wait_for(lambda: table(manual).get(nodes[0].node_id, {}).get("state") == "alive",
             "the opted-out node to be a member")
    members = table(nodes[0])
    assert members[manual.node_id]["state"] == "alive"
    assert stranger.node_id not in members
    assert set(table(stranger)) == {stranger.node_id}
    assert nodes[0].log_events("membership.stranger")

    # A ring with a higher version but a broken signature, dropped on one node,
    # is neither advertised nor spread; the node restores the good one.
    good = (nodes[0].rings / "object.ring.gz").read_bytes()
    ring = load_ring(str(nodes[0].rings / "object.ring.gz"), secret)
    ring.version += 10
    forged = tmp_path / "forged.ring.gz"
    save_ring(str(forged), ring, b"not the cluster secret")
    (nodes[2].rings / "object.ring.gz").write_bytes(forged.read_bytes())
    wait_for(lambda: (nodes[2].rings / "object.ring.gz").read_bytes() == good,
             "the forged ring to be replaced by the good one")
    for node in (*nodes, manual):
        assert (node.rings / "object.ring.gz").read_bytes() == good
