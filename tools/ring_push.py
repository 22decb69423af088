"""``peerstack ring push``: hand a ring (and its builder) to every known node.

For clusters run with ``auto_join = false`` the operator builds rings with
``peerstack-ring`` and pushes them: the local node's membership table names
the peers, and each gets ``POST /cluster/ring/<type>`` (then
``/cluster/builder/<type>`` when ``--builder`` is given).  Every node checks
the signature and installs the ring only if it is newer than its own, so
pushing twice, or to a node that already gossiped it, is harmless.  Nodes
this command cannot reach pick the ring up by gossip later.

The ring type comes from the file name (``object.ring.gz``) unless
``--type`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from node.config import ConfigError, load_cluster_config, load_node_config
from node.gossip_files import frame_builder
from node.http_client import BackendError, HTTPClient
from node.membership import DEAD, RING_TYPES
from tools.status import fetch_members, local_endpoint, signed_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's TOML file")
    parser.add_argument("ring", help="the signed ring file, e.g. object.ring.gz")
    parser.add_argument("--builder", help="the builder that made it, so peers can be steward")
    parser.add_argument("--type", choices=RING_TYPES, help="ring type (default: from the file name)")


def ring_type_of(path: str, given: str | None) -> str:
    if given:
        return given
    name = Path(path).name.split(".", 1)[0]
    if name not in RING_TYPES:
        raise ConfigError(f"cannot tell the ring type of {path}; pass --type")
    return name


async def push(client: HTTPClient, targets: list[tuple[str, str, int]], ring_type: str,
               ring: bytes, builder: bytes | None) -> dict[str, str]:
    """Push to every ``(node_id, host, port)``; returns node id -> outcome text."""
    results: dict[str, str] = {}

    async def one(node_id: str, host: str, port: int) -> None:
        outcome = []
        uploads = [("ring", ring)] + ([("builder", builder)] if builder is not None else [])
        for what, body in uploads:
            try:
                resp = await client.request("POST", host, port, f"/cluster/{what}/{ring_type}",
                                            [("Content-Type", "application/octet-stream")], body)
            except BackendError as exc:
                outcome.append(f"{what}: unreachable ({exc})")
                break
            text = {201: "installed", 409: "not newer (kept its own)"}.get(
                resp.status, f"refused {resp.status}: {resp.body.decode(errors='replace').strip()}")
            outcome.append(f"{what}: {text}")
        results[node_id] = "; ".join(outcome)

    async with trio.open_nursery() as nursery:
        for node_id, host, port in targets:
            nursery.start_soon(one, node_id, host, port)
    return results


def run(args: argparse.Namespace) -> int:
    try:
        config = load_node_config(args.config)
        ring_type = ring_type_of(args.ring, args.type)
        host, port = local_endpoint(config)
        client = signed_client(config)
        ring = Path(args.ring).read_bytes()
        builder = None
        if args.builder:
            cluster = load_cluster_config(config.resolve(config.cluster_file))
            builder = frame_builder(cluster.secret_bytes, Path(args.builder).read_bytes())
    except (ConfigError, OSError) as exc:
        print(f"peerstack: {exc}", file=sys.stderr)
        return 2

    async def go() -> dict[str, str]:
        try:
            doc = await fetch_members(client, host, port)
            targets = [(m["node_id"], m["host"], m["internal_port"])
                       for m in doc["members"] if m["state"] != DEAD]
            return await push(client, targets, ring_type, ring, builder)
        finally:
            await client.aclose()

    try:
        results = trio.run(go)
    except (BackendError, ValueError) as exc:
        print(f"peerstack: cannot read membership from {host}:{port}: {exc}", file=sys.stderr)
        return 1
    failed = False
    for node_id, outcome in sorted(results.items()):
        print(f"{node_id}: {outcome}")
        failed |= "unreachable" in outcome or "refused" in outcome
    return 1 if failed else 0
