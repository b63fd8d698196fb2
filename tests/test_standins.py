"""The kube-* stand-ins run here against files khwtui renders: they take what khwtui renders for
every minor, refuse each single mistake with one line, and the apiserver answers like the real
one over TLS (health, version, discovery, SelfSubjectReview with every kubeconfig khwtui makes).

Local runs read the node paths under a temporary root: every flag value that is an absolute
path gets the root as prefix, --bind-address is 127.0.0.1, --secure-port a free port, and
--etcd-servers a fake etcd /health endpoint; nothing else of the rendered units changes.
"""

from __future__ import annotations

import base64
import http.client
import json
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from standins import HARNESS, build, install
from standins.flags import MINORS

from khwtui.artifacts.controlplane_files import (
    SCHEDULER_CONFIG,
    apiserver_unit,
    control_plane_files,
    controller_manager_unit,
    scheduler_unit,
)
from khwtui.artifacts.encryption import load_or_create_key
from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs, spec_named
from khwtui.artifacts.nodefiles import KUBERNETES_DIR, Artifacts
from khwtui.artifacts.pki import Pki
from khwtui.model import config
from khwtui.model.topology import Topology

SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
LOCAL = {
    "cluster": {"name": "standin-test"},
    "provider": {"kind": "local"},
    "topology": {"controllers": 3, "workers": 2},
    "pki": {"key_type": "ecdsa-p256"},
}


def artifacts(folder: Path, minor: int, name: str = "standin-test") -> Artifacts:
    raw = {**LOCAL, "cluster": {"name": name, "kubernetes_version": f"1.{minor}.3"}, "versions": {"crictl": f"1.{minor}.0"}}
    topo = Topology(config.from_dict(raw))
    pki = Pki(folder / "pki", topo.config)
    pki.ensure(topo)
    return Artifacts(topo, pki, load_or_create_key(folder / "pki"))


def kubeconfig_of(a: Artifacts, name: str) -> str:
    return kubeconfig(a.topo, a.pki, spec_named(a.topo, name))


def unit_flags(unit: str) -> list[str]:
    """The --flags of ExecStart= (continuation lines joined), without the program."""
    (line,) = [line for line in unit.replace("\\\n", " ").splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))[1:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Controller:
    """One controller's files under `root`, the rendered flags of each program, and the stand-ins."""

    root: Path
    minor: int
    a: Artifacts
    bin: dict[str, Path]
    flags: dict[str, list[str]]

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def run(self, program: str, flags: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(self.bin[program]), *flags], stderr=subprocess.PIPE, text=True)

    def refusal(self, program: str, flags: list[str]) -> str:
        """The stand-in's one error line; fails unless it exits 1 after exactly that line."""
        proc = self.run(program, flags)
        line = wait_line(proc)
        if line.startswith(f"{program} stand-in"):  # it accepted and keeps running
            stop(proc)
            pytest.fail(f"{program} did not refuse: {line}")
        rest = proc.communicate(timeout=60)[1]
        assert (proc.returncode, rest) == (1, ""), f"{line}\n{rest}"
        return line


def place(root: Path, a: Artifacts, minor: int) -> Controller:
    """Write controller-0's files under `root`, paths inside text configs rooted too, and render the flags."""
    node = a.topo.controllers[0]
    for f in control_plane_files(a, node):
        target = root / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        content = f.content.replace(KUBERNETES_DIR.encode(), f"{root}{KUBERNETES_DIR}".encode()) if f.path == SCHEDULER_CONFIG else f.content
        target.write_bytes(content)
        target.chmod(f.mode)
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    units = {"kube-apiserver": apiserver_unit(a.topo, node), "kube-controller-manager": controller_manager_unit(a.topo),
             "kube-scheduler": scheduler_unit()}
    flags = {program: [rooted(root, flag) for flag in unit_flags(unit)] for program, unit in units.items()}
    return Controller(root, minor, a, install(root / "bin", f"1.{minor}.3"), flags)


def rooted(root: Path, flag: str) -> str:
    name, _, value = flag.partition("=")
    return f"{name}={root}{value}" if value.startswith("/") else flag


def replace(flags: list[str], name: str, value: str | None) -> list[str]:
    """`flags` with --name set to `value` (appended when absent) or dropped when `value` is None."""
    kept = [f for f in flags if f.partition("=")[0] != f"--{name}"]
    return kept if value is None else [*kept, f"--{name}={value}"]


@pytest.fixture(scope="module", params=MINORS, ids=[f"1.{m}" for m in MINORS])
def controller(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Controller:
    root = tmp_path_factory.mktemp(f"root-1.{request.param}")
    return place(root, artifacts(root / "state", request.param), request.param)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Another cluster's certificates and kubeconfigs: a different CA."""
    return artifacts(tmp_path_factory.mktemp("stranger"), 36, "stranger")


# --- what khwtui renders is accepted, per minor ---------------------------------------------------


def wait_line(proc: subprocess.Popen) -> str:
    """The stand-in's first stderr line: its announcement, or its refusal just before it exits."""
    assert proc.stderr is not None
    return proc.stderr.readline().strip()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.mark.parametrize("program", ["kube-controller-manager", "kube-scheduler"])
def test_the_rendered_unit_starts_and_stays_up_until_sigterm(controller: Controller, program: str) -> None:
    proc = controller.run(program, controller.flags[program])
    assert wait_line(proc) == f"{program} stand-in v1.{controller.minor}.3: flags and files accepted"
    assert proc.poll() is None
    assert stop(proc) == 0


# --- one mistake, one line ---------------------------------------------------------------------------


MUTATION_MINORS = pytest.mark.parametrize("controller", [34, 37], indirect=True, ids=["1.34", "1.37"])


@MUTATION_MINORS
@pytest.mark.parametrize(("program", "missing"), [("kube-apiserver", "service-account-issuer"),
                                                  ("kube-apiserver", "service-cluster-ip-range"),
                                                  ("kube-controller-manager", "kubeconfig"),
                                                  ("kube-scheduler", "config")])
def test_a_unit_missing_a_required_flag_is_refused(controller: Controller, program: str, missing: str) -> None:
    line = controller.refusal(program, replace(controller.flags[program], missing, None))
    assert line == f"{program}: missing required flag --{missing}"


@MUTATION_MINORS
@pytest.mark.parametrize(("program", "flag", "removed_in"), [("kube-apiserver", "kubelet-https=true", 22),
                                                             ("kube-apiserver", "insecure-port=0", 24),
                                                             ("kube-controller-manager", "horizontal-pod-autoscaler-upscale-delay=3m", 31),
                                                             ("kube-scheduler", "policy-config-file=/etc/policy.json", 23)])
def test_a_flag_removed_before_the_minor_is_refused(controller: Controller, program: str, flag: str, removed_in: int) -> None:
    line = controller.refusal(program, [*controller.flags[program], f"--{flag}"])
    assert line == f"{program}: unknown flag: --{flag.split('=')[0]} (removed in Kubernetes 1.{removed_in})"


def test_a_flag_newer_than_the_minor_is_unknown_and_accepted_from_its_minor(tmp_path: Path) -> None:
    old = place(tmp_path / "old", artifacts(tmp_path / "old-state", 35), 35)
    line = old.refusal("kube-scheduler", [*old.flags["kube-scheduler"], "--tls-curve-preferences=X25519"])
    assert line == "kube-scheduler: unknown flag: --tls-curve-preferences"
    new = place(tmp_path / "new", artifacts(tmp_path / "new-state", 36), 36)
    proc = new.run("kube-scheduler", [*new.flags["kube-scheduler"], "--tls-curve-preferences=X25519"])
    assert wait_line(proc).endswith("flags and files accepted")
    assert stop(proc) == 0


@MUTATION_MINORS
def test_a_certificate_that_does_not_match_its_key_is_refused(controller: Controller) -> None:
    wrong = f"{controller.root}{KUBERNETES_DIR}/service-account.pem"
    line = controller.refusal("kube-apiserver", replace(controller.flags["kube-apiserver"], "tls-cert-file", wrong))
    assert line.startswith(f"kube-apiserver: --tls-cert-file={wrong} does not match --tls-private-key-file=")
    assert "KEY_VALUES_MISMATCH" in line


@MUTATION_MINORS
def test_a_missing_file_is_refused_with_its_flag(controller: Controller) -> None:
    gone = f"{controller.root}{KUBERNETES_DIR}/nope.pem"
    line = controller.refusal("kube-apiserver", replace(controller.flags["kube-apiserver"], "client-ca-file", gone))
    assert line == f"kube-apiserver: --client-ca-file={gone}: No such file or directory"


@MUTATION_MINORS
def test_a_kubeconfig_of_another_cluster_is_refused(controller: Controller, stranger: Artifacts, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.kubeconfig"
    foreign.write_text(kubeconfig_of(stranger, "kube-controller-manager"))
    line = controller.refusal("kube-controller-manager", replace(controller.flags["kube-controller-manager"], "kubeconfig", str(foreign)))
    assert line == f"kube-controller-manager: --kubeconfig={foreign} trusts another CA than --root-ca-file={controller.root}{KUBERNETES_DIR}/ca.pem"


@MUTATION_MINORS
def test_a_kubeconfig_whose_certificate_another_ca_signed_is_refused(controller: Controller, stranger: Artifacts, tmp_path: Path) -> None:
    own = yaml.safe_load(controller.path(f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig").read_text())
    user = own["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(stranger.pki.cert_pem("kube-scheduler")).decode()
    user["client-key-data"] = base64.b64encode(stranger.pki.key_pem("kube-scheduler")).decode()
    controller.path(f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig").rename(tmp_path / "kept")
    try:
        controller.path(f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig").write_text(yaml.safe_dump(own))
        line = controller.refusal("kube-scheduler", controller.flags["kube-scheduler"])
    finally:
        (tmp_path / "kept").replace(controller.path(f"{KUBERNETES_DIR}/kube-scheduler.kubeconfig"))
    assert line.endswith("the client certificate is not signed by the certificate-authority-data it trusts")


@MUTATION_MINORS
@pytest.mark.parametrize(("text", "problem"), [("clusters: [unclosed\n", "is not valid YAML"),
                                               ("apiVersion: v1\nkind: Config\n", "is not a usable kubeconfig")])
def test_a_kubeconfig_that_does_not_parse_is_refused(controller: Controller, tmp_path: Path, text: str, problem: str) -> None:
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(text)
    line = controller.refusal("kube-controller-manager", replace(controller.flags["kube-controller-manager"], "kubeconfig", str(broken)))
    assert line.startswith(f"kube-controller-manager: --kubeconfig={broken} {problem}")


@MUTATION_MINORS
def test_a_scheduler_config_in_a_version_gone_from_the_minor_is_refused(controller: Controller, tmp_path: Path) -> None:
    old = tmp_path / "kube-scheduler.yaml"
    old.write_text(controller.path(SCHEDULER_CONFIG).read_text().replace("config.k8s.io/v1", "config.k8s.io/v1beta1"))
    line = controller.refusal("kube-scheduler", [f"--config={old}", "--v=2"])
    assert line == f'kube-scheduler: --config={old}: no kind "KubeSchedulerConfiguration" is registered for version "kubescheduler.config.k8s.io/v1beta1"'


@MUTATION_MINORS
def test_an_encryption_key_of_the_wrong_size_is_refused(controller: Controller, tmp_path: Path) -> None:
    doc = yaml.safe_load(controller.path(f"{KUBERNETES_DIR}/encryption-config.yaml").read_text())
    doc["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"] = base64.b64encode(b"k" * 31).decode()
    short = tmp_path / "encryption-config.yaml"
    short.write_text(yaml.safe_dump(doc))
    line = controller.refusal("kube-apiserver", replace(controller.flags["kube-apiserver"], "encryption-provider-config", str(short)))
    assert line == f"kube-apiserver: --encryption-provider-config={short}: every aescbc key needs a base64 secret of 16 or 24 or 32 bytes"


def test_a_harness_without_a_release_or_under_another_name_refuses(tmp_path: Path) -> None:
    bare = tmp_path / "kube-apiserver"
    bare.write_text(HARNESS.read_text())
    proc = subprocess.run([sys.executable, str(bare)], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (1, "kube-apiserver: no release baked in: install the bytes of tests.standins.build(version)\n")
    other = tmp_path / "kubelet-ish"
    other.write_bytes(build("1.36.3"))
    proc = subprocess.run([sys.executable, str(other)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("kubelet-ish: stands in for kube-apiserver, kube-controller-manager")


def test_the_built_harness_is_the_same_bytes_for_the_same_version() -> None:
    assert build("1.36.3") == build("1.36.3") != build("1.36.4")


# --- the apiserver over TLS --------------------------------------------------------------------------


class EtcdHealth(BaseHTTPRequestHandler):
    """etcd's /health, only for clients with a certificate from the cluster CA (like etcd's --client-cert-auth)."""

    def do_GET(self) -> None:
        body = json.dumps({"health": str(self.server.healthy).lower(), "reason": ""}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve_etcd(controller: Controller, healthy: bool = True) -> Iterator[str]:
    """A fake etcd on 127.0.0.1 with the controller's certificates: TLS connections succeed (what the
    apiserver needs to start), /health says `healthy` (what its /readyz reports); gone on exit."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(controller.path(f"{KUBERNETES_DIR}/kubernetes.pem"), controller.path(f"{KUBERNETES_DIR}/kubernetes-key.pem"))
    context.load_verify_locations(controller.path(f"{KUBERNETES_DIR}/ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), EtcdHealth)
    server.healthy = healthy
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def etcd(controller: Controller) -> Iterator[str]:
    with serve_etcd(controller) as url:
        yield url


def kubeconfig_context(text: str) -> ssl.SSLContext:
    """TLS as the kubeconfig's user: its CA, its client certificate and key (ssl loads those from files)."""
    doc = yaml.safe_load(text)
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context.load_cert_chain(cert, key)
    return context


@dataclass
class Api:
    port: int
    ca: bytes

    def get(self, path: str, kubeconfig_text: str | None = None) -> tuple[int, str]:
        return self.request("GET", path, kubeconfig_text)

    def request(self, method: str, path: str, kubeconfig_text: str | None = None) -> tuple[int, str]:
        """One HTTPS request to 127.0.0.1:<port>, anonymously or as a kubeconfig's user (its server
        URL rewritten to the stand-in's address; the certificate is checked for 127.0.0.1)."""
        context = kubeconfig_context(kubeconfig_text) if kubeconfig_text else ssl.create_default_context(cadata=self.ca.decode())
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}) if method == "POST" else None
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()


@pytest.fixture
def api(controller: Controller, etcd: str) -> Iterator[Api]:
    port = free_port()
    flags = replace(replace(replace(controller.flags["kube-apiserver"], "bind-address", "127.0.0.1"), "secure-port", str(port)), "etcd-servers", etcd)
    proc = controller.run("kube-apiserver", flags)
    assert wait_line(proc) == f"kube-apiserver stand-in v1.{controller.minor}.3: serving securely on 127.0.0.1:{port}"
    yield Api(port, controller.a.pki.ca_pem())
    assert stop(proc) == 0


def test_the_apiserver_serves_health_and_its_version_anonymously_over_tls(api: Api, controller: Controller) -> None:
    assert api.get("/livez") == (200, "ok")
    assert api.get("/readyz") == (200, "ok")
    assert api.get("/healthz") == (200, "ok")
    status, body = api.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"] == f"v1.{controller.minor}.3"
    assert json.loads(body)["minor"] == str(controller.minor)


@MUTATION_MINORS
def test_readyz_fails_once_etcd_stops_answering_and_livez_stays_ok(controller: Controller) -> None:
    """etcd answered at start (else the apiserver would not start: the test in test_frontend_local), then went away."""
    port = free_port()
    with serve_etcd(controller) as etcd:
        flags = replace(replace(replace(controller.flags["kube-apiserver"], "bind-address", "127.0.0.1"), "secure-port", str(port)),
                        "etcd-servers", etcd)
        proc = controller.run("kube-apiserver", flags)
        assert wait_line(proc).endswith(f"serving securely on 127.0.0.1:{port}")
    try:
        api = Api(port, controller.a.pki.ca_pem())
        assert api.get("/livez") == (200, "ok")
        status, body = api.get("/readyz")
        assert status == 500 and body.startswith("[-]etcd failed:") and body.endswith("readyz check failed\n")
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("controller", [36], indirect=True, ids=["1.36"])
def test_discovery_lists_only_authentication_for_authenticated_users(api: Api, controller: Controller) -> None:
    admin = kubeconfig_of(controller.a, "admin")
    status, body = api.get("/apis", admin)
    assert status == 200
    groups = json.loads(body)
    assert groups["kind"] == "APIGroupList"
    assert [(g["name"], [v["groupVersion"] for v in g["versions"]]) for g in groups["groups"]] == [("authentication.k8s.io", ["authentication.k8s.io/v1"])]
    status, body = api.get("/api", admin)
    assert status == 200 and json.loads(body)["versions"] == ["v1"]
    status, body = api.get("/apis")
    assert status == 403 and json.loads(body)["reason"] == "Forbidden"
    assert api.get("/apis/apps/v1", admin)[0] == 404


KTHW_IDENTITY = {
    "kube-controller-manager": ("system:kube-controller-manager", ["system:kube-controller-manager"]),
    "kube-scheduler": ("system:kube-scheduler", ["system:kube-scheduler"]),
    "admin": ("admin", ["system:masters"]),
    "admin-user": ("admin", ["system:masters"]),
    "kube-proxy": ("system:kube-proxy", ["system:node-proxier"]),
    "worker-0": ("system:node:worker-0", ["system:nodes"]),
    "worker-1": ("system:node:worker-1", ["system:nodes"]),
}


@pytest.mark.parametrize("controller", [36], indirect=True, ids=["1.36"])
def test_every_kubeconfig_khwtui_makes_reviews_itself_as_the_identity_kthw_prescribes(api: Api, controller: Controller) -> None:
    a = controller.a
    seen = {}
    for spec in kubeconfig_specs(a.topo):
        status, body = api.request("POST", SSR, kubeconfig(a.topo, a.pki, spec))
        assert status == 201, body
        review = json.loads(body)
        assert (review["kind"], review["apiVersion"]) == ("SelfSubjectReview", "authentication.k8s.io/v1")
        info = review["status"]["userInfo"]
        seen[spec.name] = (info["username"], info["groups"])
    assert seen == {name: (user, groups + ["system:authenticated"]) for name, (user, groups) in KTHW_IDENTITY.items()}


@MUTATION_MINORS
def test_a_client_certificate_from_an_unknown_ca_gets_401_and_none_gets_403(api: Api, stranger: Artifacts) -> None:
    doc = yaml.safe_load(kubeconfig_of(stranger, "admin"))
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(api.ca).decode()  # trusts our server
    foreign = yaml.safe_dump(doc)
    for method, path in (("POST", SSR), ("GET", "/apis"), ("GET", "/livez")):
        status, body = api.request(method, path, foreign)
        assert (status, json.loads(body)["reason"]) == (401, "Unauthorized"), path
    status, body = api.request("POST", SSR)  # no certificate at all: system:anonymous
    assert status == 403 and json.loads(body)["reason"] == "Forbidden"


@pytest.mark.parametrize("controller", [36], indirect=True, ids=["1.36"])
def test_the_apiserver_reaches_a_kubelet_by_its_name_and_refuses_a_name_it_cannot_resolve(api: Api, controller: Controller) -> None:
    admin = kubeconfig_of(controller.a, "admin")
    status, body = api.get("/api/v1/nodes/worker-9.invalid/proxy/healthz", admin)
    assert (status, json.loads(body)["message"]) == (503, "error trying to reach service: dial tcp: lookup worker-9.invalid: no such host")
    assert api.get("/api/v1/nodes/worker-9.invalid/proxy/healthz")[0] == 403  # anonymous: not even asked
