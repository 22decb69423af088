"""The consistent-hash ring: devices, the builder that places partitions on them, the signed ring file and lookups. Pure library code: no network, no imports from the rest of peerstack."""

from .builder import RebalanceResult, RingBuilder
from .devices import Device, SearchValue, parse_device_string, parse_search_value
from .errors import BuilderError, DeviceError, RingError, RingFormatError, RingSignatureError
from .lookup import Ring
from .ringfile import RingData, load_ring, save_ring

__all__ = [
    "BuilderError",
    "Device",
    "DeviceError",
    "RebalanceResult",
    "Ring",
    "RingBuilder",
    "RingData",
    "RingError",
    "RingFormatError",
    "RingSignatureError",
    "SearchValue",
    "load_ring",
    "parse_device_string",
    "parse_search_value",
    "save_ring",
]
