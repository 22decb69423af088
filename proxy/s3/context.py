"""One S3 request after authentication: who asks, for which bucket and key.

Handlers receive an :class:`S3Call`; it carries the parsed names, the
caller's identity, the verified body and the shared per-process tools, so
no handler re-parses the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.cluster_client import ClusterClient
from node.http_server import Request
from proxy.auth import Identity
from proxy.s3.payload import Payload
from proxy.swift_call import ContainerInfoCache, SwiftCall

#: S3's limits
MAX_KEY_BYTES = 1024
MAX_OBJECT_SIZE = 5 * 1024 ** 3
MAX_USER_METADATA = 2048
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10000
SEGMENTS_SUFFIX = "+segments"


@dataclass
class S3Settings:
    """Knobs of the S3 API (the defaults are S3's)."""

    #: the region this cluster calls itself (LocationConstraint, GetBucketLocation)
    region: str = "us-east-1"
    #: domains for virtual-host-style addressing: ``<bucket>.<domain>``
    domains: tuple[str, ...] = ("localhost",)
    #: smallest part (but the last) CompleteMultipartUpload accepts
    min_part_size: int = MIN_PART_SIZE
    #: allowed difference between the request's time and ours (seconds)
    max_skew: float = 900.0


@dataclass
class S3Call:
    request: Request
    cc: ClusterClient
    containers: ContainerInfoCache
    settings: S3Settings
    identity: Identity
    payload: Payload
    bucket: str | None = None
    key: str | None = None
    #: query parameters, decoded without turning ``+`` into a space
    query: dict[str, str] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.identity.account

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def rid(self) -> str:
        return self.request.request_id

    @property
    def segments(self) -> str:
        """The container holding this bucket's multipart parts."""
        return (self.bucket or "") + SEGMENTS_SUFFIX

    def swift_call(self) -> SwiftCall:
        """The same request seen as a Swift call (to reuse the large-object readers)."""
        call = SwiftCall(self.request, self.cc, self.containers, self.identity, self.account,
                         self.bucket, self.key)
        call.owner = True
        return call
