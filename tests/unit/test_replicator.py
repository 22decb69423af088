"""The pieces of replication that need no network: on-disk decisions, SQLite sync, audits, pacing.

Real files in ``tmp_path`` and real SQLite databases; the network side is
covered by the integration tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest
import trio
import trio.testing

from node.storage import diskfile
from node.storage import replication_db as rdb
from node.storage.db import ConnectionPool
from node.storage.diskfile import ObjectLocation, ObjectWriter
from node.storage.paths import hash_path
from node.storage.replication_objects import (PushedFile, ReplicationError, check_metadata, inventory,
                                              parse_inventory, remove_reverted, wanted)
from node.storage.timestamp import Timestamp
from replicator.auditor import DeviceAudit, check_database
from replicator.expirer import expired_objects
from replicator.ratelimit import RateLimiter
from replicator.walk import objects

PREFIX, SUFFIX = "pre", "suf"
PART = 7


def location(device, name: str) -> ObjectLocation:
    return ObjectLocation(device, PART, hash_path(PREFIX, SUFFIX, "a", "c", name))


def put(device, name: str, body: bytes, ts: float, **extra: str) -> ObjectLocation:
    loc = location(device, name)
    writer = ObjectWriter(loc)
    writer.write([body])
    writer.hash([body])
    t = Timestamp(ts)
    writer.commit(t, {"name": f"/a/c/{name}", "X-Timestamp": t.internal, "Content-Type": "text/plain",
                      "ETag": writer.md5.hexdigest(), "Content-Length": str(len(body)), **extra})
    return loc


def tombstone(device, name: str, ts: float) -> None:
    t = Timestamp(ts)
    diskfile.write_marker(location(device, name), t, "ts", {"name": f"/a/c/{name}", "X-Timestamp": t.internal})


@pytest.fixture
def devices(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


def part_dir(device):
    return device / "objects" / str(PART)


# ---- which files a peer wants ------------------------------------------------

def test_a_peer_wants_what_it_lacks_and_nothing_a_newer_event_hides(devices):
    a, b = devices
    put(a, "only-a", b"1", 100)
    put(a, "old-data", b"2", 100)
    tombstone(b, "old-data", 200)          # b deleted it later: a's data must not come back
    put(a, "same", b"3", 100)
    put(b, "same", b"3", 100)
    put(a, "newer-on-a", b"new", 300)
    put(b, "newer-on-a", b"old", 100)
    offered = inventory(part_dir(a))
    want = wanted(part_dir(b), offered)
    names = {h: n for h, n in offered.items()}
    by_object = {name: want.get(location(a, name).hash) for name in ("only-a", "old-data", "same", "newer-on-a")}
    assert by_object == {"only-a": names[location(a, "only-a").hash], "old-data": None, "same": None,
                         "newer-on-a": [f"{Timestamp(300).internal}.data"]}


def test_inventory_from_the_wire_is_validated():
    with pytest.raises(ReplicationError):
        parse_inventory({"../../etc": ["1.data"]})
    with pytest.raises(ReplicationError):
        parse_inventory({"0" * 32: ["../x.data"]})
    with pytest.raises(ReplicationError):
        parse_inventory({"0" * 32: ["100.data"]})  # not the canonical spelling
    assert parse_inventory({"0" * 32: [f"{Timestamp(5).internal}.ts"]})


# ---- receiving a pushed file ---------------------------------------------------

def _push(device, loc_from: ObjectLocation, name: str, body: bytes) -> None:
    meta = diskfile.read_metadata(loc_from.hash_dir / name)
    meta = check_metadata(meta, loc_from.hash, Timestamp(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1],
                          PREFIX, SUFFIX)
    pushed = PushedFile(ObjectLocation(device, PART, loc_from.hash), name, meta)
    assert pushed.start()
    pushed.write([body])
    pushed.commit()


def test_a_pushed_file_lands_with_its_own_name_and_metadata(devices):
    a, b = devices
    src = put(a, "obj", b"payload", 123.5, **{"X-Object-Meta-Color": "blue"})
    (name,) = os.listdir(src.hash_dir)
    _push(b, src, name, b"payload")
    dst = ObjectLocation(b, PART, src.hash)
    assert os.listdir(dst.hash_dir) == [name]
    obj = diskfile.open_object(dst, diskfile.read_state(dst))
    try:
        assert obj.metadata["X-Object-Meta-Color"] == "blue"
        assert obj.pread(0, 100) == b"payload"
    finally:
        obj.close()
    # Now it has it: the same file is no longer wanted.
    assert not PushedFile(dst, name, {}).start()


def test_corrupt_bytes_are_refused_and_leave_nothing_behind(devices):
    a, b = devices
    src = put(a, "obj", b"payload", 123.5)
    (name,) = os.listdir(src.hash_dir)
    with pytest.raises(ReplicationError) as err:
        _push(b, src, name, b"paYload")
    assert err.value.status == 422
    assert diskfile.read_state(ObjectLocation(b, PART, src.hash)).data is None
    assert os.listdir(b / "tmp") == []


def test_metadata_must_name_the_pushed_hash(devices):
    a, _ = devices
    src = put(a, "obj", b"x", 10)
    (name,) = os.listdir(src.hash_dir)
    meta = diskfile.read_metadata(src.hash_dir / name)
    with pytest.raises(ReplicationError):
        check_metadata({**meta, "name": "/a/c/other"}, src.hash, Timestamp(10), "data", PREFIX, SUFFIX)
    with pytest.raises(ReplicationError):
        check_metadata({**meta, "X-Timestamp": Timestamp(11).internal}, src.hash, Timestamp(10), "data",
                       PREFIX, SUFFIX)


def test_a_reverted_handoff_keeps_only_what_arrived_after_its_inventory(devices):
    a, _ = devices
    put(a, "one", b"1", 100)
    put(a, "two", b"2", 100)
    synced = inventory(part_dir(a))
    put(a, "two", b"newer", 200)  # written while the revert was under way (drops the old one)
    assert remove_reverted(part_dir(a), synced) == 1
    left = inventory(part_dir(a))
    assert left == {location(a, "two").hash: [f"{Timestamp(200).internal}.data"]}
    assert remove_reverted(part_dir(a), left) == 1
    assert not part_dir(a).exists()


# ---- databases -------------------------------------------------------------------

def container_db(device, pool, name="c"):
    broker = rdb.make_broker("container", pool, device, PART, hash_path(PREFIX, SUFFIX, "a", name))
    broker.create("a", name, Timestamp(50))
    return broker


def rows(broker):
    return {r["name"]: (r["created_at"], r["deleted"]) for r in broker.rows_since(0, 10_000)}


def test_rows_since_a_sync_point_and_the_point_moves(devices):
    a, b = devices
    pool = ConnectionPool()
    src, dst = container_db(a, pool), container_db(b, pool)
    for i in range(5):
        src.put_object(f"o{i}", Timestamp(100 + i).internal, i, "text/plain", "e", False)
    src.update_metadata({"X-Container-Meta-Kind": "docs"}, Timestamp(60))
    state = rdb.local_state(src)
    answer = rdb.receive_sync(dst, rdb.parse_state(json.loads(json.dumps(state))))
    assert answer["point"] == 0
    batch = src.rows_since(answer["point"], 3)
    rdb.receive_rows(dst, state["id"], rdb.parse_rows("container", batch), batch[-1]["ROWID"])
    assert rdb.receive_sync(dst, state)["point"] == batch[-1]["ROWID"]
    rest = src.rows_since(batch[-1]["ROWID"], 100)
    rdb.receive_rows(dst, state["id"], rest, rest[-1]["ROWID"])
    assert rows(dst) == rows(src)
    assert dst.info()["object_count"] == 5
    assert dst.info()["metadata"]["X-Container-Meta-Kind"] == ["docs", Timestamp(60).internal]
    pool.close_all()


def test_bad_rows_are_refused():
    with pytest.raises(ReplicationError):
        rdb.parse_rows("container", [{"name": "x", "created_at": "soon", "size": 1, "content_type": "t",
                                      "etag": "e", "deleted": 0}])
    with pytest.raises(ReplicationError):
        rdb.parse_rows("account", [{"name": "x"}])


def test_a_whole_copy_is_installed_with_its_own_id_or_merged(devices, tmp_path):
    a, b = devices
    pool = ConnectionPool()
    src = container_db(a, pool)
    for i in range(3):
        src.put_object(f"o{i}", Timestamp(100 + i).internal, 1, "text/plain", "e", False)
    state = rdb.local_state(src)
    snap = a / "snap.db"
    max_row = rdb.snapshot(src, snap)
    missing = rdb.make_broker("container", pool, b, PART, src.hash)
    assert rdb.receive_copy(missing, snap, state["id"], max_row, PREFIX, SUFFIX) == "installed"
    assert rows(missing) == rows(src)
    assert rdb.local_state(missing)["id"] != state["id"]
    assert rdb.receive_sync(missing, state)["point"] == max_row  # nothing to resend

    # A database that exists gets the copy merged into it instead.
    other = container_db(b, pool, "c2")
    other_src = container_db(a, pool, "c2")
    other.put_object("mine", Timestamp(500).internal, 1, "text/plain", "e", False)
    other_src.put_object("theirs", Timestamp(400).internal, 1, "text/plain", "e", False)
    snap2 = a / "snap2.db"
    rdb.snapshot(other_src, snap2)
    assert rdb.receive_copy(other, snap2, "sender", 1, PREFIX, SUFFIX) == "merged"
    assert set(rows(other)) == {"mine", "theirs"}

    # A copy of another database is refused.
    snap3 = a / "snap3.db"
    rdb.snapshot(src, snap3)
    with pytest.raises(ReplicationError):
        rdb.receive_copy(other, snap3, "sender", 1, PREFIX, SUFFIX)
    pool.close_all()


def test_damaged_database_is_found(tmp_path):
    good = tmp_path / "good.db"
    conn = sqlite3.connect(good)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(200)])
    conn.commit()
    conn.close()
    assert check_database(good) is None
    data = bytearray(good.read_bytes())
    data[4096:4096 + 12] = b"\xff" * 12  # scribble over the table's root page header
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    assert check_database(bad) is not None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    assert check_database(garbage) is not None


# ---- auditor and expirer walks ------------------------------------------------------

def test_the_audit_quarantines_only_objects_whose_bytes_rotted(devices):
    a, _ = devices
    good = put(a, "good", b"g" * 300_000, 10)
    bad = put(a, "bad", b"b" * 300_000, 10)
    (name,) = os.listdir(bad.hash_dir)
    with open(bad.hash_dir / name, "r+b") as f:
        f.seek(200_000)
        f.write(b"X")
    audit = DeviceAudit(a)
    steps = 0
    while not audit.finished:
        audit.step(64 << 10)  # many small steps: big objects span thread hops
        steps += 1
    assert steps > 8
    assert audit.checked == 2
    assert len(audit.quarantined) == 1
    assert not bad.hash_dir.exists()
    assert (a / "quarantined" / "objects" / bad.hash / name).exists()
    assert good.hash_dir.exists()
    moved = (a / "quarantined" / "objects" / bad.hash / name).read_bytes()
    assert hashlib.md5(moved).hexdigest() != hashlib.md5(b"b" * 300_000).hexdigest()


def test_the_expiry_sweep_finds_objects_past_their_delete_at(devices):
    a, _ = devices
    put(a, "past", b"1", 10, **{"X-Delete-At": "1000"})
    put(a, "future", b"2", 10, **{"X-Delete-At": "5000"})
    put(a, "forever", b"3", 10)
    found, seen, done = expired_objects(objects(a), a, now=2000.0)
    assert done and seen == 3
    assert [(name, at) for _, name, at in found] == [("/a/c/past", 1000)]


# ---- pacing -----------------------------------------------------------------------

async def test_rate_limiter_paces_concurrent_consumers(autojump_clock):
    limiter = RateLimiter(1_000_000, burst=0.5)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(limiter.consume, 1_000_000)
    elapsed = trio.current_time() - start
    assert 3.4 <= elapsed <= 4.0  # 4 MB at 1 MB/s, less the half-second burst
    unlimited = RateLimiter(0)
    before = trio.current_time()
    await unlimited.consume(10**12)
    assert trio.current_time() == before


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)
