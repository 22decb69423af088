"""peerstack-ring: commands, exit codes, and bad input leaving the builder untouched."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ring.builder import RingBuilder
from ring.ringfile import load_ring
from tools.ring_builder import main

ROOT = Path(__file__).resolve().parents[2]
SECRET_HEX = "00112233445566778899aabbccddeeff"


@pytest.fixture
def cluster(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(f'cluster_id = "x"\nsecret = "{SECRET_HEX}"\n')
    return path


@pytest.fixture
def builder(tmp_path):
    path = str(tmp_path / "object.builder")
    assert main([path, "create", "8", "3", "1"]) == 0
    devs = []
    for z in range(1, 5):
        for n in range(2):
            devs += [f"r1z{z}-10.0.{z}.{n}:6200/d1", "100"]
    assert main([path, "add", *devs]) == 0
    assert main([path, "rebalance", "--seed", "1"]) == 0
    return path


def test_create_add_rebalance_write(builder, cluster, capsys):
    b = RingBuilder.load(builder)
    assert len(b.devices) == 8 and b.assign is not None
    assert main([builder, "validate"]) == 0
    assert main(["--secret-file", str(cluster), builder, "write_ring"]) == 0
    ring = load_ring(builder.replace(".builder", ".ring.gz"), bytes.fromhex(SECRET_HEX))
    assert ring.version == RingBuilder.load(builder).version
    assert main([builder]) == 0
    out = capsys.readouterr().out
    assert "256 partitions, 3.000000 replicas, 1 regions, 4 zones, 8 devices" in out


def test_secret_from_environment(builder, cluster, monkeypatch):
    monkeypatch.setenv("PEERSTACK_CLUSTER_FILE", str(cluster))
    assert main([builder, "write_ring"]) == 0
    assert os.path.exists(builder.replace(".builder", ".ring.gz"))


def test_write_ring_without_secret_fails(builder, monkeypatch, capsys):
    monkeypatch.delenv("PEERSTACK_CLUSTER_FILE", raising=False)
    assert main([builder, "write_ring"]) == 2
    assert "secret" in capsys.readouterr().err


def test_add_flag_form_and_search(builder, capsys):
    assert main([builder, "add", "--region", "2", "--zone", "9", "--ip", "10.9.9.9", "--port", "6201", "--device", "sdb", "--weight", "50"]) == 0
    capsys.readouterr()
    assert main([builder, "search", "r2z9"]) == 0
    assert "10.9.9.9:6201" in capsys.readouterr().out


def test_set_weight_set_info_remove_then_rebalance(builder):
    assert main([builder, "set_weight", "d0", "200"]) == 0
    assert main([builder, "set_info", "d1", "10.5.5.5:6300/sdz_fast"]) == 0
    assert main([builder, "remove", "d7"]) == 0
    assert main([builder, "pretend_min_part_hours_passed"]) == 0
    assert main([builder, "rebalance", "--seed", "2"]) in (0, 1)
    b = RingBuilder.load(builder)
    assert b.devices[0].weight == 200
    assert (b.devices[1].ip, b.devices[1].port, b.devices[1].device, b.devices[1].meta) == ("10.5.5.5", 6300, "sdz", "fast")
    assert 7 not in b.devices and not (b.assign == 7).any()


def test_rebalance_without_change_warns(builder, capsys):
    assert main([builder, "rebalance"]) == 1
    assert "No partitions could be reassigned" in capsys.readouterr().out


def test_list_parts_and_dispersion(builder, capsys):
    assert main([builder, "list_parts", "d0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    b = RingBuilder.load(builder)
    assert len(lines) - 1 == int((b.assign == 0).any(axis=0).sum())
    assert main([builder, "dispersion", "--verbose"]) == 0
    assert "Dispersion is 0.000000" in capsys.readouterr().out


def test_increase_part_power(builder):
    old = RingBuilder.load(builder).assign
    assert main([builder, "increase-part-power"]) == 0
    new = RingBuilder.load(builder).assign
    assert new.shape[1] == 2 * old.shape[1]
    assert (new[:, 0::2] == old).all() and (new[:, 1::2] == old).all()


@pytest.mark.parametrize(
    "args",
    [
        ["add", "r1z1-10.0.0.1/d1", "100"],
        ["add", "not-a-device", "100"],
        ["add", "r1z1-10.0.1.0:6200/d1", "100"],
        ["add", "r1z1-10.0.0.1:6200/d9", "-5"],
        ["add", "r1z1-10.0.0.1:6200/d9", "heavy"],
        ["remove", "d99"],
        ["remove", "z42"],
        ["set_weight", "d0", "-1"],
        ["set_weight", "d99", "10"],
        ["set_info", "d0", "10.0.1.1:6200/d1"],
        ["search", "!!"],
        ["rebalance", "--seed", "x"],
        ["create", "8", "3", "1"],
        ["frobnicate"],
    ],
)
def test_bad_input_exits_2_and_leaves_builder(builder, args, capsys):
    before = Path(builder).read_bytes()
    assert main([builder, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("peerstack-ring: error:") and "\n" not in err
    assert Path(builder).read_bytes() == before


def test_subprocess_entry_point(builder):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tools.ring_builder", builder, "search", "d99"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no device matches" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "tools.ring_builder", builder], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "8 devices" in proc.stdout
