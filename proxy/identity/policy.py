"""The one policy table: which roles may do what, for every API of the cluster.

Three roles, per project, as Keystone's defaults since Wallaby:

* ``reader`` -- may look (GET/HEAD, listings) inside the project;
* ``member`` -- may also create, change and delete inside the project;
* ``admin``  -- on an ordinary project, what a member may, plus managing
  that project's role assignments; on the cluster's **admin project** (the
  ``[admin]`` project of the cluster file) it makes a *cloud admin*, who may
  do anything in any project and manage identity itself.

``admin`` implies ``member`` implies ``reader`` (Keystone's implied roles),
so a grant of ``admin`` alone suffices.  Other role names may be created and
assigned but imply nothing here.

Every API asks :func:`enforce` with an action name from :data:`RULES` and
the target's project (and user, for "self" rules), never its own role
checks; adding an API means adding rows here.  The caller is any object
with ``cluster_admin``, ``roles``, ``project_id`` and ``user_id`` (the
proxy's :class:`proxy.auth.Identity`).
"""

from __future__ import annotations

from typing import Protocol

IMPLIED = {"admin": ("admin", "member", "reader"), "member": ("member", "reader"), "reader": ("reader",)}

#: the checks a rule may combine (any one passing allows the action)
CLOUD_ADMIN = "cloud_admin"
PROJECT_ADMIN = "project_admin"
PROJECT_MEMBER = "project_member"
PROJECT_READER = "project_reader"
SELF = "self"
ANY_TOKEN = "any_token"

_ADMIN = (CLOUD_ADMIN,)
_READ = (CLOUD_ADMIN, PROJECT_READER)
_WRITE = (CLOUD_ADMIN, PROJECT_MEMBER)

RULES: dict[str, tuple[str, ...]] = {
    # identity: the cloud admin manages; users see themselves and their projects
    "identity:list_domains": _ADMIN, "identity:get_domain": _ADMIN,
    "identity:create_domain": _ADMIN, "identity:update_domain": _ADMIN, "identity:delete_domain": _ADMIN,
    "identity:list_projects": _ADMIN, "identity:get_project": _READ,
    "identity:create_project": _ADMIN, "identity:update_project": _ADMIN, "identity:delete_project": _ADMIN,
    "identity:list_users": _ADMIN, "identity:get_user": (CLOUD_ADMIN, SELF),
    "identity:create_user": _ADMIN, "identity:update_user": _ADMIN, "identity:delete_user": _ADMIN,
    "identity:change_password": (SELF,), "identity:list_user_projects": (CLOUD_ADMIN, SELF),
    "identity:list_roles": (CLOUD_ADMIN, ANY_TOKEN), "identity:get_role": (CLOUD_ADMIN, ANY_TOKEN),
    "identity:create_role": _ADMIN, "identity:update_role": _ADMIN, "identity:delete_role": _ADMIN,
    "identity:check_grant": (CLOUD_ADMIN, PROJECT_ADMIN), "identity:list_grants": (CLOUD_ADMIN, PROJECT_ADMIN),
    "identity:create_grant": (CLOUD_ADMIN, PROJECT_ADMIN), "identity:revoke_grant": (CLOUD_ADMIN, PROJECT_ADMIN),
    "identity:list_role_assignments": (CLOUD_ADMIN, PROJECT_ADMIN),
    "identity:ec2_create": (CLOUD_ADMIN, SELF), "identity:ec2_list": (CLOUD_ADMIN, SELF),
    "identity:ec2_get": (CLOUD_ADMIN, SELF), "identity:ec2_delete": (CLOUD_ADMIN, SELF),
    "identity:list_credentials": (CLOUD_ADMIN, SELF), "identity:get_credential": (CLOUD_ADMIN, SELF),
    "identity:create_credential": (CLOUD_ADMIN, SELF), "identity:delete_credential": (CLOUD_ADMIN, SELF),
    "identity:update_credential": (CLOUD_ADMIN, SELF),
    "identity:list_services": (CLOUD_ADMIN, ANY_TOKEN), "identity:list_endpoints": (CLOUD_ADMIN, ANY_TOKEN),
    "identity:application_credential_create": (SELF,),
    "identity:application_credential_list": (CLOUD_ADMIN, SELF),
    "identity:application_credential_get": (CLOUD_ADMIN, SELF),
    "identity:application_credential_delete": (CLOUD_ADMIN, SELF),
    # object storage (Swift and S3 alike)
    "object-store:read": _READ, "object-store:write": _WRITE,
    # images: everyone in the project uses them; publishing is the cloud admin's
    "image:read": _READ, "image:write": _WRITE, "image:publicize": _ADMIN,
    # compute, block storage, networking
    "compute:read": _READ, "compute:write": _WRITE,
    "volume:read": _READ, "volume:write": _WRITE,
    "network:read": _READ, "network:write": _WRITE, "network:external": _ADMIN,
}


class Caller(Protocol):
    cluster_admin: bool
    roles: frozenset[str]
    project_id: str
    user_id: str


def effective_roles(names: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """Role names plus what they imply (``admin`` -> ``member`` -> ``reader``)."""
    out: set[str] = set()
    for name in names:
        out.update(IMPLIED.get(name, (name,)))
    return frozenset(out)


def _check(check: str, caller: Caller, project_id: str | None, user_id: str | None) -> bool:
    if check == CLOUD_ADMIN:
        return caller.cluster_admin
    if check == ANY_TOKEN:
        return True
    if check == SELF:
        return user_id is not None and user_id == caller.user_id
    role = {PROJECT_ADMIN: "admin", PROJECT_MEMBER: "member", PROJECT_READER: "reader"}[check]
    return (project_id is not None and project_id == caller.project_id
            and role in effective_roles(caller.roles))


def enforce(caller: Caller | None, action: str, *, project_id: str | None = None,
            user_id: str | None = None) -> bool:
    """May ``caller`` (``None``: anonymous, never) do ``action`` to the target?

    ``project_id`` is the project owning the target (a Swift account's
    project, an image's owner); ``user_id`` the user a "self" rule compares
    with.  An unknown action is refused: a typo must not open anything.
    """
    if caller is None:
        return False
    rule = RULES.get(action)
    if rule is None:
        return False
    return any(_check(check, caller, project_id, user_id) for check in rule)
