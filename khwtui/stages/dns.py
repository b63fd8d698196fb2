"""dns: CoreDNS from the manifest shipped in the package, applied through the API (KTHW Lab 12),
then the optional add-ons [addons] turns on (khwtui/toolkit/addons.py).

KTHW's manifest lacks `forward`, so names outside the cluster never resolve, and its
check needs a busybox whose nslookup works (docs/UPSTREAM.md "KTHW pain points"). Here the manifest forwards to the
nodes' resolvers, the image is pinned by digest, and the check resolves kubernetes.default and
one outside name from a pod started for the purpose. What the API server does not serve
(its discovery documents say so) is reported unverified, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from khwtui.core.errors import StageFailed
from khwtui.core.outcome import Outcome
from khwtui.model.config import Config
from khwtui.stages.api_stage import ApiStage
from khwtui.toolkit.addons import apply_addons, check_addons
from khwtui.toolkit.manifests import drift, manifest, ref, unserved
from khwtui.toolkit.run_context import RunContext
from khwtui.toolkit.workloads import (
    Readiness,
    apply_and_wait,
    deployment_readiness,
    pod_trouble,
    run_to_completion,
)
from khwtui.transport.kubeapi import ApiClient

# coredns/coredns multi-arch image digests, as published on Docker Hub and quoted by independent
# projects' pinned references (1.14.3: two Dockerfiles; 1.14.6: Dockerfiles, a Helm chart, docs).
COREDNS_IMAGES = {
    "1.14.3": "coredns/coredns:1.14.3@sha256:b21d26b915e10acb5bc78715c1e8b6047ab2675389b2bcc18b3a6499d90e74c0",
    "1.14.6": "coredns/coredns:1.14.6@sha256:900f9c109f7a33545d3c811516e8376df9019147b750f5ce3e254468769176ea",
}
# busybox 1.28 (KTHW pins it: newer busybox nslookup is broken); the digest kubelets report as its imageID.
LOOKUP_IMAGE = "busybox:1.28@sha256:141c253bc4c3fd0a201d32dc1f493bcf3fff003b6df416dea4f41046e0f37d47"
OUTSIDE_NAME = "example.com"  # IANA-reserved, always published: proves `forward` reaches an upstream
INSIDE_NAME = "kubernetes.default"
REPLICAS = 2
NAMESPACE, DEPLOYMENT = "kube-system", "coredns"
READY_TIMEOUT = 300
LOOKUP_TRIES = 15
LOOKUP_TIMEOUT = 240  # the image pull on a fresh node, then up to LOOKUP_TRIES seconds per name

APPLIED = "CoreDNS manifest applied"
FORWARD = "Corefile forwards outside names"
SERVICE = "kube-dns Service"
READY = "CoreDNS replicas ready"
INSIDE = f"{INSIDE_NAME} resolves in a pod"
OUTSIDE = f"{OUTSIDE_NAME} resolves in a pod"
CHECKS = (APPLIED, FORWARD, SERVICE, READY, INSIDE, OUTSIDE)


def coredns_image(version: str) -> str:
    """The pinned image of `version`; a version without a known digest is refused (never pulled by tag)."""
    try:
        return COREDNS_IMAGES[version]
    except KeyError:
        raise StageFailed(
            f"versions.coredns = {version!r} has no pinned image digest in this khwtui; "
            f"fix: set versions.coredns to one of {', '.join(COREDNS_IMAGES)}"
        ) from None


def coredns_objects(run: RunContext) -> list[dict]:
    return coredns_manifest(run.config)


def coredns_manifest(config: Config) -> list[dict]:
    net = config.network
    image = coredns_image(config.versions.coredns)
    return manifest("coredns.yaml.j2", image=image, replicas=REPLICAS, dns_ip=net.dns_ip, cluster_domain=net.cluster_domain)


def lookup_job() -> dict:
    (job,) = manifest("dns-lookup-job.yaml.j2", image=LOOKUP_IMAGE, names=[INSIDE_NAME, OUTSIDE_NAME],
                      tries=LOOKUP_TRIES, deadline=LOOKUP_TIMEOUT)
    return job


# --- judging what the API returned ----------------------------------------------------------


def judge_corefile(configmap: dict | str | None) -> tuple[bool, str]:
    """Does the Corefile hand names outside the cluster to an upstream (`forward . <upstream>`)?"""
    if not isinstance(configmap, dict):
        return False, "configmap kube-system/coredns does not exist"
    corefile = configmap.get("data", {}).get("Corefile")
    if not corefile:
        return False, "configmap kube-system/coredns has no Corefile"
    forward = next((line.strip() for line in corefile.splitlines() if re.match(r"\s*forward\s+\.\s+\S", line)), None)
    if forward is None:
        return False, ("the Corefile has no `forward . <upstream>` line, so names outside the cluster never resolve "
                       "(KTHW's manifest, issue #611); khwtui's manifest forwards to /etc/resolv.conf")
    return True, forward.removesuffix("{").strip()


def judge_service(service: dict | str | None, dns_ip: str) -> tuple[bool, str]:
    """kube-dns must sit at the address the kubelets hand to pods (network.dns_ip), on 53/UDP and 53/TCP."""
    if not isinstance(service, dict):
        return False, "service kube-system/kube-dns does not exist"
    spec = service.get("spec", {})
    ports = {(p.get("port"), p.get("protocol", "TCP")) for p in spec.get("ports", [])}
    if spec.get("clusterIP") != dns_ip:
        return False, (f"service kube-system/kube-dns has cluster IP {spec.get('clusterIP')}, not network.dns_ip {dns_ip} "
                       "that the kubelets give pods as their nameserver; a Service's cluster IP cannot change: delete it and run the dns stage again")
    missing = [f"{port}/{proto}" for port, proto in ((53, "UDP"), (53, "TCP")) if (port, proto) not in ports]
    if missing:
        return False, f"service kube-system/kube-dns at {dns_ip} does not offer {', '.join(missing)}"
    return True, f"at {dns_ip}, 53/UDP and 53/TCP"


@dataclass(frozen=True)
class Lookup:
    name: str
    status: int | None  # nslookup's exit status; None when the name was never looked up
    tries: int
    server: str | None
    addresses: tuple[str, ...]
    output: str


def parse_lookups(log: str) -> dict[str, Lookup]:
    """The lookup pod's output ("=== name exit=N tries=T" + busybox 1.28 nslookup output) per name."""
    found: dict[str, Lookup] = {}
    for block in re.split(r"^(?==== )", log, flags=re.MULTILINE):
        header = re.match(r"=== (\S+) exit=(\d+) tries=(\d+)\n?", block)
        if not header:
            continue
        body = block[header.end():]
        server = re.search(r"^Server:\s+(\S+)", body, re.MULTILINE)
        answer = body.split("Name:", 1)[1] if "Name:" in body else ""
        addresses = tuple(re.findall(r"^Address(?: \d+)?:\s+(\S+)", answer, re.MULTILINE))
        found[header[1]] = Lookup(header[1], int(header[2]), int(header[3]), server[1] if server else None, addresses, body.strip())
    return found


def judge_lookup(lookup: Lookup | None, dns_ip: str, want: str | None = None) -> tuple[bool, str]:
    """Resolved through the cluster DNS (and to `want`, when given)?"""
    if lookup is None:
        return False, "the lookup pod printed nothing for this name"
    last = lookup.output.splitlines()[-1] if lookup.output else "(no output)"
    if lookup.server and lookup.server != dns_ip:
        return False, (f"the pod asked {lookup.server}, not the cluster DNS {dns_ip}: "
                       "the kubelets' clusterDNS is not network.dns_ip")
    if lookup.status != 0 or not lookup.addresses:
        return False, f"{lookup.name} does not resolve from a pod after {lookup.tries} tries: {last}"
    if want is not None and want not in lookup.addresses:
        return False, f"{lookup.name} resolves to {', '.join(lookup.addresses)}, not the kubernetes Service {want}"
    return True, f"{lookup.name} -> {', '.join(lookup.addresses)} (server {lookup.server or dns_ip})"


# --- the stage ------------------------------------------------------------------------------


class DnsStage(ApiStage):
    async def check(self, run: RunContext) -> list[Outcome]:
        """CoreDNS's checks, then those of each add-on the config turns on."""
        return await self._coredns_checks(run) + await check_addons(run, self.api(run))

    async def _coredns_checks(self, run: RunContext) -> list[Outcome]:
        try:
            objects = coredns_objects(run)
        except StageFailed as exc:
            return [Outcome.failed(APPLIED, evidence=str(exc))]
        api = self.api(run)
        reason = await unserved(api, [*objects, lookup_job()])
        if reason:
            return [Outcome.unverified(check, reason=reason) for check in CHECKS]
        outcomes = [await self._applied(api, objects)]
        configmap = await api.get(ref(_one(objects, "ConfigMap")).path)
        outcomes.append(Outcome.judged(FORWARD, *judge_corefile(configmap)))
        service = await api.get(ref(_one(objects, "Service")).path)
        outcomes.append(Outcome.judged(SERVICE, *judge_service(service, run.config.network.dns_ip)))
        ready = await deployment_readiness(api, NAMESPACE, DEPLOYMENT)
        outcomes.append(_ready_outcome(ready))
        if not ready.ready:
            not_tried = "not tried: CoreDNS is not ready"
            return outcomes + [Outcome.failed(INSIDE, evidence=not_tried), Outcome.failed(OUTSIDE, evidence=not_tried)]
        return outcomes + await self._lookups(run, api)

    async def _applied(self, api: ApiClient, objects: list[dict]) -> Outcome:
        drifted = [d for d in [await drift(api, obj) for obj in objects] if d]
        if drifted:
            return Outcome.failed(APPLIED, evidence="; ".join(drifted))
        return Outcome.passed(APPLIED, evidence=f"{len(objects)} objects as in the manifest, image {_image(objects)}")

    async def _lookups(self, run: RunContext, api: ApiClient) -> list[Outcome]:
        dns_ip = run.config.network.dns_ip
        try:
            pod, log = await run_to_completion(api, lookup_job(), LOOKUP_TIMEOUT)
        except TimeoutError as exc:
            return [Outcome.failed(INSIDE, evidence=str(exc)), Outcome.failed(OUTSIDE, evidence=str(exc))]
        if not log.strip():
            did_not_run = f"the lookup pod did not run: {pod_trouble(pod)}"
            return [Outcome.failed(INSIDE, evidence=did_not_run), Outcome.failed(OUTSIDE, evidence=did_not_run)]
        run.log("", f"dns lookups from pod {pod['metadata']['name']}:")
        for line in log.splitlines():
            run.log("", f"  {line}")
        lookups = parse_lookups(log)
        return [
            Outcome.judged(INSIDE, *judge_lookup(lookups.get(INSIDE_NAME), dns_ip, run.topo.kubernetes_service_ip)),
            Outcome.judged(OUTSIDE, *judge_lookup(lookups.get(OUTSIDE_NAME), dns_ip)),
        ]

    async def apply(self, run: RunContext) -> None:
        api = self.api(run)
        await apply_and_wait(run, api, "dns", coredns_objects(run), DEPLOYMENT, READY_TIMEOUT)
        await apply_addons(run, api)

    async def probe(self, run: RunContext) -> list[Outcome]:
        api = self.api(run)
        reason = await api.unserved("apps/v1", "deployments")
        if reason:
            return [Outcome.unverified(READY, reason=reason)]
        return [_ready_outcome(await deployment_readiness(api, NAMESPACE, DEPLOYMENT))]


LOOP_HINT = ("CoreDNS found a forwarding loop: the nodes' /etc/resolv.conf points at a local stub resolver "
             "(systemd-resolved); fix: the kubelet's resolvConf must be /run/systemd/resolve/resolv.conf")


def _ready_outcome(ready: Readiness) -> Outcome:
    if ready.ready:
        return Outcome.passed(READY, evidence=ready.summary)
    return Outcome.failed(READY, evidence=ready.summary + (f"\n{LOOP_HINT}" if "plugin/loop" in ready.summary else ""))


def _one(objects: list[dict], kind: str) -> dict:
    return next(obj for obj in objects if obj["kind"] == kind)


def _image(objects: list[dict]) -> str:
    return _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]


STAGE = DnsStage
