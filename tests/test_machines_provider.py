"""The machines provider: hosts from [[machines.hosts]], trusted only by their keys, checked by a
preflight whose every problem is one line with its fix, and left clean by `down` (issue 6).

The unit tests read the provider's judgements from fixed answers. The integration tests give the
nodes of a local cluster (made with `up --only compute`) to a second cluster as a machines
inventory, with the host keys from the local cluster's state pinned in the config and a state
folder of its own, and build it up to the routes.
"""

from __future__ import annotations

import http.client
import json
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from localcluster import K8S_VERSION, LocalCluster, local_config
from workerbed import (
    artifacts_of,
    assert_placed_as_rendered,
    bed_facts,
    pod_cidr_contains,
    release_files,
    remove_pods,
    routes_of,
    shells,
    standin_nodes,
    start_web_pod,
    stat_files,
)

from khwtui.artifacts.hosts_table import remove_command
from khwtui.artifacts.sshkey import client_key
from khwtui.artifacts.workers_files import routes_files, worker_files
from khwtui.model import config
from khwtui.model.config import MachineHost
from khwtui.model.state import FileRecord, NodeRecord, State, StateDir
from khwtui.model.topology import Topology
from khwtui.providers.machines import (
    HostFacts,
    MachinesProvider,
    preflight_problems,
    short_key,
    teardown_command,
)

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx4ZHd0ZXN0a2V5Zm9yZG9jdW1lbnRhdGlvbm9ubHk"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx4ZHd0ZXN0a2V5Zm9yZG9jdW1lbnRhdGlvbm9ubHk"
CLOCK_FIX = "certificates and etcd need synchronized clocks; fix: enable time sync (timedatectl set-ntp true, or chrony)"
GOOD = HostFacts("debian", "12", "x86_64", "", 1000.0, True)


def machines_config(hosts: list[dict], trust_on_first_use: bool = False, **extra: dict) -> config.Config:
    raw = {"cluster": {"name": "mach-test", "kubernetes_version": K8S_VERSION}, "provider": {"kind": "machines"},
           "machines": {"trust_on_first_use": trust_on_first_use, "hosts": hosts}, "network": {"node_cidr": "192.0.2.0/24"},
           "versions": {"containerd": "1.6.20", "runc": "1.1.5", "cni_plugins": "1.1.1", "etcd": "3.4.23", "crictl": ""}, **extra}
    return config.from_dict(raw)


HOSTS = [{"name": "cp", "role": "controller", "address": "192.0.2.10", "host_key": KEY_A + " root@cp"},
         {"name": "w", "role": "worker", "address": "192.0.2.20", "host_key": ""},
         {"name": "edge", "role": "lb", "address": "192.0.2.5", "host_key": KEY_B}]


def provider(tmp_path: Path, hosts: list[dict] = HOSTS) -> MachinesProvider:
    cfg = machines_config(hosts, trust_on_first_use=True)
    return MachinesProvider(cfg, Topology(cfg), tmp_path, "ssh-ed25519 AAAAclient khwtui@mach-test")


# --- judgements on fixed answers -------------------------------------------------------------------


def host(role: str = "worker") -> MachineHost:
    return MachineHost("w", role, "192.0.2.20", KEY_A)


def test_a_supported_host_has_no_problems() -> None:
    assert preflight_problems(host(), GOOD, "khwtui", 995.0, 1001.0) == []
    ubuntu = HostFacts("ubuntu", "24.04", "x86_64", "", 1000.0, True)
    assert preflight_problems(host(), ubuntu, "khwtui", 999.0, 1000.0) == []


@pytest.mark.parametrize(("facts", "role", "line"), [
    (HostFacts("debian", "11", "x86_64", "", 1000.0, True), "worker",
     "w (192.0.2.20): debian 11 is not supported; fix: use Debian 12 or newer, or Ubuntu 22.04 or newer"),
    (HostFacts("ubuntu", "20.04", "x86_64", "", 1000.0, True), "worker",
     "w (192.0.2.20): ubuntu 20.04 is not supported; fix: use Debian 12 or newer, or Ubuntu 22.04 or newer"),
    (HostFacts("fedora", "40", "x86_64", "", 1000.0, True), "controller",
     "w (192.0.2.20): fedora 40 is not supported; fix: use Debian 12 or newer, or Ubuntu 22.04 or newer"),
    (HostFacts("debian", "12", "aarch64", "", 1000.0, True), "worker",
     "w (192.0.2.20): architecture aarch64 is not supported; fix: use an x86_64 (amd64) host"),
    (HostFacts("debian", "12", "x86_64", "/swapfile", 1000.0, True), "worker",
     "w (192.0.2.20): swap is on (/swapfile) and the kubelet refuses to run with swap; fix: swapoff -a and remove the swap entry from /etc/fstab"),
    (HostFacts("debian", "12", "x86_64", "", 1100.0, True), "worker",
     "w (192.0.2.20): its clock is +99 s off this machine's; " + CLOCK_FIX),
    (HostFacts("debian", "12", "x86_64", "", 900.0, True), "lb",
     "w (192.0.2.20): its clock is -99 s off this machine's; " + CLOCK_FIX),
    (HostFacts("debian", "12", "x86_64", "", 1000.0, False), "worker",
     "w (192.0.2.20): khwtui cannot run sudo without a password; fix: give khwtui passwordless sudo (NOPASSWD in /etc/sudoers.d)"),
])
def test_each_preflight_problem_is_one_line_with_its_fix(facts: HostFacts, role: str, line: str) -> None:
    assert preflight_problems(host(role), facts, "khwtui", 999.0, 1001.0) == [line]


def test_swap_matters_only_on_workers_and_problems_add_up() -> None:
    swapping = HostFacts("debian", "12", "x86_64", "/dev/vda2", 1000.0, True)
    assert preflight_problems(host("controller"), swapping, "khwtui", 999.0, 1001.0) == []
    worst = HostFacts("debian", "10", "armv7l", "/dev/vda2", 0.0, False)
    assert len(preflight_problems(host(), worst, "khwtui", 999.0, 1001.0)) == 5


def test_host_facts_are_read_from_the_preflight_answer_and_a_missing_one_is_an_error() -> None:
    answer = "os=debian\nversion=12\narch=x86_64\nswap=\nclock=1700000000.25\nsudo=yes\n"
    assert HostFacts.parse(answer) == HostFacts("debian", "12", "x86_64", "", 1700000000.25, True)
    with pytest.raises(ValueError, match="missing or bad sudo"):
        HostFacts.parse(answer.replace("sudo=yes\n", ""))


async def test_nodes_are_the_inventory_with_pinned_keys_from_the_config_or_from_first_use(tmp_path: Path) -> None:
    p = provider(tmp_path)
    assert [(n.name, n.role, n.ssh_host, n.host_key) for n in await p.nodes()] == [
        ("cp", "controller", "192.0.2.10", KEY_A), ("w", "worker", "192.0.2.20", ""), ("edge", "lb", "192.0.2.5", KEY_B)]
    StateDir(tmp_path).save(State(nodes={"w": NodeRecord("w", "worker", "192.0.2.20", host_key=KEY_B)}))
    assert [n.host_key for n in await p.nodes()] == [KEY_A, KEY_B, KEY_B]
    assert p.api_address() == "192.0.2.5"


def test_the_plan_lists_the_hosts_and_how_khwtui_logs_in(tmp_path: Path) -> None:
    plan = provider(tmp_path).plan()
    assert [(r.kind, r.name) for r in plan.resources] == [("host", "cp"), ("host", "w"), ("host", "edge")]
    assert "khwtui logs in as khwtui (passwordless sudo) with the cluster key: ssh-ed25519 AAAAclient khwtui@mach-test" in plan.notes
    assert any("trusted on first use" in note for note in plan.notes)


def test_down_plans_exactly_the_recorded_units_and_files(tmp_path: Path) -> None:
    files = {"/etc/containerd/config.toml": FileRecord("/etc/containerd/config.toml", "0" * 64, 0o644, stage="workers")}
    StateDir(tmp_path).save(State(nodes={"w": NodeRecord("w", "worker", "192.0.2.20", host_key=KEY_A, files=files, units=["containerd"])}))
    assert [(r.kind, r.name) for r in provider(tmp_path).teardown_plan()] == [
        ("unit", "w:containerd"), ("file", "w:/etc/containerd/config.toml"), ("hosts", "w:/etc/hosts")]


def test_the_teardown_command_stops_units_last_started_first_and_quotes_every_path() -> None:
    command = teardown_command(["etcd", "kube-apiserver"], ["/etc/a b", "/etc/c"], "lab")
    assert command.splitlines() == ["systemctl disable --now kube-apiserver 2>/dev/null || true",
                                    "systemctl disable --now etcd 2>/dev/null || true", "rm -f -- '/etc/a b' /etc/c",
                                    "systemctl daemon-reload", "systemctl reset-failed 2>/dev/null || true", remove_command("lab")]


def test_a_host_key_keeps_only_its_type_and_data() -> None:
    assert short_key(KEY_A + " root@cp") == KEY_A


# --- on real nodes ---------------------------------------------------------------------------------------

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[LocalCluster]:
    """A local cluster's nodes, made with `up --only compute`, with the stand-ins' python3."""
    with standin_nodes(tmp_path_factory, release_mirror, "hosts") as local:
        for node in shells(local.state_dir).values():  # machines of your own: nothing resolves the other nodes' names
            node.run(remove_command(local.raw["cluster"]["name"]))
        yield local


def inventory(local: LocalCluster, release_mirror: dict, folder: Path, **changes: dict) -> Path:
    """A machines config for the local cluster's nodes, their host keys pinned from its state.toml, a
    state folder of its own whose client key the nodes' user is given; returns the config's path."""
    state = local.state()
    hosts = [{"name": name, "role": node["role"], "address": node["internal_ip"], "host_key": node["host_key"]}
             for name, node in state["nodes"].items()]
    for name, key in changes.get("keys", {}).items():
        next(h for h in hosts if h["name"] == name)["host_key"] = key
    raw = local_config("machines-of-" + local.raw["cluster"]["name"], 1, 2, release_mirror)
    del raw["local"], raw["topology"]
    raw["network"]["node_cidr"] = local.raw["network"]["node_cidr"]
    raw["provider"] = {"kind": "machines"}
    raw["machines"] = {"hosts": hosts, "trust_on_first_use": bool(changes.get("trust_on_first_use"))}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster.toml"
    path.write_text(tomli_w.dumps(raw))
    _, public = client_key(folder / "state" / "ssh", "khwtui@machines")
    for node in shells(local.state_dir).values():
        node.run(f"grep -qxF '{public}' /home/khwtui/.ssh/authorized_keys || echo '{public}' >> /home/khwtui/.ssh/authorized_keys")
    return path


def machines(path: Path, *args: str, env: dict | None = None) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "khwtui", *args, "--config", str(path), "--state-dir", str(path.parent / "state")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, check=False)
    return done.returncode, done.stdout + done.stderr


@integration
def test_a_wrong_pinned_key_stops_the_run_before_anything_is_sent(hosts: LocalCluster, release_mirror: dict, tmp_path: Path) -> None:
    state = hosts.state()["nodes"]
    path = inventory(hosts, release_mirror, tmp_path / "wrong", keys={"worker-1": state["worker-0"]["host_key"]})
    code, out = machines(path, "up", "--auto", "--until", "compute", "--json")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert code == 2, out[-2000:]  # a config that names the wrong key: exit 2, the one line and its fix
    summary = events[-1]["summary"]
    assert summary.startswith(f"worker-1 ({state['worker-1']['internal_ip']}:22) presents host key SHA256:")
    assert "nothing was sent" in summary and f"khwtui: {summary}" in out
    assert [e for e in events if e["kind"] == "log" and e["stream"] == "cmd"] == []
    assert StateDir(path.parent / "state").load().nodes == {}


@integration
def test_trust_on_first_use_pins_the_key_the_host_presents(hosts: LocalCluster, release_mirror: dict, tmp_path: Path) -> None:
    path = inventory(hosts, release_mirror, tmp_path / "tofu", keys={"lb": ""}, trust_on_first_use=True)
    code, out = machines(path, "up", "--auto", "--until", "compute", "--verbose")
    assert code == 0, out[-2000:]
    assert "lb: trusting host key SHA256:" in out
    assert StateDir(path.parent / "state").load().nodes["lb"].host_key == hosts.state()["nodes"]["lb"]["host_key"]


@pytest.fixture(scope="module")
def built(hosts: LocalCluster, release_mirror: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = inventory(hosts, release_mirror, tmp_path_factory.mktemp("machines"))
    code, out = machines(path, "up", "--auto", "--until", "control-plane")
    assert code == 0, out[-3000:]
    code, out = machines(path, "up", "--auto", "--only", "frontend,workers,routes")
    assert code == 3, out[-3000:]
    yield path


@integration
def test_the_same_nodes_as_machines_reach_the_same_results(hosts: LocalCluster, built: Path, release_mirror: dict) -> None:
    a = artifacts_of(built, built.parent / "state")
    nodes = shells(hosts.state_dir)
    for node in a.topo.nodes:
        files = routes_files(a.topo, node)
        if node.role == "worker":
            files += worker_files(a, node, bed_facts(containerd_on_overlay=False)) + release_files(release_mirror, K8S_VERSION)
            assert nodes[node.name].run("systemctl is-active containerd kubelet kube-proxy").stdout.split() == ["active"] * 3
        assert_placed_as_rendered(nodes[node.name], files)
        assert {(r.destination, r.via) for r in a.topo.pod_routes() if r.node == node.name} <= routes_of(nodes[node.name])
    pods = {w.name: start_web_pod(nodes[w.name]) for w in a.topo.workers}
    for worker in a.topo.workers:
        assert pod_cidr_contains(worker.pod_cidr or "", pods[worker.name].ip)
    assert pods["worker-0"].fetch(f"http://{pods['worker-1'].ip}/") == "served by a khwtui test pod\n"
    assert pods["worker-1"].fetch(f"http://{pods['worker-0'].ip}/") == "served by a khwtui test pod\n"
    for worker in a.topo.workers:
        remove_pods(nodes[worker.name])


def api_get(built: Path, address: str, path: str) -> tuple[int, str]:
    """GET from the machines cluster's API server at `address`, as its admin."""
    a = artifacts_of(built, built.parent / "state")
    context = ssl.create_default_context(cadata=a.pki.ca_pem().decode())
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder, "admin.pem"), Path(folder, "admin-key.pem")
        cert.write_bytes(a.pki.cert_pem("admin"))
        key.write_bytes(a.pki.key_pem("admin"))
        context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection(address, a.topo.config.network.api_port, context=context, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


@integration
def test_the_apiserver_reaches_each_kubelet_by_the_name_it_registers_with(hosts: LocalCluster, built: Path) -> None:
    """What logs, exec and port-forward need: the apiserver's own connection to a kubelet, by the
    hostname first (its default --kubelet-preferred-address-types). Only the compute stage's table
    makes the names resolve on these machines; without it the apiserver refuses, as the real one does."""
    a = artifacts_of(built, built.parent / "state")
    controller = a.topo.controllers[0]
    for worker in a.topo.workers:
        assert api_get(built, controller.internal_ip, f"/api/v1/nodes/{worker.name}/proxy/healthz") == (200, "ok")
    shells(hosts.state_dir)[controller.name].run(remove_command(a.topo.config.cluster.name))
    status, body = api_get(built, controller.internal_ip, "/api/v1/nodes/worker-0/proxy/healthz")
    assert (status, json.loads(body)["message"]) == (503, "error trying to reach service: dial tcp: lookup worker-0: no such host")
    code, out = machines(built, "up", "--auto", "--only", "compute")
    assert code == 0, out[-2000:]
    assert api_get(built, controller.internal_ip, "/api/v1/nodes/worker-0/proxy/healthz") == (200, "ok")


@integration
def test_down_removes_khwtuis_files_and_units_and_leaves_the_hosts(hosts: LocalCluster, built: Path) -> None:
    recorded = StateDir(built.parent / "state").load().nodes
    assert sum(len(r.files) for r in recorded.values()) > 50 and all(r.units for r in recorded.values())
    code, out = machines(built, "down", "--yes")
    assert code == 0, out[-2000:]
    nodes = shells(hosts.state_dir)
    for name, record in recorded.items():
        assert set(stat_files(nodes[name], sorted(record.files)).values()) == {"missing"}, name
        units = " ".join(f"{u}.service" for u in record.units)
        enabled = nodes[name].run(f"systemctl is-enabled {units}", check=False).stdout.split()
        active = nodes[name].run(f"systemctl is-active {units}", check=False).stdout.split()
        assert set(active) == {"inactive"} and "enabled" not in enabled, (name, enabled, active)
        assert nodes[name].run("systemctl is-system-running", check=False).stdout.strip() == "running", name
        assert "khwtui" not in nodes[name].run("cat /etc/hosts").stdout, name
    assert StateDir(built.parent / "state").load().nodes == {}
