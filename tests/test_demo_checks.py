"""The optional demo (the TODO app) on API responses built from the documented shapes, served by
tests/fakeapi.py; its NodePort answered by a local HTTP server on worker-0's loopback address."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeapi import FakeApi, NodePortServer, crash_looping, pod, pod_list
from stagerun import local_raw, stage_context
from test_dns_smoke_checks import SERVED, by_check

from khwtui.core.events import LogLines
from khwtui.stages import demo
from khwtui.stages.demo import DemoStage, demo_objects
from khwtui.toolkit.manifests import ref

APP = {"app.kubernetes.io/name": demo.APP}
DB = {"app.kubernetes.io/name": demo.DB}
PODS = "/api/v1/namespaces/khwtui-demo/pods?labelSelector=app.kubernetes.io%2Fname%3D"
DEPLOYMENTS = "/apis/apps/v1/namespaces/khwtui-demo/deployments"
SERVICES = "/api/v1/namespaces/khwtui-demo/services"


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.close()


@pytest.fixture
def nodeport():
    server = NodePortServer("127.30.0.20")  # worker-0 of local_raw()
    yield server
    server.close()


def running_demo(api: FakeApi, port: int) -> None:
    api.discovery(SERVED)
    for obj in demo_objects():
        api.hold(obj, ref(obj).path)
    for name, labels in ((demo.DB, DB), (demo.APP, APP)):
        held = api.docs[f"{DEPLOYMENTS}/{name}"][1]
        held["status"] = {"replicas": 1, "readyReplicas": 1}
        api.serve(PODS + labels["app.kubernetes.io/name"], pod_list(pod("khwtui-demo", f"{name}-6d9f7c-abcde", labels, "worker-0")))
    api.docs[f"{SERVICES}/{demo.APP}"][1]["spec"]["ports"][0]["nodePort"] = port


async def test_a_running_demo_passes_and_reports_the_url_to_open(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    running_demo(api, nodeport.port)
    outcomes = by_check(await DemoStage(api.client()).check(run))
    assert {o.result for o in outcomes.values()} == {"passed"} and set(outcomes) == set(demo.CHECKS)
    assert outcomes[demo.REACHABLE].evidence == f"GET http://127.30.0.20:{nodeport.port}/: 200 OK"
    images = [o["spec"]["template"]["spec"]["containers"][0]["image"] for o in demo_objects() if o["kind"] == "Deployment"]
    assert images == [demo.DB_IMAGE, demo.APP_IMAGE] and all("@sha256:" in image for image in images)


async def test_a_crashing_database_fails_and_the_app_is_not_asked(tmp_path: Path, api: FakeApi, nodeport: NodePortServer) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    running_demo(api, nodeport.port)
    api.docs[f"{DEPLOYMENTS}/{demo.DB}"][1]["status"] = {"replicas": 1}
    crash = crash_looping(restarts=3)
    api.serve(PODS + demo.DB, pod_list(pod("khwtui-demo", "todo-db-6d9f7c-abcde", DB, "worker-0", ready=False,
                                           state=crash["state"], last=crash["last"], restarts=3, container="postgres")))
    outcomes = by_check(await DemoStage(api.client()).check(run))
    assert outcomes[demo.DB_RUNNING].result == "failed"
    assert outcomes[demo.DB_RUNNING].evidence.startswith("deployment khwtui-demo/todo-db: 0/1 replicas ready; todo-db-6d9f7c-abcde on worker-0: CrashLoopBackOff")
    assert (outcomes[demo.REACHABLE].result, outcomes[demo.REACHABLE].evidence) == ("failed", "not tried: the app or its database is not running")


async def test_apply_makes_the_secret_once_and_reports_the_nodeport_url(tmp_path: Path, api: FakeApi) -> None:
    """Local nodes are reachable as they are: no firewall rule is asked for (on gcp the provider
    opens the NodePort: test_dns_smoke_checks, the same helper)."""
    opened: list[tuple[str, int]] = []

    class Provider:
        async def ensure_firewall(self, name: str, port: int) -> None:
            opened.append((name, port))

    run, events = stage_context(tmp_path, local_raw(name="kthw"), provider=Provider())
    api.discovery(SERVED)

    def ready(collection: str, nodePort: int | None = None):
        def made(body: dict) -> tuple[int, dict]:
            obj = {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}}
            if body["kind"] == "Deployment":
                obj["status"] = {"readyReplicas": 1}
            if nodePort:
                obj["spec"] = {**obj["spec"], "ports": [{**obj["spec"]["ports"][0], "nodePort": nodePort}]}
            api.serve(f"{collection}/{body['metadata']['name']}", obj)
            return 201, obj
        return made

    api.on_post[DEPLOYMENTS] = ready(DEPLOYMENTS)
    api.on_post[SERVICES] = ready(SERVICES, nodePort=30456)
    for name, labels in ((demo.DB, DB), (demo.APP, APP)):
        api.serve(PODS + name, pod_list(pod("khwtui-demo", f"{name}-6d9f7c-abcde", labels)))

    await DemoStage(api.client()).apply(run)
    posted = [(path, body["metadata"]["name"]) for path, body in api.writes("POST")]
    assert posted == [("/api/v1/namespaces", "khwtui-demo"), ("/api/v1/namespaces/khwtui-demo/secrets", "todo-secrets"),
                      (DEPLOYMENTS, "todo-db"), (SERVICES, "todo-db"), (DEPLOYMENTS, "todo-app"), (SERVICES, "todo-app")]
    password = api.writes("POST")[1][1]["stringData"]["db-password"]
    assert opened == []
    lines = [line for e in events if isinstance(e, LogLines) for line in e.lines]
    assert "the TODO app: http://127.30.0.20:30456/" in lines
    assert not [line for line in lines if password in line]  # the generated password is never logged

    await DemoStage(api.client()).apply(run)
    assert len(api.writes("POST")) == 6 and not api.writes("PUT")  # all in place: the secret kept, nothing made twice
    assert "secret khwtui-demo/todo-secrets: kept" in [line for e in events if isinstance(e, LogLines) for line in e.lines]


async def test_without_apps_v1_the_demo_is_unverified_and_nothing_is_applied(tmp_path: Path, api: FakeApi) -> None:
    run, _ = stage_context(tmp_path, local_raw())
    api.discovery({"v1": SERVED["v1"]})
    outcomes = await DemoStage(api.client()).check(run)
    assert [(o.check, o.result) for o in outcomes] == [(c, "unverified") for c in demo.CHECKS]
    assert outcomes[0].evidence == "Deployment (deployments): the API server does not serve apps/v1 (its discovery lists nothing)"
    await DemoStage(api.client()).apply(run)
    assert not api.writes("POST")
