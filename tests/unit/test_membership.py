"""Membership table, ring ordering, steward choice and the ring store's checks."""

from __future__ import annotations

import pytest

from node.autojoin import device_weight, extend, missing_devices, steward_for
from node.config import ConfigError, Membership
from node.discovery import instance_name, txt_record
from node.gossip_files import RingRefused, RingStore, frame_builder, ring_matches_builder, unframe_builder
from node.membership import (
    ALIVE, DEAD, SUSPECT, MembershipTable, NodeInfo, RingState, check_membership_config,
    check_reply_mac, cluster_hash, newest, reply_mac,
)
from ring.builder import RingBuilder
from ring.errors import RingSignatureError
from ring.ringfile import load_ring, serialize_ring

SECRET = b"s" * 32
GIB = 1 << 30


def info(node_id: str, *, port: int = 6200, rings: dict | None = None, auto_join: bool = True,
         devices: int = 2, capacity: int = 100 * GIB, zone: int = 1) -> NodeInfo:
    return NodeInfo(node_id=node_id, cluster="c" * 16, host=f"10.9.0.{int(node_id[-1]) + 1}",
                    internal_port=port, public_host="10.9.0.1", public_port=8080, region=1,
                    zone=zone, auto_join=auto_join,
                    devices=[{"device": f"d{i + 1}", "capacity": capacity} for i in range(devices)],
                    rings=rings or {})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_states_follow_silence_and_recover_when_heard():
    clock = Clock()
    table = MembershipTable("me", suspect_after=3, dead_after=10, forget_after=100, clock=clock)
    assert table.heard(info("n1")) is True
    assert table.heard(info("n1")) is False  # already alive: not news
    assert table.state_of("n1") == ALIVE
    clock.now += 2.9
    assert table.state_of("n1") == ALIVE
    clock.now += 0.2
    assert table.state_of("n1") == SUSPECT
    clock.now += 7
    assert table.state_of("n1") == DEAD
    assert table.alive() == []
    assert table.heard(info("n1")) is True
    assert table.state_of("n1") == ALIVE
    clock.now += 101
    assert table.members() == []
    assert table.state_of("n1") is None


def test_a_node_never_lists_itself_as_peer_and_snapshot_puts_it_first():
    clock = Clock()
    table = MembershipTable("n0", 3, 10, clock=clock)
    assert table.heard(info("n0")) is False
    table.heard(info("n2"))
    table.heard(info("n1"))
    clock.now += 4
    rows = table.snapshot(info("n0"))
    assert [(r["node_id"], r["state"], r["self"]) for r in rows] == [
        ("n0", ALIVE, True), ("n1", SUSPECT, False), ("n2", SUSPECT, False)]
    assert rows[1]["last_heard"] == 4.0


def test_ring_order_is_version_then_hash():
    low, high = RingState(3, "aa"), RingState(3, "ab")
    assert newest([low, None, high]).hash == "ab"
    assert newest([high, low]).hash == "ab"
    assert newest([RingState(4, "00"), high]).version == 4
    assert newest([None, None]) is None


def test_node_info_round_trips_and_rejects_garbage():
    original = info("n1", rings={"object": RingState(7, "f" * 32, True)})
    parsed = NodeInfo.from_json(original.to_json())
    assert parsed == original
    assert parsed.capacity == 200 * GIB
    doc = original.to_json()
    doc["rings"]["bogus"] = {"version": 1, "hash": "x"}
    doc["rings"]["account"] = "not a state"
    assert set(NodeInfo.from_json(doc).rings) == {"object"}
    for bad in ([], {"node_id": "x"}, {**original.to_json(), "internal_port": "many"},
                {**original.to_json(), "internal_port": 0},
                {**original.to_json(), "devices": [{"device": "d1"}]}):
        with pytest.raises(ValueError):
            NodeInfo.from_json(bad)


def test_cluster_hash_names_the_cluster_but_not_the_secret():
    assert cluster_hash("a") == cluster_hash("a") != cluster_hash("b")
    assert len(cluster_hash("a")) == 16


def test_reply_mac_binds_challenge_body_and_secret():
    mac = reply_mac(SECRET, "c1", b"body")
    assert check_reply_mac(SECRET, "c1", b"body", mac)
    assert not check_reply_mac(SECRET, "c2", b"body", mac)
    assert not check_reply_mac(SECRET, "c1", b"bodY", mac)
    assert not check_reply_mac(b"other", "c1", b"body", mac)
    assert not check_reply_mac(SECRET, "c1", b"body", None)


@pytest.mark.parametrize("changes", [
    {"heartbeat_interval": 0}, {"suspect_after": 0.5}, {"dead_after": 2.0},
    {"seeds": ["nohost"]}, {"seeds": ["h:99999"]}, {"seeds": "h:1"}, {"replicas": 0.5},
    {"part_power": 0}, {"announce_interval": 0},
])
def test_membership_config_refuses_nonsense(changes):
    with pytest.raises(ConfigError):
        check_membership_config(Membership(**changes))


def test_membership_config_defaults_are_valid():
    check_membership_config(Membership(seeds=["10.0.0.1:6200", "[fd00::1]:6200"]))


def test_txt_record_fits_dns_strings_and_names_are_dns_safe():
    big = info("n1", rings={t: RingState(2**40, "f" * 32, True)
                            for t in ("account", "container", "object")})
    big.node_id = "x" * 200
    for key, value in txt_record(big).items():
        if key != "id":
            assert len(key) + 1 + len(value) < 255
    assert txt_record(big)["ring.object"] == f"{2**40}:{'f' * 16}:1"
    name = instance_name("10.0.0.7:6200", "c1")
    assert name.startswith("10-0-0-7-6200-") and len(name) <= 63
    assert instance_name("a:1", "c1") != instance_name("a-1", "c1")
    assert instance_name("node1", "c1") != instance_name("node1", "c2")


def test_steward_is_lowest_alive_auto_join_holder_of_the_newest_builder():
    new = RingState(5, "bb", True)
    members = [
        info("n0", rings={"object": RingState(4, "ff", True)}),   # older ring
        info("n1", rings={"object": RingState(5, "bb", False)}),  # newest ring, no builder
        info("n2", rings={"object": new}, auto_join=False),       # opted out
        info("n3", rings={"object": new}),
        info("n4", rings={"object": new}),
    ]
    assert steward_for("object", members) == "n3"
    assert steward_for("account", members) == "n0"  # nobody has one: lowest joiner bootstraps
    assert steward_for("object", [members[1], members[2]]) is None


def _builder_with(nodes: list[NodeInfo]) -> RingBuilder:
    builder = RingBuilder(6, 2, 1)
    for dev in missing_devices(builder, nodes):
        builder.add_device(dev)
    builder.rebalance(seed=1)
    return builder


def test_missing_devices_takes_weight_from_capacity_and_skips_known_or_empty():
    n1, n2 = info("n1", capacity=50 * GIB), info("n2", zone=2, capacity=0)
    builder = _builder_with([info("n0"), info("n3")])
    devs = missing_devices(builder, [info("n0"), n1, n2])
    assert [(d.node_id, d.device, d.weight) for d in devs] == [("n1", "d1", 50.0), ("n1", "d2", 50.0)]
    assert device_weight(1) == 0.01


def test_extend_bumps_the_version_even_when_min_part_hours_holds_partitions_back():
    builder = _builder_with([info("n0"), info("n1")])
    assert builder.version == 1
    added = extend(builder, [info("n0"), info("n1"), info("n2")], force_rebalance=False)
    assert [d.node_id for d in added] == ["n2", "n2"]
    assert builder.version == 2
    assert {d.node_id for d in builder.devices.values()} == {"n0", "n1", "n2"}
    # Nothing new and balance is fine: no change, no new version.
    assert extend(builder, [info("n2")], force_rebalance=False) == []
    assert builder.version == 2


def _ring_bytes(builder: RingBuilder, secret: bytes = SECRET) -> bytes:
    return serialize_ring(builder.to_ring_data(), secret)


async def test_store_installs_only_newer_signed_rings(tmp_path):
    store = RingStore(tmp_path / "rings", SECRET)
    builder = _builder_with([info("n0"), info("n1")])
    v1 = _ring_bytes(builder)
    assert (await store.install_ring("object", v1)).version == 1
    with pytest.raises(RingRefused) as exc:
        await store.install_ring("object", v1)
    assert exc.value.status == 409
    tampered = bytearray(v1)
    tampered[20] ^= 1
    for bad in (bytes(tampered), _ring_bytes(builder, b"other"), b"", b"PSRING1\n" + b"x" * 40):
        with pytest.raises(RingRefused) as exc:
            await store.install_ring("object", bad)
        assert exc.value.status == 422
    assert (tmp_path / "rings" / "object.ring.gz").read_bytes() == v1
    extend(builder, [info("n2")], force_rebalance=False)
    v2 = _ring_bytes(builder)
    assert (await store.install_ring("object", v2)).version == 2
    assert load_ring(str(tmp_path / "rings" / "object.ring.gz"), SECRET).version == 2
    assert [p.name for p in (tmp_path / "rings").iterdir()] == ["object.ring.gz"]


async def test_store_takes_a_builder_only_if_it_made_the_ring_held(tmp_path):
    store = RingStore(tmp_path / "rings", SECRET)
    builder = _builder_with([info("n0"), info("n1")])
    (tmp_path / "b").mkdir()
    builder.save(str(tmp_path / "b" / "object.builder"))
    raw = (tmp_path / "b" / "object.builder").read_bytes()
    with pytest.raises(RingRefused) as exc:
        await store.install_builder("object", frame_builder(SECRET, raw))
    assert exc.value.status == 409  # no ring yet
    await store.install_ring("object", _ring_bytes(builder))
    assert store.states["object"].builder is False
    with pytest.raises(RingRefused) as exc:
        await store.install_builder("object", frame_builder(b"other", raw))
    assert exc.value.status == 422
    other = _builder_with([info("n0"), info("n2")])
    other.save(str(tmp_path / "b" / "other.builder"))
    with pytest.raises(RingRefused) as exc:
        await store.install_builder("object", frame_builder(
            SECRET, (tmp_path / "b" / "other.builder").read_bytes()))
    assert exc.value.status == 409
    assert not store.builder_path("object").exists()
    await store.install_builder("object", frame_builder(SECRET, raw))
    assert store.states["object"].builder is True
    assert (await store.load_builder("object")).builder_id == builder.builder_id
    assert unframe_builder(SECRET, await store.read_builder("object")) == raw
    with pytest.raises(RingSignatureError):
        unframe_builder(b"other", frame_builder(SECRET, raw))


async def test_store_notices_operator_changes_and_distrusts_bad_files(tmp_path):
    store = RingStore(tmp_path, SECRET)
    assert await store.refresh() == []
    builder = _builder_with([info("n0"), info("n1")])
    data = _ring_bytes(builder)
    (tmp_path / "object.ring.gz").write_bytes(data)
    assert await store.refresh() == ["object"]
    assert store.states["object"].version == 1 and not store.states["object"].builder
    builder.save(str(tmp_path / "object.builder"))
    assert await store.refresh() == ["object"]
    assert store.states["object"].builder
    assert await store.refresh() == []
    (tmp_path / "object.ring.gz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert await store.refresh() == ["object"]
    assert "object" not in store.states


async def test_steward_write_refuses_to_go_backwards(tmp_path):
    store = RingStore(tmp_path, SECRET)
    builder = _builder_with([info("n0"), info("n1")])
    state = await store.write_from_builder("object", builder)
    assert state.builder and state.version == 1
    assert ring_matches_builder(load_ring(str(tmp_path / "object.ring.gz"), SECRET), builder)
    with pytest.raises(RingRefused):
        await store.write_from_builder("object", builder)
