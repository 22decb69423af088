"""The proxy's checksums after an object body, so a PUT costs one MD5, not three.

An object's ETag is the MD5 of its bytes.  If every replica computed it,
a 3-replica PUT would spend three MD5 passes (~0.45 CPU-seconds each per
256 MiB here, the largest single cost of a large PUT).  Instead the proxy,
which sees every byte once, computes the MD5 and a CRC-32, and sends them
after the body as a fixed-size *footer*; each object server checks the
CRC-32 of what it received (zlib's, ~3.5 GB/s here against MD5's ~0.6), so
a replica never stores bytes other than those the proxy hashed, and stores
the proxy's MD5 as the ETag.  Later reads and the auditor still verify the
stored bytes against that MD5.

The request says so with ``X-Backend-Etag-Footer: 64`` and its
``Content-Length`` counts the footer too.  The footer is ASCII: 32 hex
digits of MD5, 8 of CRC-32, spaces up to 64 bytes.  Requests without the
header (replication, or a peer that does not send footers) are hashed by
the object server as before.
"""

from __future__ import annotations

import hashlib
import zlib

FOOTER_HEADER = "X-Backend-Etag-Footer"
FOOTER_BYTES = 64


class FooterError(ValueError):
    """A footer that is malformed, or whose CRC-32 does not match the body."""


class BodyChecksums:
    """MD5 and CRC-32 of a body fed in pieces (``update`` may run in a worker thread)."""

    __slots__ = ("md5", "crc")

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.crc = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.md5.update(data)
        self.crc = zlib.crc32(data, self.crc)

    def footer(self) -> bytes:
        return f"{self.md5.hexdigest()}{self.crc:08x}".ljust(FOOTER_BYTES).encode("ascii")


def crc32_extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """The CRC-32 of everything so far, after ``data`` too."""
    return zlib.crc32(data, crc)


def check_footer(raw: bytes, crc: int) -> str:
    """The MD5 (hex) the footer carries, once its CRC-32 matches ``crc``."""
    text = raw.decode("ascii", "replace").rstrip(" ")
    if len(raw) != FOOTER_BYTES or len(text) != 40:
        raise FooterError("malformed ETag footer")
    md5, crc_hex = text[:32], text[32:]
    try:
        int(md5, 16)
        sent = int(crc_hex, 16)
    except ValueError:
        raise FooterError("malformed ETag footer") from None
    if sent != crc:
        raise FooterError(f"body CRC-32 {crc:08x} does not match the footer's {crc_hex}")
    return md5.lower()
