"""``peerstack bench compare --quick --no-swift``: the bench runs end to end and reports JSON."""

from __future__ import annotations

import argparse
import json
import os

from tools import bench_compare


def test_quick_peerstack_only(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    bench_compare.add_arguments(parser)
    args = parser.parse_args(["--quick", "--no-swift", "--json", "--dir", str(tmp_path / "bench")])
    assert bench_compare.run(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(out[-1])
    ours = doc["peerstack"]
    for verb in ("put_4k", "get_4k", "head_4k", "delete_4k"):
        assert ours[verb]["errors"] == 0 and ours[verb]["ops_per_s"] > 0
    assert ours["put_large"]["bytes"] == ours["get_large"]["bytes"] == 4 << 20
    assert len(ours["large_rounds"]) == 3  # the best of three rounds is reported
    assert ours["put_large"] in [r["put_large"] for r in ours["large_rounds"]]
    assert ours["listing"]["objects"] == 200
    assert ours["proxy_peak_rss_mb"] > 0
    # the cluster's CPU seconds per phase (the four node processes did the work)
    assert ours["cpu_s_small"] > 0 and ours["cpu_s_large"] > 0 and ours["cpu_s_listing"] > 0
    assert ours["cpu_s_small_machine"] >= ours["cpu_s_small"] * 0.9  # the machine ran the cluster too
    assert all(ours[verb]["cpu_ms"] > 0 for verb in ("put_4k", "get_4k", "head_4k", "delete_4k"))
    assert doc["swift"] is None and doc["targets"] == {}
    assert set(doc["limits"]) == {"loopback_tcp_mb_per_s", "disk_write_fsync_mb_per_s", "md5_mb_per_s",
                                  "lowest_mb_per_s"}
    assert "4 KiB PUT ops/s" in "\n".join(out[:-1])
    # everything it started is gone: no process still runs from the bench directory
    assert not [cmd for cmd in _command_lines() if str(tmp_path) in cmd]
    # ...and so is what it stored, so the next run's PUTs do not follow a mass delete;
    # the nodes' logs stay
    nodes = sorted((tmp_path / "bench" / "peerstack").glob("node*"))
    assert len(nodes) == 4 and all((n / "node.log").is_file() for n in nodes)
    assert not [d for n in nodes for d in n.glob("d*")]


def _command_lines() -> list[str]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read().decode(errors="replace"))
        except OSError:
            continue  # exited meanwhile
    return lines
