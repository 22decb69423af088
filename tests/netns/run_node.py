"""Run one node with membership installed, for the namespace tests.

Started inside a namespace (``ip netns exec NS python -m tests.netns.run_node
--config node.toml``).  It serves the internal and public ports and runs
discovery, heartbeats, gossip and auto-join -- the parts these tests are
about -- without the storage servers or the proxy.
"""

from __future__ import annotations

import argparse

import trio

from node.config import load_cluster_config, load_node_config
from node.daemon import Node
from node.log import setup_logging
from node.membership_service import install


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = load_node_config(args.config)
    setup_logging("info", path=str(config.resolve(config.log_file)))
    node = Node(config, load_cluster_config(config.resolve(config.cluster_file)))
    install(node)
    trio.run(node.run)


if __name__ == "__main__":
    main()
