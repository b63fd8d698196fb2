"""rbac, frontend and admin-access on one local 3 + 1 (+ lb) cluster (issue 5), with the kube-*
stand-ins as the control plane and haproxy from the test apt repository as the load balancer.

One cluster serves every test here, in file order: the build, the identities, a no-op rerun,
the load balancer with apiservers stopped, gcp's /healthz proxy on controller-0, `khwtui status`
(issue 7), then the control-plane mutations for two minors (they leave controller-0's apiserver
refusing, so they come last).

Where each kubeconfig is checked through its own server URL: those pointing at the load balancer
(each kubelet, kube-proxy, the operator's admin-user) from this machine with khwtui.transport.kubeapi;
those pointing at https://127.0.0.1:6443 (controller-manager, scheduler, the controllers' admin)
on controller-0 itself, with the files khwtui placed there, by a python3 script run in the node's
namespaces (python3 + python3-yaml are what the stand-ins need anyway).

The mutations change what khwtui renders, not the node: the engine runs in this process with
`controlplane_files.apiserver_unit` wrapped to alter controller-0's unit (a file edited on the
node would just be put back as drift). Only controller-0 changes, so its failure is the one
reported. The stage stops waiting once a unit restarted CRASH_LOOP times; the mutated unit restarts
after 1 s instead of KTHW's 5 s, so that path is reached in seconds rather than a quarter minute.
"""

from __future__ import annotations

import copy
import io
import json
import shlex
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import janitor
import pytest
import tomli_w
from localcluster import K8S_VERSION, LocalCluster, local_config, publish_standins
from test_etcd_local import node_file_mtimes
from test_standins import KTHW_IDENTITY
from workerbed import install_standin_runtime, shells

from khwtui.artifacts import controlplane_files
from khwtui.artifacts.frontend_files import healthz_files
from khwtui.console.headless import ConsoleSink
from khwtui.core.waiting import poll
from khwtui.engine.runner import Engine
from khwtui.model import config as config_mod
from khwtui.model.cluster import open_cluster
from khwtui.model.topology import Topology
from khwtui.stages import control_plane
from khwtui.stages.frontend import STATS, apt_install, healthz_probe, parse_backends
from khwtui.transport.kubeapi import ApiClient, Credentials

pytestmark = pytest.mark.integration

CONTROLLERS = ("controller-0", "controller-1", "controller-2")
CONTROL_PLANE_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SECOND_VERSION = "1.34.6"  # another minor; like 1.35 it still accepts Debian's containerd 1.6
RBAC_REASON = "ClusterRole (clusterroles): the API server does not serve rbac.authorization.k8s.io/v1 (its discovery lists authentication.k8s.io/v1)"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
NODE_REVIEW = r"""
import base64, http.client, json, os, ssl, sys, tempfile, urllib.parse, yaml
for path in sys.argv[1:]:
    doc = yaml.safe_load(open(path))
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    with tempfile.TemporaryDirectory() as folder:
        for name in ("client-certificate-data", "client-key-data"):
            with open(os.path.join(folder, name), "wb") as out:
                out.write(base64.b64decode(user[name]))
        tls.load_cert_chain(os.path.join(folder, "client-certificate-data"), os.path.join(folder, "client-key-data"))
    url = urllib.parse.urlsplit(cluster["server"])
    connection = http.client.HTTPSConnection(url.hostname, url.port, context=tls, timeout=10)
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    connection.request("POST", "SSR", body=body, headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    print(json.dumps({"path": path, "server": cluster["server"], "status": answer.status, "review": json.loads(answer.read())}))
""".replace("SSR", SSR)


def on_node(c: LocalCluster, node: str, command: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`command` as root inside the node's namespaces (the test's own access; khwtui uses SSH)."""
    pid = c.runtime()["nodes"][node]["init_pid"]
    argv = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c", command]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600, check=check)


@dataclass
class Built:
    c: LocalCluster
    until_frontend: subprocess.CompletedProcess[str]
    admin_access: subprocess.CompletedProcess[str]

    def checks(self, stage: str) -> list[tuple[str, str, str, str]]:
        return [(k["check"], k["result"], k["node"], k["evidence"]) for k in self.c.state()["stages"][stage]["checks"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict, apt_repo) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("frontend")
    c = LocalCluster(root / "c", local_config(f"t{janitor.new_prefix()}", 3, 1, release_mirror), apt=apt_repo)
    try:
        compute = c.khwtui("up", "--auto", "--until", "compute")
        assert compute.returncode == 0, compute.stdout + compute.stderr
        install_standin_runtime([shells(c.state_dir)[name] for name in (*CONTROLLERS, "worker-0")])  # what the stand-ins run on; never khwtui's job
        until_frontend = c.khwtui("up", "--auto", "--until", "frontend")
        admin_access = c.khwtui("up", "--auto", "--only", "admin-access")
        yield Built(c, until_frontend, admin_access)
    finally:
        c.down()


def lb_url(c: LocalCluster) -> str:
    return f"https://{c.state()['nodes']['lb']['internal_ip']}:6443"


def backend_states(c: LocalCluster) -> dict[str, str]:
    """controller -> haproxy's status of it, read from the stats page on the lb."""
    return {name: b.status for name, b in parse_backends(on_node(c, "lb", STATS).stdout).items()}


async def wait_backends(c: LocalCluster, wanted: dict[str, str]) -> None:
    """Poll haproxy until the named controllers have the wanted status (it checks every 2 s)."""

    async def reached() -> bool | None:
        states = backend_states(c)
        return True if all(states.get(n) == s for n, s in wanted.items()) else None

    await poll(reached, timeout=60, interval=0.5, what=f"haproxy to see {wanted}")


# --- the build ---------------------------------------------------------------------------------------


def test_until_frontend_is_unverified_only_for_rbac_and_admin_access_passes_by_self_subject_review(built: Built, apt_repo) -> None:
    c, first, second = built.c, built.until_frontend, built.admin_access
    assert first.returncode == 3, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    stages = {name: s["status"] for name, s in c.state()["stages"].items()}
    assert stages == {"compute": "passed", "pki": "passed", "kubeconfigs": "passed", "encryption": "passed", "etcd": "passed",
                      "control-plane": "passed", "rbac": "unverified", "frontend": "passed", "admin-access": "passed"}

    assert built.checks("rbac") == [("clusterrole system:kube-apiserver-to-kubelet", "unverified", "", RBAC_REASON),
                                    ("clusterrolebinding system:kube-apiserver", "unverified", "", RBAC_REASON)]
    assert f"  ? rbac · clusterrole system:kube-apiserver-to-kubelet: {RBAC_REASON}" in first.stdout.splitlines()

    etcd = [k for k in built.checks("etcd") if k[0] == "etcd member healthy"]
    assert sorted(k[2] for k in etcd if k[1] == "passed") == list(CONTROLLERS)

    frontend = {(k[0], k[2]): (k[1], k[3]) for k in built.checks("frontend")}
    assert frontend[("/version through the load balancer", "")] == ("passed", f"{lb_url(c)}/version: v{K8S_VERSION}")
    for node in CONTROLLERS:
        assert frontend[("load balancer backend", node)] == ("passed", f"{node} UP (L7OK: Layer7 check passed)")
    assert frontend[("haproxy active", "lb")] == ("passed", "active")
    installed = on_node(c, "lb", "dpkg-query -W -f '${Version}' haproxy").stdout
    assert installed == apt_repo.packages["haproxy"]  # by the stage's own apt-get, from the lb's apt source
    assert any("/haproxy_" in path for path in c.servers[0].hits)

    (review,) = [k for k in built.checks("admin-access") if k[0] == "SelfSubjectReview through the API endpoint"]
    assert review[1:] == ("passed", "", f"{lb_url(c)} says you are 'admin' in system:masters, system:authenticated")

    deep = c.khwtui("status", "--deep")
    assert deep.returncode == 3, deep.stdout + deep.stderr  # the cluster as a whole: rbac stays unverified
    assert "could not be verified here:" in deep.stdout and "✖" not in deep.stdout
    probes = c.khwtui("status")  # the health panel's round: rbac has nothing cheap to probe
    assert probes.returncode == 0, probes.stdout + probes.stderr
    wanted = [f"✔ frontend:load balancer backend {node} " for node in CONTROLLERS]
    wanted += ["✔ frontend:/version through the load balancer ", "✔ admin-access:SelfSubjectReview through the API endpoint "]
    assert [w for w in wanted if not any(line.startswith(w) for line in probes.stdout.splitlines())] == []


def test_every_control_plane_unit_is_active_with_a_stand_in_that_accepted_its_flags_and_files(built: Built) -> None:
    for node in CONTROLLERS:
        active = on_node(built.c, node, "systemctl is-active " + " ".join(CONTROL_PLANE_UNITS)).stdout.split()
        assert active == ["active"] * 3
        journal = on_node(built.c, node, "journalctl --no-pager -o cat " + " ".join(f"-u {u}" for u in CONTROL_PLANE_UNITS)).stdout
        assert f"kube-apiserver stand-in v{K8S_VERSION}: serving securely on 0.0.0.0:6443" in journal
        assert f"kube-controller-manager stand-in v{K8S_VERSION}: flags and files accepted" in journal
        assert f"kube-scheduler stand-in v{K8S_VERSION}: flags and files accepted" in journal


async def test_every_kubeconfig_reviews_itself_as_kthw_prescribes_through_its_own_server_url(built: Built) -> None:
    c = built.c
    folder = c.state_dir / "kubeconfigs"
    seen = {}
    for name in ("worker-0", "kube-proxy", "admin-user"):  # they point at the load balancer
        api = ApiClient.from_kubeconfig(folder / f"{name}.kubeconfig")
        assert api.server == lb_url(c)
        seen[name] = await api.who_am_i()
    placed = {"kube-controller-manager": "/var/lib/kubernetes/kube-controller-manager.kubeconfig",
              "kube-scheduler": "/var/lib/kubernetes/kube-scheduler.kubeconfig", "admin": "/etc/kubernetes/admin.kubeconfig"}
    out = on_node(c, "controller-0", "python3 - " + " ".join(placed.values()), stdin=NODE_REVIEW).stdout
    answers = {a["path"]: a for a in map(json.loads, out.splitlines())}
    for name, path in placed.items():
        answer = answers[path]
        assert (answer["server"], answer["status"]) == ("https://127.0.0.1:6443", 201)
        info = answer["review"]["status"]["userInfo"]
        seen[name] = (info["username"], info["groups"])
    assert seen == {name: (user, [*groups, "system:authenticated"]) for name, (user, groups) in KTHW_IDENTITY.items() if name != "worker-1"}


def unit_timestamps(c: LocalCluster) -> dict[str, str]:
    stamps = {}
    for name, node in c.state()["nodes"].items():
        for unit in node.get("units", []):
            stamps[f"{name}:{unit}"] = on_node(c, name, f"systemctl show -p ActiveEnterTimestamp,NRestarts,MainPID {unit}").stdout
    return stamps


def state_file_mtimes(c: LocalCluster) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for folder in ("kubeconfigs", "pki") for p in (c.state_dir / folder).iterdir()}


def test_a_noop_rerun_rewrites_no_file_and_restarts_no_unit(built: Built) -> None:
    c = built.c
    files, units, local = node_file_mtimes(c), unit_timestamps(c), state_file_mtimes(c)
    assert any(k.startswith("lb:") for k in files) and "lb:haproxy" in units and len(units) == 3 * 4 + 1
    rerun = c.khwtui("up", "--auto", "--until", "frontend", "--json")
    again = c.khwtui("up", "--auto", "--only", "admin-access", "--json")
    assert (rerun.returncode, again.returncode) == (3, 0), rerun.stdout[-2000:] + again.stdout[-2000:]
    events = [json.loads(line) for line in (rerun.stdout + again.stdout).splitlines()]
    commands = [e["lines"][0] for e in events if e["kind"] == "log" and e["stream"] == "cmd"]
    assert not [cmd for cmd in commands if cmd.startswith("put ") or "restart" in cmd or "reload" in cmd]
    assert (node_file_mtimes(c), unit_timestamps(c), state_file_mtimes(c)) == (files, units, local)


# --- the load balancer with apiservers down ---------------------------------------------------------------


async def versions_through_lb(c: LocalCluster, times: int) -> list[str]:
    ca = (c.state_dir / "pki" / "ca.pem").read_bytes()
    api = ApiClient(Credentials(lb_url(c), ca))
    return [(await api.get("/version", absent_ok=False))["gitVersion"] for _ in range(times)]  # type: ignore[index]


def frontend_checks(c: LocalCluster) -> dict[tuple[str, str], tuple[str, str]]:
    deep = c.khwtui("status", "--deep", "--json")
    assert deep.returncode == 1, deep.stdout[-2000:] + deep.stderr
    events = [json.loads(line) for line in deep.stdout.splitlines()]
    return {(e["check"], e["node"]): (e["result"], e["evidence"]) for e in events if e["kind"] == "check" and e["stage"] == "frontend"}


async def test_the_load_balancer_answers_without_one_apiserver_and_names_every_controller_without_any(built: Built) -> None:
    c = built.c
    on_node(c, "controller-1", "systemctl stop kube-apiserver")
    assert await versions_through_lb(c, 6) == [f"v{K8S_VERSION}"] * 6  # before haproxy notices: retried elsewhere
    await wait_backends(c, {"controller-1": "DOWN"})
    assert await versions_through_lb(c, 6) == [f"v{K8S_VERSION}"] * 6
    checks = frontend_checks(c)
    assert checks[("/version through the load balancer", "")][0] == "passed"
    assert checks[("load balancer backend", "controller-1")] == ("failed", "controller-1 DOWN (L4CON: Connection refused)")
    assert checks[("load balancer backend", "controller-0")][0] == "passed"

    for node in ("controller-0", "controller-2"):
        on_node(c, node, "systemctl stop kube-apiserver")
    await wait_backends(c, dict.fromkeys(CONTROLLERS, "DOWN"))
    result, evidence = frontend_checks(c)[("/version through the load balancer", "")]
    assert result == "failed"
    assert evidence.startswith(f"no apiserver answered: GET {lb_url(c)}/version: not reached:")
    assert evidence.splitlines()[-1] == "behind it: " + "; ".join(f"{n} DOWN (L4CON: Connection refused)" for n in CONTROLLERS)

    for node in CONTROLLERS:
        on_node(c, node, "systemctl start kube-apiserver")
    back = c.khwtui("up", "--auto", "--only", "frontend")  # waits until haproxy has every controller UP again
    assert back.returncode == 0, back.stdout + back.stderr
    assert backend_states(c) == dict.fromkeys(CONTROLLERS, "UP")


# --- gcp's /healthz proxy on a controller (KTHW lab 08) ------------------------------------------------------
# khwtui's nginx site, nginx from the test apt repository, in front of the kube-apiserver stand-in over
# TLS that nginx verifies against the cluster CA. The site is installed as the gcp frontend stage
# installs it (its rendered file, `nginx -t`, the unit), here on a local controller, since the nginx and
# TLS behaviour is the node's, not the cloud's.


async def settled(c: LocalCluster, command: str, wanted: str) -> subprocess.CompletedProcess[str]:
    """`command` on controller-0 until it prints `wanted` (20 s at most): a reload swaps nginx's
    workers in the background, so the old configuration answers for a moment."""

    async def answered() -> subprocess.CompletedProcess[str] | None:
        answer = on_node(c, "controller-0", command, check=False)
        return answer if answer.stdout == wanted else None

    return await poll(answered, timeout=20, interval=0.2, what=f"{command!r} on controller-0 to print {wanted}")


async def test_the_healthz_proxy_answers_200_for_the_kubernetes_host_through_verified_tls(built: Built) -> None:
    c = built.c
    topo = Topology(config_mod.from_dict(c.raw))
    [site] = healthz_files(topo)
    on_node(c, "controller-0", apt_install("nginx"))
    on_node(c, "controller-0", f"cat > {shlex.quote(site.path)}", stdin=site.content.decode())
    on_node(c, "controller-0", "nginx -t -q && systemctl enable nginx && systemctl reload-or-restart nginx")

    answer = await settled(c, healthz_probe(topo), "200")
    assert (answer.returncode, answer.stdout) == (0, "200")
    other = on_node(c, "controller-0", "curl --silent --output /dev/null --write-out %{http_code} http://127.0.0.1/healthz", check=False)
    assert other.stdout == "404"  # without the Host the load balancer sends, Debian's default site answers
    wrong_ca = f"sed -i 's#proxy_ssl_trusted_certificate .*#proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;#' {shlex.quote(site.path)}"
    on_node(c, "controller-0", f"{wrong_ca} && systemctl reload nginx")
    refused = await settled(c, healthz_probe(topo), "502")
    assert refused.stdout == "502"  # the upstream is verified: another CA's trust is not enough


# --- status: one round of every done stage's probe (issue 7) ------------------------------------------------

# Exit codes 0 healthy, 1 failed, 3 unverified (docs/ARCHITECTURE.md "Command line and exit codes").
# Then dns, smoke and demo run for real against the stand-in apiserver through the load balancer: it
# serves no Deployments or Secrets (its discovery documents say so), so each of their checks is
# unverified with that reason, and so are their probes. Before them the real workers and routes
# stages run (Node Ready is unverified against the stand-in, so exit 3).

NODES = (*CONTROLLERS, "worker-0", "lb")


def status(c: LocalCluster) -> tuple[int, list[dict]]:
    result = c.khwtui("status", "--json")
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def probes(events: list[dict]) -> dict[tuple[str, str], dict]:
    return {(e["probe"], e["node"]): e for e in events if e["kind"] == "health"}


def test_status_json_lists_every_probe_with_a_result_and_its_latency_and_exits_0(built: Built) -> None:
    cluster = built.c
    code, events = status(cluster)
    assert code == 0, events
    assert [e["kind"] for e in events][-1] == "finished" and {e["kind"] for e in events} == {"health", "finished"}
    seen = probes(events)
    assert all(e["result"] == "passed" and e["latency_ms"] > 0 for e in seen.values())
    assert {n for p, n in seen if p == "compute:ssh and sudo"} == set(NODES)
    assert {n for p, n in seen if p == "etcd:etcd"} == set(CONTROLLERS)
    assert {n for p, n in seen if p == "control-plane:apiserver /livez and /readyz"} == set(CONTROLLERS)
    assert ("pki:certificates", "") in seen
    assert {p.split(":")[0] for p, _ in seen} == {"compute", "pki", "etcd", "control-plane", "frontend", "admin-access"}
    assert events[-1]["exit_code"] == 0 and events[-1]["summary"] == f"{len(seen)} probes, 0 failed, 0 unverified"


async def test_etcd_stopped_on_one_controller_fails_its_probe_in_the_next_round(built: Built) -> None:
    cluster = built.c
    controller = shells(cluster.state_dir)["controller-1"]
    controller.run("systemctl stop etcd")
    try:
        code, events = status(cluster)
        assert code == 1, events
        etcd = {n: e for (p, n), e in probes(events).items() if p == "etcd:etcd"}
        assert {n: e["result"] for n, e in etcd.items()} == {"controller-0": "passed", "controller-1": "failed", "controller-2": "passed"}
        assert "connection refused" in etcd["controller-1"]["detail"] or "unhealthy" in etcd["controller-1"]["detail"]
        assert etcd["controller-1"]["latency_ms"] > 0
        assert events[-1]["summary"].endswith(", 1 failed, 0 unverified")
    finally:
        controller.run("systemctl start etcd")

    async def healthy_again() -> bool | None:
        return True if status(cluster)[0] == 0 else None

    await poll(healthy_again, timeout=60, interval=1.0, what="status to be healthy after etcd started again")


def test_dns_smoke_and_demo_on_the_stand_ins_are_unverified_with_the_reason_and_status_exits_3(built: Built) -> None:
    cluster = built.c
    workers = cluster.khwtui("up", "--auto", "--only", "workers,routes")
    assert workers.returncode == 3, workers.stdout + workers.stderr  # Node Ready: unverified on the stand-in

    for stage in ("dns", "smoke", "demo"):
        result = cluster.khwtui("up", "--auto", "--only", stage)
        assert result.returncode == 3, result.stdout + result.stderr
    checks = {name: [(k["check"], k["result"], k["evidence"]) for k in s["checks"]]
              for name, s in cluster.state()["stages"].items() if name in ("dns", "smoke", "demo")}
    no_apps = "the API server does not serve apps/v1 (its discovery lists authentication.k8s.io/v1)"
    assert checks["dns"] == [(c, "unverified", "ServiceAccount (serviceaccounts): the API server serves v1 without serviceaccounts (its discovery lists nothing)")
                             for c in ("CoreDNS manifest applied", "Corefile forwards outside names", "kube-dns Service",
                                       "CoreDNS replicas ready", "kubernetes.default resolves in a pod", "example.com resolves in a pod")]
    assert checks["smoke"][0] == ("secret encrypted at rest", "unverified", "the API server serves v1 without secrets (its discovery lists nothing)")
    assert checks["smoke"][1] == ("nginx deployment running", "unverified", no_apps)
    assert {k[1] for k in checks["smoke"]} == {"unverified"} and len(checks["smoke"]) == 6
    assert {k[1] for k in checks["demo"]} == {"unverified"} and len(checks["demo"]) == 3

    code, events = status(cluster)
    assert code == 3, events
    seen = probes(events)
    assert seen[("dns:CoreDNS replicas ready", "")]["result"] == "unverified"
    assert seen[("dns:CoreDNS replicas ready", "")]["detail"] == no_apps
    assert seen[("smoke:NodePort reached from this machine", "")]["result"] == "unverified"
    assert seen[("demo:TODO app reachable from this machine", "")]["result"] == "unverified"
    assert {e["result"] for (p, _), e in seen.items() if p.split(":")[0] not in ("dns", "smoke", "demo")} == {"passed"}
    assert events[-1]["summary"] == f"{len(seen)} probes, 0 failed, 3 unverified"


def test_status_without_json_prints_one_line_per_probe_and_the_exit_code(built: Built) -> None:
    cluster = built.c
    result = cluster.khwtui("status")
    lines = result.stdout.splitlines()
    assert result.returncode == 3
    assert any(line.startswith("? dns:CoreDNS replicas ready ") and line.endswith(" ms the API server does not serve apps/v1 "
                                                                                 "(its discovery lists authentication.k8s.io/v1)") for line in lines)
    assert lines[-1] == "exit 3"


def test_a_full_up_runs_to_the_end_with_exit_3_listing_exactly_the_unverified_checks(built: Built) -> None:
    cluster = built.c
    result = cluster.khwtui("up", "--auto")
    assert result.returncode == 3, result.stdout + result.stderr
    state = tomllib.loads((cluster.state_dir / "state.toml").read_text())
    stages = {name: s for name, s in state["stages"].items() if name != "demo"}  # demo is off: not part of a full run
    assert {name: s["status"] for name, s in stages.items() if s["status"] not in ("passed", "unverified")} == {}
    expected = sorted(
        f"? {name} · {c['check']}" + (f" on {c['node']}" if c.get("node") else "") + f": {c['evidence']}"
        for name, s in stages.items()
        for c in s.get("checks", [])
        if c["result"] == "unverified"
    )
    listed = result.stdout.split("could not be verified here:\n", 1)[1].split("\nexit 3")[0].splitlines()
    assert sorted(line.strip() for line in listed) == expected
    assert all(c["evidence"] for s in stages.values() for c in s.get("checks", []) if c["result"] == "unverified")
    assert {name for name, s in stages.items() if s["status"] == "unverified"} >= {"rbac", "workers", "dns", "smoke"}


# --- control-plane mutations, two minors ----------------------------------------------------------------


@pytest.fixture(scope="module", params=[K8S_VERSION, SECOND_VERSION])
def version(request: pytest.FixtureRequest, built: Built, release_mirror: dict) -> str:
    """The cluster's config set to this Kubernetes version, its stand-ins published in the same mirror."""
    raw = copy.deepcopy(built.c.raw)  # the mirror's [binaries] is shared with other tests: never edit it in place
    if request.param != K8S_VERSION:
        url, sums = publish_standins(release_mirror["tree"].root, release_mirror["server"].url, request.param)
        raw["binaries"]["urls"]["kubernetes"] = url
        raw["binaries"]["sha256"].update(sums)
    raw["cluster"]["kubernetes_version"] = request.param
    built.c.config_path.write_text(tomli_w.dumps(raw))
    return request.param


def drop_flag(name: str) -> Callable[[str], str]:
    return lambda unit: "".join(line for line in unit.splitlines(keepends=True) if not line.strip().startswith(f"--{name}="))


def add_flag(flag: str) -> Callable[[str], str]:
    return lambda unit: unit.replace("kube-apiserver \\\n", f"kube-apiserver \\\n  {flag} \\\n", 1)


def restarting_quickly(unit: str) -> str:
    """The refusing unit restarted after 1 s instead of 5, and without systemd's start limit (5
    starts in 10 s), which would otherwise also refuse the next test's restart of it."""
    assert "[Unit]\n" in unit and "\nRestartSec=5\n" in unit
    return unit.replace("[Unit]\n", "[Unit]\nStartLimitIntervalSec=0\n", 1).replace("\nRestartSec=5\n", "\nRestartSec=1\n")


def set_flag(name: str, value: str) -> Callable[[str], str]:
    return lambda unit: "".join(f"  --{name}={value} \\\n" if line.strip().startswith(f"--{name}=") else line
                                for line in unit.splitlines(keepends=True))


async def control_plane_with(c: LocalCluster, monkeypatch: pytest.MonkeyPatch, mutate: Callable[[str], str]) -> tuple[int, str]:
    """`up --auto --only control-plane` in this process, with controller-0's rendered apiserver unit mutated."""
    real = controlplane_files.apiserver_unit

    def rendered(topo, node):
        unit = real(topo, node)
        if node.index != 0:
            return unit
        assert mutate(unit) != unit, "the mutation changed nothing"
        return restarting_quickly(mutate(unit))

    monkeypatch.setattr(controlplane_files, "apiserver_unit", rendered)
    out = io.StringIO()
    code = await Engine(open_cluster(str(c.config_path), str(c.state_dir))).run(ConsoleSink(out), only=["control-plane"])
    return code, out.getvalue()


def assert_refused(code: int, out: str, line: str) -> None:
    assert code == 1, out
    failure = out.split("✖ control-plane · apply on controller-0", 1)
    assert len(failure) == 2, out
    assert "kube-apiserver on controller-0 keeps restarting" in failure[1], out  # not the start deadline's failure
    assert line in failure[1], out


async def test_an_apiserver_unit_missing_a_required_flag_fails_with_the_stand_ins_line(version: str, built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = await control_plane_with(built.c, monkeypatch, drop_flag("service-account-issuer"))
    assert_refused(code, out, "kube-apiserver: missing required flag --service-account-issuer")


async def test_an_apiserver_unit_with_a_removed_flag_fails_with_the_stand_ins_line(version: str, built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = await control_plane_with(built.c, monkeypatch, add_flag("--cloud-provider=gce"))
    assert_refused(code, out, "kube-apiserver: unknown flag: --cloud-provider (removed in Kubernetes 1.33)")


async def test_an_apiserver_unit_with_a_wrong_certificate_fails_with_the_stand_ins_line(version: str, built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = await control_plane_with(built.c, monkeypatch, set_flag("tls-cert-file", "/var/lib/kubernetes/service-account.pem"))
    assert_refused(code, out, "kube-apiserver: --tls-cert-file=/var/lib/kubernetes/service-account.pem does not match "
                              "--tls-private-key-file=/var/lib/kubernetes/kubernetes-key.pem (KEY_VALUES_MISMATCH)")


async def test_an_apiserver_unit_whose_etcd_does_not_answer_exits_after_the_dial_timeout_with_the_real_line(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    """No etcd on that port: the stand-in dials for 20 s as the real one does, then exits 255 with
    upstream's fatal line. One restart is enough to call it a refusal here (three would add a minute)."""
    monkeypatch.setattr(control_plane, "CRASH_LOOP", 1)
    code, out = await control_plane_with(built.c, monkeypatch, set_flag("etcd-servers", "https://127.0.0.1:2399"))
    assert_refused(code, out, "kube-apiserver: Error creating leases: error creating storage factory: context deadline exceeded")
    assert "status=255/EXCEPTION" in out.split("✖ control-plane · apply on controller-0", 1)[1], out
