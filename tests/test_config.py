"""Config: defaults, every validation rule class, and the one-line error contract."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from khwtui.cli.command_line import main
from khwtui.core.errors import ConfigError
from khwtui.model import config
from khwtui.model.topology import check_names

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT = tomllib.loads((CONFIGS / "default.toml").read_text())


def with_changes(changes: dict[str, object], base: dict | None = None) -> dict:
    """The default config with dotted keys replaced (a value of ... deletes the key)."""
    raw = {section: dict(values) for section, values in (base or DEFAULT).items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        table = raw.setdefault(section, {})
        if value is ...:
            table.pop(key, None)
        else:
            table[key] = value
    return raw


def write_toml(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path


def test_every_shipped_config_is_valid() -> None:
    for file in sorted(CONFIGS.glob("*.toml")):
        loaded = config.load(file)
        check_names(loaded)  # the names derived from it, as open_cluster checks them
        assert loaded.cluster.name


def test_defaults_match_design() -> None:
    c = config.from_dict({})
    assert (c.topology.controllers, c.topology.workers) == (2, 2)
    assert c.network.service_cidr == "10.32.0.0/24" and c.network.dns_ip == "10.32.0.10"
    assert c.provider.kind == "gcp" and c.gcp.load_balancer == "target-pool"
    assert c.minor == 36
    assert c.addons.metrics_server is False and c.sources["addons.metrics_server"] == "default"
    assert c.sources["network.node_cidr"] == "default"


def test_sources_name_the_file(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", {"topology": {"workers": 3}})
    loaded = config.load(file)
    assert loaded.sources["topology.workers"] == str(file)
    assert loaded.sources["topology.controllers"] == "default"


MACHINES = {
    "provider": {"kind": "machines"},
    "machines": {
        "hosts": [
            {"name": "c0", "role": "controller", "address": "192.0.2.10", "host_key": "ssh-ed25519 AAAAC3Nza"},
            {"name": "w0", "role": "worker", "address": "192.0.2.20", "host_key": "ssh-ed25519 AAAAC3Nzb"},
        ]
    },
}


def machines_with(host_changes: dict[str, object], index: int = 1, **top: object) -> dict:
    raw = {"provider": {"kind": "machines"}, "machines": {"hosts": [dict(h) for h in MACHINES["machines"]["hosts"]]}}
    raw["machines"]["hosts"][index].update(host_changes)
    raw["machines"].update(top)
    return raw


# (config, key path named in the error). At least one case for every rule class.
BAD = [
    # unknown keys, with a hint
    ({"clustr": {"name": "x"}}, "clustr"),
    (with_changes({"network.servce_cidr": "10.32.0.0/24"}), "network.servce_cidr"),
    # types
    (with_changes({"topology.workers": "2"}), "topology.workers"),
    (with_changes({"topology.workers": True}), "topology.workers"),
    (with_changes({"local.outbound": "yes"}), "local.outbound"),
    (with_changes({"gcp.admin_cidrs": "0.0.0.0/0"}), "gcp.admin_cidrs"),
    # RFC 1035 names and derived names
    (with_changes({"cluster.name": "Kubernetes"}), "cluster.name"),
    (with_changes({"cluster.name": "1cluster"}), "cluster.name"),
    (with_changes({"cluster.name": "c" * 64}), "cluster.name"),
    (with_changes({"cluster.name": "c" * 50}), "cluster.name"),  # its routes would exceed 63
    (with_changes({"topology.name_prefix": "p" * 55}), "topology.name_prefix"),
    (with_changes({"topology.name_prefix": "Bad_Prefix"}), "topology.name_prefix"),
    # enums
    (with_changes({"provider.kind": "aws"}), "provider.kind"),
    (with_changes({"gcp.load_balancer": "nlb"}), "gcp.load_balancer"),
    (with_changes({"pki.key_type": "rsa-1024"}), "pki.key_type"),
    (with_changes({"encryption.provider": "kms"}), "encryption.provider"),
    # CIDRs: syntax, host bits, overlaps
    (with_changes({"network.node_cidr": "10.240.0.0/33"}), "network.node_cidr"),
    (with_changes({"network.cluster_cidr": "10.200.0.1/16"}), "network.cluster_cidr"),
    (with_changes({"network.service_cidr": "10.200.5.0/24"}), "network.service_cidr"),
    (with_changes({"network.cluster_cidr": "10.240.0.0/16"}), "network.cluster_cidr"),
    (with_changes({"gcp.admin_cidrs": ["300.1.2.3/32"]}), "gcp.admin_cidrs[0]"),
    # counts that do not fit
    (with_changes({"topology.workers": 0}), "topology.workers"),
    (with_changes({"topology.controllers": 0}), "topology.controllers"),
    (with_changes({"topology.workers": 250}), "topology.workers"),
    (with_changes({"topology.workers": 20, "network.cluster_cidr": "10.200.0.0/20"}), "topology.workers"),
    (with_changes({"network.pod_prefix": 12}), "network.pod_prefix"),
    # DNS and kubernetes service addresses
    (with_changes({"network.dns_ip": "10.33.0.10"}), "network.dns_ip"),
    (with_changes({"network.dns_ip": "10.32.0.1"}), "network.dns_ip"),
    (with_changes({"network.dns_ip": "ten"}), "network.dns_ip"),
    (with_changes({"network.cluster_domain": "Cluster_Local"}), "network.cluster_domain"),
    (with_changes({"network.api_port": 70000}), "network.api_port"),
    # versions and companions
    (with_changes({"cluster.kubernetes_version": "1.36"}), "cluster.kubernetes_version"),
    (with_changes({"cluster.kubernetes_version": "1.29.0"}), "cluster.kubernetes_version"),
    (with_changes({"versions.containerd": "1.7.22"}), "versions.containerd"),
    (with_changes({"versions.etcd": "3.3.27"}), "versions.etcd"),
    (with_changes({"versions.runc": "latest"}), "versions.runc"),
    (with_changes({"versions.crictl": "1.30.0"}), "versions.crictl"),
    # machines inventory
    (machines_with({"name": "c0"}), "machines.hosts[1].name"),
    (machines_with({"address": "192.0.2.10"}), "machines.hosts[1].address"),
    (machines_with({"role": "master"}), "machines.hosts[1].role"),
    (machines_with({"address": "192.0.2.300"}), "machines.hosts[1].address"),
    (machines_with({"host_key": ""}), "machines.hosts[1].host_key"),
    (machines_with({"role": "controller"}), "machines.hosts"),
    ({"provider": {"kind": "machines"}}, "machines.hosts"),
    # the rest
    (with_changes({"addons.metrics_server": "yes"}), "addons.metrics_server"),
    (with_changes({"ssh.user": "root"}), "ssh.user"),
    (with_changes({"ssh.port": 0}), "ssh.port"),
    (with_changes({"pki.renew_before_days": 400}), "pki.renew_before_days"),
    (with_changes({"gcp.zone": "europe-west1-b", "gcp.region": "us-west1"}), "gcp.zone"),
    (with_changes({"gcp.disk_gb": 5}), "gcp.disk_gb"),
    (with_changes({"gcp.api_endpoint": "127.0.0.1:9000"}), "gcp.api_endpoint"),
    (with_changes({"local.apt_mirror": "http://127.0.0.1:8080/debian"}), "local.apt_key"),
    ({"binaries": {"sha256": {"etcd-v3.6.12-linux-amd64.tar.gz": "abc"}}}, "binaries.sha256.etcd-v3.6.12-linux-amd64.tar.gz"),
    ({"binaries": {"urls": {"etcd": "https://example.invalid/{release}/etcd.tgz"}}}, "binaries.urls.etcd"),
]


@pytest.mark.parametrize(("raw", "key"), BAD, ids=[key for _, key in BAD])
def test_bad_config_is_one_line_naming_the_key_and_writes_nothing(tmp_path: Path, capsys, raw: dict, key: str) -> None:
    file = write_toml(tmp_path / "bad.toml", raw)
    state = tmp_path / "state"
    code = main(["plan", "--config", str(file), "--state-dir", str(state)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"khwtui: {key}: "), lines[0]
    assert "fix:" in lines[0]
    assert not state.exists()


def test_bad_cases_cover_every_rule_class() -> None:
    assert len(BAD) >= 25


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'service_cidr'"):
        config.from_dict(with_changes({"network.servce_cidr": "10.32.0.0/24"}))


def test_invalid_toml_and_missing_file(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[cluster\nname=")
    assert main(["plan", "--config", str(broken), "--state-dir", str(tmp_path / "s")]) == 2
    assert main(["plan", "--config", str(tmp_path / "missing.toml"), "--state-dir", str(tmp_path / "s")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("khwtui: --config: ") for line in errors)


def test_large_topologies_fit_where_the_cidrs_allow() -> None:
    big = config.from_dict(with_changes({"topology.controllers": 7, "topology.workers": 250, "network.node_cidr": "10.240.0.0/22"}))
    assert (big.topology.controllers, big.topology.workers) == (7, 250)


def test_containerd_1x_is_fine_up_to_kubernetes_1_35() -> None:
    c = config.from_dict(with_changes({"cluster.kubernetes_version": "1.35.2", "versions.containerd": "1.6.20", "versions.etcd": "3.4.23"}))
    assert c.minor == 35
