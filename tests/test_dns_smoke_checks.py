"""The dns and smoke checks on API responses built from the documented Kubernetes shapes (no real
apiserver, kubelet or CoreDNS runs here), served over TLS by tests/fakeapi.py and read through the
real ApiClient; kubectl and etcdctl output as those programs print it. Each check has a passing
case and failing ones whose evidence names what is wrong in the user's words."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from fakeapi import FakeApi, NodePortServer, crash_looping, deployment, pod, pod_list
from stagerun import ScriptedRemote, local_raw, stage_context

from khwtui.artifacts.encryption_check import encode
from khwtui.core.errors import StageFailed
from khwtui.stages import dns, smoke
from khwtui.stages.dns import DnsStage, coredns_objects
from khwtui.stages.smoke import SmokeStage
from khwtui.toolkit import addons
from khwtui.toolkit.addons import metrics_server_manifest
from khwtui.toolkit.manifests import ref
from khwtui.transport.remote import RunResult

SERVED = {
    "v1": ["namespaces", "serviceaccounts", "configmaps", "secrets", "services", "pods"],
    "apps/v1": ["deployments"],
    "batch/v1": ["jobs"],
    "rbac.authorization.k8s.io/v1": ["clusterroles", "clusterrolebindings"],
}
COREDNS_PODS = "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-dns"
LOOKUP_JOB = "khwtui-dns-lookup-q8v2m"
LOOKUP_PODS = f"/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{LOOKUP_JOB}"
LOOKUP_POD = f"{LOOKUP_JOB}-t4xlz"
KUBE_DNS = {"k8s-app": "kube-dns"}

# busybox 1.28 nslookup, as KTHW Lab 12 shows it.
RESOLVED_INSIDE = """=== kubernetes.default exit=0 tries=1
Server:    10.32.0.10
Address 1: 10.32.0.10 kube-dns.kube-system.svc.cluster.local

Name:      kubernetes.default
Address 1: 10.32.0.1 kubernetes.default.svc.cluster.local
"""
RESOLVED_OUTSIDE = """=== example.com exit=0 tries=1
Server:    10.32.0.10
Address 1: 10.32.0.10 kube-dns.kube-system.svc.cluster.local

Name:      example.com
Address 1: 93.184.215.14
"""
UNRESOLVED_OUTSIDE = """=== example.com exit=1 tries=15
Server:    10.32.0.10
Address 1: 10.32.0.10 kube-dns.kube-system.svc.cluster.local

nslookup: can't resolve 'example.com'
"""


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.close()


def by_check(outcomes: list) -> dict:
    return {o.check: o for o in outcomes}


# --- dns ------------------------------------------------------------------------------------------


def healthy_dns(api: FakeApi, run, lookups: str = RESOLVED_INSIDE + RESOLVED_OUTSIDE) -> None:
    """A cluster where CoreDNS from khwtui's manifest runs 2/2 and the lookup pod printed `lookups`."""
    api.discovery(SERVED)
    for obj in coredns_objects(run):
        api.hold(obj, ref(obj).path)
    held = api.docs["/apis/apps/v1/namespaces/kube-system/deployments/coredns"][1]
    held["status"] = {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    api.serve(COREDNS_PODS, pod_list(pod("kube-system", "coredns-5d78c9869d-a1", KUBE_DNS, "worker-0"),
                                      pod("kube-system", "coredns-5d78c9869d-b2", KUBE_DNS, "worker-1")))
    api.on_post["/apis/batch/v1/namespaces/default/jobs"] = lambda body: (201, {**body, "metadata": {**body["metadata"], "name": LOOKUP_JOB}})
    api.serve(LOOKUP_PODS, pod_list(pod("default", LOOKUP_POD, {}, phase="Succeeded", ready=False, state={"terminated": {"exitCode": 0}})))
    api.serve(f"/api/v1/namespaces/default/pods/{LOOKUP_POD}/log", lookups)


async def test_dns_passes_on_a_cluster_where_coredns_runs_and_both_names_resolve(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    outcomes = by_check(await DnsStage(api.client()).check(run))
    assert {o.result for o in outcomes.values()} == {"passed"} and set(outcomes) == set(dns.CHECKS)
    assert outcomes[dns.FORWARD].evidence == "forward . /etc/resolv.conf"
    assert outcomes[dns.SERVICE].evidence == "at 10.32.0.10, 53/UDP and 53/TCP"
    assert outcomes[dns.READY].evidence == "2/2 replicas ready"
    assert outcomes[dns.INSIDE].evidence == "kubernetes.default -> 10.32.0.1 (server 10.32.0.10)"
    assert outcomes[dns.OUTSIDE].evidence == "example.com -> 93.184.215.14 (server 10.32.0.10)"
    job = api.writes("POST")[0][1]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == dns.LOOKUP_IMAGE
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # the cluster removes the lookup pod by itself


async def test_a_corefile_without_forward_fails_saying_outside_names_never_resolve(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    kthw = ".:53 {\n    errors\n    health\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n    }\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n"
    api.docs["/api/v1/namespaces/kube-system/configmaps/coredns"][1]["data"]["Corefile"] = kthw
    outcomes = by_check(await DnsStage(api.client()).check(run))
    assert outcomes[dns.FORWARD].result == "failed"
    assert "no `forward . <upstream>` line, so names outside the cluster never resolve" in outcomes[dns.FORWARD].evidence
    assert outcomes[dns.APPLIED].result == "failed"
    assert outcomes[dns.APPLIED].evidence == "configmap kube-system/coredns differs at .data.Corefile"


async def test_coredns_in_crashloopbackoff_fails_with_restarts_exit_and_the_crashed_containers_last_lines(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    api.docs["/apis/apps/v1/namespaces/kube-system/deployments/coredns"][1]["status"] = {"replicas": 2, "unavailableReplicas": 2}
    crash = crash_looping(restarts=7)
    api.serve(COREDNS_PODS, pod_list(pod("kube-system", "coredns-5d78c9869d-a1", KUBE_DNS, "worker-0", ready=False,
                                         state=crash["state"], last=crash["last"], restarts=crash["restarts"], container="coredns")))
    api.serve("/api/v1/namespaces/kube-system/pods/coredns-5d78c9869d-a1/log?container=coredns&previous=true&tailLines=5",
              '[INFO] plugin/reload: Running configuration SHA512 = 591cf3\n[FATAL] plugin/loop: Loop (127.0.0.1:41868 -> :53) detected for zone ".", see https://coredns.io/plugins/loop#troubleshooting\n')
    outcomes = by_check(await DnsStage(api.client()).check(run))
    ready = outcomes[dns.READY]
    assert ready.result == "failed"
    assert ready.evidence.splitlines()[0].startswith(
        "deployment kube-system/coredns: 0/2 replicas ready; coredns-5d78c9869d-a1 on worker-0: CrashLoopBackOff: "
        "back-off 5m0s restarting failed container, restarted 7 times; last exit 1 (Error); "
        "coredns-5d78c9869d-a1 last log lines: [INFO] plugin/reload")
    assert "[FATAL] plugin/loop: Loop (127.0.0.1:41868 -> :53) detected" in ready.evidence
    assert ready.evidence.splitlines()[-1].endswith("the kubelet's resolvConf must be /run/systemd/resolve/resolv.conf")
    assert outcomes[dns.INSIDE].evidence == outcomes[dns.OUTSIDE].evidence == "not tried: CoreDNS is not ready"
    assert not api.writes("POST")  # no lookup pod while CoreDNS is down


async def test_coredns_pods_that_no_ready_node_will_take_fail_naming_the_scheduler_message(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    api.docs["/apis/apps/v1/namespaces/kube-system/deployments/coredns"][1]["status"] = {"replicas": 2}
    pending = pod("kube-system", "coredns-5d78c9869d-a1", KUBE_DNS, node="", phase="Pending", ready=False)
    pending["spec"] = {}
    pending["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                             "message": "0/2 nodes are available: 2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."}]}
    api.serve(COREDNS_PODS, pod_list(pending))
    ready = by_check(await DnsStage(api.client()).check(run))[dns.READY]
    assert ready.result == "failed"
    assert ready.evidence == ("deployment kube-system/coredns: 0/2 replicas ready; coredns-5d78c9869d-a1: Unschedulable: "
                              "0/2 nodes are available: 2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.")


async def test_a_kube_dns_service_at_another_address_than_the_kubelets_use_fails(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    api.docs["/api/v1/namespaces/kube-system/services/kube-dns"][1]["spec"]["clusterIP"] = "10.32.0.53"
    service = by_check(await DnsStage(api.client()).check(run))[dns.SERVICE]
    assert service.result == "failed"
    assert service.evidence.startswith("service kube-system/kube-dns has cluster IP 10.32.0.53, not network.dns_ip 10.32.0.10")


async def test_an_edited_coredns_image_shows_as_drift_from_the_manifest(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    spec = api.docs["/apis/apps/v1/namespaces/kube-system/deployments/coredns"][1]["spec"]
    spec["template"]["spec"]["containers"][0]["image"] = "coredns/coredns:latest"
    applied = by_check(await DnsStage(api.client()).check(run))[dns.APPLIED]
    assert (applied.result, applied.evidence) == ("failed", "deployment kube-system/coredns differs at .spec.template.spec.containers[0].image")


async def test_an_outside_name_that_does_not_resolve_fails_while_kubernetes_default_passes(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run, RESOLVED_INSIDE + UNRESOLVED_OUTSIDE)
    outcomes = by_check(await DnsStage(api.client()).check(run))
    assert outcomes[dns.INSIDE].result == "passed"
    assert (outcomes[dns.OUTSIDE].result, outcomes[dns.OUTSIDE].evidence) == (
        "failed", "example.com does not resolve from a pod after 15 tries: nslookup: can't resolve 'example.com'")


async def test_a_pod_that_asks_another_nameserver_fails_naming_the_kubelets_cluster_dns(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run, (RESOLVED_INSIDE + RESOLVED_OUTSIDE).replace("10.32.0.10", "10.32.0.53"))
    inside = by_check(await DnsStage(api.client()).check(run))[dns.INSIDE]
    assert (inside.result, inside.evidence) == (
        "failed", "the pod asked 10.32.0.53, not the cluster DNS 10.32.0.10: the kubelets' clusterDNS is not network.dns_ip")


async def test_kubernetes_default_resolving_elsewhere_than_the_kubernetes_service_fails(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run, RESOLVED_INSIDE.replace("10.32.0.1 kubernetes", "10.0.0.1 kubernetes") + RESOLVED_OUTSIDE)
    inside = by_check(await DnsStage(api.client()).check(run))[dns.INSIDE]
    assert (inside.result, inside.evidence) == ("failed", "kubernetes.default resolves to 10.0.0.1, not the kubernetes Service 10.32.0.1")


async def test_a_lookup_pod_that_cannot_pull_busybox_fails_both_lookups_saying_so(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    healthy_dns(api, run)
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "failed to pull and unpack image \"docker.io/library/busybox@sha256:141c\": i/o timeout"}}
    api.serve(LOOKUP_PODS, pod_list(pod("default", LOOKUP_POD, {}, phase="Pending", ready=False, state=waiting, container="lookup")))
    outcomes = by_check(await DnsStage(api.client()).check(run))
    expected = f'the lookup pod did not run: {LOOKUP_POD} on worker-0: ErrImagePull: failed to pull and unpack image "docker.io/library/busybox@sha256:141c": i/o timeout'
    assert [(outcomes[c].result, outcomes[c].evidence) for c in (dns.INSIDE, dns.OUTSIDE)] == [("failed", expected)] * 2


async def test_without_apps_v1_in_discovery_every_dns_check_is_unverified_with_the_servers_listing(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    api.discovery({"v1": SERVED["v1"], "rbac.authorization.k8s.io/v1": SERVED["rbac.authorization.k8s.io/v1"]})
    outcomes = await DnsStage(api.client()).check(run)
    assert [o.check for o in outcomes] == list(dns.CHECKS)
    assert {o.result for o in outcomes} == {"unverified"}
    assert outcomes[0].evidence == ("Deployment (deployments): the API server does not serve apps/v1 "
                                    "(its discovery lists rbac.authorization.k8s.io/v1)")
    await DnsStage(api.client()).apply(run)
    assert not api.writes("POST") and not api.writes("PUT")


async def test_apply_creates_the_manifest_then_changes_only_what_differs(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    api.discovery(SERVED)
    api.serve(COREDNS_PODS, pod_list(pod("kube-system", "coredns-5d78c9869d-a1", KUBE_DNS)))
    deployments = "/apis/apps/v1/namespaces/kube-system/deployments"

    def ready_at_once(body: dict) -> tuple[int, dict]:  # the controllers' work, done instantly
        made = {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}, "status": {"readyReplicas": 2}}
        api.serve(f"{deployments}/coredns", made)
        return 201, made

    api.on_post[deployments] = ready_at_once
    await DnsStage(api.client()).apply(run)
    assert [path for path, _ in api.writes("POST")] == [
        "/api/v1/namespaces/kube-system/serviceaccounts", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "/api/v1/namespaces/kube-system/configmaps",
        deployments, "/api/v1/namespaces/kube-system/services"]
    service = api.writes("POST")[-1][1]
    assert service["spec"]["clusterIP"] == "10.32.0.10"
    image = api.writes("POST")[4][1]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == dns.COREDNS_IMAGES["1.14.3"] and "@sha256:" in image
    api.docs["/api/v1/namespaces/kube-system/configmaps/coredns"][1]["data"]["Corefile"] = ".:53 {\n}\n"
    await DnsStage(api.client()).apply(run)
    assert [path for path, _ in api.writes("PUT")] == ["/api/v1/namespaces/kube-system/configmaps/coredns"]
    assert api.writes("PUT")[0][1]["metadata"]["resourceVersion"] == "2"


async def test_a_coredns_version_without_a_pinned_digest_is_refused_before_anything_is_sent(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw(versions={"coredns": "1.13.1"}))
    outcomes = await DnsStage(api.client()).check(run)
    assert [(o.check, o.result) for o in outcomes] == [(dns.APPLIED, "failed")]
    assert "versions.coredns = '1.13.1' has no pinned image digest" in outcomes[0].evidence
    with pytest.raises(StageFailed, match=re.escape("fix: set versions.coredns to one of 1.14.3, 1.14.6")):
        await DnsStage(api.client()).apply(run)
    assert not api.requests


async def test_the_dns_probe_is_coredns_readiness_without_any_command_on_a_node(tmp_path: Path, api: FakeApi) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_dns(api, run)
    assert [(o.check, o.result, o.evidence) for o in await DnsStage(api.client()).probe(run)] == [(dns.READY, "passed", "2/2 replicas ready")]
    assert remote.sent == []


# --- the metrics-server add-on --------------------------------------------------------------------


WITH_METRICS_SERVER = {"metrics_server": True}
METRICS_SERVED = {**SERVED, "rbac.authorization.k8s.io/v1": [*SERVED["rbac.authorization.k8s.io/v1"], "rolebindings"],
                  "apiregistration.k8s.io/v1": ["apiservices"], "metrics.k8s.io/v1beta1": ["nodes", "pods"]}
METRICS_SERVER_PODS = "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dmetrics-server"
# The apiserver's discovery as the stand-in serves it (tests/standins/harness.py): no objects at all.
STANDIN_SERVED = {"v1": [], "authentication.k8s.io/v1": ["selfsubjectreviews"]}


def node_metrics(*names: str) -> dict:
    """metrics.k8s.io/v1beta1 NodeMetricsList, what `kubectl top nodes` reads."""
    return {"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [
        {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:01:00Z"}, "timestamp": "2026-01-01T00:00:52Z",
         "window": "15.011s", "usage": {"cpu": "137m", "memory": "1048576Ki"}} for name in names]}


def healthy_metrics_server(api: FakeApi, run) -> None:
    """healthy_dns, and metrics-server from khwtui's manifest ready with usage for both workers."""
    healthy_dns(api, run)
    api.discovery(METRICS_SERVED)
    for obj in metrics_server_manifest():
        api.hold(obj, ref(obj).path)
    api.docs["/apis/apps/v1/namespaces/kube-system/deployments/metrics-server"][1]["status"] = {"replicas": 1, "readyReplicas": 1}
    api.serve(METRICS_SERVER_PODS, pod_list(pod("kube-system", "metrics-server-6d94bc8694-x1", {"k8s-app": "metrics-server"}, "worker-1")))
    api.serve(addons.NODE_METRICS, node_metrics("worker-0", "worker-1"))


async def test_metrics_server_passes_when_kubectl_top_nodes_lists_the_usage_of_every_worker(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw(addons=WITH_METRICS_SERVER))
    healthy_metrics_server(api, run)
    outcomes = await DnsStage(api.client()).check(run)
    assert [o.check for o in outcomes] == [*dns.CHECKS, *addons.CHECKS] and {o.result for o in outcomes} == {"passed"}
    assert outcomes[-1].evidence == "worker-0 cpu 137m, memory 1048576Ki; worker-1 cpu 137m, memory 1048576Ki"
    assert outcomes[-3].evidence == f"9 objects as in the manifest, image {addons.METRICS_SERVER_IMAGE}"


async def test_kubectl_top_nodes_fails_for_a_worker_without_usage_and_when_the_metrics_api_is_unreachable(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw(addons=WITH_METRICS_SERVER))
    healthy_metrics_server(api, run)
    api.serve(addons.NODE_METRICS, node_metrics("worker-0"))
    top = (await DnsStage(api.client()).check(run))[-1]
    assert (top.check, top.result) == (addons.TOP_NODES, "failed")
    assert top.evidence.startswith("no usage for worker-1 (listed: worker-0); metrics-server reads each kubelet every 15 s")
    api.serve(addons.NODE_METRICS, {"kind": "Status", "status": "Failure", "code": 503, "reason": "ServiceUnavailable",
                                    "message": "the server is currently unable to handle the request"}, 503)
    top = (await DnsStage(api.client()).check(run))[-1]
    assert top.result == "failed" and "503" in top.evidence and "the server is currently unable to handle the request" in top.evidence
    assert top.evidence.endswith("(the API server cannot reach metrics-server: see apiservice v1beta1.metrics.k8s.io's status)")


async def test_on_the_stand_ins_api_server_metrics_server_is_unverified_with_the_reason_never_passed(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw(addons=WITH_METRICS_SERVER))
    api.discovery(STANDIN_SERVED)
    outcomes = (await DnsStage(api.client()).check(run))[len(dns.CHECKS):]
    reason = "ServiceAccount (serviceaccounts): the API server serves v1 without serviceaccounts (its discovery lists nothing)"
    assert [(o.check, o.result, o.evidence) for o in outcomes] == [(check, "unverified", reason) for check in addons.CHECKS]
    await DnsStage(api.client()).apply(run)
    assert not api.writes("POST") and not api.writes("PUT")


async def test_apply_puts_metrics_server_after_coredns_with_its_api_service_last(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw(addons=WITH_METRICS_SERVER))
    api.discovery(METRICS_SERVED)
    api.serve(COREDNS_PODS, pod_list(pod("kube-system", "coredns-5d78c9869d-a1", KUBE_DNS)))
    api.serve(METRICS_SERVER_PODS, pod_list(pod("kube-system", "metrics-server-6d94bc8694-x1", {"k8s-app": "metrics-server"})))
    deployments = "/apis/apps/v1/namespaces/kube-system/deployments"

    def ready_at_once(body: dict) -> tuple[int, dict]:  # the controllers' work, done instantly
        made = {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}, "status": {"readyReplicas": body["spec"].get("replicas", 1)}}
        api.serve(f"{deployments}/{body['metadata']['name']}", made)
        return 201, made

    api.on_post[deployments] = ready_at_once
    await DnsStage(api.client()).apply(run)
    made = [(body["kind"], body["metadata"]["name"]) for _, body in api.writes("POST")]
    assert made[made.index(("Deployment", "coredns")) + 2:] == [(o["kind"], o["metadata"]["name"]) for o in metrics_server_manifest()]
    assert made[-1] == ("APIService", "v1beta1.metrics.k8s.io")
    image = next(body for _, body in api.writes("POST") if body["metadata"]["name"] == "metrics-server" and body["kind"] == "Deployment")
    assert image["spec"]["template"]["spec"]["containers"][0]["image"] == addons.METRICS_SERVER_IMAGE
    assert "@sha256:" in addons.METRICS_SERVER_IMAGE


# --- smoke ----------------------------------------------------------------------------------------

NGINX = {"app": smoke.APP}
NGINX_PODS = "/api/v1/namespaces/default/pods?labelSelector=app%3Dkhwtui-nginx"
NGINX_POD = "khwtui-nginx-7c79c4bf97-x2k8d"
ETCD_GET = r"etcdctl .*get /registry/secrets/default/khwtui-smoke --write-out=json"
EXEC_FORBIDDEN = "error: unable to upgrade connection: Forbidden (user=kubernetes, verb=create, resource=nodes, subresource=proxy)"


def etcd_answer(stored: bytes) -> str:
    """`etcdctl get -w json` output (key and value base64, as etcd's JSON printer writes bytes)."""
    key = base64.b64encode(b"/registry/secrets/default/khwtui-smoke").decode()
    return json.dumps({"header": {"cluster_id": 1, "member_id": 2, "revision": 41, "raft_term": 3},
                       "kvs": [{"key": key, "create_revision": 40, "mod_revision": 40, "version": 1,
                                "value": base64.b64encode(stored).decode()}], "count": 1})


@pytest.fixture
def nodeport():
    server = NodePortServer("127.30.0.20")  # worker-0 of local_raw()
    yield server
    server.close()


def healthy_smoke(api: FakeApi, run, remote: ScriptedRemote, port: int) -> None:
    """The secret stored as the apiserver's aescbc writes it, nginx running, kubectl answering as it does."""
    api.discovery(SERVED)
    for obj in smoke.smoke_objects():
        api.hold(obj, ref(obj).path)
    api.docs["/apis/apps/v1/namespaces/default/deployments/khwtui-nginx"] = (200, deployment("default", smoke.APP, NGINX, 1, 1))
    api.docs["/api/v1/namespaces/default/services/khwtui-nginx"][1]["spec"]["ports"][0]["nodePort"] = port
    api.serve(NGINX_PODS, pod_list(pod("default", NGINX_POD, NGINX, "worker-1")))
    stored = encode("aescbc", run.artifacts.encryption_key, b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret" + smoke.SECRET_VALUE)
    remote.answer(ETCD_GET, etcd_answer(stored))
    asked: list[str] = []  # what nginx was asked through the tunnel, so its log shows it

    def tunnel(command: str) -> RunResult:
        asked.append(re.search(r"'(/\?khwtui-smoke=\w+)'", command)[1])
        return RunResult(0, "HTTP/1.1 200 OK\r\nServer: nginx/1.28.1\r\nContent-Type: text/html\r\n", "")

    def nginx_log(command: str) -> RunResult:
        lines = [f'127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "HEAD {path} HTTP/1.1" 200 0 "-" "curl/7.88.1" "-"' for path in asked]
        return RunResult(0, "\n".join(lines) + "\n", "")

    remote.answer_with(r"port-forward", tunnel)
    remote.answer_with(r"kubectl .* logs ", nginx_log)
    remote.answer(r"kubectl .* exec ", "", "nginx version: nginx/1.28.1\n")


async def test_smoke_passes_each_step_with_its_own_evidence(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    outcomes = by_check(await SmokeStage(api.client()).check(run))
    assert set(outcomes) == set(smoke.CHECKS) and {o.result for o in outcomes.values()} == {"passed"}
    assert outcomes[smoke.ENCRYPTED].node == "controller-0"
    assert outcomes[smoke.ENCRYPTED].evidence.splitlines()[-1].startswith("87 bytes: k8s:enc:aescbc:v1:key1: + 16-byte IV + 48 bytes of ciphertext")
    assert outcomes[smoke.DEPLOYMENT].evidence == f"1/1 replicas ready: pod {NGINX_POD}"
    assert outcomes[smoke.PORT_FORWARD].evidence.endswith("nginx answered through the tunnel: HTTP/1.1 200 OK")
    assert re.search(r'the log shows that request: .*"HEAD /\?khwtui-smoke=[0-9a-f]{8} HTTP/1.1" 200 0 "-" "curl/7.88.1" "-"$', outcomes[smoke.LOGS].evidence)
    assert outcomes[smoke.EXEC].evidence.endswith("ran in the container: nginx version: nginx/1.28.1")
    assert outcomes[smoke.NODE_PORT].evidence == f"HEAD http://127.30.0.20:{nodeport.port}/: 200 OK"
    kubectl = [command for node, command in remote.sent if "kubectl" in command]
    assert len(kubectl) == 3 and all("--kubeconfig=/etc/kubernetes/admin.kubeconfig" in c for c in kubectl)
    assert {node for node, _ in remote.sent} == {"controller-0"}


async def test_a_secret_stored_in_plaintext_fails_saying_its_value_is_readable(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    remote.answer(ETCD_GET, etcd_answer(b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1b\n\x05mykey\x12\x13" + smoke.SECRET_VALUE))
    encrypted = by_check(await SmokeStage(api.client()).check(run))[smoke.ENCRYPTED]
    assert encrypted.result == "failed"
    assert encrypted.evidence.splitlines() == [
        "$ etcdctl get /registry/secrets/default/khwtui-smoke --write-out=json",
        "the secret is stored in plaintext in etcd (without any k8s:enc: prefix): its value 'khwtui-smoke-mydata' is readable"]


async def test_a_secret_encrypted_with_another_key_fails_though_its_prefix_is_right(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    remote.answer(ETCD_GET, etcd_answer(encode("aescbc", bytes(range(32)), b"k8s\x00" + smoke.SECRET_VALUE)))
    encrypted = by_check(await SmokeStage(api.client()).check(run))[smoke.ENCRYPTED]
    assert encrypted.result == "failed"
    assert "has the k8s:enc:aescbc:v1:key1: prefix but does not decrypt with this cluster's key" in encrypted.evidence


async def test_a_secret_that_was_never_created_fails_without_reading_etcd(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    del api.docs["/api/v1/namespaces/default/secrets/khwtui-smoke"]
    encrypted = by_check(await SmokeStage(api.client()).check(run))[smoke.ENCRYPTED]
    assert (encrypted.result, encrypted.evidence) == ("failed", "secret default/khwtui-smoke does not exist yet")
    assert not [c for _, c in remote.sent if "etcdctl" in c]


async def test_exec_forbidden_for_user_kubernetes_fails_naming_the_missing_rbac_and_the_fix(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    remote.answer(r"kubectl .* exec ", "", EXEC_FORBIDDEN + "\n", exit_status=1)
    remote.answer(r"kubectl .* logs ", "", "Error from server (Forbidden): Forbidden (user=kubernetes, verb=get, resource=nodes, subresource=proxy) "
                  f"( pods/log {NGINX_POD})\n", exit_status=1)
    outcomes = by_check(await SmokeStage(api.client()).check(run))
    execed = outcomes[smoke.EXEC]
    assert execed.result == "failed"
    assert execed.evidence.splitlines() == [
        f"$ kubectl exec pod/{NGINX_POD} -- nginx -v",
        EXEC_FORBIDDEN,
        ("the API server (user kubernetes) may not create nodes/proxy on the kubelet: the system:kube-apiserver-to-kubelet "
         "ClusterRole or its binding to user kubernetes is missing or wrong; fix: run `khwtui up --only rbac`")]
    assert outcomes[smoke.LOGS].result == "failed" and "may not get nodes/proxy on the kubelet" in outcomes[smoke.LOGS].evidence
    assert outcomes[smoke.PORT_FORWARD].result == "passed"


async def test_logs_that_do_not_show_this_runs_request_fail(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    remote.answer(r"kubectl .* logs ", '10.200.1.1 - - [01/Jan/2026:00:00:00 +0000] "HEAD / HTTP/1.1" 200 0 "-" "curl/7.88.1" "-"\n')
    logs = by_check(await SmokeStage(api.client()).check(run))[smoke.LOGS]
    assert logs.result == "failed"
    assert re.fullmatch(r"exit 0, and no log line for that request \(HEAD /\?khwtui-smoke=[0-9a-f]{8}\)", logs.evidence.splitlines()[-1])


async def test_a_port_forward_that_gets_no_answer_fails_with_kubectls_own_output(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    remote.answer(r"port-forward", "error: error upgrading connection: error dialing backend: dial tcp 127.30.0.21:10250: connect: connection refused\n", exit_status=1)
    forward = by_check(await SmokeStage(api.client()).check(run))[smoke.PORT_FORWARD]
    assert forward.result == "failed"
    assert "dial tcp 127.30.0.21:10250: connect: connection refused" in forward.evidence
    assert forward.evidence.splitlines()[-1] == "exit 1, and no HTTP 200 answer from nginx through the tunnel"


async def test_an_nginx_pod_that_cannot_pull_fails_the_deployment_and_skips_the_steps_that_need_it(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    healthy_smoke(api, run, remote, nodeport.port)
    api.docs["/apis/apps/v1/namespaces/default/deployments/khwtui-nginx"] = (200, deployment("default", smoke.APP, NGINX, 1, 0))
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nginx:1.28.1-alpine@sha256:52e3"'}}
    api.serve(NGINX_PODS, pod_list(pod("default", NGINX_POD, NGINX, "worker-1", phase="Pending", ready=False, state=waiting)))
    outcomes = by_check(await SmokeStage(api.client()).check(run))
    assert outcomes[smoke.DEPLOYMENT].evidence == (
        f'deployment default/khwtui-nginx: 0/1 replicas ready; {NGINX_POD} on worker-1: ImagePullBackOff: Back-off pulling image "nginx:1.28.1-alpine@sha256:52e3"')
    assert [outcomes[c].result for c in (smoke.PORT_FORWARD, smoke.LOGS, smoke.EXEC, smoke.NODE_PORT)] == ["failed"] * 4
    assert outcomes[smoke.EXEC].evidence == "not tried: no ready nginx pod"
    assert not [c for _, c in remote.sent if "kubectl" in c]


async def test_a_nodeport_that_does_not_answer_fails_and_on_gcp_names_the_firewall_rule(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    remote = ScriptedRemote()
    raw = {"cluster": {"name": "kthw"}, "provider": {"kind": "gcp"}, "gcp": {"project": "khwtui-test-1"},
           "topology": {"controllers": 1, "workers": 2}, "network": {"node_cidr": "10.240.0.0/24"}}
    run, _ = stage_context(tmp_path, raw, remote=remote, external={"worker-0": "127.30.0.20"})
    healthy_smoke(api, run, remote, nodeport.port)
    nodeport.close()
    node_port = by_check(await SmokeStage(api.client()).check(run))[smoke.NODE_PORT]
    assert node_port.result == "failed"
    assert node_port.evidence.startswith(f"HEAD http://127.30.0.20:{nodeport.port}/: no answer (")
    assert node_port.evidence.endswith(f"(on gcp, firewall rule kthw-allow-nginx-service must allow tcp:{nodeport.port} from this machine)")


async def test_without_discovery_for_secrets_and_deployments_every_smoke_check_is_unverified(tmp_path: Path, api: FakeApi) -> None:
    remote = ScriptedRemote()
    run, _ = stage_context(tmp_path, local_raw(), remote=remote)
    api.discovery({"v1": [], "authentication.k8s.io/v1": ["selfsubjectreviews"]})  # what the stand-in apiserver serves
    outcomes = await SmokeStage(api.client()).check(run)
    assert [o.check for o in outcomes] == list(smoke.CHECKS) and {o.result for o in outcomes} == {"unverified"}
    assert outcomes[0].evidence == "the API server serves v1 without secrets (its discovery lists nothing)"
    assert outcomes[2].evidence.startswith("needs a running nginx pod, which cannot exist here: the API server does not serve apps/v1")
    assert remote.sent == []


class FirewallProvider:
    def __init__(self) -> None:
        self.opened: list[tuple[str, int]] = []

    async def ensure_firewall(self, name: str, port: int) -> None:
        self.opened.append((name, port))


async def test_apply_opens_the_nodeport_through_the_providers_firewall_rule(tmp_path: Path, api: FakeApi) -> None:
    provider = FirewallProvider()
    raw = {"cluster": {"name": "kthw"}, "provider": {"kind": "gcp"}, "gcp": {"project": "khwtui-test-1"}, "topology": {"controllers": 1, "workers": 1}}
    run, _ = stage_context(tmp_path, raw, provider=provider)
    an_empty_cluster_that_runs_nginx_at_once(api)
    await SmokeStage(api.client()).apply(run)
    assert [path for path, _ in api.writes("POST")] == [
        "/api/v1/namespaces/default/secrets", "/apis/apps/v1/namespaces/default/deployments", "/api/v1/namespaces/default/services"]
    secret = api.writes("POST")[0][1]
    assert base64.b64decode(secret["data"]["mykey"]) == smoke.SECRET_VALUE
    assert provider.opened == [("kthw-allow-nginx-service", 31080)]


def an_empty_cluster_that_runs_nginx_at_once(api: FakeApi) -> None:
    """Nothing applied yet; what is created becomes ready at once, the Service gets node port 31080."""
    api.discovery(SERVED)
    api.serve(NGINX_PODS, pod_list(pod("default", NGINX_POD, NGINX)))
    services, deployments = "/api/v1/namespaces/default/services", "/apis/apps/v1/namespaces/default/deployments"
    api.on_post[services] = lambda body: _stored(api, services, body, nodePort=31080)
    api.on_post[deployments] = lambda body: _stored(api, deployments, {**body, "status": {"readyReplicas": 1}})


def _stored(api: FakeApi, collection: str, body: dict, nodePort: int | None = None) -> tuple[int, dict]:
    made = {**body, "metadata": {**body["metadata"], "resourceVersion": "5"}}
    if nodePort is not None:
        made["spec"] = {**made["spec"], "ports": [{**made["spec"]["ports"][0], "nodePort": nodePort}]}
    api.serve(f"{collection}/{body['metadata']['name']}", made)
    return 201, made
