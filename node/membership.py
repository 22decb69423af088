"""Who is in the cluster, and who is alive: the membership table.

Every node keeps one :class:`MembershipTable`.  Discovery (mDNS, seeds) only
says *where* a peer might be; a peer becomes a member when it answers a
signed heartbeat (or sends one), and from then on its state is decided by how
long ago it was last heard from:

* ``alive``   -- heard within ``suspect_after`` seconds;
* ``suspect`` -- silent for ``suspect_after`` but not yet ``dead_after``;
* ``dead``    -- silent for ``dead_after`` seconds or more.

States are derived from the clock on every read, so there is no timer to
forget and a member that is heard again is alive at once.  Dead members stay
listed (an operator wants to see them; the ring keeps their devices until an
operator removes them), and are forgotten only after ``forget_after``.

What a node says about itself travels as a :class:`NodeInfo` -- in every
heartbeat, in every heartbeat reply and, trimmed, in its mDNS TXT record.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from node.config import ClusterConfig, ConfigError, Membership, NodeConfig

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
RING_TYPES = ("account", "container", "object")

#: header carrying the MAC that proves a heartbeat reply came from a cluster member
REPLY_MAC_HEADER = "X-Peerstack-Reply-MAC"


def cluster_hash(cluster_id: str) -> str:
    """A public fingerprint of the cluster id, safe to shout on the LAN.

    It tells peers of one cluster apart from others; it proves nothing (the
    heartbeat signatures do that) and reveals nothing about the secret.
    """
    return hashlib.sha256(f"peerstack-cluster:{cluster_id}".encode()).hexdigest()[:16]


def reply_mac(secret: bytes, challenge: str, body: bytes) -> str:
    """MAC of a heartbeat reply over the asker's fresh challenge and the body.

    Requests are signed by the HTTP layer, replies are not; without this a
    process squatting on a peer's old address could answer heartbeats and
    feed us a forged node description.
    """
    return hmac.new(secret, challenge.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def check_reply_mac(secret: bytes, challenge: str, body: bytes, mac: str | None) -> bool:
    return bool(mac) and hmac.compare_digest(reply_mac(secret, challenge, body), mac or "")


def parse_hostport(value: str) -> tuple[str, int]:
    """``"10.0.0.7:6200"`` -> ``("10.0.0.7", 6200)``; raises ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def check_membership_config(m: Membership) -> None:
    """Refuse settings that would make liveness meaningless or seeds unusable."""
    if m.heartbeat_interval <= 0:
        raise ConfigError("membership.heartbeat_interval must be > 0")
    if not m.heartbeat_interval < m.suspect_after < m.dead_after:
        raise ConfigError("membership: need heartbeat_interval < suspect_after < dead_after")
    if m.announce_interval <= 0:
        raise ConfigError("membership.announce_interval must be > 0")
    if not isinstance(m.seeds, list) or not isinstance(m.interfaces, list):
        raise ConfigError("membership.seeds and membership.interfaces must be lists")
    for seed in m.seeds:
        try:
            parse_hostport(str(seed))
        except ValueError as exc:
            raise ConfigError(f"membership.seeds: {exc}") from None
    if m.replicas < 1 or not 1 <= m.part_power <= 32 or m.min_part_hours < 0:
        raise ConfigError("membership: need replicas >= 1, 1 <= part_power <= 32, min_part_hours >= 0")


@dataclass
class RingState:
    """What a node holds of one ring: version, content hash, and a matching builder."""

    version: int
    hash: str
    builder: bool = False

    @property
    def key(self) -> tuple[int, str]:
        """Order of rings: higher version wins; equal versions go to the higher hash.

        The hash tie-break makes two stewards that each bumped the same
        version during a partition agree, once they meet, on one ring
        without talking to each other; the losing side's additions are
        re-made on top of the winner by the steward.
        """
        return (self.version, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "hash": self.hash, "builder": self.builder}

    @classmethod
    def from_json(cls, doc: Any) -> RingState | None:
        if not isinstance(doc, dict):
            return None
        try:
            return cls(int(doc["version"]), str(doc["hash"]), bool(doc.get("builder", False)))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class NodeInfo:
    """A node's description of itself, as peers see it."""

    node_id: str
    cluster: str
    host: str
    internal_port: int
    public_host: str
    public_port: int
    region: int
    zone: int
    auto_join: bool
    #: ``[{"device": name, "capacity": bytes}, ...]``
    devices: list[dict[str, Any]] = field(default_factory=list)
    rings: dict[str, RingState] = field(default_factory=dict)
    vcpus_free: int = 0
    ram_free: int = 0
    started: float = 0.0

    @property
    def capacity(self) -> int:
        return sum(int(d.get("capacity", 0)) for d in self.devices)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.internal_port)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["rings"] = {t: s.to_json() for t, s in self.rings.items()}
        doc["capacity"] = self.capacity
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> NodeInfo:
        """Parse a peer's description; raises ValueError on anything malformed."""
        if not isinstance(doc, dict):
            raise ValueError("node info must be an object")
        try:
            devices = [{"device": str(d["device"]), "capacity": int(d["capacity"])}
                       for d in doc.get("devices", [])]
            rings = {}
            for t, s in (doc.get("rings") or {}).items():
                state = RingState.from_json(s)
                if t in RING_TYPES and state is not None:
                    rings[t] = state
            info = cls(
                node_id=str(doc["node_id"]), cluster=str(doc["cluster"]), host=str(doc["host"]),
                internal_port=int(doc["internal_port"]), public_host=str(doc["public_host"]),
                public_port=int(doc["public_port"]), region=int(doc["region"]),
                zone=int(doc["zone"]), auto_join=bool(doc["auto_join"]), devices=devices,
                rings=rings, vcpus_free=int(doc.get("vcpus_free", 0)),
                ram_free=int(doc.get("ram_free", 0)), started=float(doc.get("started", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad node info: {exc!r}") from None
        if not info.node_id or not 0 < info.internal_port < 65536:
            raise ValueError("bad node info: node_id and internal_port are required")
        return info


def free_resources() -> tuple[int, int]:
    """``(free vCPUs, free RAM bytes)`` of this host, before any VM bookkeeping.

    The compute agent replaces this (``MembershipService.resources``) with
    what is left after the VMs it placed.
    """
    ram = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return os.cpu_count() or 1, ram


def device_capacities(config: NodeConfig) -> list[dict[str, Any]]:
    """Size in bytes of the filesystem under each configured device (blocking)."""
    root = config.resolve(config.storage.root)
    out = []
    for name in config.storage.devices:
        try:
            total = shutil.disk_usage(root / name).total
        except OSError:
            total = 0  # not mounted or not made yet: it gets no weight until it is
        out.append({"device": name, "capacity": total})
    return out


def advertised_host(config: NodeConfig) -> str:
    """The address peers should use for this node's internal port.

    A wildcard listen address is no address at all; then the first
    configured mDNS interface is the one peers can reach.
    """
    host = config.internal.host
    if host in ("0.0.0.0", "", "::"):
        if config.membership.interfaces:
            return config.membership.interfaces[0]
        raise ConfigError("membership: internal.host is a wildcard; set membership.interfaces")
    return host


def local_info(config: NodeConfig, cluster: ClusterConfig, *, internal_port: int,
               public_port: int, devices: list[dict[str, Any]], rings: dict[str, RingState],
               resources: tuple[int, int], started: float) -> NodeInfo:
    host = advertised_host(config)
    public_host = config.public.host if config.public.host not in ("0.0.0.0", "", "::") else host
    return NodeInfo(
        node_id=config.node_id, cluster=cluster_hash(cluster.cluster_id), host=host,
        internal_port=internal_port, public_host=public_host, public_port=public_port,
        region=config.region, zone=config.zone, auto_join=config.membership.auto_join,
        devices=devices, rings=dict(rings), vcpus_free=resources[0], ram_free=resources[1],
        started=started)


@dataclass
class Member:
    info: NodeInfo
    last_heard: float


class MembershipTable:
    """Peers by node id, with states derived from when each was last heard."""

    def __init__(self, self_id: str, suspect_after: float, dead_after: float, *,
                 forget_after: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.self_id = self_id
        self.suspect_after = suspect_after
        self.dead_after = dead_after
        self.forget_after = forget_after
        self._clock = clock
        self._members: dict[str, Member] = {}

    def heard(self, info: NodeInfo) -> bool:
        """Record a direct, authenticated contact; True if the peer is new or was not alive."""
        if info.node_id == self.self_id:
            return False
        old = self._members.get(info.node_id)
        was_alive = old is not None and self.state(old) == ALIVE
        self._members[info.node_id] = Member(info, self._clock())
        return not was_alive

    def state(self, member: Member) -> str:
        silent = self._clock() - member.last_heard
        if silent < self.suspect_after:
            return ALIVE
        if silent < self.dead_after:
            return SUSPECT
        return DEAD

    def state_of(self, node_id: str) -> str | None:
        member = self._members.get(node_id)
        return None if member is None else self.state(member)

    def members(self) -> list[tuple[Member, str]]:
        """Every known peer with its state, dropping those dead for ``forget_after``."""
        now = self._clock()
        for node_id in [k for k, m in self._members.items()
                        if now - m.last_heard > self.forget_after]:
            del self._members[node_id]
        return [(m, self.state(m)) for _, m in sorted(self._members.items())]

    def alive(self) -> list[NodeInfo]:
        return [m.info for m, state in self.members() if state == ALIVE]

    def addresses(self) -> set[tuple[str, int]]:
        return {m.info.address for m in self._members.values()}

    def snapshot(self, me: NodeInfo) -> list[dict[str, Any]]:
        """The table as served at ``GET /cluster/members``: this node first."""
        now = self._clock()
        rows = [{**me.to_json(), "state": ALIVE, "self": True, "last_heard": 0.0}]
        for member, state in self.members():
            rows.append({**member.info.to_json(), "state": state, "self": False,
                         "last_heard": round(now - member.last_heard, 3)})
        return rows


def newest(states: Iterable[RingState | None]) -> RingState | None:
    """The ring state that wins by :attr:`RingState.key`, or None if there is none."""
    best: RingState | None = None
    for state in states:
        if state is not None and (best is None or state.key > best.key):
            best = state
    return best
