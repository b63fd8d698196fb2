"""Templates, node files and the render bundle: strict, deterministic, private, minimal rewrites."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import jinja2
import pytest
import tomli_w
import yaml

from khwtui.artifacts.encryption import encryption_config, load_or_create_key
from khwtui.artifacts.frontend_files import healthz_files
from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs
from khwtui.artifacts.nodefiles import Artifacts, control_plane_secret_files, etcd_files, etcd_unit, node_files, worker_secret_files
from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import render
from khwtui.core.errors import StateError
from khwtui.learn.bundle import write_bundle
from khwtui.model import config
from khwtui.model.topology import Addresses, Topology

FAST_KEYS = {"pki": {"key_type": "ecdsa-p256"}}
GCP_2_2 = {"cluster": {"name": "kthw"}, **FAST_KEYS}
PUBLIC = Addresses(public="203.0.113.10")
OLD_NS = 1_000_000_000_000_000_000  # 2001: any rewrite would stamp the current time instead

CONTROLLER_FILES = {
    "/etc/etcd/ca.pem": 0o644,
    "/etc/etcd/kubernetes.pem": 0o644,
    "/etc/etcd/kubernetes-key.pem": 0o600,
    "/etc/systemd/system/etcd.service": 0o644,
    "/var/lib/kubernetes/ca.pem": 0o644,
    "/var/lib/kubernetes/ca-key.pem": 0o600,
    "/var/lib/kubernetes/kubernetes.pem": 0o644,
    "/var/lib/kubernetes/kubernetes-key.pem": 0o600,
    "/var/lib/kubernetes/service-account.pem": 0o644,
    "/var/lib/kubernetes/service-account-key.pem": 0o600,
    "/var/lib/kubernetes/front-proxy-ca.pem": 0o644,
    "/var/lib/kubernetes/front-proxy-client.pem": 0o644,
    "/var/lib/kubernetes/front-proxy-client-key.pem": 0o600,
    "/var/lib/kubernetes/encryption-config.yaml": 0o600,
    "/var/lib/kubernetes/kube-controller-manager.kubeconfig": 0o600,
    "/var/lib/kubernetes/kube-scheduler.kubeconfig": 0o600,
    "/etc/kubernetes/admin.kubeconfig": 0o600,
}


def worker_files(name: str, with_kubeconfigs: bool = True) -> dict[str, int]:
    files = {"/var/lib/kubernetes/ca.pem": 0o644, f"/var/lib/kubelet/{name}.pem": 0o644, f"/var/lib/kubelet/{name}-key.pem": 0o600}
    if with_kubeconfigs:
        files |= {"/var/lib/kubelet/kubeconfig": 0o600, "/var/lib/kube-proxy/kubeconfig": 0o600}
    return files


def artifacts(folder: Path, raw: dict, addresses: Addresses = Addresses()) -> Artifacts:
    """Certificates and key made in `folder` for the config `raw`, as the pki and encryption stages do."""
    cfg = config.from_dict(raw)
    topo = Topology(cfg, addresses)
    pki = Pki(folder / "pki", cfg)
    pki.ensure(topo)
    return Artifacts(topo, pki, load_or_create_key(folder / "pki"))


def machines(worker_b: str) -> dict:
    hosts = [
        ("lb", "lb", "192.0.2.5"),
        ("cp-a", "controller", "192.0.2.10"),
        ("cp-b", "controller", "192.0.2.11"),
        ("node-a", "worker", "192.0.2.20"),
        ("node-b", "worker", worker_b),
    ]
    return {
        "cluster": {"name": "onprem"},
        "provider": {"kind": "machines"},
        "machines": {"trust_on_first_use": True, "hosts": [{"name": n, "role": r, "address": a} for n, r, a in hosts]},
        **FAST_KEYS,
    }


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """relative path -> (bytes, mode, inode, mtime) of every file in the bundle."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            found[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_ino, st.st_mtime_ns)
    return found


def age(root: Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, ns=(OLD_NS, OLD_NS))


def exec_flags(unit: str) -> list[str]:
    """The words of ExecStart=, continuation lines joined."""
    (line,) = [line for line in unit.replace("\\\n", " ").splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def flag(words: list[str], name: str) -> list[str]:
    """Every value given to `--name`, in either the `--name value` or `--name=value` form."""
    values = [w.split("=", 1)[1] for w in words if w.startswith(f"{name}=")]
    values += [words[i + 1] for i, w in enumerate(words[:-1]) if w == name]
    return values


# --- the template machinery -------------------------------------------------------------------


def test_a_missing_template_variable_raises_instead_of_rendering_empty() -> None:
    with pytest.raises(jinja2.UndefinedError, match="etcd_binary"):
        render("etcd.service.j2", name="controller-0")


# --- etcd -------------------------------------------------------------------------------------


@pytest.mark.parametrize("controllers", [1, 3, 7])
def test_the_etcd_unit_names_every_controller_exactly_once(controllers: int) -> None:
    raw = {"cluster": {"name": "etcd-test"}, "topology": {"controllers": controllers}, "network": {"node_cidr": "192.168.7.0/24"}}
    topo = Topology(config.from_dict(raw))
    for i, node in enumerate(topo.controllers):
        unit = etcd_unit(topo, node)
        words = exec_flags(unit)
        ip = f"192.168.7.{10 + i}"

        (initial,) = flag(words, "--initial-cluster")
        assert initial.split(",") == [f"controller-{j}=https://192.168.7.{10 + j}:2380" for j in range(controllers)]
        assert flag(words, "--name") == [f"controller-{i}"]
        assert flag(words, "--initial-advertise-peer-urls") == flag(words, "--listen-peer-urls") == [f"https://{ip}:2380"]
        assert flag(words, "--listen-client-urls") == [f"https://{ip}:2379,https://127.0.0.1:2379"]
        assert flag(words, "--advertise-client-urls") == [f"https://{ip}:2379"]
        assert flag(words, "--initial-cluster-token") == ["etcd-test-etcd"]
        assert flag(words, "--initial-cluster-state") == ["new"]
        assert flag(words, "--data-dir") == ["/var/lib/etcd"]
        assert {"--client-cert-auth", "--peer-client-cert-auth"} <= set(words)
        assert words[0] == "/usr/local/bin/etcd"
        assert "10.240." not in unit  # every address comes from the config
        assert {"Type=notify", "Restart=on-failure", "RestartSec=5", "WantedBy=multi-user.target"} <= set(unit.splitlines())
        assert unit.endswith("\n") and unit == etcd_unit(topo, node)


# --- which file goes where ----------------------------------------------------------------------


def test_each_node_gets_the_kthw_files_for_its_role_with_private_modes(tmp_path: Path) -> None:
    a = artifacts(tmp_path, GCP_2_2, PUBLIC)
    files = node_files(a)
    controller, worker = a.topo.controllers[0], a.topo.workers[1]

    assert set(files) == {"controller-0", "controller-1", "worker-0", "worker-1"}
    assert {f.path: f.mode for f in files["controller-0"]} == CONTROLLER_FILES
    assert {f.path: f.mode for f in files["worker-1"]} == worker_files("worker-1")
    assert files["controller-0"] == etcd_files(a, controller) + control_plane_secret_files(a, controller)
    assert files["worker-1"] == worker_secret_files(a, worker)
    assert {(f.owner, f.group) for fs in files.values() for f in fs} == {("root", "root")}

    by_path = {f.path: f.content for f in files["worker-1"]}
    spec = {s.name: s for s in kubeconfig_specs(a.topo)}
    assert by_path["/var/lib/kubelet/worker-1.pem"] == a.pki.cert_pem("worker-1")
    assert by_path["/var/lib/kubelet/kubeconfig"] == kubeconfig(a.topo, a.pki, spec["worker-1"]).encode()
    assert by_path["/var/lib/kube-proxy/kubeconfig"] == kubeconfig(a.topo, a.pki, spec["kube-proxy"]).encode()
    by_path = {f.path: f.content for f in files["controller-0"]}
    assert by_path["/var/lib/kubernetes/ca-key.pem"] == a.pki.key_pem("ca")
    assert by_path["/var/lib/kubernetes/encryption-config.yaml"] == encryption_config("aescbc", a.encryption_key).encode()
    assert by_path["/etc/kubernetes/admin.kubeconfig"] == kubeconfig(a.topo, a.pki, spec["admin"]).encode()


def test_before_the_api_address_is_known_workers_get_certificates_but_no_kubeconfig(tmp_path: Path) -> None:
    a = artifacts(tmp_path, GCP_2_2)
    files = node_files(a)

    assert {f.path: f.mode for f in files["worker-0"]} == worker_files("worker-0", with_kubeconfigs=False)
    assert {f.path: f.mode for f in files["controller-1"]} == CONTROLLER_FILES
    with pytest.raises(StateError, match="run the compute stage first"):
        worker_secret_files(a, a.topo.workers[0])


# --- the bundle -------------------------------------------------------------------------------


def test_the_bundle_holds_every_node_file_with_its_mode_and_private_folders(tmp_path: Path) -> None:
    a = artifacts(tmp_path, GCP_2_2, PUBLIC)
    out = tmp_path / "bundle"
    written = write_bundle(out, a)
    files = snapshot(out)

    assert sorted(written) == sorted(out / p for p in files)
    for folder in ("pki", "kubeconfigs", "nodes"):
        assert stat.S_IMODE((out / folder).stat().st_mode) == 0o700
    for node, placed in node_files(a).items():
        for f in placed:
            content, mode, _, _ = files[f"nodes/{node}{f.path}"]
            assert (content, mode) == (f.content, f.mode)
    keys = [p for p in files if p.endswith("-key.pem")]
    assert len([p for p in keys if p.startswith("pki/")]) == 11  # 2 CAs, admin, 2 workers, kcm, proxy, scheduler, kubernetes, sa, front proxy
    private = keys + [p for p in files if p.endswith(("kubeconfig", "encryption-config.yaml"))]
    assert {files[p][1] for p in private} == {0o600}
    assert {p for p in files if p.startswith("kubeconfigs/")} == {
        f"kubeconfigs/{n}.kubeconfig"
        for n in ("admin", "admin-user", "kube-controller-manager", "kube-proxy", "kube-scheduler", "worker-0", "worker-1")
    }
    assert files["encryption-config.yaml"][0] == encryption_config("aescbc", a.encryption_key).encode()


def stage_files(files: dict, node: str) -> set[str]:
    """The paths under nodes/<node>/ that are neither certificates nor kubeconfigs."""
    prefix = f"nodes/{node}"
    return {p[len(prefix):] for p in files if p.startswith(prefix + "/") and not p.endswith((".pem", "kubeconfig"))}


CONTROL_PLANE = {"/etc/systemd/system/etcd.service", "/var/lib/kubernetes/encryption-config.yaml", "/etc/kubernetes/config/kube-scheduler.yaml",
                 "/etc/kubernetes/config/audit-policy.yaml",
                 *(f"/etc/systemd/system/{u}.service" for u in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"))}
WORKER = {"/etc/cni/net.d/10-bridge.conf", "/etc/cni/net.d/99-loopback.conf", "/etc/containerd/config.toml",
          "/etc/modules-load.d/kubernetes.conf", "/etc/sysctl.d/kubernetes.conf", "/var/lib/kubelet/kubelet-config.yaml",
          "/var/lib/kube-proxy/kube-proxy-config.yaml", *(f"/etc/systemd/system/{u}.service" for u in ("containerd", "kubelet", "kube-proxy"))}
ROUTES = "/etc/systemd/system/khwtui-pod-routes.service"
NGINX_SITE = "/etc/nginx/conf.d/kubernetes-healthz.conf"


def test_the_bundle_shows_every_file_each_later_stage_places_for_the_provider(tmp_path: Path) -> None:
    """The front end as the provider builds it; routes as units on nodes, or as cloud resources on gcp."""
    target_pool = snapshot_of(tmp_path / "tp", GCP_2_2, PUBLIC)
    assert stage_files(target_pool, "controller-0") == CONTROL_PLANE | {NGINX_SITE}
    assert stage_files(target_pool, "worker-0") == WORKER
    assert target_pool["nodes/controller-0" + NGINX_SITE][0] == healthz_files(Topology(config.from_dict(GCP_2_2), PUBLIC))[0].content
    assert "manifests/apiserver-to-kubelet-rbac.yaml" in target_pool

    backend = snapshot_of(tmp_path / "bs", {**GCP_2_2, "gcp": {"load_balancer": "backend-service"}}, PUBLIC)
    assert stage_files(backend, "controller-0") == CONTROL_PLANE

    on_hosts = snapshot_of(tmp_path / "m", machines("192.0.2.21"))
    assert stage_files(on_hosts, "lb") == {"/etc/haproxy/haproxy.cfg", ROUTES}
    assert on_hosts["nodes/lb/etc/haproxy/kubernetes-ca.pem"][1] == 0o644
    assert stage_files(on_hosts, "cp-a") == CONTROL_PLANE | {ROUTES}
    assert stage_files(on_hosts, "node-a") == WORKER | {ROUTES}
    assert "10.200.1.0/24 via 192.0.2.21" in on_hosts["nodes/node-a" + ROUTES][0].decode()


def test_without_the_api_address_the_bundle_leaves_out_the_control_plane_units_that_name_it(tmp_path: Path) -> None:
    files = snapshot_of(tmp_path, GCP_2_2)
    assert stage_files(files, "controller-0") == {"/etc/systemd/system/etcd.service", "/var/lib/kubernetes/encryption-config.yaml", NGINX_SITE}


def snapshot_of(folder: Path, raw: dict, addresses: Addresses = Addresses()) -> dict:
    write_bundle(folder / "bundle", artifacts(folder, raw, addresses))
    return snapshot(folder / "bundle")


def test_rendering_again_leaves_every_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, artifacts(tmp_path, GCP_2_2, PUBLIC))
    age(out)
    before = snapshot(out)

    assert write_bundle(out, artifacts(tmp_path, GCP_2_2, PUBLIC)) == []
    assert snapshot(out) == before  # same bytes, modes, inodes and (old) mtimes


def test_a_loosened_mode_is_restored_without_rewriting_the_file(tmp_path: Path) -> None:
    a = artifacts(tmp_path, GCP_2_2, PUBLIC)
    out = tmp_path / "bundle"
    write_bundle(out, a)
    key = out / "nodes/worker-0/var/lib/kubelet/worker-0-key.pem"
    key.chmod(0o644)
    inode = key.stat().st_ino

    assert write_bundle(out, a) == [key]
    assert (stat.S_IMODE(key.stat().st_mode), key.stat().st_ino) == (0o600, inode)


def test_moving_one_worker_rewrites_only_what_carries_its_address(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, artifacts(tmp_path, machines("192.0.2.21")))
    age(out)
    before = snapshot(out)

    written = write_bundle(out, artifacts(tmp_path, machines("192.0.2.31")))
    after = snapshot(out)

    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {
        "pki/node-b.pem",  # its SANs name the address; the key is kept
        "kubeconfigs/node-b.kubeconfig",
        "nodes/node-b/var/lib/kubelet/node-b.pem",
        "nodes/node-b/var/lib/kubelet/kubeconfig",
        "nodes/node-b/etc/systemd/system/kubelet.service",  # --node-ip
        # every other node reaches node-b's pod CIDR through its address
        *(f"nodes/{n}/etc/systemd/system/khwtui-pod-routes.service" for n in ("lb", "cp-a", "cp-b", "node-a")),
    }
    assert sorted(written) == sorted(out / p for p in changed)
    assert set(after) == set(before)


def test_render_out_holds_every_manifest_the_dns_smoke_and_demo_stages_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from khwtui.cli.command_line import main
    from khwtui.learn.bundle import DEMO_SECRET_PLACEHOLDER
    from khwtui.stages.demo import demo_objects
    from khwtui.stages.dns import coredns_manifest, lookup_job
    from khwtui.stages.smoke import smoke_objects
    from khwtui.toolkit.addons import metrics_server_manifest

    raw = {**GCP_2_2, "demo": {"enabled": True}, "addons": {"metrics_server": True}}
    (tmp_path / "c.toml").write_text(tomli_w.dumps(raw))
    out = tmp_path / "bundle"
    assert main(["render", "--config", str(tmp_path / "c.toml"), "--state-dir", str(tmp_path / "state"), "--out", str(out),
                 "--public-address", "203.0.113.10"]) == 0
    c = config.from_dict(raw)

    def read(name: str) -> list[dict]:
        return [doc for doc in yaml.safe_load_all((out / "manifests" / f"{name}.yaml").read_text()) if doc]

    assert read("coredns") == coredns_manifest(c)
    assert read("metrics-server") == metrics_server_manifest()
    assert read("dns-lookup-job") == [lookup_job()]
    assert read("smoke") == smoke_objects()
    demo = read("demo")
    secret = next(o for o in demo if o["kind"] == "Secret")
    assert set(secret["stringData"].values()) == {DEMO_SECRET_PLACEHOLDER}  # made at first apply, never stored
    applied = demo_objects()
    assert [o for o in demo if o["kind"] != "Secret"] == [o for o in applied if o["kind"] != "Secret"]
    assert [(o["kind"], o["metadata"]["name"]) for o in demo] == [(o["kind"], o["metadata"]["name"]) for o in applied]
    assert sorted(p.name for p in (out / "manifests").iterdir()) == [
        "apiserver-to-kubelet-rbac.yaml", "coredns.yaml", "demo.yaml", "dns-lookup-job.yaml", "metrics-server.yaml", "smoke.yaml"]
