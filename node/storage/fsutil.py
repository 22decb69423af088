"""Durable file-system steps shared by the object and database code.

All of these block (they fsync), so callers run them in a worker thread.
The rule they implement: a file becomes visible under its final name only
after its bytes are on disk (write to ``tmp/``, fsync, rename), and a rename
or a new directory counts only after its parent directory is fsynced.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path, stop_at: Path) -> bool:
    """``mkdir -p path``, fsyncing the parent of every directory it creates.

    Returns whether it created ``path`` itself (an object's new directory
    holds nothing older to clean up).  ``stop_at`` must exist already (the
    device root); we never create it, so a missing device cannot turn into a
    directory on the parent filesystem.  Tries ``mkdir`` before looking: an
    object write usually needs one or two new directories under existing
    ones, and one call that fails costs what a ``stat`` would.
    """
    if path == stop_at or stop_at not in path.parents:
        if path == stop_at and path.is_dir():
            return False
        raise FileNotFoundError(f"{stop_at} is missing")
    for attempt in range(3):
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        except FileNotFoundError:
            makedirs_durable(path.parent, stop_at)
            # A parent made just now can vanish before we use it: a REPLICATE
            # rehash removes suffix directories it finds empty.  Try again.
            if attempt == 2:
                raise
            continue
        fsync_dir(path.parent)
        return True
    raise AssertionError("unreachable")


def atomic_write_json(path: Path, doc: Any, tmp_dir: Path, stop_at: Path) -> None:
    """Write ``doc`` as JSON to ``path`` durably: tmp file, fsync, rename, fsync dir."""
    makedirs_durable(path.parent, stop_at)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".json-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

