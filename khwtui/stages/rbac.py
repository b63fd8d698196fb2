"""rbac: the apiserver-to-kubelet ClusterRole and its binding (KTHW Lab 08), through the API.

KTHW applies them once from controller-0 with the admin kubeconfig; here they are created or
updated from the operator's machine with the admin certificate (khwtui.toolkit.manifests), then read
back. The stage runs before the load balancer exists, so it talks to the first controller's
apiserver directly. When the server's discovery documents do not list the RBAC resources the
checks are unverified, with the server's own listing as the reason; a 404 for an object only
means it is not there yet.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

from khwtui.artifacts.controlplane_files import CERT_NAME, rbac_manifest
from khwtui.artifacts.kubeconfigs import spec_named
from khwtui.core.outcome import Outcome
from khwtui.model.topology import Node, Topology
from khwtui.stages.base import Stage
from khwtui.toolkit.manifests import apply, drift, ref, unserved
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.kubeapi import ApiClient, ApiError, Credentials


def wanted_objects(topo: Topology) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rbac_manifest(topo)) if doc]


def controller_credentials(run: RunContext, node: Node) -> Credentials:
    """The admin certificate against `node`'s apiserver as the operator reaches it: its external
    address where it has one (checked for the certificate's name "kubernetes", as only internal
    addresses are in it), else its internal one."""
    port = run.config.network.api_port
    address, name = (node.external_ip, CERT_NAME) if node.external_ip else (node.internal_ip, None)
    pki, cert = run.artifacts.pki, spec_named(run.topo, "admin").cert
    return Credentials(f"https://{address}:{port}", pki.ca_pem(), pki.cert_pem(cert), pki.key_pem(cert), name)


async def check_objects(api: ApiClient, objects: list[dict]) -> list[Outcome]:
    """Per object: passed when read back as applied, unverified when the server does not serve RBAC."""
    reason = await unserved(api, objects)
    if reason:
        return [Outcome.unverified(ref(o).label, reason=reason) for o in objects]
    outcomes = []
    for obj in objects:
        problem = await drift(api, obj)
        label = ref(obj).label
        outcomes.append(Outcome.failed(label, evidence=problem) if problem else Outcome.passed(label, evidence=f"read back from {api.server} as applied"))
    return outcomes


async def apply_objects(api: ApiClient, objects: list[dict], log: Callable[[str], None]) -> int:
    """Create what is missing and update what differs; returns how many objects were written."""
    reason = await unserved(api, objects)
    if reason:
        log(f"nothing applied: {reason}")
        return 0
    written = 0
    for obj in objects:
        result = await apply(api, obj)
        if result != "unchanged":
            log(f"{result} {ref(obj).label}")
            written += 1
    return written


class RbacStage(Stage):
    def _api(self, run: RunContext) -> ApiClient:
        return ApiClient(controller_credentials(run, run.topo.controllers[0]))

    async def check(self, run: RunContext) -> list[Outcome]:
        objects = wanted_objects(run.topo)
        try:
            return await check_objects(self._api(run), objects)
        except ApiError as exc:
            return [Outcome.failed(ref(o).label, evidence=str(exc)) for o in objects]

    async def apply(self, run: RunContext) -> None:
        await apply_objects(self._api(run), wanted_objects(run.topo), lambda line: run.log("", line))


STAGE = RbacStage
