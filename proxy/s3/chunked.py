"""Decoding ``Content-Encoding: aws-chunked`` request bodies.

S3 clients that sign a streamed upload, or send its checksum after the
body, frame the body in chunks of their own inside the HTTP body::

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [x-amz-checksum-crc32:<b64>\\r\\n ... [x-amz-trailer-signature:<sig>\\r\\n]]\\r\\n

:class:`AwsChunkedDecoder` turns that back into the object's bytes as they
arrive (it never holds more than one network read plus a chunk header),
checks each chunk signature against the chain that starts at the request's
own signature, and collects the trailers.  Malformed framing is
``IncompleteBody``/``InvalidRequest``; a wrong chunk or trailer signature
is ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.s3 import sigv4
from proxy.s3.errors import S3Error

MAX_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024


@dataclass
class ChunkSigner:
    """What checking the chunk signatures needs: key, time, scope and the seed signature."""

    key: bytes
    amz_date: str
    credential: sigv4.Credential
    seed: str


def _malformed(message: str) -> S3Error:
    return S3Error("InvalidRequest", f"Malformed aws-chunked body: {message}")


class AwsChunkedDecoder:
    """``async for data in AwsChunkedDecoder(raw_body, signer)``; then read :attr:`trailers`."""

    def __init__(self, raw: AsyncIterator[bytes], signer: ChunkSigner | None,
                 trailers_signed: bool = False) -> None:
        self.raw = raw
        self.signer = signer
        self.trailers_signed = trailers_signed and signer is not None
        self.trailers: dict[str, str] = {}
        self.decoded = 0
        self._previous = signer.seed if signer else ""

    def _check_chunk(self, claimed: str | None, digest: str) -> None:
        s = self.signer
        if s is None:
            return
        if claimed is None:
            raise S3Error("SignatureDoesNotMatch", "A chunk carries no chunk-signature")
        expected = sigv4.sign(s.key, sigv4.chunk_string_to_sign(s.amz_date, s.credential,
                                                                 self._previous, digest))
        if not sigv4.same(expected, claimed):
            raise S3Error("SignatureDoesNotMatch", "The chunk signature does not match")
        self._previous = expected

    @staticmethod
    def _parse_header(line: bytes) -> tuple[int, str | None]:
        text = line.decode("latin-1")
        size_text, _, ext = text.partition(";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise _malformed(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise _malformed("negative chunk size")
        signature = None
        if ext:
            name, _, value = ext.partition("=")
            if name.strip() != "chunk-signature":
                raise _malformed(f"unknown chunk extension {name[:40]!r}")
            signature = value.strip()
        return size, signature

    def _parse_trailers(self, block: bytes) -> None:
        lines = [ln for ln in block.split(b"\r\n") if ln]
        signature = None
        canonical = []
        for line in lines:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _malformed("bad trailer line")
            name, value = name.strip().lower(), value.strip()
            if name == "x-amz-trailer-signature":
                signature = value
                continue
            self.trailers[name] = value
            canonical.append(f"{name}:{value}\n")
        if self.trailers_signed:
            s = self.signer
            assert s is not None
            if signature is None:
                raise S3Error("SignatureDoesNotMatch", "The trailer carries no signature")
            digest = hashlib.sha256("".join(canonical).encode()).hexdigest()
            expected = sigv4.sign(s.key, sigv4.trailer_string_to_sign(s.amz_date, s.credential,
                                                                      self._previous, digest))
            if not sigv4.same(expected, signature):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature does not match")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._decode()

    async def _decode(self) -> AsyncIterator[bytes]:
        buf = bytearray()
        # states: "head" (reading a size line), "data", "crlf" (after data), "trailer"
        state = "head"
        remaining = 0
        claimed: str | None = None
        hasher = None
        raw = self.raw.__aiter__()
        ended = False
        while True:
            if state == "data":
                if buf:
                    piece = bytes(buf[:remaining])
                    del buf[:len(piece)]
                else:
                    try:
                        data = await raw.__anext__()
                    except StopAsyncIteration:
                        raise S3Error("IncompleteBody") from None
                    if len(data) > remaining:
                        buf += data[remaining:]
                        data = data[:remaining]
                    piece = data
                if piece:
                    remaining -= len(piece)
                    self.decoded += len(piece)
                    if hasher is not None:
                        hasher.update(piece)
                    if remaining == 0 and hasher is not None:
                        self._check_chunk(claimed, hasher.hexdigest())
                    yield piece
                if remaining == 0:
                    state = "crlf"
                continue
            # the other states need whole lines from the buffer
            if state == "head":
                end = buf.find(b"\r\n")
                if end >= 0:
                    remaining, claimed = self._parse_header(bytes(buf[:end]))
                    del buf[:end + 2]
                    hasher = hashlib.sha256() if self.signer else None
                    if remaining == 0:
                        if hasher is not None:
                            self._check_chunk(claimed, hasher.hexdigest())
                        state = "trailer"
                    else:
                        state = "data"
                    continue
                if len(buf) > MAX_LINE:
                    raise _malformed("chunk header too long")
            elif state == "crlf":
                if len(buf) >= 2:
                    if buf[:2] != b"\r\n":
                        raise _malformed("chunk data is longer than its size says")
                    del buf[:2]
                    state = "head"
                    continue
            elif state == "trailer":
                if buf.startswith(b"\r\n"):
                    self._parse_trailers(b"")
                    return
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    self._parse_trailers(bytes(buf[:end]))
                    return
                if ended:
                    # Some clients end the trailers with a single CRLF.
                    if buf.endswith(b"\r\n") or not buf:
                        self._parse_trailers(bytes(buf))
                        return
                    raise S3Error("IncompleteBody")
                if len(buf) > MAX_TRAILER_BYTES:
                    raise _malformed("trailers too long")
            if ended:
                raise S3Error("IncompleteBody")
            try:
                buf += await raw.__anext__()
            except StopAsyncIteration:
                ended = True
