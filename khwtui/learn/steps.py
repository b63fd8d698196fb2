"""The commands each stage runs, as data: run a command on a node (or on your machine), place a
file, download and verify a release file. `explain` lists them; `script` turns them into bash.

They are the stages' own commands (imported from the stage modules, never retyped), in the order
the stages run them, for a cluster built from scratch. Cloud resources (gcp) are not here: they
come from the provider's plan (khwtui.learn.gcloud).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from khwtui.artifacts.controlplane_files import BIN_DIR as CP_BIN_DIR
from khwtui.artifacts.controlplane_files import BINARIES as CP_BINARIES
from khwtui.artifacts.controlplane_files import CONFIG_DIR, control_plane_files
from khwtui.artifacts.controlplane_files import UNITS as CP_UNITS
from khwtui.artifacts.frontend_files import CONFIG as HAPROXY_CONFIG
from khwtui.artifacts.frontend_files import healthz_files, healthz_proxied, lb_files
from khwtui.artifacts.nodefiles import (
    ADMIN_KUBECONFIG,
    ETCD_BINARY,
    ETCD_DATA_DIR,
    ETCD_DIR,
    KUBERNETES_DIR,
    Artifacts,
    control_plane_secret_files,
    etcd_files,
)
from khwtui.artifacts.render import NodeFile
from khwtui.artifacts.workers_files import (
    CNI_FILES,
    CONTAINERD_FILES,
    CONTAINERD_SOCKET,
    CRICTL_FILES,
    FACTS_COMMAND,
    KUBERNETES_FILES,
    RUNC_BINARY,
    SYSCTL_FILE,
    NodeFacts,
    node_routes,
    routes_files,
    worker_config_files,
    worker_files,
)
from khwtui.artifacts.workers_files import UNITS as WORKER_UNITS
from khwtui.learn.downloads import Download, download
from khwtui.model.config import Config
from khwtui.model.topology import Node, Topology
from khwtui.stages.control_plane import health_command
from khwtui.stages.etcd import ETCDCTL, START_TIMEOUT, etcdctl
from khwtui.stages.frontend import apt_install, healthz_probe
from khwtui.stages.routes import ROUTE_UNIT_NAME
from khwtui.stages.workers import kernel_command, packages_for
from khwtui.toolkit.apt import install_missing

LOCAL = ""  # the node of a step run on your own machine
WAIT = 180  # seconds a script polls a check before it gives up


@dataclass(frozen=True)
class Run:
    """A command run as root on `node` (LOCAL: as you, on your machine). `wait` > 0: a check polled
    until it succeeds or that many seconds pass; `manual`: a check to run by hand (it needs a real
    Kubernetes or tools of your own); `stdin`: a script-relative file fed to it."""

    node: str
    command: str
    what: str = ""
    wait: int = 0
    stdin: str = ""
    manual: bool = False

    @property
    def is_check(self) -> bool:
        return self.wait > 0 or self.manual


@dataclass(frozen=True)
class Place:
    """Files placed on `node` (root-owned unless the file says otherwise), from `source` + path."""

    node: str
    files: tuple[NodeFile, ...]
    source: str  # the folder, relative to the script set, that mirrors the node's file system


@dataclass(frozen=True)
class Fetch:
    """Release files downloaded on your machine, verified, then placed on `nodes`."""

    download: Download
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Note:
    text: str


Step = Run | Place | Fetch | Note


@dataclass(frozen=True)
class Inputs:
    """What the steps are made from: the cluster, its artifacts, and each worker's facts."""

    config: Config
    topo: Topology
    artifacts: Artifacts
    facts: dict[str, NodeFacts] = field(default_factory=dict)

    def node_source(self, node: str) -> str:
        return f"bundle/nodes/{node}"


def stage_steps(stage: str, i: Inputs) -> list[Step]:
    """The steps of `stage` on this cluster; [] for a stage that places nothing on the nodes."""
    builder = BUILDERS.get(stage)
    return builder(i) if builder else []


# --- compute and the offline stages -----------------------------------------------------------------


def _compute(i: Inputs) -> list[Step]:
    return [Run(n.name, "true", f"{n.name} answers SSH as {i.config.ssh.user} with passwordless sudo", WAIT) for n in i.topo.nodes]


def _pki(i: Inputs) -> list[Step]:
    names = ["ca", *(_cert_names(i))]
    return [Run(LOCAL, shlex.join(["openssl", "x509", "-in", f"bundle/pki/{name}.pem", "-noout", "-subject", "-ext", "subjectAltName"]),
                f"{name}: subject and SANs", manual=True) for name in names]


def _cert_names(i: Inputs) -> list[str]:
    from khwtui.artifacts.pki import cert_specs

    return [spec.name for spec in cert_specs(i.topo)]


def _kubeconfigs(i: Inputs) -> list[Step]:
    from khwtui.artifacts.kubeconfigs import kubeconfig_specs

    return [Run(LOCAL, shlex.join(["kubectl", "config", "view", "--kubeconfig", f"bundle/kubeconfigs/{spec.name}.kubeconfig", "-o",
                                   "jsonpath={.clusters[0].cluster.server} {.users[0].name}"]), f"{spec.name}: server and user", manual=True)
            for spec in kubeconfig_specs(i.topo)]


def _encryption(i: Inputs) -> list[Step]:
    return [Note(f"bundle/encryption-config.yaml holds the {i.config.encryption.provider} key; the control-plane stage places it")]


# --- etcd ----------------------------------------------------------------------------------------------


def _etcd(i: Inputs) -> list[Step]:
    controllers = i.topo.controllers
    steps: list[Step] = [Fetch(download(i.config, "etcd", i.config.versions.etcd, {"etcd": ETCD_BINARY, "etcdctl": ETCDCTL}),
                               tuple(c.name for c in controllers))]
    for c in controllers:
        steps += [
            Run(c.name, f"install -d -m 0700 {ETCD_DATA_DIR} && install -d -m 0755 {ETCD_DIR}"),
            Place(c.name, tuple(etcd_files(i.artifacts, c)), i.node_source(c.name)),
            Run(c.name, "systemctl daemon-reload && systemctl enable etcd"),
        ]
    steps.append(Note("every member starts at the same moment: a member waits for a quorum before it reports started"))
    steps += [Run(c.name, "systemctl restart --no-block etcd") for c in controllers]
    steps += [Run(c.name, etcdctl("endpoint", "health"), f"etcd on {c.name} is healthy", START_TIMEOUT) for c in controllers]
    listing = etcdctl("member", "list")
    wanted = " ".join(sorted(c.name for c in controllers))
    steps.append(Run(controllers[0].name, f"test \"$({listing} | cut -d, -f3 | tr -d ' ' | sort | xargs)\" = {shlex.quote(wanted)}",
                     f"etcd lists exactly {wanted} as members", WAIT))
    return steps


# --- control plane -----------------------------------------------------------------------------------


def _control_plane(i: Inputs) -> list[Step]:
    version = i.config.cluster.kubernetes_version
    controllers = i.topo.controllers
    names = tuple(c.name for c in controllers)
    steps: list[Step] = [Fetch(download(i.config, "kubernetes", version, name=name, path=f"{CP_BIN_DIR}/{name}"), names) for name in CP_BINARIES]
    health = health_command(i.config.network.api_port)
    for c in controllers:
        steps += [
            Run(c.name, install_missing(("curl",)), "curl for the health checks, from the node's apt sources"),
            Run(c.name, f"install -d -m 0700 {KUBERNETES_DIR} && install -d -m 0755 {CONFIG_DIR}"),
            Place(c.name, tuple(_controller_files(i, c)), i.node_source(c.name)),
            Run(c.name, "systemctl daemon-reload && " + shlex.join(["systemctl", "enable", *CP_UNITS])),
            Run(c.name, shlex.join(["systemctl", "restart", *CP_UNITS])),
        ]
    for c in controllers:
        steps.append(Run(c.name, f"test \"$({health} | tr -d '\\n')\" = 200200", f"the apiserver on {c.name} answers /livez and /readyz", WAIT))
        steps.append(Run(c.name, shlex.join(["systemctl", "is-active", "--quiet", *CP_UNITS]), f"the three units on {c.name} are active", WAIT))
    return steps


def _controller_files(i: Inputs, node: Node) -> list[NodeFile]:
    """Before the API endpoint is known the units (which name it) cannot be written yet."""
    if i.topo.api_url is None:
        return control_plane_secret_files(i.artifacts, node)
    return control_plane_files(i.artifacts, node)


def _worker_files(i: Inputs, node: Node, facts: NodeFacts) -> list[NodeFile]:
    """Before the API endpoint is known the kubeconfigs (which name it) cannot be written yet."""
    if i.topo.api_url is None:
        return worker_config_files(i.topo, node, facts)
    return worker_files(i.artifacts, node, facts)


# --- rbac, frontend, admin access -----------------------------------------------------------------------


def _rbac(i: Inputs) -> list[Step]:
    first = i.topo.controllers[0].name
    apply = shlex.join(["kubectl", "--kubeconfig", ADMIN_KUBECONFIG, "apply", "-f", "-"])
    get = shlex.join(["kubectl", "--kubeconfig", ADMIN_KUBECONFIG, "get", "clusterrole", "system:kube-apiserver-to-kubelet"])
    return [Run(first, apply, "apply the ClusterRole and its binding", stdin="bundle/manifests/apiserver-to-kubelet-rbac.yaml"),
            Run(first, get, "the ClusterRole exists", WAIT)]


def _frontend(i: Inputs) -> list[Step]:
    steps: list[Step] = []
    if i.config.provider.kind == "gcp":
        if healthz_proxied(i.config):
            for c in i.topo.controllers:
                steps += _service(c.name, "nginx", healthz_files(i.topo), i.node_source(c.name), ["nginx", "-t", "-q"])
            steps += [Run(c.name, f"test \"$({healthz_probe(i.topo)})\" = 200", f"the /healthz proxy on {c.name} answers 200", WAIT)
                      for c in i.topo.controllers]
        steps.append(Note("the cloud load balancer is made by the gcloud lines of this stage"))
    elif i.topo.lb is not None:
        lb = i.topo.lb
        steps += _service(lb.name, "haproxy", lb_files(i.topo, i.artifacts.pki), i.node_source(lb.name), ["haproxy", "-c", "-q", "-f", HAPROXY_CONFIG])
    else:
        steps.append(Note(f"warning: {i.topo.api_endpoint_warning}"))
    if i.topo.api_url:
        version = shlex.join(["curl", "--silent", "--fail", "--cacert", "bundle/pki/ca.pem", f"{i.topo.api_url}/version"])
        steps.append(Run(LOCAL, version, f"{i.topo.api_url}/version answers through the front end", WAIT))
    return steps


def _service(node: str, unit: str, files: list[NodeFile], source: str, validate: list[str]) -> list[Step]:
    return [
        Run(node, apt_install(unit), f"{unit} from the node's apt sources"),
        Place(node, tuple(files), source),
        Run(node, shlex.join(validate), f"{unit} accepts its configuration"),
        Run(node, f"systemctl enable {unit} && systemctl reload-or-restart {unit}"),
    ]


def _admin_access(i: Inputs) -> list[Step]:
    kubeconfig = "bundle/kubeconfigs/admin.kubeconfig"
    return [Note(f"{kubeconfig} is your admin kubeconfig (0600); KUBECONFIG={kubeconfig} kubectl ... uses it"),
            Run(LOCAL, shlex.join(["kubectl", "--kubeconfig", kubeconfig, "auth", "whoami"]), "you are admin in system:masters", manual=True)]


# --- workers and routes ------------------------------------------------------------------------------


def worker_downloads(i: Inputs) -> list[Download]:
    v, names = i.config.versions, tuple(KUBERNETES_FILES)
    found = [
        download(i.config, "containerd", v.containerd, CONTAINERD_FILES),
        download(i.config, "cni_plugins", v.cni_plugins, CNI_FILES),
        download(i.config, "runc", v.runc, path=RUNC_BINARY),
    ]
    if v.crictl:
        found.append(download(i.config, "crictl", v.crictl, CRICTL_FILES))
    found += [download(i.config, "kubernetes", i.config.cluster.kubernetes_version, name=name, path=KUBERNETES_FILES[name]) for name in names]
    return found


def facts_expected(facts: NodeFacts) -> list[str]:
    """FACTS_COMMAND's lines the files were rendered for: "key=value" must be there, "!key=value" not."""
    def line(present: bool, text: str) -> str:
        return text if present else f"!{text}"

    return [line(facts.cgroup_v2, "cgroup=cgroup2fs"), line(facts.modules, "modules=yes"), line(facts.lower_oom, "lower_oom=yes"),
            line(facts.containerd_on_overlay, "containerd_fs=overlayfs"), line(facts.resolved, "resolved=yes")]


def facts_check(facts: NodeFacts) -> str:
    """A command that fails unless the node's facts are the ones its files were rendered for."""
    tests = []
    for expected in facts_expected(facts):
        absent = expected.startswith("!")
        tests.append(f"{'! ' if absent else ''}grep -qxF {shlex.quote(expected.lstrip('!'))} \"$f\"")
    return f"f=$(mktemp) && ({FACTS_COMMAND}) >\"$f\" && {' && '.join(tests)}; r=$?; rm -f \"$f\"; exit $r"


def _workers(i: Inputs) -> list[Step]:
    workers = i.topo.workers
    names = tuple(w.name for w in workers)
    steps: list[Step] = [Fetch(d, names) for d in worker_downloads(i)]
    for w in workers:
        facts = i.facts[w.name]
        steps += [
            Note(f"{w.name}: files rendered for {facts.describe()}"),
            Run(w.name, facts_check(facts), f"{w.name}'s facts are the ones its files were rendered for"),
            Run(w.name, install_missing(packages_for(facts)), f"{', '.join(packages_for(facts))} from the node's apt sources"),
            Run(w.name, kernel_command(facts), "swap off" + (", kernel modules loaded" if facts.modules else "")),
            Place(w.name, tuple(_worker_files(i, w, facts)), i.node_source(w.name)),
            Run(w.name, f"sysctl -q -p {SYSCTL_FILE}"),
            Run(w.name, "systemctl daemon-reload && " + shlex.join(["systemctl", "enable", *WORKER_UNITS])),
            *[Run(w.name, f"systemctl restart {unit}") for unit in WORKER_UNITS],  # containerd first: the kubelet needs its socket
        ]
    for w in workers:
        steps.append(Run(w.name, shlex.join(["systemctl", "is-active", "--quiet", *WORKER_UNITS]), f"containerd, kubelet and kube-proxy on {w.name} are active", WAIT))
        ctr = f"{CONTAINERD_FILES['ctr']} --address {CONTAINERD_SOCKET} version"
        steps.append(Run(w.name, ctr, f"containerd on {w.name} answers", WAIT))
    steps.append(Run(LOCAL, shlex.join(["kubectl", "--kubeconfig", "bundle/kubeconfigs/admin.kubeconfig", "get", "nodes", "-o", "wide"]),
                     "every worker is Ready (needs a real kube-apiserver and kubelet)", manual=True))
    return steps


def _routes(i: Inputs) -> list[Step]:
    if i.config.provider.kind == "gcp":
        return [Note("the pod routes are cloud routes, made by the gcloud lines of this stage")]
    steps: list[Step] = []
    for node in i.topo.nodes:
        files = routes_files(i.topo, node)
        if not files:
            continue
        steps += [
            Place(node.name, tuple(files), i.node_source(node.name)),
            Run(node.name, f"systemctl daemon-reload && systemctl enable {ROUTE_UNIT_NAME} && systemctl restart {ROUTE_UNIT_NAME}"),
        ]
        steps += [Run(node.name, f"ip -4 route show {r.destination} | grep -q {shlex.quote('via ' + r.via)}",
                      f"{node.name} routes {r.destination} via {r.via} ({r.worker})", WAIT) for r in node_routes(i.topo, node)]
    return steps


# --- the add-ons -----------------------------------------------------------------------------------------


def _dns(i: Inputs) -> list[Step]:
    domain = i.config.network.cluster_domain
    return [Note("khwtui applies CoreDNS through the API from the manifest shipped in the package, with `forward` to the nodes' resolvers"),
            Run(LOCAL, shlex.join(["kubectl", "--kubeconfig", "bundle/kubeconfigs/admin.kubeconfig", "-n", "kube-system", "get", "service", "kube-dns",
                                   "-o", "jsonpath={.spec.clusterIP}"]), f"kube-dns answers on {i.config.network.dns_ip} for {domain}", manual=True)]


def _smoke(i: Inputs) -> list[Step]:
    first = i.topo.controllers[0].name
    kubectl = ["kubectl", "--kubeconfig", "bundle/kubeconfigs/admin.kubeconfig"]
    return [
        Run(LOCAL, shlex.join([*kubectl, "create", "secret", "generic", "kubernetes-the-hard-way", "--from-literal=mykey=mydata"]), "a Secret to look for in etcd", manual=True),
        Run(first, f"{etcdctl('get', '/registry/secrets/default/kubernetes-the-hard-way')} | grep -q k8s:enc:{i.config.encryption.provider}:v1:key1",
            "the Secret is stored encrypted in etcd", manual=True),
        Note("then KTHW's deployment, port-forward, logs, exec and NodePort checks; khwtui runs them through the API"),
    ]


def _demo(i: Inputs) -> list[Step]:
    return [Note("the TODO app's manifests are applied through the API by khwtui; they are not part of Kubernetes the Hard Way")]


BUILDERS = {
    "compute": _compute, "pki": _pki, "kubeconfigs": _kubeconfigs, "encryption": _encryption, "etcd": _etcd,
    "control-plane": _control_plane, "rbac": _rbac, "frontend": _frontend, "workers": _workers, "admin-access": _admin_access,
    "routes": _routes, "dns": _dns, "smoke": _smoke, "demo": _demo,
}
