"""The one policy table: readers read, members write in their project, cloud admins everywhere."""

from __future__ import annotations

from proxy.auth import Identity
from proxy.identity.policy import RULES, effective_roles, enforce


def who(roles: set[str], project: str = "p1", admin: bool = False, user: str = "u1") -> Identity:
    return Identity(project="name", user="alice", cluster_admin=admin, project_id=project,
                    user_id=user, roles=effective_roles(roles))


def test_implied_roles():
    assert effective_roles({"admin"}) == {"admin", "member", "reader"}
    assert effective_roles({"member"}) == {"member", "reader"}
    assert effective_roles({"auditor"}) == {"auditor"}


def test_reader_member_admin_in_their_project_and_elsewhere():
    reader, member, padmin = who({"reader"}), who({"member"}), who({"admin"})
    for service in ("object-store", "image", "compute", "volume", "network"):
        assert enforce(reader, f"{service}:read", project_id="p1")
        assert not enforce(reader, f"{service}:write", project_id="p1")
        assert enforce(member, f"{service}:write", project_id="p1")
        assert not enforce(member, f"{service}:read", project_id="p2")
        assert not enforce(padmin, f"{service}:write", project_id="p2")
    cloud = who({"admin"}, project="adminproj", admin=True)
    assert enforce(cloud, "object-store:write", project_id="p2")
    assert enforce(cloud, "identity:create_project")
    assert not enforce(padmin, "identity:create_project")
    assert enforce(padmin, "identity:create_grant", project_id="p1")
    assert not enforce(padmin, "identity:create_grant", project_id="p2")


def test_self_rules_and_refusals():
    member = who({"member"})
    assert enforce(member, "identity:ec2_create", user_id="u1")
    assert not enforce(member, "identity:ec2_create", user_id="u2")
    assert enforce(member, "identity:change_password", user_id="u1")
    assert not enforce(who({"admin"}, admin=True), "identity:change_password", user_id="u2")
    assert not enforce(None, "object-store:read", project_id="p1")
    assert not enforce(member, "object-store:raed", project_id="p1")  # unknown action: refused
    assert all(isinstance(rule, tuple) and rule for rule in RULES.values())


def test_swift_identity_owner_rights():
    member = who({"member"})
    assert member.account == "AUTH_p1" and member.owns("AUTH_p1") and not member.owns("AUTH_p2")
    domain_scoped = Identity(project="", user="alice", project_id="", user_id="u1", roles=frozenset())
    assert not domain_scoped.owns("AUTH_") and not domain_scoped.owns("AUTH_p1")
    # Swift-only users (no ids) keep their name-based accounts.
    assert Identity("proj2", "bob").owns("AUTH_proj2")
