"""A request body as the object's bytes, checked while it streams.

Whatever the framing (plain, ``aws-chunked`` with signed chunks, trailing
checksums), handlers read :class:`Payload`.  As the bytes flow it computes
what the request promised -- ``x-amz-content-sha256``, ``Content-MD5``,
one ``x-amz-checksum-<algo>`` (in a header or a trailer) -- and checks it
at the end.

Nothing unverified is ever stored: the **last piece is held back** until
every check has passed.  The storage servers commit an object only when
they have all ``Content-Length`` bytes (or, chunked, the final chunk), so
a failed check raises before that and the cluster client aborts every
backend (see :meth:`node.cluster_client.ClusterClient.put_object`).  A
small body (up to :data:`SMALL_BODY`) is read whole first
(:meth:`Payload.prefetch`), so its checks -- and a trailer's checksum
value -- are known before any backend is contacted.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from node.http_server import BadRequest, Request
from proxy.s3 import checksums
from proxy.s3.chunked import AwsChunkedDecoder, ChunkSigner
from proxy.s3.errors import S3Error

SMALL_BODY = 1 << 20

_NAMES = {"crc32": "CRC32", "crc32c": "CRC32C", "crc64nvme": "CRC64NVME", "sha1": "SHA1",
          "sha256": "SHA256"}


def algorithm_label(algorithm: str) -> str:
    """``crc32`` -> ``CRC32`` (how S3 spells algorithms in XML and headers)."""
    return _NAMES[algorithm]


def requested_checksum(request: Request) -> tuple[str | None, str | None, bool]:
    """``(algorithm, value, in_trailer)`` the client asked to have checked.

    S3 allows one algorithm per request; the value comes in
    ``x-amz-checksum-<algo>``, or later in a trailer named by
    ``x-amz-trailer``; ``x-amz-sdk-checksum-algorithm`` alone asks S3 to
    compute and keep it.
    """
    h = request.headers
    given = [(a, h.get(f"x-amz-checksum-{a}")) for a in checksums.ALGORITHMS
             if h.get(f"x-amz-checksum-{a}") is not None]
    trailer = (h.get("x-amz-trailer") or "").strip().lower()
    if len(given) > 1 or (given and trailer):
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum "
                                        "Types are not allowed.")
    if trailer:
        if not trailer.startswith("x-amz-checksum-") or trailer[15:] not in checksums.ALGORITHMS:
            raise S3Error("InvalidRequest", f"The value specified in the x-amz-trailer header is not "
                                            f"supported: {trailer}")
        return trailer[15:], None, True
    if given:
        algorithm, value = given[0]
        assert value is not None
        try:
            checksums.decode(algorithm, value)
        except checksums.ChecksumError:
            raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is "
                                            f"invalid.") from None
        return algorithm, value, False
    sdk = (h.get("x-amz-sdk-checksum-algorithm") or "").strip().lower()
    if sdk:
        if sdk not in checksums.ALGORITHMS:
            raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please try "
                                            "again with any of the valid types: [CRC32, CRC32C, "
                                            "CRC64NVME, SHA1, SHA256]")
        return sdk, None, False
    return None, None, False


class Payload:
    """The decoded, verified body of one request (iterate it once)."""

    def __init__(self, request: Request, *, content_sha256: str | None,
                 signer: ChunkSigner | None = None, aws_chunked: bool = False,
                 trailer_signed: bool = False) -> None:
        self.request = request
        h = request.headers
        self.algorithm, self.checksum_value, self.checksum_in_trailer = requested_checksum(request)
        md5 = h.get("content-md5")
        self.md5_hex: str | None = None
        if md5 is not None:
            try:
                self.md5_hex = checksums.content_md5(md5)
            except checksums.ChecksumError:
                raise S3Error("InvalidDigest") from None
        self.content_sha256 = content_sha256
        self.decoder: AwsChunkedDecoder | None = None
        if aws_chunked:
            self.decoder = AwsChunkedDecoder(request.iter_body(), signer, trailer_signed)
            decoded = h.get("x-amz-decoded-content-length")
            try:
                self.length = int(decoded) if decoded is not None else None
            except ValueError:
                raise S3Error("InvalidArgument", "x-amz-decoded-content-length is not a number") from None
            self._source: AsyncIterator[bytes] = self.decoder.__aiter__()
        else:
            self.length = request.content_length
            self._source = request.iter_body()
        self._sha256 = hashlib.sha256() if content_sha256 else None
        self._md5 = hashlib.md5() if self.md5_hex else None
        self._checksum = checksums.new_hasher(self.algorithm) if self.algorithm else None
        self._head: list[bytes] = []
        self._done = False
        self.size = 0

    @property
    def has_body(self) -> bool:
        return self.decoder is not None or self.request.has_body

    async def _next(self) -> bytes | None:
        """The next non-empty piece (hashed), or ``None`` at the end."""
        while True:
            try:
                piece = await self._source.__anext__()
            except StopAsyncIteration:
                return None
            except BadRequest as exc:
                raise S3Error("IncompleteBody", str(exc)) from exc
            if not piece:
                continue
            self.size += len(piece)
            if self.length is not None and self.size > self.length:
                raise S3Error("InvalidRequest", "The body is longer than its declared length")
            for h in (self._sha256, self._md5, self._checksum):
                if h is not None:
                    h.update(piece)
            return piece

    def _finish(self) -> None:
        """Every check of a complete body; raises the S3 error of the first that fails."""
        self._done = True
        if self.length is not None and self.size != self.length:
            raise S3Error("IncompleteBody")
        if self._sha256 is not None and self._sha256.hexdigest() != self.content_sha256:
            raise S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=self.content_sha256 or "",
                          S3ComputedContentSHA256=self._sha256.hexdigest())
        if self._md5 is not None and self._md5.hexdigest() != self.md5_hex:
            raise S3Error("BadDigest")
        if self._checksum is not None:
            assert self.algorithm is not None
            if self.checksum_in_trailer:
                assert self.decoder is not None
                value = self.decoder.trailers.get(f"x-amz-checksum-{self.algorithm}")
                if value is None:
                    raise S3Error("InvalidRequest", "The x-amz-trailer checksum was not sent")
                self.checksum_value = value
            computed = checksums.encode(self._checksum.digest())
            if self.checksum_value is None:
                self.checksum_value = computed
            elif self.checksum_value.strip() != computed:
                raise S3Error("BadDigest", f"The {algorithm_label(self.algorithm)} you specified did "
                                           f"not match the calculated checksum.")

    async def prefetch(self, limit: int = SMALL_BODY) -> bytes | None:
        """The whole (checked) body if it is at most ``limit`` bytes, else ``None``.

        With ``None`` the bytes read so far stay queued for :meth:`stream`.
        """
        if self.length is not None and self.length > limit:
            return None
        total = 0
        while total <= limit:
            piece = await self._next()
            if piece is None:
                self._finish()
                data = b"".join(self._head)
                self._head = []
                return data
            self._head.append(piece)
            total += len(piece)
        return None

    async def read_all(self, limit: int) -> bytes:
        """A small document body (XML), checked; ``MaxMessageLengthExceeded`` past ``limit``."""
        data = await self.prefetch(limit)
        if data is None:
            raise S3Error("MaxMessageLengthExceeded")
        return data

    def stream(self) -> AsyncIterator[bytes]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        if self._done:
            for piece in self._head:
                yield piece
            return
        pending: bytes | None = None
        queued, self._head = self._head, []
        for piece in queued:
            if pending is not None:
                yield pending
            pending = piece
        while (piece := await self._next()) is not None:
            if pending is not None:
                yield pending
            pending = piece
        self._finish()
        if pending is not None:
            yield pending
