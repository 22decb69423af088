"""The three rings a node routes by.

Rings live in ``NodeConfig.rings_path`` as ``account.ring.gz``,
``container.ring.gz`` and ``object.ring.gz``.  :class:`ring.lookup.Ring`
verifies a file against the cluster secret and reloads itself when ring
gossip (or an operator) replaces it; this class only loads each ring the
first time it is needed, so a node can start before its rings exist.  Until
a ring file exists and loads, asking for it raises :class:`RingUnavailable`,
which the API layers turn into ``503``.
"""

from __future__ import annotations

from pathlib import Path

from node.config import ClusterConfig
from ring.errors import RingError
from ring.lookup import Ring

RING_NAMES = ("account", "container", "object")


class RingUnavailable(Exception):
    """A ring file is missing or does not load."""


class RingSet:
    """Lazily loaded account/container/object rings."""

    def __init__(self, rings_path: Path, cluster: ClusterConfig) -> None:
        self.rings_path = Path(rings_path)
        self._secret = cluster.secret_bytes
        # The salts are used as the literal strings of the cluster file.
        self._prefix = cluster.hash_prefix.encode("utf-8")
        self._suffix = cluster.hash_suffix.encode("utf-8")
        self._rings: dict[str, Ring] = {}

    def get(self, name: str) -> Ring:
        """The ring ``name`` (``account``, ``container`` or ``object``)."""
        ring = self._rings.get(name)
        if ring is not None:
            return ring
        path = self.rings_path / f"{name}.ring.gz"
        try:
            ring = Ring(str(path), self._secret, self._prefix, self._suffix)
        except (OSError, RingError) as exc:
            raise RingUnavailable(f"{name} ring at {path}: {exc}") from exc
        self._rings[name] = ring
        return ring

    @property
    def account(self) -> Ring:
        return self.get("account")

    @property
    def container(self) -> Ring:
        return self.get("container")

    @property
    def object(self) -> Ring:
        return self.get("object")
