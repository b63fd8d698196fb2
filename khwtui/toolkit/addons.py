"""The optional add-ons ([addons]) the dns stage applies after CoreDNS, the cluster's first add-on.

metrics-server (`addons.metrics_server`) makes `kubectl top nodes` answer: its manifest is applied
through the API like CoreDNS's, and checked by what `kubectl top nodes` reads, the
metrics.k8s.io/v1beta1 NodeMetricsList, which must hold the usage of every worker. Where the API
server cannot hold the manifest (its discovery documents say so) every check is unverified with
that reason, never passed.
"""

from __future__ import annotations

from khwtui.core.outcome import Outcome
from khwtui.model.config import Config
from khwtui.toolkit.manifests import drift, manifest, unserved
from khwtui.toolkit.run_context import RunContext
from khwtui.toolkit.workloads import apply_and_wait, deployment_readiness
from khwtui.transport.kubeapi import ApiClient, ApiError

METRICS_SERVER_VERSION = "v0.8.1"
# registry.k8s.io's multi-arch index digest of that release, as independent projects pin it
# (minikube's metrics-server addon image list and two projects' manifests quote the same one).
METRICS_SERVER_IMAGE = ("registry.k8s.io/metrics-server/metrics-server:v0.8.1"
                        "@sha256:b2d2efaf5ac3b366ed0f839d2412a2c4279d4fc2a2a733f12c52133faed36c41")
NAMESPACE, DEPLOYMENT = "kube-system", "metrics-server"
NODE_METRICS = "/apis/metrics.k8s.io/v1beta1/nodes"  # what `kubectl top nodes` reads
READY_TIMEOUT = 300

APPLIED = "metrics-server manifest applied"
READY = "metrics-server ready"
TOP_NODES = "kubectl top nodes answers"
CHECKS = (APPLIED, READY, TOP_NODES)


def metrics_server_manifest() -> list[dict]:
    return manifest("metrics-server.yaml.j2", image=METRICS_SERVER_IMAGE)


def addon_manifests(config: Config) -> dict[str, list[dict]]:
    """File stem -> objects of each add-on the config turns on, in the order they are applied."""
    return {"metrics-server": metrics_server_manifest()} if config.addons.metrics_server else {}


def judge_top_nodes(listing: dict | str | None, workers: list[str]) -> tuple[bool, str]:
    """Does the NodeMetricsList hold CPU and memory usage for every worker, as `kubectl top nodes` prints them?"""
    if not isinstance(listing, dict):
        return False, f"GET {NODE_METRICS} found nothing: the metrics API is not there"
    usage = {item.get("metadata", {}).get("name"): item.get("usage", {}) for item in listing.get("items", [])}
    missing = [name for name in workers if not {"cpu", "memory"} <= set(usage.get(name, {}))]
    if missing:
        return False, (f"no usage for {', '.join(missing)} (listed: {', '.join(sorted(filter(None, usage))) or 'none'}); "
                       "metrics-server reads each kubelet every 15 s: see its pod's log for the kubelets it cannot reach")
    return True, "; ".join(f"{name} cpu {usage[name]['cpu']}, memory {usage[name]['memory']}" for name in workers)


async def apply_addons(run: RunContext, api: ApiClient) -> None:
    """Apply each enabled add-on's manifest and wait until its Deployment is ready."""
    for name, objects in addon_manifests(run.config).items():
        await apply_and_wait(run, api, name, objects, DEPLOYMENT, READY_TIMEOUT)


async def check_addons(run: RunContext, api: ApiClient) -> list[Outcome]:
    """The checks of each enabled add-on (none when [addons] turns none on)."""
    objects = addon_manifests(run.config).get("metrics-server")
    if objects is None:
        return []
    reason = await unserved(api, objects)
    if reason:
        return [Outcome.unverified(check, reason=reason) for check in CHECKS]
    drifted = [d for d in [await drift(api, obj) for obj in objects] if d]
    outcomes = [Outcome.failed(APPLIED, evidence="; ".join(drifted)) if drifted
                else Outcome.passed(APPLIED, evidence=f"{len(objects)} objects as in the manifest, image {METRICS_SERVER_IMAGE}")]
    ready = await deployment_readiness(api, NAMESPACE, DEPLOYMENT)
    outcomes.append(Outcome.judged(READY, ready.ready, ready.summary))
    if not ready.ready:
        return outcomes + [Outcome.failed(TOP_NODES, evidence="not tried: metrics-server is not ready")]
    try:
        ok, summary = judge_top_nodes(await api.get(NODE_METRICS), [w.name for w in run.topo.workers])
    except ApiError as exc:
        ok, summary = False, f"{exc} (the API server cannot reach metrics-server: see apiservice v1beta1.metrics.k8s.io's status)"
    return outcomes + [Outcome.judged(TOP_NODES, ok, summary)]
