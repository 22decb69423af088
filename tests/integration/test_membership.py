"""Membership, ring gossip and auto-join between real nodes on loopback.

Every node is a real :class:`node.daemon.Node` serving real sockets on its
own 127.0.N.x address, with its own ring directory, running in this trio
program with membership installed.  Liveness timeouts are short so that the
tests finish quickly; nothing asserts on how fast anything happened, only
that it happens within a generous bound.
"""

from __future__ import annotations

import argparse
import json
import random
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from node.config import (
    ClusterConfig, Listen, Membership, NodeConfig, Storage, dump_toml, load_cluster_config,
)
from node.daemon import Node
from node.http_client import HTTPClient
from node.membership_service import MembershipService, install
from ring.builder import RingBuilder
from ring.devices import Device
from ring.ringfile import load_ring, save_ring
from tools import ring_push, status
from tools.cluster_init import init_cluster
from tools.demo import free_port

FAST = dict(heartbeat_interval=0.2, suspect_after=0.8, dead_after=1.6, part_power=6,
            min_part_hours=0, announce_interval=2.0)
DEADLINE = 30


class Cluster:
    """Configs and running nodes of one test cluster under ``root``."""

    def __init__(self, root: Path, name: str = "c") -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        self.cluster_file = self.root / "cluster.toml"
        init_cluster(self.cluster_file, name)
        self.cluster: ClusterConfig = load_cluster_config(self.cluster_file)
        net = random.randrange(20, 250)
        self.prefix = f"127.{net}.{random.randrange(1, 250)}"
        self.configs: list[NodeConfig] = []
        self.nodes: dict[str, tuple[Node, MembershipService]] = {}

    def config(self, index: int, *, devices: int = 2, **membership) -> NodeConfig:
        ip = f"{self.prefix}.{index + 1}"
        home = self.root / f"node{index}"
        for d in range(devices):
            (home / f"d{d + 1}").mkdir(parents=True, exist_ok=True)
        cfg = NodeConfig(
            cluster_file=str(self.cluster_file), node_id=f"node{index}", zone=index + 1,
            ring_dir=str(home / "rings"), internal=Listen(ip, free_port(ip)), public=Listen(ip, 0),
            storage=Storage(root=str(home), devices=[f"d{d + 1}" for d in range(devices)]),
            membership=Membership(**{"zeroconf": False, **FAST, **membership}))
        self.configs.append(cfg)
        return cfg

    def seed(self, cfg: NodeConfig) -> str:
        return f"{cfg.internal.host}:{cfg.internal.port}"

    async def start(self, nursery: trio.Nursery, cfg: NodeConfig,
                    cluster: ClusterConfig | None = None) -> MembershipService:
        node = Node(cfg, cluster or self.cluster)
        service = install(node)
        await nursery.start(node.run)
        self.nodes[cfg.node_id] = (node, service)
        return service

    def stop(self, node_id: str) -> None:
        self.nodes.pop(node_id)[0].stop()

    def services(self) -> list[MembershipService]:
        return [svc for _, svc in self.nodes.values()]


@asynccontextmanager
async def running(tmp_path: Path, name: str = "c"):
    cluster = Cluster(tmp_path, name)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            try:
                yield cluster, nursery
            finally:
                for node, _ in cluster.nodes.values():
                    node.stop()


async def until(predicate, what: str, timeout: float = 15.0) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


def states(service: MembershipService) -> dict[str, str]:
    return {m["node_id"]: m["state"] for m in service.members_document()["members"]}


def object_ring_devices(cfg: NodeConfig, cluster: ClusterConfig) -> set[str]:
    ring = load_ring(str(cfg.rings_path / "object.ring.gz"), cluster.secret_bytes)
    return {d["node_id"] for d in ring.devices if d is not None}


def converged(cluster: Cluster, ring: str = "object") -> bool:
    seen = {_tuple(svc.store.states.get(ring)) for svc in cluster.services()}
    return len(seen) == 1 and None not in seen and all(s[2] for s in seen)


def _tuple(state):
    return None if state is None else (state.version, state.hash, state.builder)


async def test_three_nodes_from_nothing_discover_by_zeroconf_and_agree_on_one_ring(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i, zeroconf=True) for i in range(3)]
        for cfg in cfgs:
            await cluster.start(nursery, cfg)
        everyone = {"node0", "node1", "node2"}
        await until(lambda: all(states(s) == dict.fromkeys(everyone, "alive")
                                for s in cluster.services()), "one membership table")
        for ring in ("account", "container", "object"):
            await until(lambda: converged(cluster, ring), f"one {ring} ring on every node")
        for cfg in cfgs:
            assert object_ring_devices(cfg, cluster.cluster) == everyone
        # The TXT record found by mDNS carries the peers' ports.
        found = cluster.services()[0].discovery.found
        assert found["node1"] == (cfgs[1].internal.host, cfgs[1].internal.port)


async def test_stopped_node_goes_suspect_then_dead_and_comes_back(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i) for i in range(3)]
        for cfg in cfgs:
            cfg.membership.seeds = [cluster.seed(cfgs[0])]
            await cluster.start(nursery, cfg)
        first = cluster.nodes["node0"][1]
        await until(lambda: set(states(first).values()) == {"alive"} and len(states(first)) == 3,
                    "all alive")
        cluster.stop("node2")
        seen: list[str] = []

        def record() -> bool:
            state = states(first)["node2"]
            if not seen or seen[-1] != state:
                seen.append(state)
            return state == "dead"

        await until(record, "node2 dead")
        assert seen[-2:] == ["suspect", "dead"], seen
        assert states(first)["node1"] == "alive"
        await cluster.start(nursery, cfgs[2])
        await until(lambda: states(first)["node2"] == "alive", "node2 alive again")


async def test_newer_ring_spreads_and_tampered_or_foreign_rings_are_refused(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i, auto_join=False) for i in range(3)]
        secret = cluster.cluster.secret_bytes
        builder = RingBuilder(6, 2, 0)
        for cfg in cfgs:
            for dev in cfg.storage.devices:
                builder.add_device(Device(-1, 1, cfg.zone, cfg.internal.host, cfg.internal.port,
                                          dev, 100.0, node_id=cfg.node_id))
        builder.rebalance(seed=1)
        for cfg in cfgs:
            cfg.rings_path.mkdir(parents=True)
            save_ring(str(cfg.rings_path / "object.ring.gz"), builder.to_ring_data(), secret)
            cfg.membership.seeds = [cluster.seed(c) for c in cfgs]
            await cluster.start(nursery, cfg)
        await until(lambda: converged_version(cluster, 1), "version 1 everywhere")

        # An operator writes version 2 on one node only: gossip carries it to the others.
        builder.set_weight(0, 50.0)
        builder.rebalance(seed=2)
        assert builder.version == 2
        save_ring(str(cfgs[1].rings_path / "object.ring.gz"), builder.to_ring_data(), secret)
        await until(lambda: converged_version(cluster, 2), "version 2 everywhere")
        v2 = (cfgs[0].rings_path / "object.ring.gz").read_bytes()
        assert v2 == (cfgs[1].rings_path / "object.ring.gz").read_bytes()

        # A tampered version-3 file on node2 is neither advertised nor spread,
        # and node2 heals itself from its peers.
        builder.set_weight(1, 50.0)
        builder.rebalance(seed=3)
        good3 = (tmp_path / "good3.ring.gz")
        save_ring(str(good3), builder.to_ring_data(), secret)
        tampered = bytearray(good3.read_bytes())
        tampered[len(tampered) // 2] ^= 0xFF
        (cfgs[2].rings_path / "object.ring.gz").write_bytes(bytes(tampered))
        await until(lambda: (cfgs[2].rings_path / "object.ring.gz").read_bytes() == v2,
                    "node2 to restore version 2")
        assert all(s.store.states["object"].version == 2 for s in cluster.services())

        # Pushed rings: tampered -> 422, another cluster's -> 422, older -> 409, newer -> 201.
        client = cluster.nodes["node0"][0].client
        host, port = cfgs[0].internal.host, cfgs[0].internal.port
        foreign = tmp_path / "foreign.ring.gz"
        save_ring(str(foreign), builder.to_ring_data(), b"another cluster's secret")
        old = RingBuilder(6, 2, 0)
        for dev in list(builder.devices.values())[:3]:
            old.add_device(Device(**{**dev.to_dict(), "weight": 1.0}))
        old.rebalance()
        old_path = tmp_path / "old.ring.gz"
        save_ring(str(old_path), old.to_ring_data(), secret)
        for body, want in ((bytes(tampered), 422), (foreign.read_bytes(), 422),
                           (old_path.read_bytes(), 409), (b"not a ring", 422),
                           (good3.read_bytes(), 201)):
            resp = await client.request("POST", host, port, "/cluster/ring/object", body=body)
            assert resp.status == want, (want, resp.status, resp.body)
        await until(lambda: converged_version(cluster, 3), "pushed version 3 everywhere")
        # An unsigned request is refused before any of this code runs.
        unsigned = HTTPClient()
        try:
            resp = await unsigned.request("POST", host, port, "/cluster/ring/object",
                                          body=good3.read_bytes())
            assert resp.status == 401
        finally:
            await unsigned.aclose()


def converged_version(cluster: Cluster, version: int) -> bool:
    return all((s := svc.store.states.get("object")) is not None and s.version == version
               for svc in cluster.services())


async def test_fresh_node_joins_by_itself_and_gets_partitions(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i) for i in range(3)]
        for cfg in cfgs:
            cfg.membership.seeds = [cluster.seed(cfgs[0])]
            await cluster.start(nursery, cfg)
        await until(lambda: converged(cluster) and len(cluster.services()) == 3, "first ring")
        before = cluster.services()[0].store.states["object"].version

        newcomer = cluster.config(3)
        newcomer.membership.seeds = [cluster.seed(cfgs[2])]
        await cluster.start(nursery, newcomer)
        await until(lambda: converged(cluster) and
                    cluster.services()[0].store.states["object"].version > before and
                    "node3" in object_ring_devices(newcomer, cluster.cluster), "node3 in the ring")
        ring = load_ring(str(newcomer.rings_path / "object.ring.gz"), cluster.cluster.secret_bytes)
        ids = [d["id"] for d in ring.devices if d is not None and d["node_id"] == "node3"]
        assert len(ids) == 2
        # min_part_hours = 0 here, so the rebalance moved partitions onto it.
        assert (ring.assign[:, :] == ids[0]).sum() + (ring.assign == ids[1]).sum() > 0
        # The builder travelled too: any node could take over as steward.
        assert all(svc.store.states["object"].builder for svc in cluster.services())


async def test_auto_join_false_waits_for_the_operator_and_ring_push(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i) for i in range(3)]
        for cfg in cfgs:
            cfg.membership.seeds = [cluster.seed(cfgs[0])]
            await cluster.start(nursery, cfg)
        await until(lambda: converged(cluster) and len(cluster.services()) == 3, "first ring")
        manual = cluster.config(3, auto_join=False)
        manual.membership.seeds = [cluster.seed(cfgs[0])]
        service = await cluster.start(nursery, manual)
        await until(lambda: converged(cluster), "the newcomer to hold the ring")
        # Several steward rounds later it is a member but holds no devices.
        await trio.sleep(10 * FAST["heartbeat_interval"])
        first = cluster.nodes["node0"][1]
        assert states(first)["node3"] == "alive"
        assert "node3" not in object_ring_devices(cfgs[0], cluster.cluster)
        version = first.store.states["object"].version

        # The operator adds it with the builder and pushes from the new node's config.
        work = tmp_path / "operator.builder"
        work.write_bytes((cfgs[0].rings_path / "object.builder").read_bytes())
        builder = RingBuilder.load(str(work))
        for dev in manual.storage.devices:
            builder.add_device(Device(-1, 1, manual.zone, manual.internal.host,
                                      manual.internal.port, dev, 100.0, node_id="node3"))
        builder.rebalance()
        builder.save(str(work))
        ring_file = tmp_path / "object.ring.gz"
        save_ring(str(ring_file), builder.to_ring_data(), cluster.cluster.secret_bytes)
        config_file = write_node_toml(manual, tmp_path / "node3.toml")
        args = argparse.Namespace(config=str(config_file), ring=str(ring_file),
                                  builder=str(work), type=None)
        assert await trio.to_thread.run_sync(ring_push.run, args) == 0
        for svc in cluster.services():
            assert svc.store.states["object"].version == version + 1
            assert svc.store.states["object"].builder
        assert "node3" in object_ring_devices(cfgs[1], cluster.cluster)
        assert service.store.states["object"].version == version + 1


def write_node_toml(cfg: NodeConfig, path: Path) -> Path:
    """The node file an operator would have for ``cfg`` (what the commands read)."""
    path.write_text(dump_toml({
        "cluster_file": cfg.cluster_file, "node_id": cfg.node_id, "ring_dir": str(cfg.rings_path),
        "internal": {"host": cfg.internal.host, "port": cfg.internal.port},
        "public": {"host": cfg.public.host, "port": 0},
        "storage": {"root": cfg.storage.root, "devices": cfg.storage.devices},
    }))
    return path


async def test_status_command_prints_the_membership_table(tmp_path, capsys):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i) for i in range(2)]
        for cfg in cfgs:
            cfg.membership.seeds = [cluster.seed(cfgs[0])]
            await cluster.start(nursery, cfg)
        await until(lambda: all(len(states(s)) == 2 for s in cluster.services()), "two members")
        config_file = write_node_toml(cfgs[1], tmp_path / "node1.toml")
        code = await trio.to_thread.run_sync(
            status.run, argparse.Namespace(config=str(config_file), json=False))
        out = capsys.readouterr().out
        assert code == 0
        lines = out.splitlines()
        assert "as seen by node1" in lines[0]
        row = next(line for line in lines if line.startswith("*"))
        assert "node1" in row and "alive" in row
        assert any("node0" in line and "alive" in line for line in lines)
        code = await trio.to_thread.run_sync(
            status.run, argparse.Namespace(config=str(config_file), json=True))
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and {m["node_id"] for m in doc["members"]} == {"node0", "node1"}


async def test_stranger_with_another_secret_is_never_admitted(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        cfgs = [cluster.config(i) for i in range(2)]
        stranger_cfg = cluster.config(2)
        # Same cluster id (a copied, edited file): only the secret differs.
        other = ClusterConfig(**{**cluster.cluster.__dict__, "secret": "ab" * 32})
        everyone = [cluster.seed(c) for c in (*cfgs, stranger_cfg)]
        for cfg in cfgs:
            cfg.membership.seeds = everyone
            await cluster.start(nursery, cfg)
        stranger_cfg.membership.seeds = everyone
        stranger = await cluster.start(nursery, stranger_cfg, other)
        await until(lambda: converged_ring_of(cluster, ["node0", "node1"]), "a ring for the two")
        await trio.sleep(10 * FAST["heartbeat_interval"])
        for node_id in ("node0", "node1"):
            assert "node2" not in states(cluster.nodes[node_id][1])
        assert set(states(stranger)) == {"node2"}
        assert object_ring_devices(cfgs[0], cluster.cluster) == {"node0", "node1"}
        assert stranger.store.states.get("object") is None or \
            stranger.store.states["object"].hash != cluster.nodes["node0"][1].store.states["object"].hash


def converged_ring_of(cluster: Cluster, node_ids: list[str]) -> bool:
    seen = {_tuple(cluster.nodes[n][1].store.states.get("object")) for n in node_ids}
    return len(seen) == 1 and None not in seen


async def test_two_stewards_after_a_partition_heal_converge_on_one_ring(tmp_path):
    async with running(tmp_path) as (cluster, nursery):
        # Two islands that cannot see each other each bootstrap their own ring.
        cfgs = [cluster.config(i, replicas=2) for i in range(4)]
        islands = [cfgs[:2], cfgs[2:]]
        for island in islands:
            for cfg in island:
                cfg.membership.seeds = [cluster.seed(island[0])]
                await cluster.start(nursery, cfg)
        for island in islands:
            ids = [c.node_id for c in island]
            await until(lambda: converged_ring_of(cluster, ids), f"island {ids} ring")
        a = cluster.nodes["node0"][1].store.states["object"]
        b = cluster.nodes["node2"][1].store.states["object"]
        assert a.hash != b.hash
        # The heal: a node that knows one member of each island.
        bridge = cluster.config(4, replicas=2)
        bridge.membership.seeds = [cluster.seed(cfgs[0]), cluster.seed(cfgs[2])]
        await cluster.start(nursery, bridge)
        everyone = {f"node{i}" for i in range(5)}
        await until(lambda: converged(cluster) and
                    object_ring_devices(cfgs[3], cluster.cluster) == everyone,
                    "one ring with every node", timeout=20)
        final = cluster.nodes["node0"][1].store.states["object"]
        assert final.version > max(a.version, b.version)
        assert len({svc.store.ring_path("object").read_bytes()
                    for svc in cluster.services()}) == 1
