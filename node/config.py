"""Node and cluster configuration, both TOML.

The *cluster file* is made once by ``peerstack cluster init`` and copied to
every node: cluster id, the shared secret, the ring hash prefix/suffix and
the bootstrap admin.  It is written ``0600`` because the secret signs every
internal request and every ring.

The *node file* says what this box is: its id, addresses and ports, region
and zone, and where its devices live.  Every option has a default that works
for a single node on loopback; unknown keys are errors, so a typo does not
silently fall back to a default.
"""

from __future__ import annotations

import os
import secrets
import tomllib
import uuid
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration file is missing, unreadable or wrong."""


@dataclass
class Admin:
    project: str = "admin"
    user: str = "admin"
    password: str = ""


@dataclass
class ClusterConfig:
    cluster_id: str
    name: str
    secret: str
    hash_prefix: str
    hash_suffix: str
    admin: Admin = field(default_factory=Admin)

    @property
    def secret_bytes(self) -> bytes:
        return bytes.fromhex(self.secret)


@dataclass
class Listen:
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1


@dataclass
class Storage:
    #: each device is a directory ``<root>/<device>``
    root: str = "var/node"
    devices: list[str] = field(default_factory=lambda: ["d1"])
    #: refuse writes that would leave less than this many bytes free
    reserve_bytes: int = 64 << 20


@dataclass
class Membership:
    """How a node finds its peers, watches them and shares the ring (``[membership]``)."""

    enabled: bool = True
    #: addresses whose interfaces carry mDNS; empty means the internal host's only
    interfaces: list[str] = field(default_factory=list)
    #: multicast discovery; with it off only ``seeds`` (and peers they name) are found
    zeroconf: bool = True
    #: ``"host:port"`` of peers' internal ports, for networks without multicast
    seeds: list[str] = field(default_factory=list)
    heartbeat_interval: float = 1.0
    suspect_after: float = 3.0
    dead_after: float = 10.0
    #: seconds between mDNS re-announcements (browsers do not rediscover by themselves)
    announce_interval: float = 15.0
    #: take part in auto-join: be added to the ring, and act as steward
    auto_join: bool = True
    #: shape of the rings a steward creates when the cluster has none yet
    part_power: int = 10
    replicas: float = 3.0
    min_part_hours: int = 1


@dataclass
class Replicator:
    """Background consistency: replicators, auditors, updater, expirer (``[replicator]``).

    Intervals are the pause between the end of one pass and the start of the
    next; ``0`` bytes/s means unlimited.
    """

    enabled: bool = True
    #: object and database replication passes
    interval: float = 30.0
    #: partitions (or databases) replicated at the same time
    concurrency: int = 4
    #: how fast one node pushes object bytes to its peers
    bytes_per_second: int = 100 << 20
    connect_timeout: float = 2.0
    node_timeout: float = 20.0
    #: a peer this many rows behind a database gets a full copy instead of rows
    db_max_diff_rows: int = 50_000
    #: object and database auditor: pause between passes and read rate
    audit_interval: float = 300.0
    audit_bytes_per_second: int = 20 << 20
    #: async pending updates
    update_interval: float = 30.0
    #: X-Delete-At sweeps
    expire_interval: float = 300.0


@dataclass
class NodeConfig:
    cluster_file: str = "cluster.toml"
    node_id: str = ""
    region: int = 1
    zone: int = 1
    #: where the rings live; empty means next to the cluster file
    ring_dir: str = ""
    log_level: str = "info"
    log_file: str = ""
    #: run the node's threads under SCHED_BATCH (see node/scheduling.py)
    batch_scheduling: bool = True
    public: Listen = field(default_factory=lambda: Listen(port=8080))
    internal: Listen = field(default_factory=lambda: Listen(port=6200))
    storage: Storage = field(default_factory=Storage)
    membership: Membership = field(default_factory=Membership)
    replicator: Replicator = field(default_factory=Replicator)
    #: path of this file, so relative paths resolve against it
    source: str = ""

    def resolve(self, path: str) -> Path:
        p = Path(path)
        if p.is_absolute() or not self.source:
            return p
        return Path(self.source).parent / p

    @property
    def rings_path(self) -> Path:
        if self.ring_dir:
            return self.resolve(self.ring_dir)
        return self.resolve(self.cluster_file).parent


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Make dataclass ``cls`` from a TOML table, refusing unknown keys."""
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known or key == "source":
            raise ConfigError(f"{where}: unknown option {key!r}")
        default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default  # type: ignore[misc]
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            value = _build(type(default), value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_node_config(path: str | Path) -> NodeConfig:
    cfg = _build(NodeConfig, _read_toml(path), str(path))
    cfg.source = str(Path(path).resolve())
    if not cfg.node_id:
        cfg.node_id = f"{cfg.internal.host}:{cfg.internal.port}"
    return cfg


def load_cluster_config(path: str | Path) -> ClusterConfig:
    data = _read_toml(path)
    for key in ("cluster_id", "secret", "hash_prefix", "hash_suffix"):
        if key not in data:
            raise ConfigError(f"{path}: missing {key!r}")
    cfg = _build(ClusterConfig, {"name": "", **data}, str(path))
    try:
        bytes.fromhex(cfg.secret)
    except ValueError as exc:
        raise ConfigError(f"{path}: secret must be hex") from exc
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(doc: dict[str, Any]) -> str:
    """Write a dict of scalars and one level of tables as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for key, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def write_private(path: str | Path, text: str) -> None:
    """Atomically write ``text`` readable by the owner only (0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def new_cluster(name: str, admin_password: str | None = None) -> ClusterConfig:
    """Fresh cluster identity: id, secret, hash prefix/suffix, admin password."""
    return ClusterConfig(
        cluster_id=str(uuid.uuid4()),
        name=name,
        secret=secrets.token_hex(32),
        hash_prefix=secrets.token_hex(8),
        hash_suffix=secrets.token_hex(8),
        admin=Admin(password=admin_password or secrets.token_urlsafe(18)),
    )


def cluster_to_toml(cfg: ClusterConfig) -> str:
    return dump_toml({
        "cluster_id": cfg.cluster_id, "name": cfg.name, "secret": cfg.secret,
        "hash_prefix": cfg.hash_prefix, "hash_suffix": cfg.hash_suffix,
        "admin": {"project": cfg.admin.project, "user": cfg.admin.user,
                  "password": cfg.admin.password},
    })
