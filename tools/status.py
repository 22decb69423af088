"""``peerstack status``: the membership table as this node sees it.

Asks the local node's internal port (``GET /cluster/members``, signed with
the cluster secret from the node's cluster file) and prints one line per
node: state, address, zone, ring versions, capacity and when it was last
heard.  ``--json`` prints the node's answer as is.
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return f"cluster {doc['cluster']}  (as seen by {doc['node_id']})\n" + "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_node_config(args.config)
        host, port = local_endpoint(config)
        client = signed_client(config)
    except ConfigError as exc:
        print(f"peerstack: {exc}", file=sys.stderr)
        return 2

    async def ask() -> dict[str, Any]:
        try:
            return await fetch_members(client, host, port)
        finally:
            await client.aclose()

    try:
        doc = trio.run(ask)
    except (BackendError, ValueError) as exc:
        print(f"peerstack: cannot read membership from {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else format_table(doc))
    return 0
