"""Control-plane node files: every KTHW flag with its value from the config, for every minor;
nothing a minor removed; the scheduler config and the RBAC manifest per minor; and which unit a
changed file restarts."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml
from releasefake import simulate_release_install
from stagerun import ScriptedRemote, Simulated, in_turn, simulate
from standins import build
from standins.flags import MINORS, PROGRAMS

from khwtui.artifacts.controlplane_files import (
    AUDIT_POLICY,
    BINARIES,
    SCHEDULER_CONFIG,
    UNITS,
    apiserver_unit,
    control_plane_config_files,
    control_plane_files,
    controller_manager_unit,
    rbac_manifest,
    scheduler_config,
    scheduler_unit,
    unit_inputs,
    unit_path,
)
from khwtui.artifacts.encryption import load_or_create_key
from khwtui.artifacts.nodefiles import Artifacts
from khwtui.artifacts.pki import Pki
from khwtui.artifacts.render import NodeFile
from khwtui.core.errors import StateError
from khwtui.model import config
from khwtui.model.topology import Topology
from khwtui.stages.control_plane import ControlPlaneStage, health_codes, unit_states
from khwtui.transport.remote import RunResult

D = "/var/lib/kubernetes"
LOCAL = {
    "cluster": {"name": "cp-test"},
    "provider": {"kind": "local"},
    "topology": {"controllers": 3, "workers": 1},
    "network": {
        "node_cidr": "192.168.50.0/24",
        "cluster_cidr": "172.20.0.0/16",
        "service_cidr": "10.96.0.0/20",
        "dns_ip": "10.96.0.10",
        "api_port": 8443,
    },
    "pki": {"key_type": "ecdsa-p256"},
}
KTHW_ADMISSION = "NamespaceLifecycle,NodeRestriction,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota"
FINE_GRAINED = {"nodes/configz", "nodes/healthz", "nodes/pods"}


def topology(minor: int = 36, controllers: int = 3) -> Topology:
    raw = {**LOCAL, "cluster": {"name": "cp-test", "kubernetes_version": f"1.{minor}.2"},
           "versions": {"crictl": f"1.{minor}.0"}, "topology": {"controllers": controllers, "workers": 1}}
    return Topology(config.from_dict(raw))


def exec_flags(unit: str) -> tuple[str, dict[str, str]]:
    """(program, {flag: value}) from ExecStart=, continuation lines joined; every flag is --name=value."""
    (line,) = [line for line in unit.replace("\\\n", " ").splitlines() if line.startswith("ExecStart=")]
    program, *words = shlex.split(line.removeprefix("ExecStart="))
    assert all(w.startswith("--") and "=" in w for w in words), words
    flags = dict(w[2:].split("=", 1) for w in words)
    assert len(flags) == len(words), "a flag is given twice"
    return program, flags


def kthw_apiserver(node_ip: str, etcd: str) -> dict[str, str]:
    """KTHW Lab 08's kube-apiserver flags for LOCAL, written out by hand: without --apiserver-count
    and --runtime-config=api/all=true, with an audit policy and the front proxy's flags."""
    return {
        "advertise-address": node_ip, "allow-privileged": "true",
        "audit-log-maxage": "30", "audit-log-maxbackup": "3", "audit-log-maxsize": "100",
        "audit-log-path": "/var/log/audit.log", "audit-policy-file": "/etc/kubernetes/config/audit-policy.yaml",
        "authorization-mode": "Node,RBAC", "bind-address": "0.0.0.0",
        "client-ca-file": f"{D}/ca.pem", "enable-admission-plugins": KTHW_ADMISSION, "enable-aggregator-routing": "true",
        "proxy-client-cert-file": f"{D}/front-proxy-client.pem", "proxy-client-key-file": f"{D}/front-proxy-client-key.pem",
        "requestheader-allowed-names": "front-proxy-client", "requestheader-client-ca-file": f"{D}/front-proxy-ca.pem",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-", "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "etcd-cafile": f"{D}/ca.pem", "etcd-certfile": f"{D}/kubernetes.pem", "etcd-keyfile": f"{D}/kubernetes-key.pem",
        "etcd-servers": etcd, "event-ttl": "1h", "encryption-provider-config": f"{D}/encryption-config.yaml",
        "kubelet-certificate-authority": f"{D}/ca.pem", "kubelet-client-certificate": f"{D}/kubernetes.pem",
        "kubelet-client-key": f"{D}/kubernetes-key.pem", "secure-port": "8443",
        "service-account-key-file": f"{D}/service-account.pem",
        "service-account-signing-key-file": f"{D}/service-account-key.pem",
        "service-account-issuer": "https://192.168.50.2:8443", "service-cluster-ip-range": "10.96.0.0/20",
        "service-node-port-range": "30000-32767", "tls-cert-file": f"{D}/kubernetes.pem",
        "tls-private-key-file": f"{D}/kubernetes-key.pem", "v": "2",
    }


KTHW_CONTROLLER_MANAGER = {
    "bind-address": "0.0.0.0", "cluster-cidr": "172.20.0.0/16", "cluster-name": "cp-test",
    "cluster-signing-cert-file": f"{D}/ca.pem", "cluster-signing-key-file": f"{D}/ca-key.pem",
    "kubeconfig": f"{D}/kube-controller-manager.kubeconfig", "leader-elect": "true", "root-ca-file": f"{D}/ca.pem",
    "service-account-private-key-file": f"{D}/service-account-key.pem", "service-cluster-ip-range": "10.96.0.0/20",
    "use-service-account-credentials": "true", "v": "2",
}


def rendered_units(topo: Topology) -> dict[str, str]:
    return {
        "kube-apiserver": apiserver_unit(topo, topo.controllers[0]),
        "kube-controller-manager": controller_manager_unit(topo),
        "kube-scheduler": scheduler_unit(),
    }


# --- the units, per minor ---------------------------------------------------------------------


@pytest.mark.parametrize("minor", MINORS)
def test_each_unit_carries_exactly_the_kthw_flags_with_values_from_the_config(minor: int) -> None:
    topo = topology(minor)
    units = rendered_units(topo)
    etcd = "https://192.168.50.10:2379,https://192.168.50.11:2379,https://192.168.50.12:2379"
    assert exec_flags(units["kube-apiserver"]) == ("/usr/local/bin/kube-apiserver", kthw_apiserver("192.168.50.10", etcd))
    assert not {"apiserver-count", "runtime-config"} & set(exec_flags(units["kube-apiserver"])[1])
    assert exec_flags(units["kube-controller-manager"]) == ("/usr/local/bin/kube-controller-manager", KTHW_CONTROLLER_MANAGER)
    assert exec_flags(units["kube-scheduler"]) == ("/usr/local/bin/kube-scheduler", {"config": SCHEDULER_CONFIG, "v": "2"})


@pytest.mark.parametrize("minor", MINORS)
def test_every_rendered_flag_exists_in_that_minor_and_every_required_one_is_there(minor: int) -> None:
    for program, unit in rendered_units(topology(minor)).items():
        _, flags = exec_flags(unit)
        inventory = PROGRAMS[program]
        assert set(flags) <= set(inventory.accepted(minor)), f"{program} 1.{minor}: unknown {set(flags) - set(inventory.accepted(minor))}"
        assert not set(flags) & set(inventory.removed(minor)), f"{program} 1.{minor} passes a removed flag"
        assert set(inventory.required) <= set(flags), f"{program} 1.{minor} lacks {set(inventory.required) - set(flags)}"


def test_the_inventory_knows_flags_that_a_minor_added_or_removed() -> None:
    """What makes the per-minor check above bite: the lists really differ between minors."""
    apiserver = PROGRAMS["kube-apiserver"]
    assert "tls-curve-preferences" not in apiserver.accepted(35) and "tls-curve-preferences" in apiserver.accepted(36)
    assert "min-compatibility-version" not in apiserver.accepted(34) and "min-compatibility-version" in apiserver.accepted(35)
    assert apiserver.removed(34)["kubelet-https"] == 22 and "kubelet-https" not in apiserver.accepted(37)


@pytest.mark.parametrize("controllers", [1, 3, 7])
def test_etcd_servers_follow_the_number_of_controllers(controllers: int) -> None:
    topo = topology(controllers=controllers)
    ips = [f"192.168.50.{10 + i}" for i in range(controllers)]
    for node, ip in zip(topo.controllers, ips, strict=True):
        _, flags = exec_flags(apiserver_unit(topo, node))
        assert flags["advertise-address"] == ip
        assert flags["etcd-servers"].split(",") == [f"https://{i}:2379" for i in ips]


@pytest.mark.parametrize("minor", MINORS)
def test_the_apiserver_audits_by_a_policy_it_is_given_and_logs_no_request_bodies(minor: int) -> None:
    topo = topology(minor)
    files = {f.path: f for f in control_plane_config_files(topo, topo.controllers[0])}
    _, flags = exec_flags(files[unit_path("kube-apiserver")].content.decode())
    assert flags["audit-policy-file"] == AUDIT_POLICY == "/etc/kubernetes/config/audit-policy.yaml"
    policy = yaml.safe_load(files[AUDIT_POLICY].content)
    assert (policy["apiVersion"], policy["kind"], policy["omitStages"]) == ("audit.k8s.io/v1", "Policy", ["RequestReceived"])
    assert [rule["level"] for rule in policy["rules"]] == ["None", "Metadata"]  # health probes out; never Request bodies
    assert {flags[f"audit-log-{k}"] for k in ("maxage", "maxbackup", "maxsize")} == {"30", "3", "100"}  # rotated


def test_without_the_api_address_the_apiserver_unit_is_refused_with_the_fix() -> None:
    topo = Topology(config.from_dict({"cluster": {"name": "gcp-early"}}))  # gcp: no static address yet
    with pytest.raises(StateError, match=r"service-account issuer.*run the compute stage first"):
        apiserver_unit(topo, topo.controllers[0])


def test_the_scheduler_reads_a_v1_config_that_names_its_kubeconfig() -> None:
    doc = yaml.safe_load(scheduler_config())
    assert doc == {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": f"{D}/kube-scheduler.kubeconfig"},
        "leaderElection": {"leaderElect": True},
    }


# --- RBAC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("minor", MINORS)
def test_the_kubelet_api_role_grants_the_fine_grained_subresources_only_from_1_36(minor: int) -> None:
    role, binding = yaml.safe_load_all(rbac_manifest(topology(minor)))
    assert role["kind"] == "ClusterRole" and role["metadata"]["name"] == "system:kube-apiserver-to-kubelet"
    assert role["metadata"]["annotations"] == {"rbac.authorization.kubernetes.io/autoupdate": "true"}
    assert role["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
    (rule,) = role["rules"]
    kthw = {"nodes/proxy", "nodes/stats", "nodes/log", "nodes/spec", "nodes/metrics"}
    assert set(rule["resources"]) == (kthw | FINE_GRAINED if minor >= 36 else kthw)
    assert rule["apiGroups"] == [""] and rule["verbs"] == ["*"]
    assert binding["kind"] == "ClusterRoleBinding" and binding["metadata"]["name"] == "system:kube-apiserver"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kube-apiserver-to-kubelet"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kubernetes"}]


# --- the files a controller gets and what a change restarts -------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[NodeFile]:
    topo = topology()
    folder = tmp_path_factory.mktemp("pki")
    pki = Pki(folder, topo.config)
    pki.ensure(topo)
    binaries = [NodeFile(f"/usr/local/bin/{name}", name.encode(), 0o755) for name in BINARIES]
    return binaries + control_plane_files(Artifacts(topo, pki, load_or_create_key(folder)), topo.controllers[0])


def test_a_controller_gets_credentials_units_and_config_with_private_modes(files: list[NodeFile]) -> None:
    modes = {f.path: f.mode for f in files}
    assert {unit_path(u) for u in UNITS} | {SCHEDULER_CONFIG} <= set(modes)
    secret = [f"{D}/ca-key.pem", f"{D}/kubernetes-key.pem", f"{D}/service-account-key.pem", f"{D}/encryption-config.yaml",
              f"{D}/kube-controller-manager.kubeconfig", f"{D}/kube-scheduler.kubeconfig"]
    assert all(modes[path] == 0o600 for path in secret)
    assert all(f.owner == f.group == "root" for f in files)


def test_each_unit_restarts_for_exactly_the_files_it_reads(files: list[NodeFile]) -> None:
    assert unit_inputs("kube-apiserver", files) == {
        unit_path("kube-apiserver"), "/usr/local/bin/kube-apiserver", f"{D}/ca.pem", f"{D}/kubernetes.pem",
        f"{D}/kubernetes-key.pem", f"{D}/service-account.pem", f"{D}/service-account-key.pem", f"{D}/encryption-config.yaml",
        "/etc/kubernetes/config/audit-policy.yaml", f"{D}/front-proxy-ca.pem", f"{D}/front-proxy-client.pem",
        f"{D}/front-proxy-client-key.pem",
    }
    assert unit_inputs("kube-controller-manager", files) == {
        unit_path("kube-controller-manager"), "/usr/local/bin/kube-controller-manager", f"{D}/ca.pem", f"{D}/ca-key.pem",
        f"{D}/kube-controller-manager.kubeconfig", f"{D}/service-account-key.pem",
    }
    assert unit_inputs("kube-scheduler", files) == {
        unit_path("kube-scheduler"), "/usr/local/bin/kube-scheduler", SCHEDULER_CONFIG, f"{D}/kube-scheduler.kubeconfig",
    }


# --- the stage's reading of node output ---------------------------------------------------------


def test_health_codes_read_one_status_per_line_and_count_silence_as_000() -> None:
    assert health_codes("200\n500\n") == {"livez": "200", "readyz": "500"}
    assert health_codes("000\n") == {"livez": "000", "readyz": "000"}


def test_unit_states_read_systemctl_show_blocks() -> None:
    out = ("Id=kube-apiserver.service\nActiveState=active\nNRestarts=0\n\n"
           "Id=kube-controller-manager.service\nActiveState=activating\nNRestarts=3\n\n"
           "Id=kube-scheduler.service\nActiveState=failed\nNRestarts=5\n")
    assert unit_states(out) == {"kube-apiserver": ("active", "0"), "kube-controller-manager": ("activating", "3"),
                                "kube-scheduler": ("failed", "5")}



# --- the stage on scripted controllers (the real run goes over SSH to nspawn nodes) --------------


@dataclass
class ScriptedController:
    """A controller's programs as the stage hears them: curl's /livez and /readyz codes and
    kube-controller-manager's NRestarts, each in turn (the last repeats), and the units' states."""

    health: list[str] = field(default_factory=lambda: ["200\n200\n"])
    restarts: list[str] = field(default_factory=lambda: ["0"])
    states: dict[str, tuple[str, str]] = field(default_factory=lambda: dict.fromkeys(UNITS, ("active", "0")))

    def script(self, remote: ScriptedRemote, node: str) -> None:
        remote.answer_with(r"^/usr/bin/curl ", lambda command: RunResult(0, in_turn(self.health), ""), node=node)
        remote.answer_with(r"^systemctl show ", self.show, node=node)
        remote.answer_with(r"^systemctl is-active ", self.is_active, node=node)

    def show(self, command: str) -> RunResult:
        self.states["kube-controller-manager"] = ("active", in_turn(self.restarts))
        blocks = [f"Id={u}.service\nActiveState={s}\nNRestarts={n}\n" for u, (s, n) in self.states.items()]
        return RunResult(0, "\n".join(blocks), "")

    def is_active(self, command: str) -> RunResult:
        failed = any(s != "active" for s, _ in self.states.values())
        return RunResult(3 if failed else 0, "".join(f"{s}\n" for s, _ in self.states.values()), "")


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Simulated[ScriptedController]:
    """One controller; the kube-* binaries come from a file:// release folder with pinned sums."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    simulate_release_install(monkeypatch)
    release = tmp_path / "release" / "v1.36.2"
    release.mkdir(parents=True)
    sums = {}
    for name in BINARIES:
        data = build("1.36.2") if name in PROGRAMS else b"kubectl stand-in"
        (release / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    raw = {**LOCAL, "cluster": {"name": "cp-test", "kubernetes_version": "1.36.2"}, "topology": {"controllers": 1, "workers": 1},
           "binaries": {"urls": {"kubernetes": f"file://{tmp_path}/release/v{{version}}/{{name}}"}, "sha256": sums}}
    return simulate(tmp_path, raw, "control-plane", {"controller-0": ScriptedController()})


ENABLE = "systemctl enable kube-apiserver kube-controller-manager kube-scheduler"


async def test_the_stage_installs_everything_then_restarts_only_units_whose_inputs_changed(sim: Simulated[ScriptedController]) -> None:
    stage, run, node = ControlPlaneStage(), sim.run, "controller-0"
    await stage.apply(run)
    run.settle_restarts()
    apiserver = "/usr/local/bin/kube-apiserver"
    assert sim.files(node)[apiserver] == NodeFile(apiserver, build("1.36.2"), 0o755)
    assert sim.changes(node) == [ENABLE, "systemctl daemon-reload", "systemctl restart kube-apiserver",
                                 "systemctl restart kube-controller-manager", "systemctl restart kube-scheduler"]

    await stage.apply(run)  # nothing changed: no reload, no restart
    run.settle_restarts()
    assert sim.changes(node) == [ENABLE, "systemctl start kube-apiserver", "systemctl start kube-controller-manager",
                                 "systemctl start kube-scheduler"]

    kubeconfig = f"{D}/kube-scheduler.kubeconfig"
    sim.files(node)[kubeconfig] = NodeFile(kubeconfig, b"edited by hand", 0o600)
    await stage.apply(run)
    only_the_scheduler = [ENABLE, "systemctl daemon-reload", "systemctl start kube-apiserver", "systemctl start kube-controller-manager",
                          "systemctl restart kube-scheduler"]
    assert sim.changes(node) == only_the_scheduler
    await stage.apply(run)  # not settled (its check has not passed): the restart is still due
    assert sim.changes(node)[-1] == "systemctl restart kube-scheduler"

    run.settle_restarts()
    sim.files(node)[SCHEDULER_CONFIG] = replace(sim.files(node)[SCHEDULER_CONFIG], group="adm")  # bytes and mode as placed
    await stage.apply(run)
    assert sim.changes(node) == only_the_scheduler


async def test_the_stage_waits_until_health_and_restart_counts_hold_still(sim: Simulated[ScriptedController]) -> None:
    sim.nodes["controller-0"].health = ["000\n000\n", "200\n500\n", "200\n200\n"]
    await ControlPlaneStage().apply(sim.run)
    polls = sim.sent("controller-0", "/usr/bin/curl ")
    assert len(polls) == 4  # two unhealthy answers, then the same healthy state twice
    assert polls[0].endswith("--cacert /var/lib/kubernetes/ca.pem --write-out '%{http_code}\\n' --output /dev/null "
                             "https://127.0.0.1:8443/livez --output /dev/null https://127.0.0.1:8443/readyz")


async def test_a_unit_that_keeps_restarting_is_waited_out(sim: Simulated[ScriptedController]) -> None:
    sim.nodes["controller-0"].restarts = ["1", "2", "3"]  # refused its flags twice more, then stays up
    await ControlPlaneStage().apply(sim.run)
    assert len(sim.sent("controller-0", "systemctl show ")) == 4


async def test_check_reports_files_units_and_health_per_controller_with_evidence(sim: Simulated[ScriptedController]) -> None:
    stage, run = ControlPlaneStage(), sim.run
    before = await stage.check(run)
    assert [(o.check, o.result) for o in before] == [("control-plane files", "failed"), ("control-plane units active", "passed"),
                                                     ("apiserver /livez and /readyz", "passed")]
    await stage.apply(run)
    node = sim.nodes["controller-0"]
    assert {o.result for o in await stage.check(run)} == {"passed"}
    node.states["kube-scheduler"] = ("failed", "4")
    node.health = ["200\n500\n"]
    after = {o.check: o for o in await stage.check(run)}
    assert after["control-plane units active"].result == "failed"
    assert "failed" in after["control-plane units active"].evidence
    assert after["apiserver /livez and /readyz"].result == "failed"
    assert after["apiserver /livez and /readyz"].evidence.endswith("/livez 200, /readyz 500")
    assert all(o.node == "controller-0" for o in after.values())
