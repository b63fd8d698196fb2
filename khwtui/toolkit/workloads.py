"""What runs in the cluster, read from the API as a user would want it explained: a Deployment's
ready pods (and, when they are not, why: CrashLoopBackOff, a pull error, nothing schedulable,
with the crashed container's last log lines), a pod run to completion for its output, and a
NodePort reached from the operator's machine.
"""

from __future__ import annotations

import asyncio
import http.client
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from khwtui.core.errors import StageFailed
from khwtui.core.outcome import Outcome
from khwtui.core.waiting import poll
from khwtui.providers.base import CloudNetwork
from khwtui.toolkit.manifests import apply, ref, unserved
from khwtui.transport.kubeapi import ApiClient

if TYPE_CHECKING:
    from khwtui.toolkit.run_context import RunContext

LOG_TAIL = 5
HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    summary: str  # "2/2 replicas ready", or what stops them, in the user's words
    pod: str | None = None  # a running, ready pod (for port-forward, logs, exec)
    node: str | None = None  # the node that pod runs on


def _label_selector(labels: dict[str, str]) -> str:
    return quote(",".join(f"{k}={v}" for k, v in labels.items()), safe="")


async def _pods(api: ApiClient, namespace: str, labels: dict[str, str]) -> list[dict]:
    listing = await api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={_label_selector(labels)}")
    return list(listing.get("items", [])) if isinstance(listing, dict) else []


async def deployment_readiness(api: ApiClient, namespace: str, name: str) -> Readiness:
    """The Deployment's ready replicas; when short, each pod's trouble and a crashed container's last lines."""
    deployment = await api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    if not isinstance(deployment, dict):
        return Readiness(False, f"deployment {namespace}/{name} does not exist")
    found = await _pods(api, namespace, deployment["spec"]["selector"].get("matchLabels", {}))
    readiness = judge_deployment(deployment, found)
    if readiness.ready:
        return readiness
    tails = [await _previous_log(api, pod) for pod in found if _crashed(pod)]
    return Readiness(False, "; ".join([readiness.summary, *filter(None, tails)]))


async def apply_and_wait(run: RunContext, api: ApiClient, what: str, objects: list[dict], deployment: str, timeout: float) -> None:
    """Apply a manifest, then wait until its Deployment (in kube-system) is ready; where the server
    cannot hold the objects (its discovery says why), log that and apply nothing."""
    reason = await unserved(api, objects)
    if reason:
        run.log("", f"{what}: nothing applied: {reason}")
        return
    for obj in objects:
        run.log("", f"{ref(obj).label}: {await apply(api, obj)}")
    await wait_ready(api, "kube-system", deployment, timeout)


async def wait_ready(api: ApiClient, namespace: str, name: str, timeout: float) -> Readiness:
    """Poll until the Deployment's replicas are ready; StageFailed says what stops them."""
    last: list[Readiness] = []

    async def ready() -> Readiness | None:
        last[:] = [await deployment_readiness(api, namespace, name)]
        return last[0] if last[0].ready else None

    try:
        return await poll(ready, timeout=timeout, interval=2.0, what=f"deployment {namespace}/{name} to be ready")
    except TimeoutError as exc:
        raise StageFailed(f"{exc}: {last[0].summary if last else ''}") from None


def judge_deployment(deployment: dict, found: list[dict]) -> Readiness:
    """Pure: a Deployment and its pods as the API returns them (apps/v1 Deployment, v1 PodList items)."""
    meta, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status", {})
    wanted, ready = spec.get("replicas", 1), status.get("readyReplicas", 0)
    name = f"{meta.get('namespace', 'default')}/{meta['name']}"
    running = [p for p in found if _pod_ready(p)]
    if ready >= wanted and running:
        pod = running[0]
        return Readiness(True, f"{ready}/{wanted} replicas ready", pod["metadata"]["name"], pod.get("spec", {}).get("nodeName"))
    troubles = [pod_trouble(p) for p in found if not _pod_ready(p)]
    if not found:
        troubles = [_no_pods_reason(status)]
    return Readiness(False, f"deployment {name}: {ready}/{wanted} replicas ready; " + "; ".join(troubles))


def _pod_ready(pod: dict) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))


def _crashed(pod: dict) -> bool:
    """A container that has run and died (its previous log is worth reading)."""
    return any(c.get("lastState", {}).get("terminated") for c in pod.get("status", {}).get("containerStatuses", []))


def pod_trouble(pod: dict) -> str:
    """Why a pod is not ready, as `kubectl get pods` and `describe` would show it."""
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    where = f" on {pod['spec']['nodeName']}" if pod.get("spec", {}).get("nodeName") else ""
    for c in status.get("containerStatuses", []):
        state, last = c.get("state", {}), c.get("lastState", {}).get("terminated")
        restarts = f", restarted {c.get('restartCount', 0)} times" if c.get("restartCount") else ""
        died = f"; last exit {last.get('exitCode')} ({last.get('reason', 'Error')})" if last else ""
        if "waiting" in state:
            waiting = state["waiting"]
            message = f": {waiting['message']}" if waiting.get("message") else ""
            return f"{name}{where}: {waiting.get('reason', 'Waiting')}{message}{restarts}{died}"
        if "terminated" in state:
            ended = state["terminated"]
            return f"{name}{where}: exited {ended.get('exitCode')} ({ended.get('reason', 'Error')}){restarts}"
        if not c.get("ready"):
            return f"{name}{where}: running but not ready (its readiness probe fails){restarts}{died}"
    for condition in status.get("conditions", []):
        if condition.get("status") == "False" and condition.get("reason"):
            return f"{name}{where}: {condition['reason']}: {condition.get('message', '')}".rstrip(": ")
    return f"{name}{where}: {status.get('phase', 'Pending')}"


def _no_pods_reason(status: dict) -> str:
    for condition in status.get("conditions", []):
        if condition.get("status") == "False" and condition.get("message"):
            return f"no pods: {condition['message']}"
    return "no pods were created (is kube-controller-manager running?)"


async def _previous_log(api: ApiClient, pod: dict) -> str:
    """The last lines the crashed container wrote before it died ("" when there are none)."""
    meta = pod["metadata"]
    for c in pod.get("status", {}).get("containerStatuses", []):
        if c.get("lastState", {}).get("terminated"):
            path = f"/api/v1/namespaces/{meta.get('namespace', 'default')}/pods/{meta['name']}/log?container={c['name']}&previous=true&tailLines={LOG_TAIL}"
            text = await api.get(path)
            lines = [line for line in str(text or "").splitlines() if line.strip()]
            return f"{meta['name']} last log lines: " + " | ".join(lines[-LOG_TAIL:]) if lines else ""
    return ""


async def run_to_completion(api: ApiClient, job: dict, timeout: float) -> tuple[dict, str]:
    """Create `job` (a batch/v1 Job with generateName and a TTL, so the cluster removes it), wait
    for its pod to end, and return that pod and its output. A pod that cannot start ends the wait."""
    namespace = job["metadata"].get("namespace", "default")
    created = await api.post_object(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    name = created["metadata"]["name"]
    labels = {"batch.kubernetes.io/job-name": name}
    last: list[dict] = []

    async def ended() -> dict | None:
        nonlocal last
        last = await _pods(api, namespace, labels)
        for pod in last:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") or _stuck(pod):
                return pod
        return None

    try:
        pod = await poll(ended, timeout=timeout, interval=1.0, what=f"job {namespace}/{name} to finish")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: " + ("; ".join(pod_trouble(p) for p in last) or "no pod was created")) from None
    if _stuck(pod):
        return pod, ""
    text = await api.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/log")
    return pod, str(text or "")


def _stuck(pod: dict) -> bool:
    """Waiting for something that will not come by itself: a bad image or a broken spec."""
    stuck = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError")
    return any(c.get("state", {}).get("waiting", {}).get("reason") in stuck for c in pod.get("status", {}).get("containerStatuses", []))


async def _http_status(address: str, port: int, path: str = "/", method: str = "HEAD") -> str:
    """The status line an HTTP server at address:port answers with (e.g. "200 OK"), or why none came."""

    def ask() -> str:
        connection = http.client.HTTPConnection(address, port, timeout=HTTP_TIMEOUT)
        try:
            connection.request(method, path, headers={"User-Agent": "khwtui"})
            response = connection.getresponse()
            response.read()
            return f"{response.status} {response.reason}"
        except (OSError, http.client.HTTPException) as exc:
            return f"no answer ({getattr(exc, 'strerror', None) or exc or type(exc).__name__})"
        finally:
            connection.close()

    return await asyncio.to_thread(ask)


def _node_port(service: dict) -> int | None:
    for port in service.get("spec", {}).get("ports", []):
        if port.get("nodePort"):
            return int(port["nodePort"])
    return None


@dataclass(frozen=True)
class _Reach:
    ok: bool
    summary: str  # "HEAD http://10.240.0.20:30080/: 200 OK", or what is missing
    port: int | None = None


async def _reach_node_port(api: ApiClient, namespace: str, service: str, address: str, path: str = "/", method: str = "HEAD") -> _Reach:
    """Ask the Service's NodePort on `address` from this machine, as a user's browser would."""
    found = await api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    if not isinstance(found, dict):
        return _Reach(False, f"service {namespace}/{service} does not exist")
    port = _node_port(found)
    if port is None:
        return _Reach(False, f"service {namespace}/{service} has no node port (type {found.get('spec', {}).get('type')})")
    url = f"http://{address}:{port}{path}"
    status = await _http_status(address, port, path, method)
    return _Reach(status.startswith("200 "), f"{method} {url}: {status}", port)


async def node_port_outcome(run: RunContext, api: ApiClient, check: str, namespace: str, service: str, rule: str, method: str = "HEAD") -> Outcome:
    """`check` passed when the Service's NodePort on the first worker answers 200 to this machine."""
    reach = await _reach_node_port(api, namespace, service, node_address(run), "/", method)
    if reach.ok:
        return Outcome.passed(check, evidence=reach.summary)
    return Outcome.failed(check, evidence=reach.summary + _firewall_hint(run, rule, reach.port))


async def node_port_probe(run: RunContext, api: ApiClient, check: str, namespace: str, service: str, rule: str, method: str = "HEAD") -> list[Outcome]:
    """The whole data path in one request (this machine -> NodePort -> kube-proxy -> a pod), as a probe."""
    reason = await api.unserved("v1", "services")
    if reason:
        return [Outcome.unverified(check, reason=reason)]
    return [await node_port_outcome(run, api, check, namespace, service, rule, method)]


def node_address(run: RunContext) -> str:
    """Where this machine reaches a NodePort: the first worker (KTHW uses worker-0), by its external
    address where it has one (gcp), else its node address (local: the bridge; machines: the LAN)."""
    if not run.topo.workers:
        raise StageFailed("the cluster has no workers to reach a NodePort on; fix: set topology.workers")
    worker = run.topo.workers[0]
    return worker.external_ip or worker.internal_ip


async def open_node_port(run: RunContext, api: ApiClient, namespace: str, service: str, rule: str) -> int:
    """Let the operator's machine reach the Service's NodePort on the workers; returns the port.
    gcp needs a firewall rule, made by the provider (`ensure_firewall(name, port)`); local and
    machines nodes are reachable as they are."""
    found = await api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    port = _node_port(found) if isinstance(found, dict) else None
    if port is None:
        raise StageFailed(f"service {namespace}/{service} has no node port yet")
    if run.config.provider.kind == "gcp":
        run.log("", f"firewall rule {rule}: allow tcp:{port}")
        await cast(CloudNetwork, run.provider).ensure_firewall(rule, port)
    return port


def _firewall_hint(run: RunContext, rule: str, port: int | None) -> str:
    """What to look at when a NodePort does not answer on gcp."""
    if run.config.provider.kind != "gcp" or port is None:
        return ""
    return f" (on gcp, firewall rule {rule} must allow tcp:{port} from this machine)"
