"""Swift account and container requests: listings, metadata, create and delete.

Listings are rendered by the container and account servers; the proxy
checks the query (Swift's ``limit`` rules), picks the format from
``?format=`` or ``Accept`` (json, xml, plain) and passes the page through.

Accounts appear by themselves (Swift's ``account_autocreate``): the first
container PUT creates ``AUTH_<project>``, and until then the owner sees an
empty account rather than ``404``.  Creating or deleting accounts directly
is not offered (``allow_account_management = false``), as in a default
Swift.
"""

from __future__ import annotations

from node.cluster_client import make_timestamp
from node.http_server import Response
from proxy import bulk
from proxy.acl import check_acl_syntax
from proxy.swift_call import SwiftCall
from proxy.swift_limits import (ACCOUNT_LISTING_LIMIT, CONTAINER_LISTING_LIMIT, Refusal,
                                check_container_name, check_metadata, check_name_chars,
                                parse_listing_limit)
from proxy.swift_responses import client_headers, empty, error

_LISTING_PARAMS = ("prefix", "delimiter", "marker", "end_marker", "reverse", "path")


def _refuse(r: Refusal) -> Response:
    return error(r.status, r.message)


def listing_format(call: SwiftCall) -> str:
    fmt = (call.query.get("format") or "").lower()
    if fmt in ("json", "xml", "plain"):
        return fmt
    accept = (call.request.headers.get("accept") or "").lower()
    if "application/json" in accept:
        return "json"
    if "application/xml" in accept or "text/xml" in accept:
        return "xml"
    return "plain"


def listing_query(call: SwiftCall, maximum: int) -> tuple[dict[str, str] | None, Response | None]:
    limit, bad = parse_listing_limit(call.query.get("limit"), maximum)
    if bad:
        return None, _refuse(bad)
    query = {"format": listing_format(call), "limit": str(limit)}
    for name in _LISTING_PARAMS:
        value = call.query.get(name)
        if value is None:
            continue
        bad = check_name_chars(value)
        if bad:
            return None, _refuse(bad)
        query[name] = value
    delimiter = query.get("delimiter")
    if delimiter is not None and len(delimiter) > 1:
        return None, error(412, "Bad delimiter")
    return query, None


def _meta_headers(call: SwiftCall, level: str) -> tuple[list[tuple[str, str]] | None, Response | None]:
    """Metadata and ACL headers for an account/container PUT or POST.

    ``X-Remove-<Level>-Meta-Foo`` becomes an empty ``X-<Level>-Meta-Foo``,
    which the storage servers treat as a deletion, as Swift's do.
    """
    h = call.request.headers
    bad = check_metadata(h, level)
    if bad:
        return None, _refuse(bad)
    out = []
    remove = f"x-remove-{level}-"
    keep = [f"x-{level}-meta-"]
    if level == "container":
        keep += ["x-container-read", "x-container-write"]
        for name, is_read in (("x-container-read", True), ("x-container-write", False)):
            if h.get(name):
                bad = check_acl_syntax(h[name], read=is_read)
                if bad:
                    return None, _refuse(bad)
    for name, value in h.items():
        if any(name.startswith(k) for k in keep):
            out.append((name, value))
        elif name.startswith(remove):
            out.append((f"x-{level}-" + name[len(remove):], ""))
    return out, None


async def handle_container(call: SwiftCall) -> Response:
    bad = check_container_name(call.container or "")
    if bad:
        return _refuse(bad)
    account, container = call.account, call.container or ""
    method = call.method
    if method in ("GET", "HEAD"):
        if method == "HEAD":
            resp = await call.cc.head_container(account, container)
            query = None
        else:
            query, refusal = listing_query(call, CONTAINER_LISTING_LIMIT)
            if refusal is not None:
                return refusal
            resp = await call.cc.get_container(account, container, query)
        if resp.status // 100 != 2:
            return error(resp.status)
        headers = client_headers(resp.headers, show_acls=call.owner)
        if method == "HEAD":
            return Response(204, headers, b"")
        return Response(resp.status, headers, resp.body)
    if method in ("PUT", "POST"):
        headers, refusal = _meta_headers(call, "container")
        if refusal is not None:
            return refusal
        assert headers is not None
        call.containers.forget(account, container)
        if method == "PUT":
            resp = await call.cc.put_container(account, container, headers)
            if resp.status // 100 != 2:
                return error(resp.status)
            return empty(resp.status if resp.status in (201, 202) else 201)
        resp = await call.cc.post_container(account, container, headers)
        return empty(204) if resp.status // 100 == 2 else error(resp.status)
    if method == "DELETE":
        call.containers.forget(account, container)
        resp = await call.cc.delete_container(account, container)
        if resp.status == 409:
            return error(409, "There was a conflict when trying to complete your request.")
        return empty(204) if resp.status // 100 == 2 else error(resp.status)
    return error(405, headers=[("Allow", "GET, HEAD, PUT, POST, DELETE")])


def _empty_account(call: SwiftCall, fmt: str) -> Response:
    """The listing of an account that does not exist yet (autocreate)."""
    now = make_timestamp()
    headers = [("X-Account-Container-Count", "0"), ("X-Account-Object-Count", "0"),
               ("X-Account-Bytes-Used", "0"), ("X-Timestamp", now), ("X-Put-Timestamp", now)]
    if call.method == "HEAD" or fmt == "plain":
        return Response(204, headers + [("Content-Type", "text/plain; charset=utf-8")], b"")
    if fmt == "json":
        return Response(200, headers + [("Content-Type", "application/json; charset=utf-8")], b"[]")
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<account name="{call.account}"></account>')
    return Response(200, headers + [("Content-Type", "application/xml; charset=utf-8")], xml.encode())


async def handle_account(call: SwiftCall) -> Response:
    method = call.method
    if "bulk-delete" in call.query and method in ("POST", "DELETE"):
        return await bulk.bulk_delete(call)
    if not call.owner:
        return error(403 if call.identity else 401)
    account = call.account
    if method in ("GET", "HEAD"):
        query = None
        if method == "GET":
            query, refusal = listing_query(call, ACCOUNT_LISTING_LIMIT)
            if refusal is not None:
                return refusal
            resp = await call.cc.get_account(account, query)
        else:
            resp = await call.cc.head_account(account)
        if resp.status == 404:
            return _empty_account(call, query["format"] if query else "plain")
        if resp.status // 100 != 2:
            return error(resp.status)
        headers = client_headers(resp.headers)
        if method == "HEAD":
            return Response(204, headers, b"")
        return Response(resp.status, headers, resp.body)
    if method == "POST":
        headers, refusal = _meta_headers(call, "account")
        if refusal is not None:
            return refusal
        resp = await call.cc.post_account(account, headers)
        if resp.status == 404:
            made = await call.cc.put_account(account)
            if made.status // 100 != 2:
                return error(made.status)
            resp = await call.cc.post_account(account, headers)
        return empty(204) if resp.status // 100 == 2 else error(resp.status)
    return error(405, headers=[("Allow", "GET, HEAD, POST")])
