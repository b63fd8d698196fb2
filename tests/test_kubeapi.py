"""khwtui.transport.kubeapi against the apiserver stand-in run here over TLS; the rbac stage's objects
against the fake API server of fakeapi.py, which serves RBAC (the stand-in does not); and
the frontend stage where no node is involved (machines without an lb host, gcp).

The rule under test (docs/ARCHITECTURE.md "Passed, failed, unverified"): unverified comes only from what discovery advertises; a 404 for
an object means "not there yet"; 401, 403, 5xx and no answer at all are failures.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from fakeapi import FakeApi
from stagerun import stage_context
from test_standins import (
    Controller,
    artifacts,
    free_port,
    place,
    replace,
    serve_etcd,
    stop,
    wait_line,
)

from khwtui.artifacts.kubeconfigs import kubeconfig, spec_named
from khwtui.artifacts.nodefiles import Artifacts
from khwtui.core.events import FAILED, PASSED, UNVERIFIED, Event, LogLines
from khwtui.stages.frontend import FrontendStage
from khwtui.stages.rbac import (
    apply_objects,
    check_objects,
    controller_credentials,
    wanted_objects,
)
from khwtui.toolkit.manifests import ref
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.kubeapi import (
    ApiClient,
    ApiError,
    Credentials,
    KubeconfigError,
    credentials_from_kubeconfig,
)

MINOR = 35
AUTHN = "authentication.k8s.io/v1"
GROUP_VERSION = "rbac.authorization.k8s.io/v1"
ROLE = "clusterrole system:kube-apiserver-to-kubelet"
BINDING = "clusterrolebinding system:kube-apiserver"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Controller:
    root = tmp_path_factory.mktemp("kubeapi")
    return place(root, artifacts(root / "state", MINOR), MINOR)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return artifacts(tmp_path_factory.mktemp("stranger"), 36, "stranger")


@pytest.fixture(scope="module")
def standin(controller: Controller) -> Iterator[str]:
    """The apiserver stand-in on 127.0.0.1; its etcd takes connections but is not healthy, so /readyz is a 500
    (/version, discovery and reviews do not need etcd)."""
    yield from run_apiserver(controller, free_port())


def run_apiserver(controller: Controller, port: int) -> Iterator[str]:
    with serve_etcd(controller, healthy=False) as etcd:
        flags = replace(replace(replace(controller.flags["kube-apiserver"], "bind-address", "127.0.0.1"), "secure-port", str(port)), "etcd-servers", etcd)
        proc = controller.run("kube-apiserver", flags)
        assert wait_line(proc) == f"kube-apiserver stand-in v1.{MINOR}.3: serving securely on 127.0.0.1:{port}"
        yield f"https://127.0.0.1:{port}"
        assert stop(proc) == 0


def creds(url: str, a: Artifacts, who: str | None = "admin", ca: bytes | None = None, name: str | None = None) -> Credentials:
    """As `who` (a pki certificate name) of cluster `a`, or anonymously; trusting `ca` (default: a's CA)."""
    ca = ca or a.pki.ca_pem()
    if who is None:
        return Credentials(url, ca, tls_server_name=name)
    return Credentials(url, ca, a.pki.cert_pem(who), a.pki.key_pem(who), name)


# --- requests and errors against the stand-in --------------------------------------------------------


async def test_version_answers_anonymously_with_the_cluster_ca(standin: str, controller: Controller) -> None:
    version = await ApiClient(creds(standin, controller.a, None)).get("/version", absent_ok=False)
    assert isinstance(version, dict) and version["gitVersion"] == f"v1.{MINOR}.3"


async def test_discovery_decides_what_is_served_and_says_why_not(standin: str, controller: Controller) -> None:
    api = ApiClient(creds(standin, controller.a))
    assert await api.unserved(AUTHN, "selfsubjectreviews") is None
    assert await api.unserved(GROUP_VERSION, "clusterroles") == (
        f"the API server does not serve {GROUP_VERSION} (its discovery lists {AUTHN})")
    assert await api.unserved(AUTHN, "tokenreviews") == (
        f"the API server serves {AUTHN} without tokenreviews (its discovery lists selfsubjectreviews)")


async def test_an_absent_object_is_none_but_a_write_to_an_unknown_path_fails(standin: str, controller: Controller) -> None:
    api = ApiClient(creds(standin, controller.a))
    assert await api.get(f"/apis/{AUTHN}/selfsubjectreviews/nobody") is None
    with pytest.raises(ApiError) as caught:
        await api.post("/apis/example.com/v1/things", {"kind": "Thing"})
    assert caught.value.status == 404


async def test_anonymous_discovery_is_403_and_fails(standin: str, controller: Controller) -> None:
    with pytest.raises(ApiError) as caught:
        await ApiClient(creds(standin, controller.a, None)).unserved(AUTHN, "selfsubjectreviews")
    assert caught.value.status == 403
    assert 'User "system:anonymous" cannot get path' in str(caught.value)


async def test_a_client_certificate_from_another_ca_is_401(standin: str, controller: Controller, stranger: Artifacts) -> None:
    api = ApiClient(creds(standin, stranger, "admin", ca=controller.a.pki.ca_pem()))
    with pytest.raises(ApiError) as caught:
        await api.who_am_i()
    assert (caught.value.status, str(caught.value).endswith("401 Unauthorized: Unauthorized")) == (401, True)


async def test_a_server_error_is_a_failure(standin: str, controller: Controller) -> None:
    """/readyz of an apiserver whose etcd is not healthy: 500, raised even though GET returns None for 404."""
    with pytest.raises(ApiError) as caught:
        await ApiClient(creds(standin, controller.a, None)).get("/readyz")
    assert caught.value.status == 500
    assert "[-]etcd failed" in str(caught.value)


async def test_nothing_listening_is_no_answer(controller: Controller) -> None:
    with pytest.raises(ApiError) as caught:
        await ApiClient(creds(f"https://127.0.0.1:{free_port()}", controller.a, None)).get("/version")
    assert caught.value.status == 0
    assert str(caught.value).endswith("/version: not reached: Connection refused")


async def test_a_server_the_ca_did_not_sign_is_refused_before_anything_is_sent(standin: str, stranger: Artifacts) -> None:
    with pytest.raises(ApiError) as caught:
        await ApiClient(creds(standin, stranger, "admin")).get("/version")
    assert caught.value.status == 0
    assert str(caught.value).endswith("not reached: TLS: self-signed certificate in certificate chain")


async def test_tls_server_name_checks_the_certificate_for_that_name(standin: str, controller: Controller) -> None:
    """An address that is not in the certificate (gcp external IPs) is checked for a name that is."""
    named = await ApiClient(creds(standin, controller.a, None, name="kubernetes")).get("/version", absent_ok=False)
    assert isinstance(named, dict)
    with pytest.raises(ApiError) as caught:
        await ApiClient(creds(standin, controller.a, None, name="example.invalid")).get("/version")
    assert "Hostname mismatch" in str(caught.value)


async def test_a_kubeconfig_file_reviews_itself_as_its_user(standin: str, controller: Controller, tmp_path: Path) -> None:
    a = controller.a
    doc = yaml.safe_load(kubeconfig(a.topo, a.pki, spec_named(a.topo, "admin-user")))
    doc["clusters"][0]["cluster"]["server"] = standin  # the lb address is not on this machine
    path = tmp_path / "admin.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    assert await ApiClient.from_kubeconfig(path).who_am_i() == ("admin", ["system:masters", "system:authenticated"])


def test_an_unusable_kubeconfig_is_one_line_naming_the_file_and_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError) as caught:
        credentials_from_kubeconfig("apiVersion: v1\nkind: Config\ncurrent-context: x\n", "my.kubeconfig")
    assert str(caught.value).startswith("my.kubeconfig: not a usable kubeconfig (missing or bad contexts entry 'x')")
    with pytest.raises(KubeconfigError) as caught:
        ApiClient.from_kubeconfig(tmp_path / "gone.kubeconfig")
    assert str(caught.value).startswith(f"{tmp_path / 'gone.kubeconfig'}: No such file or directory")


def test_credentials_never_show_the_key(controller: Controller) -> None:
    shown = repr(creds("https://127.0.0.1:1", controller.a))
    assert "PRIVATE" not in shown and shown == "Credentials(server='https://127.0.0.1:1', client_cert=True)"


# --- the rbac stage's objects ------------------------------------------------------------------------


@pytest.fixture
def rbac_api() -> Iterator[FakeApi]:
    """An API server that serves RBAC: ClusterRoles and ClusterRoleBindings as the API answers them."""
    fake = FakeApi()
    fake.discovery({GROUP_VERSION: ["clusterroles", "clusterrolebindings"]})
    yield fake
    fake.close()


@pytest.mark.parametrize("minor", [35, 36])
async def test_rbac_objects_are_created_once_read_back_and_left_alone(rbac_api: FakeApi, minor: int, tmp_path: Path) -> None:
    api, objects = rbac_api.client(), wanted_objects(artifacts(tmp_path, minor).topo)
    assert [ref(o).label for o in objects] == [ROLE, BINDING]
    before = await check_objects(api, objects)
    assert [(o.result, o.evidence) for o in before] == [(FAILED, f"{ROLE} is missing"), (FAILED, f"{BINDING} is missing")]  # not unverified
    lines: list[str] = []
    assert await apply_objects(api, objects, lines.append) == 2
    assert [path for path, _ in rbac_api.writes("POST")] == [ref(o).collection for o in objects]
    assert [o.result for o in await check_objects(api, objects)] == [PASSED, PASSED]
    assert await apply_objects(api, objects, lines.append) == 0
    assert (len(rbac_api.writes("POST")), rbac_api.writes("PUT")) == (2, [])
    assert lines == [f"created {ROLE}", f"created {BINDING}"]
    resources = rbac_api.writes("POST")[0][1]["rules"][0]["resources"]
    assert ("nodes/configz" in resources) == (minor >= 36)


async def test_an_rbac_object_changed_on_the_server_is_updated_with_its_resource_version(rbac_api: FakeApi, controller: Controller) -> None:
    api, objects = rbac_api.client(), wanted_objects(controller.a.topo)
    role, binding = objects
    changed = copy.deepcopy(role)
    changed["rules"][0]["verbs"] = ["get"]
    changed["metadata"]["labels"]["added-by-someone"] = "yes"  # extra labels are fine
    rbac_api.hold(changed, ref(role).path)
    rbac_api.hold(binding, ref(binding).path)
    drifted = await check_objects(api, objects)
    assert [(o.result, o.evidence) for o in drifted] == [(FAILED, f"{ROLE} differs at .rules[0].verbs[0]"),
                                                         (PASSED, f"read back from {api.server} as applied")]
    assert await apply_objects(api, objects, lambda line: None) == 1
    [(path, body)] = rbac_api.writes("PUT")
    assert (path, body["rules"], body["metadata"]["resourceVersion"]) == (ref(role).path, role["rules"], "1")
    assert [o.result for o in await check_objects(api, objects)] == [PASSED, PASSED]


@pytest.mark.parametrize(("code", "shown"), [(403, "403 Forbidden"), (500, "500 Internal Server Error")])
async def test_rbac_forbidden_or_broken_is_a_failure_never_unverified(rbac_api: FakeApi, controller: Controller, code: int, shown: str) -> None:
    rbac_api.serve("/apis", {"kind": "Status", "code": code, "message": "clusterroles is forbidden or broken"}, code)
    with pytest.raises(ApiError) as caught:
        await check_objects(rbac_api.client(), wanted_objects(controller.a.topo))
    assert caught.value.status == code and shown in str(caught.value)


async def test_a_group_advertised_without_its_resource_list_is_an_error_not_unverified(rbac_api: FakeApi, controller: Controller) -> None:
    """/apis lists rbac.authorization.k8s.io/v1 but its document is a 404: a bare 404 never makes anything unverified."""
    del rbac_api.docs[f"/apis/{GROUP_VERSION}"]
    api = rbac_api.client()
    with pytest.raises(ApiError) as caught:
        await check_objects(api, wanted_objects(controller.a.topo))
    assert caught.value.status == 404
    assert str(caught.value).startswith(f"GET {api.server}/apis/{GROUP_VERSION}: 404 Not Found: ")


async def test_rbac_is_unverified_with_the_reason_where_discovery_lacks_it(standin: str, controller: Controller) -> None:
    api = ApiClient(creds(standin, controller.a))
    objects = wanted_objects(controller.a.topo)
    outcomes = await check_objects(api, objects)
    reason = f"ClusterRole (clusterroles): the API server does not serve {GROUP_VERSION} (its discovery lists {AUTHN})"
    assert [(o.check, o.result, o.evidence) for o in outcomes] == [(ROLE, UNVERIFIED, reason), (BINDING, UNVERIFIED, reason)]
    lines: list[str] = []
    assert await apply_objects(api, objects, lines.append) == 0
    assert lines == [f"nothing applied: {reason}"]

# --- the frontend and rbac stages where no node is involved -----------------------------------------


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx4ZHd0ZXN0a2V5Zm9yZG9jdW1lbnRhdGlvbm9ubHk"


def endpoint_raw(kind: str, port: int, **extra: dict) -> dict:
    return {"cluster": {"name": f"{kind}-endpoint", "kubernetes_version": f"1.{MINOR}.3"}, "provider": {"kind": kind},
            "network": {"api_port": port}, "versions": {"crictl": f"1.{MINOR}.0"}, "pki": {"key_type": "ecdsa-p256"}, **extra}


def logged(events: list[Event]) -> list[str]:
    """The lines a run logged, in order."""
    return [line for event in events if isinstance(event, LogLines) for line in event.lines]


def sharing_pki(run: RunContext, lone: RunContext) -> RunContext:
    """`run` with `lone`'s PKI in its state folder: the apiserver stand-in's certificate is of that CA."""
    shutil.copytree(lone.cluster.state_dir.pki_dir, run.cluster.state_dir.pki_dir, dirs_exist_ok=True)
    return run


@pytest.fixture(scope="module")
def lone_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunContext, list[Event]]]:
    """machines without an lb host: controller-0 at 127.0.0.1 is the API endpoint, its apiserver a stand-in."""
    root = tmp_path_factory.mktemp("machines")
    hosts = [{"name": "controller-0", "role": "controller", "address": "127.0.0.1", "host_key": HOST_KEY},
             {"name": "worker-0", "role": "worker", "address": "127.0.0.2", "host_key": HOST_KEY}]
    run, events = stage_context(root, endpoint_raw("machines", free_port(), machines={"hosts": hosts}), stage="frontend", pki=True)
    for _ in run_apiserver(place(root, run.artifacts, MINOR), run.config.network.api_port):
        yield run, events


async def test_machines_without_an_lb_use_the_first_controller_and_say_it_is_not_highly_available(
        lone_controller: tuple[RunContext, list[Event]]) -> None:
    (run, events), stage = lone_controller, FrontendStage()
    await stage.apply(run)
    warning = "no lb host: the API endpoint is controller-0 (127.0.0.1), so it is not highly available"
    assert logged(events) == [f"warning: {warning}"]
    [outcome] = await stage.check(run)
    assert (outcome.check, outcome.result) == ("/version through the load balancer", PASSED)
    assert outcome.evidence == f"{run.topo.api_url}/version: v1.{MINOR}.3 — warning: {warning}"


class CloudFrontend:
    """The cloud load balancer part of a provider (the real one is tested in test_gcp_frontend)."""

    def __init__(self) -> None:
        self.calls = 0

    async def ensure_frontend(self, log: Callable[[str], None]) -> None:
        self.calls += 1
        log("forwarding rule ready")

    async def frontend_problems(self) -> list[str]:
        return []


async def test_on_gcp_the_frontend_is_the_providers_load_balancer(lone_controller: tuple[RunContext, list[Event]], tmp_path: Path) -> None:
    lone, _ = lone_controller
    provider = CloudFrontend()
    raw = endpoint_raw("gcp", lone.config.network.api_port, gcp={"load_balancer": "backend-service"})
    run, events = stage_context(tmp_path, raw, provider=provider, stage="frontend")
    run.state.public_address = "127.0.0.1"  # as the compute stage records it
    stage = FrontendStage()
    await stage.apply(sharing_pki(run, lone))
    assert (provider.calls, logged(events)) == (1, ["forwarding rule ready"])
    assert [(o.check, o.result) for o in await stage.check(run)] == [
        ("load balancer resources", PASSED),
        ("/version through the load balancer", PASSED),
    ]


def test_rbac_reaches_a_controller_by_its_external_address_checked_for_the_certificates_name(
        lone_controller: tuple[RunContext, list[Event]], tmp_path: Path) -> None:
    lone, _ = lone_controller
    gcp, _ = stage_context(tmp_path, endpoint_raw("gcp", 6443), external={"controller-0": "203.0.113.7"})
    gcp.state.public_address = "203.0.113.9"
    outside = controller_credentials(sharing_pki(gcp, lone), gcp.topo.controllers[0])
    assert (outside.server, outside.tls_server_name) == ("https://203.0.113.7:6443", "kubernetes")
    inside = controller_credentials(lone, lone.topo.controllers[0])
    assert (inside.server, inside.tls_server_name) == (f"https://127.0.0.1:{lone.config.network.api_port}", None)
    assert inside.cert_pem == lone.artifacts.pki.cert_pem("admin")
