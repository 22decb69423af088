"""Small pieces of the storage servers: timestamps, paths, ranges, preconditions, file choice, DB pool."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from node.storage.conditional import evaluate_preconditions, parse_range, satisfiable_ranges
from node.storage.db import ConnectionPool
from node.storage.diskfile import gather
from node.storage.paths import BadPath, hash_path, parse_replicate_path, parse_storage_path
from node.storage.timestamp import Timestamp


def test_timestamp_formats_and_order() -> None:
    t = Timestamp("1700000000.123456")
    assert t.normal == "1700000000.12346" and t.internal == t.normal
    assert Timestamp(1.5).normal == "0000000001.50000"
    off = Timestamp("1700000000.12346_000000000000000a")
    assert off.offset == 10 and off.internal == "1700000000.12346_000000000000000a"
    assert off > t and Timestamp(off.internal) == off
    assert sorted([off.internal, t.internal, Timestamp(2).internal]) == [
        Timestamp(2).internal, t.internal, off.internal]
    assert Timestamp(1700000000).isoformat == "2023-11-14T22:13:20.000000"
    assert Timestamp("1700000000.5").http_date == "Tue, 14 Nov 2023 22:13:21 GMT"


@pytest.mark.parametrize("bad", ["", "x", "-1", "nan", "inf", "1e10", "1_", "1_xyz", "1_" + "f" * 17])
def test_timestamp_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        Timestamp(bad)


def test_paths() -> None:
    sp = parse_storage_path("/d1/7/a/c/o/with/slashes")
    assert (sp.device, sp.partition, sp.account, sp.container, sp.obj, sp.level) == (
        "d1", 7, "a", "c", "o/with/slashes", "object")
    assert parse_storage_path("/d1/7/a").level == "account"
    for bad in ["/d1/7", "/d1/x/a", "/../7/a", "/d1/7/a/c/../o", "/d1/7/a\x00", "/d1/7/a//o"]:
        with pytest.raises(BadPath):
            parse_storage_path(bad)
    assert parse_replicate_path("/d1/3/abc-fff") == ("d1", 3, ["abc", "fff"])
    with pytest.raises(BadPath):
        parse_replicate_path("/d1/3/abc-g00")
    # Swift's formula: md5(prefix + "/a/c/o" + suffix)
    assert hash_path("pre", "suf", "a", "c", "o") == hashlib.md5(b"pre/a/c/osuf").hexdigest()


def test_ranges() -> None:
    assert parse_range("bytes=0-9,20-,-5") == [(0, 9), (20, None), (None, 5)]
    for ignored in [None, "", "bytes", "bits=0-1", "bytes=2-1", "bytes=a-b", "bytes=-0", "bytes=-"]:
        assert parse_range(ignored) is None
    assert satisfiable_ranges([(0, 9), (20, None), (None, 5)], 100) == [(0, 10), (20, 100), (95, 100)]
    assert satisfiable_ranges([(100, None), (200, 300)], 100) == []
    assert satisfiable_ranges([(None, 500)], 100) == [(0, 100)]


def test_preconditions() -> None:
    ts = Timestamp(1_000_000.5)  # Last-Modified rounds up to 1000001

    def run(method: str = "GET", exists: bool = True, **h: str) -> int | None:
        headers = {k.replace("_", "-").lower(): v for k, v in h.items()}
        return evaluate_preconditions(headers.get, method, exists, "abc", ts)

    assert run(If_Match='"abc"') is None and run(If_Match='"x"') == 412
    assert run(If_Match="*", exists=False) == 412
    assert run(If_None_Match='W/"abc"') == 304 and run("PUT", If_None_Match="*") == 412
    assert run(If_Modified_Since="Mon, 12 Jan 1970 13:46:41 GMT") == 304  # == 1000001
    assert run(If_Modified_Since="Mon, 12 Jan 1970 13:46:40 GMT") is None
    assert run("PUT", If_Modified_Since="Mon, 12 Jan 1970 13:46:41 GMT") is None
    assert run(If_Unmodified_Since="Mon, 12 Jan 1970 13:46:40 GMT") == 412


def test_gather_picks_newest_and_obsoletes() -> None:
    t = [Timestamp(1000 + i).internal for i in range(6)]
    st = gather([f"{t[0]}.data", f"{t[1]}.meta", f"{t[2]}.data", f"{t[3]}.meta", f"{t[4]}.meta",
                 f"{t[2]}.data.json", f"{t[0]}.data.json", "junk"])
    assert st.data == (Timestamp(t[2]), f"{t[2]}.data")
    assert st.meta == (Timestamp(t[4]), f"{t[4]}.meta")
    assert sorted(st.obsolete) == sorted([f"{t[0]}.data", f"{t[1]}.meta", f"{t[3]}.meta",
                                          f"{t[0]}.data.json"])
    st = gather([f"{t[1]}.data", f"{t[2]}.ts", f"{t[3]}.meta", f"{t[5]}.data.json"])
    assert st.data is None and st.tombstone == (Timestamp(t[2]), f"{t[2]}.ts")
    # the .meta is moot after a delete; a sidecar newer than everything may be in flight
    assert sorted(st.obsolete) == sorted([f"{t[1]}.data", f"{t[3]}.meta"])
    assert gather([]).newest is None


def test_connection_pool_follows_the_file_not_the_descriptor(tmp_path):
    """A database the replicator removed or replaced is never written through a stale connection."""
    def make(path, value):
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.commit()
        conn.close()

    path = tmp_path / "c.db"
    make(path, "old")
    pool = ConnectionPool()
    with pool.connection(path) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("old",)]
    make(tmp_path / "new.db", "new")
    (tmp_path / "new.db").replace(path)  # e.g. a whole-database copy from a peer
    with pool.connection(path) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("new",)]
    path.unlink()  # e.g. a reverted handoff
    with pytest.raises(FileNotFoundError):
        with pool.connection(path):
            pass
    pool.close_all()
