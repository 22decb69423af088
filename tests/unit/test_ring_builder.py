"""RingBuilder: placement invariants, weights, moves, min_part_hours, determinism."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ring.builder import RingBuilder, row_lengths
from ring.devices import Device
from ring.errors import BuilderError, DeviceError
from ring.tiers import TierTree, water_fill

from .ring_layouts import make_builder

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_700_000_000


def zone_of(b: RingBuilder) -> np.ndarray:
    z = np.full(b.next_dev_id + 1, -1)
    for d in b.devices.values():
        z[d.id] = d.region * 1000 + d.zone
    return z


def assert_distinct_devices(b: RingBuilder) -> None:
    for r, n in enumerate(row_lengths(b.replicas, b.part_power)):
        assert (b.assign[r, :n] >= 0).all()
        assert (b.assign[r, n:] < 0).all()
    a = b.assign
    for r1 in range(a.shape[0]):
        for r2 in range(r1):
            both = (a[r1] >= 0) & (a[r2] >= 0)
            assert not (a[r1][both] == a[r2][both]).any()


layouts = st.fixed_dictionaries(
    {
        "part_power": st.integers(6, 10),
        "replicas": st.sampled_from([1, 2, 2.5, 3, 4]),
        "regions": st.integers(1, 3),
        "zones": st.integers(1, 4),
        "nodes_per_zone": st.integers(1, 3),
        "devs_per_node": st.integers(1, 3),
        "weights": st.lists(st.sampled_from([50.0, 100.0, 150.0, 300.0]), min_size=1, max_size=4).map(tuple),
        "seed": st.integers(0, 2**16),
    }
)


def build(params: dict) -> RingBuilder:
    p = dict(params)
    seed = p.pop("seed")
    b = make_builder(**p)
    assume(len(b.devices) >= np.ceil(b.replicas))
    b.rebalance(seed=seed, now=NOW)
    return b


@FAST
@given(layouts)
def test_every_partition_has_distinct_devices(params):
    b = build(params)
    assert_distinct_devices(b)
    b.validate()


@FAST
@given(layouts)
def test_zones_never_doubled_while_enough_zones(params):
    b = build(params)
    n_zones = params["regions"] * params["zones"]
    zone = zone_of(b)
    tree = TierTree.build(b.devices.values(), b.replicas, b.next_dev_id)
    # A zone may only hold two replicas of one partition if its weight share asks for it.
    if n_zones >= np.ceil(b.replicas) and (tree.cap[1][:-1] <= 1).all():
        a = b.assign
        for r1 in range(a.shape[0]):
            for r2 in range(r1):
                both = (a[r1] >= 0) & (a[r2] >= 0)
                assert not (zone[a[r1][both]] == zone[a[r2][both]]).any()
    assert b.get_dispersion() == 0.0


def test_equal_zones_spread_one_replica_each():
    b = make_builder(10, replicas=3, regions=1, zones=3, nodes_per_zone=2, devs_per_node=2)
    b.rebalance(seed=1, now=NOW)
    zone = zone_of(b)
    assert (np.sort(zone[b.assign], axis=0) == np.array([[1001], [1002], [1003]])).all()


def test_weights_honoured_within_one_percent():
    b = make_builder(12, regions=2, zones=3, nodes_per_zone=3, devs_per_node=2, weights=(100.0, 200.0, 300.0))
    r = b.rebalance(seed=5, now=NOW)
    assert r.balance < 1.0
    counts = b.part_counts()
    desired = b.desired_counts()
    for dev_id, want in desired.items():
        assert abs(counts[dev_id] - want) <= max(1.0, want * 0.01)
    heavy = [d.id for d in b.devices.values() if d.weight == 300.0]
    light = [d.id for d in b.devices.values() if d.weight == 100.0]
    assert np.mean([counts[i] for i in heavy]) == pytest.approx(3 * np.mean([counts[i] for i in light]), rel=0.02)


def test_fractional_replicas_fill_half_the_last_row():
    b = make_builder(8, replicas=2.5)
    r = b.rebalance(seed=1, now=NOW)
    assert b.assign.shape == (3, 256)
    assert (b.assign[2, :128] >= 0).all() and (b.assign[2, 128:] < 0).all()
    assert sum(b.part_counts().values()) == 640
    assert r.balance < 2.0


@FAST
@given(layouts, st.sampled_from(["add", "remove", "set_weight"]))
def test_moves_bounded_after_change(params, change):
    b = build(params)
    before = b.assign.copy()
    b.pretend_min_part_hours_passed()
    victim = sorted(b.devices)[0]
    if change == "add":
        new = b.add_device(Device(-1, 1, 1, "10.99.0.1", 6200, "new", 100.0))
        share = b.desired_counts()[new.id]
    elif change == "remove":
        share = b.part_counts()[victim]
        b.remove_device(victim)
        assume(len([d for d in b.devices.values() if d.weight > 0]) >= np.ceil(b.replicas))
    else:
        old_w = b.devices[victim].weight
        b.set_weight(victim, old_w * 2)
        share = abs(b.desired_counts()[victim] - b.part_counts()[victim])
    result = b.rebalance(seed=params["seed"] + 1, now=NOW + 10 * 3600)
    moved = int((before != b.assign).any(axis=0).sum())
    assert moved == result.parts_moved
    # Each moved partition moves one replica, so moves track the changed share;
    # the slack covers dispersion repairs that reweighting can make necessary.
    # With more replicas than nodes, dispersion and weight pull against each
    # other and one reweight can cascade (e.g. 4 replicas on 2 nodes weighted
    # 150:50 moved 3x the share): there only the one-replica rule below holds.
    nodes = params["regions"] * params["zones"] * params["nodes_per_zone"]
    if b.replicas <= nodes:
        assert moved <= share * 1.5 + 0.15 * b.parts + 2
    assert ((before != b.assign).sum(axis=0) <= 1).all() or change == "remove"
    assert_distinct_devices(b)


def test_add_one_device_moves_only_its_share():
    b = make_builder(12, regions=2, zones=5, nodes_per_zone=3, devs_per_node=4)
    b.rebalance(seed=1, now=NOW)
    before = b.assign.copy()
    b.pretend_min_part_hours_passed()
    new = b.add_device(Device(-1, 1, 1, "10.77.0.1", 6200, "d0", 100.0))
    r = b.rebalance(seed=2, now=NOW + 3600)
    share = b.desired_counts()[new.id]
    assert r.parts_moved <= np.ceil(share) + 1
    assert b.part_counts()[new.id] == pytest.approx(share, abs=1)
    assert set(np.unique(b.assign[before != b.assign]).tolist()) == {new.id}


@FAST
@given(layouts)
def test_min_part_hours_respected(params):
    b = build(params)
    before = b.assign.copy()
    # Not pretending hours passed: a weight change must not move anything yet.
    dev = sorted(b.devices)[0]
    b.set_weight(dev, b.devices[dev].weight * 3)
    r = b.rebalance(seed=1, now=NOW + 1800)
    assert not r.changed
    assert (b.assign == before).all()
    # After the hours pass, at most one replica of any partition moves at once.
    r = b.rebalance(seed=1, now=NOW + 3601)
    assert ((before != b.assign).sum(axis=0) <= 1).all()


def test_removed_device_is_emptied_despite_min_part_hours():
    b = make_builder(9)
    b.rebalance(seed=1, now=NOW)
    b.remove_device(3)
    b.rebalance(seed=1, now=NOW + 60)
    assert 3 not in b.devices
    assert not (b.assign == 3).any()
    assert_distinct_devices(b)


@FAST
@given(layouts)
def test_same_seed_same_ring(params):
    a = build(params)
    b = build(params)
    assert (a.assign == b.assign).all()


def test_different_seed_different_ring():
    a = make_builder(10)
    b = make_builder(10)
    a.rebalance(seed=1, now=NOW)
    b.rebalance(seed=2, now=NOW)
    assert (a.assign != b.assign).any()


def test_version_bumps_only_on_change():
    b = make_builder(8)
    assert b.version == 0
    b.rebalance(seed=1, now=NOW)
    assert b.version == 1
    r = b.rebalance(seed=1, now=NOW + 10)
    assert not r.changed and b.version == 1


def test_increase_part_power_keeps_placement():
    b = make_builder(8)
    b.rebalance(seed=1, now=NOW)
    old = b.assign.copy()
    b.increase_part_power()
    assert b.part_power == 9
    for p in range(256):
        assert (b.assign[:, 2 * p] == old[:, p]).all()
        assert (b.assign[:, 2 * p + 1] == old[:, p]).all()
    b.validate()


def test_too_few_devices():
    b = RingBuilder(6, 3, 1)
    b.add_device(Device(-1, 1, 1, "10.0.0.1", 6200, "d1", 100.0))
    b.add_device(Device(-1, 1, 1, "10.0.0.1", 6200, "d2", 100.0))
    with pytest.raises(BuilderError):
        b.rebalance()


def test_duplicate_device_rejected():
    b = RingBuilder(6, 3, 1)
    b.add_device(Device(-1, 1, 1, "10.0.0.1", 6200, "d1", 100.0))
    with pytest.raises(DeviceError):
        b.add_device(Device(-1, 2, 2, "10.0.0.1", 6200, "d1", 50.0))


def test_builder_round_trip(tmp_path):
    b = make_builder(8)
    b.rebalance(seed=1, now=NOW)
    b.remove_device(2)
    path = tmp_path / "object.builder"
    b.save(str(path))
    c = RingBuilder.load(str(path))
    assert (c.assign == b.assign).all()
    assert (c.last_moved == b.last_moved).all()
    assert c.devices == b.devices
    assert c.pending_removal == {2}
    assert (c.builder_id, c.version, c.replicas, c.min_part_hours) == (b.builder_id, b.version, b.replicas, b.min_part_hours)


def test_water_fill_caps_and_redistributes():
    shares = water_fill(3.0, np.array([10.0, 1.0, 1.0]), np.array([1.0, 5.0, 5.0]))
    assert shares == pytest.approx([1.0, 1.0, 1.0])
    shares = water_fill(2.0, np.array([1.0, 3.0]), np.array([9.0, 9.0]))
    assert shares == pytest.approx([0.5, 1.5])
