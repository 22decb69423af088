"""``peerstack user add project:user [--key K] [--admin]`` and ``peerstack user list``.

Users live in the ring (see :mod:`proxy.users`), so this command needs no
running proxy: it reads a node's config and the cluster file, builds a
cluster client that signs with the cluster secret, and writes the user
record straight to the storage servers.  Any node of the cluster can then
log the user in.  Without ``--key`` a random key is made and printed, with
the user's S3 access/secret key pair.
"""

from __future__ import annotations

import argparse
import secrets
import sys

import trio

from node.cluster_client import ClusterClient
from node.cluster_rings import RingUnavailable
from node.config import ConfigError, load_cluster_config, load_node_config
from node.http_client import HTTPClient
from node.signing import RequestSigner
from proxy.s3.credentials import key_pair
from proxy.users import UserError, UserStore, make_user, split_user


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="project:user (for add)")
    parser.add_argument("--key", help="the user's key (default: a random one, printed)")
    parser.add_argument("--admin", action="store_true",
                        help="make a cluster admin (reaches every account)")
    parser.add_argument("--config", "--node-config", dest="config", default="node.toml",
                        help="a node's TOML file (for the rings and the cluster file)")
    parser.add_argument("--cluster-file", help="the cluster file (default: the node config's)")


async def _run(action: str, args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    cluster = load_cluster_config(args.cluster_file or config.resolve(config.cluster_file))
    client = HTTPClient(signer=RequestSigner(cluster.secret_bytes))
    try:
        store = UserStore(ClusterClient(config, cluster, client), cluster)
        if action == "list":
            for name in await store.list():
                print(name)
            return 0
        if not args.name:
            print("peerstack user add: give project:user", file=sys.stderr)
            return 2
        project, user = split_user(args.name)
        key = args.key or secrets.token_urlsafe(18)
        await store.put(make_user(project, user, key, args.admin))
        print(f"user {project}:{user} added{' (cluster admin)' if args.admin else ''}")
        print(f"X-Auth-User: {project}:{user}")
        print(f"X-Auth-Key: {key}")
        access, secret = key_pair(cluster, project, user)
        print(f"AWS_ACCESS_KEY_ID: {access}")
        print(f"AWS_SECRET_ACCESS_KEY: {secret}")
        return 0
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    path = getattr(args, "_path", ("user", "add"))
    action = path[-1] if path[-1] in ("add", "list") else "add"
    try:
        return trio.run(_run, action, args)
    except (ConfigError, UserError, RingUnavailable) as exc:
        print(f"peerstack user {action}: {exc}", file=sys.stderr)
        return 2
