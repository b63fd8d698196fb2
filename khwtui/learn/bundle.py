"""`khwtui render --out DIR`: everything the hard way makes, written to a folder to read or diff.

Layout: pki/ (0700), kubeconfigs/<name>.kubeconfig, encryption-config.yaml,
manifests/ (every object the rbac, dns (with its add-ons), smoke and demo stages apply through the
API, as they apply it; the demo's Secret values are made at its first apply and never stored, so the bundle shows
DEMO_SECRET_PLACEHOLDER there), and nodes/<node>/<absolute path on the
node> for every file a stage places (binaries aside): etcd, the control plane, the front end, the
workers, the pod routes. Worker files depend on facts read on each node; the bundle shows them as
for RENDER_FACTS. Only files whose bytes (or mode) differ are written, each atomically, so a
re-render leaves unchanged files untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from khwtui.artifacts.controlplane_files import control_plane_config_files, rbac_manifest
from khwtui.artifacts.encryption import encryption_config
from khwtui.artifacts.frontend_files import healthz_files, healthz_proxied, lb_files
from khwtui.artifacts.kubeconfigs import kubeconfig, kubeconfig_specs
from khwtui.artifacts.nodefiles import SECRET, Artifacts, node_files
from khwtui.artifacts.pki import CAS, Pki, cert_specs
from khwtui.artifacts.render import NodeFile
from khwtui.artifacts.workers_files import NodeFacts, routes_files, worker_config_files
from khwtui.core.fsutil import mkdirs_private, write_if_changed
from khwtui.model.config import Config
from khwtui.model.topology import Node, Topology

# A typical cloud VM: cgroup v2, kernel modules, root may lower oom_score_adj, containerd on a real
# disk, no systemd-resolved. The workers stage renders each node's files from its own facts.
RENDER_FACTS = NodeFacts(cgroup_v2=True, modules=True, lower_oom=True, containerd_on_overlay=False, resolved=False)

PRIVATE_DIRS = ("pki", "kubeconfigs", "nodes")
DEMO_SECRET_PLACEHOLDER = "made-at-first-apply-never-stored"  # they hold keys, so 0700 whatever existed before


def write_bundle(out: Path, a: Artifacts) -> list[Path]:
    """Write the bundle under `out`; returns the files written or re-moded ([] when nothing changed)."""
    mkdirs_private(out)
    for name in PRIVATE_DIRS:
        mkdirs_private(out / name)
        (out / name).chmod(0o700)
    return [out / f.path for f in bundle_files(a) if write_if_changed(out / f.path, f.content, f.mode)]


def bundle_files(a: Artifacts) -> list[NodeFile]:
    """Every bundle file, its path relative to the bundle folder."""
    topo = a.topo
    files = _pki_files(a.pki, topo)
    files += [
        NodeFile(f"kubeconfigs/{spec.name}.kubeconfig", kubeconfig(topo, a.pki, spec).encode(), SECRET)
        for spec in kubeconfig_specs(topo)
    ]
    config = encryption_config(topo.config.encryption.provider, a.encryption_key)
    files.append(NodeFile("encryption-config.yaml", config.encode(), SECRET))
    files.append(NodeFile("manifests/apiserver-to-kubelet-rbac.yaml", rbac_manifest(topo).encode()))
    files += [NodeFile(f"manifests/{name}.yaml", yaml.safe_dump_all(objects, sort_keys=False).encode())
              for name, objects in stage_manifests(topo.config).items()]
    for node, placed in node_files(a).items():
        placed += stage_config_files(a, topo.node(node))
        files += [dataclasses.replace(f, path=f"nodes/{node}{f.path}") for f in placed]
    return files


def stage_manifests(config: Config) -> dict[str, list[dict]]:
    """File stem -> the objects the dns, smoke and demo stages apply (add-ons and the demo only when enabled)."""
    from khwtui.stages.demo import demo_objects
    from khwtui.stages.dns import coredns_manifest, lookup_job
    from khwtui.stages.smoke import smoke_objects
    from khwtui.toolkit.addons import addon_manifests

    wanted = {"coredns": coredns_manifest(config), **addon_manifests(config), "dns-lookup-job": [lookup_job()], "smoke": smoke_objects()}
    if config.demo.enabled:
        wanted["demo"] = demo_objects(DEMO_SECRET_PLACEHOLDER, DEMO_SECRET_PLACEHOLDER)
    return wanted


def stage_config_files(a: Artifacts, node: Node) -> list[NodeFile]:
    """The configs and units the later stages place on `node` (its credentials come from node_files)."""
    topo = a.topo
    routes = [] if topo.config.provider.kind == "gcp" else routes_files(topo, node)  # gcp: cloud routes
    if node.role == "controller":
        proxy = healthz_files(topo) if healthz_proxied(topo.config) else []
        units = control_plane_config_files(topo, node) if topo.api_url else []  # the endpoint is the SA issuer
        return units + proxy + routes
    if node.role == "worker":
        return worker_config_files(topo, node, RENDER_FACTS) + routes
    return lb_files(topo, a.pki) + routes


def _pki_files(pki: Pki, topo: Topology) -> list[NodeFile]:
    files = []
    for name in (*CAS, *(spec.name for spec in cert_specs(topo))):
        files += [NodeFile(f"pki/{name}.pem", pki.cert_pem(name)), NodeFile(f"pki/{name}-key.pem", pki.key_pem(name), SECRET)]
    return files
