"""``peerstack status``: the cluster as this node sees it.

Asks the local node's internal port (``GET /cluster/members``, signed with
the cluster secret from the node's cluster file) and prints one line per
node: state, address, zone, ring versions, capacity and when it was last
heard.  Then it asks every alive node for its replication status (``GET
/replication/status``) and prints one line per node and device: replication
age, the last object pass, quarantined files, async pendings and handoff
partitions held.  ``--json`` prints both documents as they came.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from node.config import ConfigError, NodeConfig, load_cluster_config, load_node_config
from node.http_client import BackendError, HTTPClient, Timeouts
from node.membership import RING_TYPES
from node.signing import RequestSigner

TIMEOUTS = Timeouts(connect=3.0, node=10.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's TOML file")
    parser.add_argument("--json", action="store_true", help="print the raw JSON table")


def local_endpoint(config: NodeConfig) -> tuple[str, int]:
    """Where this node's internal port answers (a wildcard listen means loopback)."""
    host = config.internal.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if not config.internal.port:
        raise ConfigError("internal.port is 0 (chosen at start); set a fixed port to ask the node")
    return host, config.internal.port


def signed_client(config: NodeConfig) -> HTTPClient:
    cluster = load_cluster_config(config.resolve(config.cluster_file))
    return HTTPClient(signer=RequestSigner(cluster.secret_bytes), timeouts=TIMEOUTS)


async def fetch_members(client: HTTPClient, host: str, port: int) -> dict[str, Any]:
    """The node's ``GET /cluster/members`` document; raises BackendError if it cannot answer."""
    resp = await client.request("GET", host, port, "/cluster/members")
    if resp.status != 200:
        raise BackendError(f"{host}:{port} answered {resp.status}: {resp.body[:200]!r}")
    return json.loads(resp.body)


async def fetch_replication(client: HTTPClient, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Each alive member's ``/replication/status`` (an ``error`` entry where it did not answer)."""
    out: dict[str, Any] = {}

    async def one(m: dict[str, Any]) -> None:
        try:
            resp = await client.request("GET", m["host"], m["internal_port"], "/replication/status")
            out[m["node_id"]] = (json.loads(resp.body) if resp.status == 200
                                 else {"error": f"status {resp.status}"})
        except (BackendError, ValueError) as exc:
            out[m["node_id"]] = {"error": str(exc)}

    async with trio.open_nursery() as nursery:
        for m in members:
            if m["state"] == "alive":
                nursery.start_soon(one, m)
    return out


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def format_table(doc: dict[str, Any]) -> str:
    """The members document as aligned text, this node marked with ``*``."""
    rows = [["", "NODE", "STATE", "INTERNAL", "R/Z", "RINGS a/c/o", "CAPACITY", "HEARD"]]
    for m in doc["members"]:
        rings = "/".join(str(m["rings"].get(t, {}).get("version", "-")) for t in RING_TYPES)
        rows.append(["*" if m["self"] else "", m["node_id"], m["state"],
                     f"{m['host']}:{m['internal_port']}", f"{m['region']}/{m['zone']}", rings,
                     _human_bytes(m["capacity"]), f"{m['last_heard']:.1f}s ago"])
    return f"cluster {doc['cluster']}  (as seen by {doc['node_id']})\n" + _align(rows)


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def format_replication(docs: dict[str, Any]) -> str:
    """Per node and device: replication age, last object pass, quarantined, async pendings, handoffs."""
    rows = [["NODE", "DEVICE", "REPL AGE", "LAST PASS", "QUARANTINED", "ASYNC", "HANDOFF PARTS a/c/o"]]
    for node_id, doc in sorted(docs.items()):
        if "error" in doc:
            rows.append([node_id, "-", "-", doc["error"][:60], "-", "-", "-"])
            continue
        for device, d in sorted(doc["devices"].items()):
            if not d.get("mounted"):
                rows.append([node_id, device, "-", "not mounted", "-", "-", "-"])
                continue
            age = d.get("replication_age")
            last = (d.get("object_replication") or {}).get("last_pass")
            # a pass report leaves out the counts that stayed zero
            passed = (f"{last.get('partitions', 0)} parts, {last.get('files_pushed', 0)} files, "
                      f"{_human_bytes(last.get('bytes_pushed', 0))}, {last['seconds']:.1f}s"
                      if last else "none yet")
            handoffs = d.get("handoff_partitions") or {}
            rows.append([node_id, device, "-" if age is None else f"{age:.0f}s", passed,
                         str(sum((d.get("quarantined") or {}).values())), str(d.get("async_pending", 0)),
                         "/".join(str(handoffs.get(k, 0)) for k in ("account", "container", "object"))])
    return _align(rows)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_node_config(args.config)
        host, port = local_endpoint(config)
        client = signed_client(config)
    except ConfigError as exc:
        print(f"peerstack: {exc}", file=sys.stderr)
        return 2

    async def ask() -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            members = await fetch_members(client, host, port)
            return members, await fetch_replication(client, members["members"])
        finally:
            await client.aclose()

    try:
        doc, replication = trio.run(ask)
    except (BackendError, ValueError) as exc:
        print(f"peerstack: cannot read membership from {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**doc, "replication": replication}, indent=2))
    else:
        print(format_table(doc))
        print()
        print(format_replication(replication))
    return 0
