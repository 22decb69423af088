"""Who may do what to which container: owners, cluster admins, ACL grants.

The owner of ``AUTH_<project>`` is any user of ``<project>``; a cluster
admin owns every account.  Anyone else needs a grant in the container's
``X-Container-Read`` (reads; listings too, except for the anonymous, who
also need ``.rlistings``) or ``X-Container-Write`` (object writes only:
creating, changing or deleting containers stays with the owner).  A denied
caller gets ``401`` without a valid token and ``403`` with one, as in Swift.
"""

from __future__ import annotations

from node.http_server import Response
from proxy.acl import allows_read, allows_write
from proxy.swift_call import SwiftCall
from proxy.swift_responses import error


def denied(call: SwiftCall) -> Response:
    return error(403 if call.identity is not None else 401)


async def authorize(call: SwiftCall, account: str, container: str | None, *, write: bool,
                    listing: bool = False) -> Response | None:
    """``None`` if the caller may proceed, else the refusal to send."""
    if call.identity is not None and call.identity.owns(account):
        return None
    if container is None:
        return denied(call)
    info = await call.containers.get(call.cc, account, container)
    if info.status // 100 != 2:
        return denied(call)
    if write:
        ok = allows_write(info.headers.get("x-container-write"), call.identity)
    else:
        ok = allows_read(info.headers.get("x-container-read"), call.identity, listing=listing)
    return None if ok else denied(call)
