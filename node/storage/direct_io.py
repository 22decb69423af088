"""Reading and writing the bytes of large objects past the page cache (``O_DIRECT``).

Why bother: on the machines peerstack is measured on (VMs whose memory
balloon hands free pages back to the host) every page the page cache takes
from free memory costs a fault on the host.  Writing one 256 MiB object's
three replicas through the page cache took ~2 CPU-seconds of system time
there; the same 768 MiB written with ``O_DIRECT`` from a reused buffer took
~0.03 s and finished 3-4x sooner, and a cold 256 MiB read went from 460 MB/s
and 0.56 s of system time to ~1.5 GB/s and almost none.  A large object is
also the thing least likely to be read again soon, so caching it mostly
evicts what is worth caching (metadata, databases, small hot objects), which
is why only objects of at least :data:`DIRECT_MIN` bytes bypass the cache.

``O_DIRECT`` wants the buffer address, the file offset and the length
aligned to the device's logical block.  Bytes from the network land in
arbitrary buffers, so :class:`StagedWriter` copies them into one page-aligned
staging buffer (a memcpy costs a small fraction of what the page cache's
allocation does) and writes whole buffers; the last partial block is written
after ``O_DIRECT`` is switched off on the descriptor, and the caller's
``fsync`` then covers both.  :class:`AlignedReader` reads the aligned blocks
around any range and copies out the range.  Filesystems that refuse
``O_DIRECT`` (tmpfs on older kernels), or take the flag and then refuse the
I/O (``EINVAL``), get ordinary buffered I/O.

Everything here blocks; callers run it in worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

#: alignment for buffers, offsets and lengths (covers 512 and 4096 byte blocks)
ALIGN = 4096
#: objects at least this big are written and read past the page cache
DIRECT_MIN = 4 << 20
#: bytes gathered before one direct write
STAGE_SIZE = 1 << 20


def set_direct(fd: int, on: bool) -> bool:
    """Switch ``O_DIRECT`` on or off for ``fd``; ``False`` if the filesystem refuses."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_DIRECT if on else flags & ~os.O_DIRECT
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
    except OSError:
        return False
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


class StagedWriter:
    """Appends to ``fd`` (positioned at 0) with ``O_DIRECT`` through a staging buffer.

    Use :meth:`open`, which answers ``None`` where ``O_DIRECT`` is refused.
    Call :meth:`finish` before the ``fsync`` that makes the file durable, and
    :meth:`close` in every case.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = mmap.mmap(-1, STAGE_SIZE)
        self._view = memoryview(self._buf)
        self._fill = 0
        self._direct = True

    def _put(self, view: memoryview) -> None:
        """Write ``view`` (aligned while direct); a filesystem that took the flag
        but refuses the I/O (``EINVAL``), or a short write, turns the rest buffered."""
        if self._direct:
            try:
                view = view[os.write(self.fd, view):]
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            if view:
                self._direct = False
                set_direct(self.fd, False)
        _write_all(self.fd, view)

    @classmethod
    def open(cls, fd: int) -> StagedWriter | None:
        return cls(fd) if set_direct(fd, True) else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        src = memoryview(data).cast("B")
        while src:
            n = min(len(src), STAGE_SIZE - self._fill)
            self._view[self._fill:self._fill + n] = src[:n]
            self._fill += n
            src = src[n:]
            if self._fill == STAGE_SIZE:
                self._put(self._view)
                self._fill = 0

    def finish(self) -> None:
        """Write what is staged: whole blocks directly, the partial one buffered."""
        whole = self._fill - self._fill % ALIGN
        if whole:
            self._put(self._view[:whole])
        if self._fill > whole:
            if self._direct:
                self._direct = False
                set_direct(self.fd, False)
            _write_all(self.fd, self._view[whole:self._fill])
        self._fill = 0

    def close(self) -> None:
        self._view.release()
        self._buf.close()


class AlignedReader:
    """``pread`` for ``fd`` with ``O_DIRECT``, one staging buffer per reader.

    Use :meth:`open`, which answers ``None`` where ``O_DIRECT`` is refused;
    reads must not run concurrently.
    """

    def __init__(self, fd: int, max_read: int) -> None:
        self.fd = fd
        self._buf = mmap.mmap(-1, max_read + 2 * ALIGN)
        self._view = memoryview(self._buf)
        self._direct = True

    @classmethod
    def open(cls, fd: int, max_read: int) -> AlignedReader | None:
        return cls(fd, max_read) if set_direct(fd, True) else None

    def pread(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        if not self._direct:
            return os.pread(self.fd, length, offset)
        start = offset - offset % ALIGN
        stop = -(-(offset + length) // ALIGN) * ALIGN
        try:
            # A direct read comes back short only at the end of the file.
            got = os.preadv(self.fd, [self._view[:stop - start]], start)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct = False  # took the flag, refuses the I/O: read through the cache
            set_direct(self.fd, False)
            return os.pread(self.fd, length, offset)
        skip = offset - start
        return bytes(self._view[skip:min(got, skip + length)]) if got > skip else b""

    def close(self) -> None:
        self._view.release()
        self._buf.close()
