"""Crash-safe file replacement.

Ring and builder files are read by long-running processes that may reload them at
any moment, so a reader must see either the old file or the new one, never a torn
mix. Writing to a temporary file in the same directory and renaming it over the
target gives exactly that on POSIX filesystems; the fsyncs make the new contents and
the rename itself survive a power cut.
"""

import os
import tempfile


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see old or new, never partial."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        # mkstemp creates 0600; ring files are meant to be read by every service.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
