"""One Explanation per stage, with this cluster's values: the lesson, the settings that matter to
it, the cloud resources it makes (the provider's plan), the files it places per node (the render
bundle), the commands it runs and how it is checked (khwtui.learn.steps).

Building one reads the cluster's state folder but never writes it: without certificates yet
(the pki stage makes them; `khwtui explain` makes them as `render` does), files are left out and
the explanation says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khwtui.artifacts.nodefiles import Artifacts
from khwtui.learn.files import FileEntry, files_by_stage
from khwtui.learn.lessons import LESSONS, Lesson
from khwtui.learn.steps import Inputs, Step, stage_steps
from khwtui.model.cluster import Cluster
from khwtui.model.topology import Topology
from khwtui.providers.base import PlannedResource
from khwtui.stages import STAGES, StageInfo
from khwtui.toolkit.addons import METRICS_SERVER_VERSION

NO_FILES = "the certificates are not made yet, so the files are not shown; run `khwtui explain` (it makes them as `render` does) or the pki stage"


@dataclass(frozen=True)
class Explanation:
    stage: StageInfo
    lesson: Lesson
    values: tuple[tuple[str, str], ...]
    resources: tuple[PlannedResource, ...]
    cloud_commands: tuple[str, ...]
    files: tuple[FileEntry, ...]
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Walkthrough:
    """Every stage of one cluster, and the bundle files no stage claims."""

    title: str
    stages: tuple[Explanation, ...]
    other_files: tuple[FileEntry, ...]

    def stage(self, name: str) -> Explanation:
        return next(e for e in self.stages if e.stage.name == name)


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def walkthrough(cluster: Cluster, artifacts: Artifacts | None, inputs: Inputs | None, resources: list[PlannedResource],
                cloud: dict[str, list[str]]) -> Walkthrough:
    """Assemble the explanations; `artifacts`/`inputs` None: no certificates yet, no files or file steps."""
    topo = cluster.topology
    files = files_by_stage(artifacts) if artifacts else {}
    stages = []
    for info in STAGES:
        if info.name == "demo" and not cluster.config.demo.enabled:
            continue
        steps = tuple(stage_steps(info.name, inputs)) if inputs else ()
        notes = () if artifacts else (NO_FILES,)
        stages.append(Explanation(
            info, LESSONS[info.name], tuple(stage_values(info.name, cluster, topo)),
            tuple(r for r in resources if (r.stage or "compute") == info.name), tuple(cloud.get(info.name, ())),
            tuple(files.get(info.name, ())), steps, notes,
        ))
    config = cluster.config
    title = f"{config.cluster.name} · {config.provider.kind} · Kubernetes {config.cluster.kubernetes_version}"
    return Walkthrough(title, tuple(stages), tuple(files.get("", ())))


def stage_values(stage: str, cluster: Cluster, topo: Topology) -> list[tuple[str, str]]:
    """The settings and derived values a reader needs to follow `stage` on this cluster."""
    config, net = cluster.config, cluster.config.network
    endpoint = topo.api_url or "known after the compute stage"
    if stage == "compute":
        return [(n.name, f"{n.role}, {n.internal_ip}" + (f", pods {n.pod_cidr}" if n.pod_cidr else "")) for n in topo.nodes] + [
            ("node CIDR", net.node_cidr), ("SSH", f"{config.ssh.user}@<node>:{config.ssh.port}, host keys pinned")]
    if stage == "pki":
        from khwtui.artifacts.pki import cert_specs

        return [("key type", config.pki.key_type), ("validity", f"{config.pki.validity_days} days")] + [
            (s.name, f"CN={s.cn}" + (f", O={s.org}" if s.org else "")) for s in cert_specs(topo)]
    if stage == "kubeconfigs":
        from khwtui.artifacts.kubeconfigs import kubeconfig_specs

        return [(k.name, f"user {k.user}, server {k.server}") for k in kubeconfig_specs(topo)]
    if stage == "encryption":
        return [("provider", config.encryption.provider), ("resources", "secrets")]
    if stage == "etcd":
        return [("version", config.versions.etcd), ("initial cluster", topo.etcd_initial_cluster), ("clients", topo.etcd_servers)]
    if stage == "control-plane":
        return [("Kubernetes", config.cluster.kubernetes_version), ("service CIDR", net.service_cidr),
                ("kubernetes service", topo.kubernetes_service_ip), ("etcd servers", topo.etcd_servers), ("API endpoint", endpoint)]
    if stage in ("frontend", "admin-access"):
        values = [("API endpoint", endpoint), ("API port", str(net.api_port))]
        return values + ([("warning", topo.api_endpoint_warning)] if topo.api_endpoint_warning else [])
    if stage == "workers":
        return [("containerd", config.versions.containerd), ("runc", config.versions.runc), ("CNI plugins", config.versions.cni_plugins),
                ("cluster DNS", net.dns_ip), ("cluster domain", net.cluster_domain)] + [(w.name, f"pods {w.pod_cidr}") for w in topo.workers]
    if stage == "routes":
        return [(r.destination, f"via {r.via} ({r.worker})" + (f" on {r.node}" if r.node else "")) for r in topo.pod_routes()]
    if stage == "dns":
        addons = [("metrics-server", METRICS_SERVER_VERSION)] if config.addons.metrics_server else []
        return [("CoreDNS", config.versions.coredns), ("cluster DNS", net.dns_ip), ("cluster domain", net.cluster_domain), *addons]
    if stage == "rbac":
        return [("ClusterRole", "system:kube-apiserver-to-kubelet"), ("bound to", "user kubernetes (the apiserver's client certificate)")]
    return []
