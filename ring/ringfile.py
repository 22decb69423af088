"""The signed ring file: what every node loads to find data.

Layout (all integers big-endian)::

    b"PSRING1\\n"                      magic, also the format version
    gzip(                              compressed body
        u32 header length, header JSON,
        raw replica2part2dev bytes)    little-endian uint16 or uint32, C order, [rows, parts]
    HMAC-SHA256(secret, everything above)   32-byte trailer

The header JSON carries ``version`` (monotonic per builder), ``builder_id``,
``part_power``, ``replicas``, the array ``dtype`` and the device list (indexed by
device id, ``null`` for ids no longer in use). Unassigned slots (the tail of the
last row with fractional replicas) hold the dtype's maximum value.

The signature covers the magic and the compressed bytes and is checked before a
single byte is decompressed or parsed, so a file from another cluster, a corrupted
copy, or a tampered one is rejected without trusting any of its contents.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
import json
import struct
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import RingFormatError, RingSignatureError

MAGIC = b"PSRING1\n"
SIG_LEN = hashlib.sha256().digest_size


@dataclasses.dataclass
class RingData:
    """Everything a ring file holds.

    ``assign`` uses ``-1`` for empty slots in memory (int64 or any signed type);
    on disk it is narrowed to uint16 when device ids allow, else uint32.
    """

    version: int
    builder_id: str
    part_power: int
    replicas: float
    devices: list[dict[str, Any] | None]
    assign: np.ndarray


def _sign(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def serialize_ring(ring: RingData, secret: bytes) -> bytes:
    """The signed bytes of a ring file."""
    if not secret:
        raise RingSignatureError("a non-empty cluster secret is required to sign a ring")
    # Little-endian on disk so that loading on the usual hosts is a zero-copy view.
    dtype = np.dtype(np.uint16 if len(ring.devices) < 0xFFFF else np.uint32).newbyteorder("<")
    arr = np.where(ring.assign >= 0, ring.assign, np.iinfo(dtype).max).astype(dtype)
    header = json.dumps(
        {
            "version": ring.version,
            "builder_id": ring.builder_id,
            "part_power": ring.part_power,
            "replicas": ring.replicas,
            "rows": arr.shape[0],
            "dtype": dtype.str,
            "devices": ring.devices,
        },
        separators=(",", ":"),
    ).encode()
    body = struct.pack(">I", len(header)) + header + arr.tobytes()
    # mtime=0 keeps the bytes a pure function of the ring, handy for comparing files.
    payload = MAGIC + gzip.compress(body, compresslevel=6, mtime=0)
    return payload + _sign(secret, payload)


def save_ring(path: str, ring: RingData, secret: bytes) -> None:
    """Write a signed ring file atomically."""
    atomic_write(path, serialize_ring(ring, secret))


def parse_ring(data: bytes, secret: bytes) -> RingData:
    """Verify and decode the bytes of a ring file.

    Raises :class:`RingSignatureError` if the HMAC does not match (checked first)
    and :class:`RingFormatError` if the verified contents are not a ring.
    """
    if len(data) < len(MAGIC) + SIG_LEN or not data.startswith(MAGIC):
        raise RingFormatError("not a peerstack ring file (bad magic)")
    payload, sig = data[:-SIG_LEN], data[-SIG_LEN:]
    if not hmac.compare_digest(_sign(secret, payload), sig):
        raise RingSignatureError("ring file signature does not match the cluster secret")
    try:
        body = gzip.decompress(payload[len(MAGIC) :])
        (hlen,) = struct.unpack_from(">I", body)
        header = json.loads(body[4 : 4 + hlen])
        dtype = np.dtype(header["dtype"])
        parts = 1 << header["part_power"]
        flat = np.frombuffer(body, dtype=dtype, offset=4 + hlen)
        assign = flat.reshape(header["rows"], parts)
        if not dtype.isnative:
            assign = assign.astype(dtype.newbyteorder("="))
    except (OSError, EOFError, ValueError, KeyError, struct.error, TypeError) as e:
        raise RingFormatError(f"corrupt ring file: {e}") from None
    return RingData(
        version=int(header["version"]),
        builder_id=str(header["builder_id"]),
        part_power=int(header["part_power"]),
        replicas=float(header["replicas"]),
        devices=header["devices"],
        assign=assign,
    )


def load_ring(path: str, secret: bytes) -> RingData:
    """Read, verify and decode a ring file.

    ``assign`` in the result is the on-disk unsigned array (read-only, empty slots
    hold the dtype's maximum) so that loading stays a copy-free ``frombuffer``.
    """
    with open(path, "rb") as f:
        return parse_ring(f.read(), secret)
