"""Devices and the operator's way of naming them.

A device is one disk on one node. Operators of Swift know devices by strings such as
``r1z2-10.0.0.1:6200/sdb1_ssd``: region 1, zone 2, IP 10.0.0.1, port 6200, device
``sdb1``, meta ``ssd``. The same grammar, with every part optional, is a *search
value* that selects devices (``d7`` is device id 7, ``z2`` every device in zone 2,
``10.0.0.1`` every device on that address). This module parses both forms and
matches search values against devices; it knows nothing about partitions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

from .errors import DeviceError

# Each field is optional so one pattern serves both search values and device
# strings; callers decide which fields are mandatory. The IP may be a dotted quad,
# a bracketed IPv6 address or a host name. After ``r``/``z`` a dash separates the IP
# because ``z210.0.0.1`` would be ambiguous.
_IP = r"(?P<ip>\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z][0-9A-Za-z.\-]*)"
_SEARCH_RE = re.compile(
    r"^(?:d(?P<id>\d+))?"
    r"(?:r(?P<region>\d+))?"
    r"(?:z(?P<zone>\d+))?"
    r"(?:(?(region)-|(?(zone)-|-?))" + _IP + r")?"
    r"(?::(?P<port>\d+))?"
    r"(?:/(?P<device>[^_/\s]+))?"
    r"(?:_(?P<meta>.*))?$"
)
_CHANGE_RE = re.compile(
    r"^(?:" + _IP + r")?(?::(?P<port>\d+))?(?:/(?P<device>[^_/\s]+))?(?:_(?P<meta>.*))?$"
)


@dataclasses.dataclass
class Device:
    """One device in the ring.

    ``node_id`` names the peerstack node that owns the device; it defaults to
    ``"ip:port"`` because that is what identifies a storage server on the wire.
    ``weight`` is relative capacity: a device of weight 200 is meant to hold twice
    the partitions of one of weight 100. Weight 0 drains a device without
    forgetting it.
    """

    id: int
    region: int
    zone: int
    ip: str
    port: int
    device: str
    weight: float
    node_id: str = ""
    meta: str = ""

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = f"{self.ip}:{self.port}"
        if self.weight < 0:
            raise DeviceError(f"weight must be >= 0, got {self.weight}")
        if self.region < 0 or self.zone < 0:
            raise DeviceError("region and zone must be >= 0")
        if not 0 < self.port < 65536:
            raise DeviceError(f"port must be in 1..65535, got {self.port}")
        if not self.device:
            raise DeviceError("device name must not be empty")

    @property
    def address(self) -> tuple[str, int, str]:
        """What makes a device unique in a ring: where it is served and its name."""
        return (self.ip, self.port, self.device)

    def to_dict(self) -> dict[str, Any]:
        """The device as the plain dict used in ring files and lookups."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Device:
        """Inverse of :meth:`to_dict`; unknown keys are ignored for forward compatibility."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def __str__(self) -> str:
        meta = f"_{self.meta}" if self.meta else ""
        return f"d{self.id}r{self.region}z{self.zone}-{self.ip}:{self.port}/{self.device}{meta}"


@dataclasses.dataclass(frozen=True)
class SearchValue:
    """A parsed search value; ``None`` fields match anything."""

    id: int | None = None
    region: int | None = None
    zone: int | None = None
    ip: str | None = None
    port: int | None = None
    device: str | None = None
    meta: str | None = None

    def matches(self, dev: Device) -> bool:
        """True when every field given in the search value equals the device's."""
        for name in ("id", "region", "zone", "ip", "port", "device", "meta"):
            want = getattr(self, name)
            if want is not None and getattr(dev, name) != want:
                return False
        return True

    def filter(self, devices: Iterable[Device]) -> list[Device]:
        """The devices this search value selects, in the order given."""
        return [d for d in devices if self.matches(d)]


def _strip_brackets(ip: str | None) -> str | None:
    if ip and ip.startswith("[") and ip.endswith("]"):
        return ip[1:-1]
    return ip


def parse_search_value(value: str) -> SearchValue:
    """Parse a search value such as ``d3``, ``r1z2``, ``10.0.0.1:6200`` or ``/sdb1``."""
    m = _SEARCH_RE.match(value.strip())
    if not value.strip() or m is None:
        raise DeviceError(f"invalid search value {value!r}")
    g = m.groupdict()
    return SearchValue(
        id=int(g["id"]) if g["id"] is not None else None,
        region=int(g["region"]) if g["region"] is not None else None,
        zone=int(g["zone"]) if g["zone"] is not None else None,
        ip=_strip_brackets(g["ip"]),
        port=int(g["port"]) if g["port"] is not None else None,
        device=g["device"],
        meta=g["meta"],
    )


def parse_device_string(value: str, weight: float, dev_id: int) -> Device:
    """Parse ``[r<region>]z<zone>-<ip>:<port>/<device>[_<meta>]`` into a new device.

    Region defaults to 1 as in swift-ring-builder; zone, IP, port and device name are
    required because a device without them cannot be reached.
    """
    m = _SEARCH_RE.match(value.strip())
    if m is None or m.group("id") is not None:
        raise DeviceError(f"invalid device {value!r}: expected r<region>z<zone>-<ip>:<port>/<device>")
    g = m.groupdict()
    missing = [k for k in ("zone", "ip", "port", "device") if g[k] is None]
    if missing:
        raise DeviceError(f"invalid device {value!r}: missing {', '.join(missing)}")
    return Device(
        id=dev_id,
        region=int(g["region"]) if g["region"] is not None else 1,
        zone=int(g["zone"]),
        ip=_strip_brackets(g["ip"]) or "",
        port=int(g["port"]),
        device=g["device"],
        weight=float(weight),
        meta=g["meta"] or "",
    )


def parse_change_value(value: str) -> dict[str, Any]:
    """Parse the ``set_info`` form ``[<ip>][:<port>][/<device>][_<meta>]``.

    Returns only the fields that were given, ready to apply to a device.
    """
    m = _CHANGE_RE.match(value.strip())
    if not value.strip() or m is None:
        raise DeviceError(f"invalid change value {value!r}: expected <ip>:<port>/<device>_<meta>")
    g = m.groupdict()
    changes: dict[str, Any] = {}
    if g["ip"] is not None:
        changes["ip"] = _strip_brackets(g["ip"])
    if g["port"] is not None:
        changes["port"] = int(g["port"])
    if g["device"] is not None:
        changes["device"] = g["device"]
    if g["meta"] is not None:
        changes["meta"] = g["meta"]
    return changes
