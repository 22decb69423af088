"""Cluster and node configuration files."""

import stat

import pytest

from node.config import ConfigError, load_cluster_config, load_node_config
from tools import peerstack


def test_cluster_init_writes_private_file(tmp_path):
    path = tmp_path / "c" / "cluster.toml"
    assert peerstack.main(["cluster", "init", "--name", "lab", "--out", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = load_cluster_config(path)
    assert cfg.name == "lab"
    assert len(cfg.secret_bytes) == 32
    assert cfg.hash_prefix != cfg.hash_suffix
    assert cfg.admin.password


def test_cluster_init_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "cluster.toml"
    assert peerstack.main(["cluster", "init", "--out", str(path)]) == 0
    before = path.read_bytes()
    assert peerstack.main(["cluster", "init", "--out", str(path)]) == 2
    assert path.read_bytes() == before
    assert peerstack.main(["cluster", "init", "--out", str(path), "--force"]) == 0
    assert path.read_bytes() != before


def test_two_clusters_never_share_secrets(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    peerstack.main(["cluster", "init", "--out", str(a)])
    peerstack.main(["cluster", "init", "--out", str(b)])
    ca, cb = load_cluster_config(a), load_cluster_config(b)
    assert ca.secret != cb.secret and ca.cluster_id != cb.cluster_id


def test_node_config_defaults_and_relative_paths(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('cluster_file = "cluster.toml"\n[public]\nport = 9000\n')
    cfg = load_node_config(path)
    assert cfg.public.port == 9000
    assert cfg.internal.port == 6200
    assert cfg.storage.devices == ["d1"]
    assert cfg.resolve(cfg.cluster_file) == tmp_path / "cluster.toml"
    assert cfg.rings_path == tmp_path
    assert cfg.node_id == "127.0.0.1:6200"


@pytest.mark.parametrize("text, message", [
    ('bogus = 1\n', "unknown option 'bogus'"),
    ('[public]\nprot = 1\n', "unknown option 'prot'"),
    ('public = 3\n', "must be a table"),
    ('node_id = \n', "node.toml"),
])
def test_node_config_errors_are_clear(tmp_path, text, message):
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_node_config(path)


def test_cluster_config_missing_keys(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('cluster_id = "x"\n')
    with pytest.raises(ConfigError, match="missing 'secret'"):
        load_cluster_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_cluster_config(tmp_path / "absent.toml")
