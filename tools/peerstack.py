"""``peerstack``: the operator's command.

Sub-commands are thin: each parses its arguments and calls library code (or a
``tools`` module that composes library code).  Modules for the bigger
sub-commands expose ``add_arguments(parser)`` and ``run(args) -> int`` and are
imported only when used, so ``peerstack --help`` stays fast and a bench's
optional dependencies are not needed to run a node.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command path -> (module, help); the module has add_arguments() and run()
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("cluster", "init"): ("tools.cluster_init", "make a new cluster: id, secret, hash salts, admin"),
    ("node", "run"): ("tools.node_run", "run this node's daemon (both ports, all services)"),
    ("demo",): ("tools.demo", "start (or stop) a 3-node demo cluster on loopback under ./var/demo"),
    ("status",): ("tools.status", "this node's view of the cluster: members, states, ring versions"),
    ("ring", "push"): ("tools.ring_push", "push a signed ring (and --builder) to every known node"),
    ("user", "add"): ("tools.user_cmd", "add a user (project:user) and print its credentials"),
    ("user", "list"): ("tools.user_cmd", "list the users stored in the cluster"),
    ("bench", "http"): ("tools.bench_http", "HTTP core vs hypercorn: small GET req/s, 256 MiB PUT/GET"),
    ("bench", "ring"): ("tools.bench_ring", "ring builder vs Swift's RingBuilder"),
    ("bench", "swift"): ("tools.bench_swift", "Swift v1 workload against any Swift endpoint"),
    ("bench", "compare"): ("tools.bench_compare", "peerstack vs OpenStack Swift side by side"),
    ("bench", "replicate"): ("tools.bench_replicate", "MB/s to rebuild a wiped device, against the machine's limits"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerstack", description="peerstack: run, build and measure a peerstack cluster")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", required=True, metavar="COMMAND")}
    for path, (module, help_text) in COMMANDS.items():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest="_".join(prefix) + "_cmd", required=True,
                                                    metavar="COMMAND")
        leaf = groups[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        leaf.set_defaults(_module=module)
        leaf.add_argument("--_path", default=path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Sub-command options live in their modules: parse once to find the
    # module, let it add its options, then parse for real.
    first_pass = [a for a in argv if a not in ("-h", "--help")]
    if not first_pass or first_pass[0].startswith("-"):
        parser.parse_args(argv)
    known, _ = parser.parse_known_args(first_pass)
    module = importlib.import_module(known._module)
    leaf = _leaf_parser(parser, known._path)
    module.add_arguments(leaf)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


def _leaf_parser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subs.choices[name]
    return parser


if __name__ == "__main__":
    sys.exit(main())
