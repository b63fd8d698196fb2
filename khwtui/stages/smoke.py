"""smoke: KTHW Lab 13, each step a separate check with its own result and evidence.

- secret encrypted at rest: the Secret's bytes in etcd, read with etcdctl on a controller, start
  with k8s:enc:<provider>:v1:key1:, do not contain the value, and decrypt with the cluster's key
  back to it (khwtui.artifacts.encryption_check) — not just a prefix seen in a hexdump;
- an nginx Deployment whose pod runs;
- port-forward, logs and exec with kubectl on a controller over SSH, as KTHW runs them (they use
  the streaming protocols; the control plane installs kubectl and an admin kubeconfig there);
- the NodePort Service answering this machine (on gcp through the firewall rule this stage owns).
The objects are made through the API from Python; what the API server does not serve is
reported unverified with the reason from its discovery documents.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
from dataclasses import dataclass

from khwtui.artifacts.controlplane_files import BIN_DIR
from khwtui.artifacts.encryption_check import judge
from khwtui.artifacts.nodefiles import ADMIN_KUBECONFIG
from khwtui.artifacts.render import render
from khwtui.core.outcome import Outcome
from khwtui.stages.api_stage import ApiStage
from khwtui.stages.etcd import etcdctl
from khwtui.toolkit.manifests import apply, manifest, ref
from khwtui.toolkit.run_context import RunContext
from khwtui.toolkit.workloads import (
    deployment_readiness,
    node_port_outcome,
    node_port_probe,
    open_node_port,
    wait_ready,
)
from khwtui.transport.kubeapi import ApiClient
from khwtui.transport.remote import RunResult

# nginx 1.28.1 (stable, alpine), multi-arch digest as pinned by independent projects' Dockerfiles.
NGINX_IMAGE = "nginx:1.28.1-alpine@sha256:52e3ada4d978443601f286cc2f9e7b95c82aa3ad5a78ce9c6b94ce00258e68cc"
SECRET, APP, NAMESPACE = "khwtui-smoke", "khwtui-nginx", "default"
SECRET_VALUE = b"khwtui-smoke-mydata"  # KTHW: --from-literal mykey=mydata
KUBECTL = shlex.join([f"{BIN_DIR}/kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}"])
READY_TIMEOUT = 300

ENCRYPTED = "secret encrypted at rest"
DEPLOYMENT = "nginx deployment running"
PORT_FORWARD = "port-forward"
LOGS = "logs"
EXEC = "exec"
NODE_PORT = "NodePort reached from this machine"
CHECKS = (ENCRYPTED, DEPLOYMENT, PORT_FORWARD, LOGS, EXEC, NODE_PORT)

# The kubelet's refusal, relayed by the apiserver when its user may not use the kubelet API (docs/UPSTREAM.md "KTHW pain points").
KUBELET_FORBIDDEN = re.compile(r"Forbidden \(user=([^,]+), verb=(\w+), resource=nodes, subresource=(\w+)\)")


def smoke_objects() -> list[dict]:
    return manifest("smoke.yaml.j2", secret=SECRET, app=APP, image=NGINX_IMAGE, value_b64=base64.b64encode(SECRET_VALUE).decode())


def etcd_key(namespace: str, name: str) -> str:
    return f"/registry/secrets/{namespace}/{name}"


# --- the encryption-at-rest check: real etcd, on a controller ---------------------------------


async def encrypted_at_rest(run: RunContext, key: str, plaintext: bytes) -> Outcome:
    """Read `key` from etcd on the first controller and judge its bytes with the cluster's key."""
    controller = run.topo.controllers[0].name
    command = etcdctl("get", key, "--write-out=json")
    result = await run.sh(controller, command, check=False, timeout=30)
    shown = f"$ etcdctl get {key} --write-out=json"
    if result.exit_status != 0:
        return Outcome.failed(ENCRYPTED, controller, f"{shown}\n{result.stdout}{result.stderr}".rstrip())
    try:
        kvs = json.loads(result.stdout).get("kvs") or []
        stored = base64.b64decode(kvs[0]["value"]) if kvs else None
    except (ValueError, KeyError, TypeError) as exc:
        return Outcome.failed(ENCRYPTED, controller, f"{shown}\nunreadable answer ({exc}): {result.stdout[:200]}")
    if stored is None:
        return Outcome.failed(ENCRYPTED, controller, f"{shown}\nno such key in etcd: the secret is not stored where the apiserver keeps secrets")
    verdict = judge(stored, run.config.encryption.provider, run.artifacts.encryption_key, plaintext)
    make = Outcome.passed if verdict.ok else Outcome.failed
    return make(ENCRYPTED, controller, f"{shown}\n{verdict.summary}")


# --- kubectl on a controller ------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    pattern: str  # a regex kubectl's output must match (per line)
    wanted: str  # the same in the user's words, for the failure
    success: str  # what a match proves


def judge_kubectl(check: str, node: str, shown: str, result: RunResult, expect: Expect) -> Outcome:
    """Passed when kubectl's output shows what was expected; a kubelet refusal is explained as RBAC."""
    output = result.stdout + result.stderr
    found = re.search(expect.pattern, output, re.MULTILINE)
    if result.exit_status == 0 and found:
        return Outcome.passed(check, node, f"{shown}\n{expect.success}: {found[0].strip()}")
    forbidden = KUBELET_FORBIDDEN.search(output)
    if forbidden:
        user, verb, sub = forbidden.groups()
        reason = (f"the API server (user {user}) may not {verb} nodes/{sub} on the kubelet: the "
                  f"system:kube-apiserver-to-kubelet ClusterRole or its binding to user {user} is missing or wrong; "
                  "fix: run `khwtui up --only rbac`")
        return Outcome.failed(check, node, f"{shown}\n{output.strip()}\n{reason}")
    return Outcome.failed(check, node, f"{shown}\n{output.strip() or '(no output)'}\nexit {result.exit_status}, and no {expect.wanted}")


async def kubectl_checks(run: RunContext, pod: str) -> list[Outcome]:
    """port-forward (then curl --head through it), logs (which must show that very request: its
    path carries a fresh token) and exec."""
    node = run.topo.controllers[0].name
    target = shlex.quote(f"pod/{pod}")
    path = f"/?khwtui-smoke={secrets.token_hex(4)}"
    script = render("smoke-port-forward.sh.j2", kubectl=KUBECTL, pod=target, path=shlex.quote(path))
    forward = await run.sh(node, f"bash -c {shlex.quote(script)}", check=False, timeout=60)
    logs = await run.sh(node, f"{KUBECTL} logs {target} --tail=50", check=False, timeout=60)
    execed = await run.sh(node, f"{KUBECTL} exec {target} -- nginx -v", check=False, timeout=60)
    return [
        judge_kubectl(PORT_FORWARD, node, f"$ kubectl port-forward pod/{pod} :80 & curl --head http://127.0.0.1:PORT{path}", forward,
                      Expect(r"^HTTP/\S+ 200.*$", "HTTP 200 answer from nginx through the tunnel", "nginx answered through the tunnel")),
        judge_kubectl(LOGS, node, f"$ kubectl logs pod/{pod} --tail=50", logs,
                      Expect(rf'^.*"HEAD {re.escape(path)} HTTP/1\.1" 200.*$', f"log line for that request (HEAD {path})", "the log shows that request")),
        judge_kubectl(EXEC, node, f"$ kubectl exec pod/{pod} -- nginx -v", execed,
                      Expect(r"^nginx version: \S+$", "nginx version line from inside the container", "ran in the container")),
    ]


# --- the stage ------------------------------------------------------------------------------


class SmokeStage(ApiStage):
    async def check(self, run: RunContext) -> list[Outcome]:
        api = self.api(run)
        outcomes = [await self._secret(run, api)]
        reason = await api.unserved("apps/v1", "deployments") or await api.unserved("v1", "pods")
        if reason:
            outcomes.append(Outcome.unverified(DEPLOYMENT, reason=reason))
            needs = f"needs a running nginx pod, which cannot exist here: {reason}"
            return outcomes + [Outcome.unverified(check, reason=needs) for check in (PORT_FORWARD, LOGS, EXEC, NODE_PORT)]
        ready = await deployment_readiness(api, NAMESPACE, APP)
        if not ready.ready or ready.pod is None:
            outcomes.append(Outcome.failed(DEPLOYMENT, evidence=ready.summary))
            return outcomes + [Outcome.failed(check, evidence="not tried: no ready nginx pod") for check in (PORT_FORWARD, LOGS, EXEC, NODE_PORT)]
        outcomes.append(Outcome.passed(DEPLOYMENT, ready.node or "", f"{ready.summary}: pod {ready.pod}"))
        outcomes += await kubectl_checks(run, ready.pod)
        return outcomes + [await node_port_outcome(run, api, NODE_PORT, NAMESPACE, APP, run.topo.names.allow_smoke)]

    async def _secret(self, run: RunContext, api: ApiClient) -> Outcome:
        reason = await api.unserved("v1", "secrets")
        if reason:
            return Outcome.unverified(ENCRYPTED, reason=reason)
        if await api.get(ref(smoke_objects()[0]).path) is None:
            return Outcome.failed(ENCRYPTED, evidence=f"secret {NAMESPACE}/{SECRET} does not exist yet")
        return await encrypted_at_rest(run, etcd_key(NAMESPACE, SECRET), SECRET_VALUE)

    async def apply(self, run: RunContext) -> None:
        api = self.api(run)
        served = []
        for obj in smoke_objects():
            r = ref(obj)
            reason = await api.unserved(r.api_version, r.resource)
            if reason:
                run.log("", f"{r.label}: not applied: {reason}")
                continue
            run.log("", f"{r.label}: {await apply(api, obj)}")
            served.append(r.kind)
        if "Deployment" in served:
            await wait_ready(api, NAMESPACE, APP, READY_TIMEOUT)
        if "Service" in served:
            await open_node_port(run, api, NAMESPACE, APP, run.topo.names.allow_smoke)

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await node_port_probe(run, self.api(run), NODE_PORT, NAMESPACE, APP, run.topo.names.allow_smoke)


STAGE = SmokeStage
