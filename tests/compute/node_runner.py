"""A ``peerstack node run`` that also runs the compute agent.

``tools.node_run.compose`` builds the node; if that composition does not
mount the compute agent yet (route ``compute``), it is installed here, so
the compute tests run against exactly the node the command would run plus
the agent.  Usage: ``python -m tests.compute.node_runner --config node.toml``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import trio

import compute_agent
from node.config import load_node_config
from node.log import setup_logging
from tests.cluster import ClusterNode
from tools import node_run


class AgentNode(ClusterNode):
    """A cluster node process started through this module."""

    def start(self, wait: float = 30.0) -> None:
        out = open(self.layout.root / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.compute.node_runner", "--config", str(self.layout.config_path)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2])
        out.close()
        self.pid_path.write_text(str(self.proc.pid))
        self.wait_healthy(wait)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = load_node_config(args.config)
    node = node_run.compose(config)
    if "compute" not in node.internal_routes:
        compute_agent.install(node)
    setup_logging(config.log_level, path=str(config.resolve(config.log_file)) if config.log_file else None)
    trio.run(node_run.serve, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
