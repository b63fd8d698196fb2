"""demo (optional): the multi-container TODO application of the original student project, on the
cluster khwtui built — a web app and its database as separate Deployments and Services, the app
reachable through a NodePort, its URL reported. Runs with `[demo] enabled = true` or `--only demo`.

It lives in its own namespace and goes away with the cluster (`down` deletes the nodes; on gcp
the NodePort firewall rule is the provider's, labelled with the cluster).
"""

from __future__ import annotations

import secrets

from khwtui.core.events import PASSED
from khwtui.core.outcome import Outcome
from khwtui.stages.api_stage import ApiStage
from khwtui.toolkit.manifests import (
    apply,
    create_once,
    drift,
    manifest,
    ref,
    unserved,
)
from khwtui.toolkit.run_context import RunContext
from khwtui.toolkit.workloads import (
    deployment_readiness,
    node_address,
    node_port_outcome,
    node_port_probe,
    open_node_port,
    wait_ready,
)
from khwtui.transport.kubeapi import ApiClient

# Pinned by digest (docs/ARCHITECTURE.md "What a stage module provides"); multi-arch digests as pinned by independent projects.
APP_IMAGE = "vikunja/vikunja:0.24.6@sha256:ed1f3ed467fecec0b57e9de7bc6607f8bbcbb23ffced6a81f5dfefc794cdbe3b"
DB_IMAGE = "postgres:16.6-alpine@sha256:1d04b9ba1d4996401f2552b51beda8187f175c0645c091e4781134fc9c9a3eef"
APP_PORT = 3456  # Vikunja serves its web UI and /api/v1 here
NAMESPACE, SECRET, APP, DB = "khwtui-demo", "todo-secrets", "todo-app", "todo-db"
READY_TIMEOUT = 600  # two image pulls and the app's database migrations

DB_RUNNING = "database running"
APP_RUNNING = "TODO app running"
REACHABLE = "TODO app reachable from this machine"
CHECKS = (DB_RUNNING, APP_RUNNING, REACHABLE)


def demo_objects(db_password: str | None = None, jwt_secret: str | None = None) -> list[dict]:
    """The manifest; the Secret's values are fresh randoms (unless given), used only when the Secret is first made."""
    return manifest(
        "demo.yaml.j2", namespace=NAMESPACE, secret=SECRET, app=APP, db=DB, app_image=APP_IMAGE, db_image=DB_IMAGE, app_port=APP_PORT,
        db_password=db_password or secrets.token_urlsafe(24), jwt_secret=jwt_secret or secrets.token_urlsafe(32),
    )


class DemoStage(ApiStage):
    async def check(self, run: RunContext) -> list[Outcome]:
        api = self.api(run)
        objects = demo_objects()
        reason = await unserved(api, objects)
        if reason:
            return [Outcome.unverified(check, reason=reason) for check in CHECKS]
        outcomes = [await self._running(api, objects, DB, DB_RUNNING), await self._running(api, objects, APP, APP_RUNNING)]
        if any(o.result != PASSED for o in outcomes):
            return outcomes + [Outcome.failed(REACHABLE, evidence="not tried: the app or its database is not running")]
        return outcomes + [await node_port_outcome(run, api, REACHABLE, NAMESPACE, APP, run.topo.names.allow_demo, "GET")]

    async def _running(self, api: ApiClient, objects: list[dict], name: str, check: str) -> Outcome:
        """Its Deployment and Service as in the manifest, and its replicas ready."""
        mine = [o for o in objects if o["metadata"]["name"] == name]
        drifted = [d for d in [await drift(api, obj) for obj in mine] if d]
        if drifted:
            return Outcome.failed(check, evidence="; ".join(drifted))
        ready = await deployment_readiness(api, NAMESPACE, name)
        make = Outcome.passed if ready.ready else Outcome.failed
        return make(check, ready.node or "", ready.summary)

    async def apply(self, run: RunContext) -> None:
        api = self.api(run)
        objects = demo_objects()
        reason = await unserved(api, objects)
        if reason:
            run.log("", f"demo: nothing applied: {reason}")
            return
        for obj in objects:
            if obj["kind"] == "Secret":
                result = "created" if await create_once(api, obj) else "kept"
            else:
                result = await apply(api, obj)
            run.log("", f"{ref(obj).label}: {result}")
        for name in (DB, APP):
            await wait_ready(api, NAMESPACE, name, READY_TIMEOUT)
        port = await open_node_port(run, api, NAMESPACE, APP, run.topo.names.allow_demo)
        run.log("", f"the TODO app: http://{node_address(run)}:{port}/")

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await node_port_probe(run, self.api(run), REACHABLE, NAMESPACE, APP, run.topo.names.allow_demo, "GET")


STAGE = DemoStage
