"""One malloc arena per node process (glibc only), so freed buffers are reused.

Large transfers move through 1 MiB buffers allocated and freed by the
thousand, in the event loop and in worker threads (disk reads, hashing).
glibc gives every thread that allocates an arena of its own (up to eight
per core) and keeps what is freed into an arena for that arena: each worker
thread ends up pinning its own cache of megabyte buffers, and a node's RSS
grows by tens of MB past what it holds.  With a single arena every thread
reuses the same free buffers; the GIL already serialises most allocation,
so the shared arena's lock costs nothing measurable.

Tried and rejected: a fixed ``M_MMAP_THRESHOLD`` (every buffer its own
mapping: flat RSS, but 256 MiB PUT and GET ~20% slower from the map, page
faults and unmap per MiB) and a periodic ``malloc_trim`` (no effect: the
free memory is spread between live allocations).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameter (glibc's malloc.h)
M_ARENA_MAX = -8


def single_arena() -> bool:
    """Apply it (call before starting threads); False where there is no glibc ``mallopt``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))
