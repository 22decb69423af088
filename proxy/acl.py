"""Container ACLs: ``X-Container-Read`` and ``X-Container-Write``, tempauth syntax.

An ACL is a comma-separated list of grants:

* ``project:user`` -- that user; ``project`` or ``project:*`` -- every user of
  the project; ``*:user`` -- that user name in any project; ``*`` -- any
  authenticated user;
* ``.r:*`` (read ACLs only) -- anyone, even without a token, may read
  objects; ``.r:<host>`` referrer grants are accepted syntax but, as there
  is no trustworthy referrer, only ``.r:*`` opens anything;
* ``.rlistings`` -- with a referrer grant, anonymous callers may also list
  the container.

The account owner (and a cluster admin) never needs a grant.
"""

from __future__ import annotations

from proxy.auth import Identity
from proxy.swift_limits import Refusal


def parse_acl(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def check_acl_syntax(value: str, *, read: bool) -> Refusal | None:
    """Reject grants Swift would reject (referrers in write ACLs, empty referrers)."""
    for item in parse_acl(value):
        if item.startswith(".r:") or item.startswith(".ref") or item.startswith(".referrer"):
            if not read:
                return Refusal(400, f"Referrers not allowed in write ACL: {item!r}")
            if not item.partition(":")[2]:
                return Refusal(400, f"No host/domain value after referrer designation in ACL: {item!r}")
        elif item.startswith(".") and item != ".rlistings":
            return Refusal(400, f"Unknown designator {item!r} in ACL")
    return None


def _grants_user(grants: list[str], who: Identity) -> bool:
    for item in grants:
        if item.startswith("."):
            continue
        project, sep, user = item.partition(":")
        if item == "*":
            return True
        if not sep and project == who.project:
            return True
        if sep and project in (who.project, "*") and user in (who.user, "*"):
            return True
    return False


def allows_read(acl: str | None, who: Identity | None, *, listing: bool) -> bool:
    """May ``who`` (``None`` = anonymous) read objects (or, with ``listing``, list)?"""
    grants = parse_acl(acl)
    if who is not None and _grants_user(grants, who):
        return True
    public = any(g in (".r:*", ".referrer:*") for g in grants)
    if not public:
        return False
    return not listing or ".rlistings" in grants


def allows_write(acl: str | None, who: Identity | None) -> bool:
    return who is not None and _grants_user(parse_acl(acl), who)
