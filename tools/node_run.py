"""``peerstack node run``: compose one node's services into one trio program.

This is the one place that knows every part of a node: the storage servers
(node/), the proxy (proxy/), the replicators (replicator/), the compute agent
(compute_agent/) and membership (node/).  Each part installs its handlers and background services on
the :class:`node.daemon.Node`, which serves both ports and supervises them.
"""

from __future__ import annotations

import argparse
import sys

import trio

import compute_agent
import proxy.app
import replicator
from node.config import ConfigError, NodeConfig, load_cluster_config, load_node_config
from node.daemon import Node
from node.log import setup_logging
from node.malloc_tuning import single_arena
from node.scheduling import batch_policy
from node.membership_service import install as install_membership
from node.storage import StorageServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's TOML file")


def compose(config: NodeConfig) -> Node:
    """Build a node with every service this build of peerstack has."""
    cluster = load_cluster_config(config.resolve(config.cluster_file))
    node = Node(config, cluster)
    storage = StorageServer(config, node.client, cluster)
    node.internal_default = storage
    node.add_service("storage", storage.run_background)
    proxy.app.install(node)
    replicator.install(node)
    compute_agent.install(node)
    node.membership_service = install_membership(node)
    return node


async def serve(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_node_config(args.config)
        node = compose(config)
    except ConfigError as exc:
        print(f"peerstack: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, path=str(config.resolve(config.log_file)) if config.log_file else None)
    single_arena()  # before any worker thread exists
    if config.batch_scheduling:
        batch_policy()  # likewise: threads inherit it
    trio.run(serve, node)
    return 0
