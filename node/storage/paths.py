"""Storage request paths: parse, validate, and hash into on-disk locations.

A storage request names ``/<device>/<partition>/<account>[/<container>[/<object>]]``
(the object part may contain slashes).  Nothing a client sends is ever used
as a file name except the device, which must be one of the configured
devices: accounts, containers and objects live under directories named by
the md5 of their path, salted with the cluster's ``hash_prefix`` and
``hash_suffix`` exactly as Swift does, so ``..``, NUL or a 1 KiB name cannot
reach outside the device.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_ACCOUNT_NAME_LENGTH = 256
MAX_CONTAINER_NAME_LENGTH = 256
MAX_OBJECT_NAME_LENGTH = 1024

_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SUFFIX_RE = re.compile(r"^[0-9a-f]{3}$")


class BadPath(ValueError):
    """The request path is malformed; the message is the 400 body."""


@dataclass(frozen=True)
class StoragePath:
    device: str
    partition: int
    account: str
    container: str | None = None
    obj: str | None = None

    @property
    def level(self) -> str:
        """``account``, ``container`` or ``object``: which server handles it."""
        if self.obj is not None:
            return "object"
        if self.container is not None:
            return "container"
        return "account"


def valid_device(name: str) -> bool:
    return bool(_DEVICE_RE.match(name)) and name not in (".", "..")


def parse_partition(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise BadPath("Invalid partition")
    return int(text)


def _check_name(kind: str, name: str, max_bytes: int) -> None:
    if not name:
        raise BadPath(f"Empty {kind} name")
    if "\x00" in name:
        raise BadPath(f"{kind.capitalize()} name contains NUL")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadPath(f"{kind.capitalize()} name is not valid UTF-8") from None
    if size > max_bytes:
        raise BadPath(f"{kind.capitalize()} name longer than {max_bytes} bytes")
    if any(seg in (".", "..") for seg in name.split("/")):
        raise BadPath(f"{kind.capitalize()} name contains a '.' or '..' segment")


def check_object_name(name: str) -> None:
    """The checks an object name in a path gets, for names that arrive another way."""
    _check_name("object", name, MAX_OBJECT_NAME_LENGTH)


def parse_storage_path(path: str) -> StoragePath:
    """Split and validate a decoded request path; raises :class:`BadPath`."""
    if not path.startswith("/"):
        raise BadPath("Invalid path")
    parts = path[1:].split("/", 4)
    if len(parts) < 3:
        raise BadPath("Invalid path")
    device, part, account = parts[0], parts[1], parts[2]
    if not valid_device(device):
        raise BadPath("Invalid device")
    partition = parse_partition(part)
    _check_name("account", account, MAX_ACCOUNT_NAME_LENGTH)
    container = obj = None
    if len(parts) >= 4:
        container = parts[3]
        _check_name("container", container, MAX_CONTAINER_NAME_LENGTH)
    if len(parts) == 5:
        obj = parts[4]
        check_object_name(obj)
    return StoragePath(device, partition, account, container, obj)


def parse_replicate_path(path: str) -> tuple[str, int, list[str]]:
    """``/<device>/<part>[/<sfx>-<sfx>...]`` -> device, partition, suffixes."""
    parts = path.strip("/").split("/")
    if len(parts) not in (2, 3) or not valid_device(parts[0]):
        raise BadPath("Invalid path")
    partition = parse_partition(parts[1])
    suffixes: list[str] = []
    if len(parts) == 3 and parts[2]:
        suffixes = parts[2].split("-")
        if not all(_SUFFIX_RE.match(s) for s in suffixes):
            raise BadPath("Invalid suffix")
    return parts[0], partition, suffixes


def hash_path(prefix: str, suffix: str, account: str, container: str | None = None,
              obj: str | None = None) -> str:
    """md5(prefix + "/a/c/o" + suffix) in hex: Swift's name for a stored thing."""
    names = [account] + [n for n in (container, obj) if n is not None]
    data = (prefix + "/" + "/".join(names) + suffix).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
