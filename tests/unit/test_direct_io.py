"""Large-object I/O past the page cache (node.storage.direct_io), on real files."""

from __future__ import annotations

import errno
import os
import random

import pytest

from node.storage import direct_io
from node.storage.direct_io import ALIGN, STAGE_SIZE, AlignedReader, StagedWriter


def write_staged(path, pieces: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer = StagedWriter.open(fd)
        assert writer is not None, "this filesystem refuses O_DIRECT"
        try:
            for piece in pieces:
                writer.write(piece)
            writer.finish()
        finally:
            writer.close()
        os.fsync(fd)
    finally:
        os.close(fd)


def pieces_of(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 17, ALIGN - 1, ALIGN, 65536, STAGE_SIZE + 3])
        out.append(data[pos:pos + n])
        pos += n
    return out


@pytest.mark.parametrize("size", [0, 1, ALIGN, ALIGN + 1, STAGE_SIZE, 3 * STAGE_SIZE + 12345])
def test_staged_writes_and_aligned_reads_are_byte_exact(tmp_path, size) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    path = tmp_path / "obj"
    write_staged(path, pieces_of(data, rng))
    assert path.read_bytes() == data

    fd = os.open(path, os.O_RDONLY)
    try:
        reader = AlignedReader.open(fd, STAGE_SIZE)
        assert reader is not None
        try:
            spans = [(0, STAGE_SIZE), (max(0, size - 1), 10), (size, 5), (max(0, size - ALIGN - 3), ALIGN + 9)]
            spans += [(rng.randrange(size + 1), rng.randrange(1, STAGE_SIZE)) for _ in range(20)]
            for offset, length in spans:
                assert reader.pread(offset, length) == data[offset:offset + length], (offset, length)
        finally:
            reader.close()
    finally:
        os.close(fd)


def test_a_filesystem_that_takes_the_flag_but_refuses_the_io_gets_buffered_io(tmp_path, monkeypatch) -> None:
    """Some filesystems accept O_DIRECT on the descriptor and then fail each I/O with
    EINVAL; none does here, so the refusal is simulated for the first write and read."""
    real_write, real_preadv = os.write, os.preadv
    refused = {"write": 0, "preadv": 0}

    def write(fd, data):
        if not refused["write"]:
            refused["write"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    def preadv(fd, buffers, offset):
        if not refused["preadv"]:
            refused["preadv"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(direct_io.os, "write", write)
    monkeypatch.setattr(direct_io.os, "preadv", preadv)
    data = random.Random(1).randbytes(2 * STAGE_SIZE + 777)
    path = tmp_path / "obj"
    write_staged(path, [data[:STAGE_SIZE + 5], data[STAGE_SIZE + 5:]])
    assert refused["write"] == 1 and path.read_bytes() == data

    fd = os.open(path, os.O_RDONLY)
    try:
        reader = AlignedReader.open(fd, STAGE_SIZE)
        assert reader is not None
        assert reader.pread(5, 100) == data[5:105]
        assert reader.pread(STAGE_SIZE, STAGE_SIZE) == data[STAGE_SIZE:2 * STAGE_SIZE]
        reader.close()
    finally:
        os.close(fd)
    assert refused["preadv"] == 1
