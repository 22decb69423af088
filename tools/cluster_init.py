"""``peerstack cluster init``: make a cluster's identity once, for every node.

Writes the cluster file (``0600``): cluster id, the shared secret, the ring
hash prefix/suffix and the bootstrap admin.  Copy it to every node; a node
holding it can sign internal requests and rings, so treat it like a key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.config import cluster_to_toml, new_cluster, write_private


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="peerstack", help="human name of the cluster")
    parser.add_argument("--out", default="cluster.toml", help="where to write the cluster file")
    parser.add_argument("--admin-password", help="bootstrap admin password (default: random)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing cluster file")


def init_cluster(path: Path, name: str, admin_password: str | None = None,
                 force: bool = False) -> bool:
    """Write a new cluster file at ``path``; returns False if one exists and not ``force``."""
    if path.exists() and not force:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, cluster_to_toml(new_cluster(name, admin_password)))
    return True


def run(args: argparse.Namespace) -> int:
    path = Path(args.out)
    if not init_cluster(path, args.name, args.admin_password, args.force):
        print(f"peerstack: {path} exists; pass --force to replace it (this makes a NEW cluster)")
        return 2
    print(f"cluster file written to {path} (mode 0600); copy it to every node")
    return 0
