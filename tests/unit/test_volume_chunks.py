"""Volume pieces that need no cluster: finding data chunks in sparse files, the disk XML, parallel chunk work."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
import trio

from compute_agent.domain_xml import volume_disk_xml
from compute_agent.volumes import CHUNK_SIZE, VolumeError, _data_chunks, _in_parallel, is_zero


def sparse_file(path, size: int, writes: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)


def test_data_chunks_skip_holes(tmp_path):
    path = tmp_path / "vol"
    size = 64 * CHUNK_SIZE
    sparse_file(path, size, {0: b"a", 5 * CHUNK_SIZE - 1: b"bc", 40 * CHUNK_SIZE + 7: os.urandom(CHUNK_SIZE)})
    found = _data_chunks(path, size)
    # file systems allocate in blocks, so a neighbour may count as data; never a chunk is missed
    assert {0, 4, 5, 40, 41} <= set(found)
    assert len(found) < 10 and found == sorted(set(found))


def test_data_chunks_of_an_empty_volume(tmp_path):
    path = tmp_path / "vol"
    sparse_file(path, 1 << 30, {})
    assert _data_chunks(path, 1 << 30) == []


def test_is_zero():
    assert is_zero(bytes(CHUNK_SIZE))
    assert not is_zero(bytes(CHUNK_SIZE - 1) + b"\1")
    assert not is_zero(b"\1" + bytes(10))


def test_volume_disk_xml_is_a_raw_virtio_disk():
    disk = ET.fromstring(volume_disk_xml("/srv/v/abc", "vdb", "0123456789abcdef0123456789"))
    assert disk.get("device") == "disk" and disk.get("type") == "file"
    assert disk.find("driver").get("type") == "raw" and disk.find("driver").get("cache") == "none"
    assert disk.find("source").get("file") == "/srv/v/abc"
    assert disk.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert disk.find("serial").text == "0123456789abcdef0123"


async def test_in_parallel_runs_everything_and_raises_the_failure_itself():
    done: list[int] = []

    async def ok(i: int) -> None:
        await trio.sleep(0.001 * (i % 3))
        done.append(i)
    await _in_parallel(list(range(20)), ok)
    assert sorted(done) == list(range(20))

    async def bad(i: int) -> None:
        if i == 7:
            raise VolumeError("chunk 7 is corrupt")
        await trio.sleep(0.01)
    with pytest.raises(VolumeError, match="chunk 7"):
        await _in_parallel(list(range(20)), bad)
