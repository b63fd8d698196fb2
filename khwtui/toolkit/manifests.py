"""Kubernetes objects from the package's manifests: where each lives in the API, whether the
server serves it, and create-or-update that changes only what differs (the kubespray way).

The apply is a plain GET, then POST or PUT with the live resourceVersion: no kubectl, no
server-side apply field ownership to untangle. "Differs" means a value the manifest sets is
missing or different in the live object; fields the server defaults are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from khwtui.artifacts.kubeconfigs import spec_named
from khwtui.artifacts.render import render
from khwtui.core.errors import StateError
from khwtui.transport.kubeapi import ApiClient, Credentials

if TYPE_CHECKING:
    from khwtui.toolkit.run_context import RunContext

# (apiVersion, kind) -> (resource, namespaced): the kinds khwtui's manifests use.
KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Pod"): ("pods", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("apiregistration.k8s.io/v1", "APIService"): ("apiservices", False),
}


@dataclass(frozen=True)
class Ref:
    """One object's address in the API."""

    api_version: str
    kind: str
    resource: str
    name: str
    namespace: str | None = None

    @property
    def collection(self) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        return f"{base}/namespaces/{self.namespace}/{self.resource}" if self.namespace else f"{base}/{self.resource}"

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.name}"

    @property
    def label(self) -> str:
        """How a user names it: "deployment kube-system/coredns"."""
        return f"{self.kind.lower()} {self.namespace + '/' if self.namespace else ''}{self.name}"


def ref(obj: dict) -> Ref:
    api_version, kind = obj["apiVersion"], obj["kind"]
    resource, namespaced = KINDS[(api_version, kind)]
    meta = obj["metadata"]
    name = meta.get("name") or meta["generateName"]  # generateName: the server completes it
    return Ref(api_version, kind, resource, name, meta.get("namespace", "default") if namespaced else None)


def manifest(template: str, **context: object) -> list[dict]:
    """The objects of a rendered manifest template, in order."""
    return [doc for doc in yaml.safe_load_all(render(template, **context)) if doc]


def cluster_api(run: RunContext) -> ApiClient:
    """The API through the cluster's endpoint (the load balancer), as cluster admin."""
    url = run.topo.api_url
    if url is None:
        raise StateError("the API endpoint address is not known yet; fix: run the compute stage first")
    pki, cert = run.artifacts.pki, spec_named(run.topo, "admin").cert
    return ApiClient(Credentials(url, pki.ca_pem(), pki.cert_pem(cert), pki.key_pem(cert)))


async def unserved(api: ApiClient, objects: list[dict]) -> str | None:
    """Why the server cannot hold these objects (from its discovery documents), or None."""
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        r = ref(obj)
        if (r.api_version, r.resource) in seen:
            continue
        seen.add((r.api_version, r.resource))
        reason = await api.unserved(r.api_version, r.resource)
        if reason:
            return f"{r.kind} ({r.resource}): {reason}"
    return None


def differences(wanted: Any, found: Any, where: str = "") -> list[str]:
    """Paths at which `found` lacks a value `wanted` sets (extra fields in `found` are fine)."""
    if isinstance(wanted, dict):
        if not isinstance(found, dict):
            return [where or "."]
        return [d for key, value in wanted.items() for d in differences(value, found.get(key), f"{where}.{key}")]
    if isinstance(wanted, list):
        if not isinstance(found, list) or len(found) != len(wanted):
            return [where]
        return [d for i, (w, f) in enumerate(zip(wanted, found, strict=True)) for d in differences(w, f, f"{where}[{i}]")]
    return [] if wanted == found else [where]


async def drift(api: ApiClient, obj: dict) -> str | None:
    """None when the live object has every value of `obj`; else what is missing or different."""
    r = ref(obj)
    live = await api.get(r.path)
    if live is None:
        return f"{r.label} is missing"
    changed = differences(_desired(obj), live)
    return f"{r.label} differs at {', '.join(changed[:3])}" if changed else None


async def apply(api: ApiClient, obj: dict) -> str:
    """Create `obj`, or update it when it differs: "created", "updated" or "unchanged"."""
    r = ref(obj)
    live = await api.get(r.path)
    if live is None:
        await api.post(r.collection, obj)
        return "created"
    if not differences(_desired(obj), live):
        return "unchanged"
    version = api.json_object("GET", r.path, live)["metadata"]["resourceVersion"]
    updated = {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}
    await api.put(r.path, updated)
    return "updated"


async def create_once(api: ApiClient, obj: dict) -> bool:
    """Create `obj` unless it exists (kept as it is: generated passwords). True when created."""
    r = ref(obj)
    if await api.get(r.path) is not None:
        return False
    await api.post(r.collection, obj)
    return True


def _desired(obj: dict) -> dict:
    """What a live object is compared with: the manifest without apiVersion/kind bookkeeping."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
