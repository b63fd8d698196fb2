"""The gcp path end to end (issue 8): the real CLI against the fake Compute API, whose instances
are real nspawn nodes (tests/gcp_backing.py), so every SSH command and etcd run on real machines.

The CLI runs in a subprocess as a user would run it, offline: NO_GCE_CHECK=true, an empty
CLOUDSDK_CONFIG, no credentials or project from the environment, the API endpoint on 127.0.0.1
(anonymous credentials) and the nodes on a bridge in network namespaces this test made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml
from cryptography import x509
from fakegce import FakeCompute
from gcp_backing import NodeBacking
from google.auth.credentials import AnonymousCredentials
from localcluster import LocalCluster, keyscan, local_config, status_results
from test_etcd_local import host_etcdctl
from test_gcp_provider import GCP_ENV, KTHW_SCOPES, insert_requests, mutating

from khwtui.artifacts.sshkey import client_key
from khwtui.model import config as config_mod
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers import nspawn
from khwtui.providers.gcp import GcpProvider
from khwtui.providers.gcp_api import KINDS, GceApi

PROJECT = "khwtui-test"
REGION, ZONE = "us-west1", "us-west1-c"
COLLECTIONS = ("networks", "subnetworks", "firewalls", "addresses", "instances")
# Loaded first by the CLI subprocess: records, and refuses, any connection or name lookup that
# leaves 127.0.0.0/8 (a numeric host is checked as it is; a name is refused before any lookup).
TRAFFIC_GUARD = '''
import ipaddress, os, socket, sys

LOG = os.environ["KHWTUI_TEST_TRAFFIC_LOG"]
open(LOG, "a").close()


def _loopback(host):
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _refuse(what):
    with open(LOG, "a") as log:
        log.write(what + "\\n")
    raise OSError("test: no traffic beyond 127.0.0.0/8")


def _hook(event, args):
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6) and not _loopback(args[1][0]):
        _refuse(f"connect {args[1][0]}")
    if event == "socket.getaddrinfo" and args[0] is not None and not _loopback(args[0]):
        _refuse(f"getaddrinfo {args[0]}")
    if event in ("socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr") and not _loopback(args[0]):
        _refuse(f"{event.split('.')[1]} {args[0]}")


sys.addaudithook(_hook)
'''


@pytest.fixture(autouse=True)
def offline_gcloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    go_offline(monkeypatch, tmp_path)


def go_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the CLI subprocesses inherit: no metadata-server probe, an empty gcloud config, no
    credentials, project, region or zone from this machine."""
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    for name in GCP_ENV:
        monkeypatch.delenv(name, raising=False)


def gcp_raw(name: str, controllers: int, workers: int, mirror: dict) -> dict:
    """A gcp config with the versions and binaries the test mirror serves (as local clusters use)."""
    raw = local_config(name, controllers, workers, mirror, provider={"kind": "gcp"})
    del raw["local"]
    return raw


@contextmanager
def gcp_cluster(
    tmp_path: Path, prefix: str, mirror: dict, controllers: int, workers: int, *,
    apt: object | None = None, packages: tuple[str, ...] = (), gcp: dict | None = None, releases_on_bridge: bool = False, **knobs: Any,
) -> Iterator[tuple[FakeCompute, LocalCluster]]:
    """The fake Compute API (`knobs`: its latency and faults) backed by nspawn nodes, and a cluster
    config pointed at it (`gcp`: more of its gcp section); afterwards `down` has run and no host
    object of the prefix is left. The nodes' bridge spans the cluster's node CIDR and the /24
    after it, where a second cluster's instances can live; `apt` and `packages` are the backing's.
    `releases_on_bridge`: the mirror is also served on the bridge, and the config downloads from there."""
    raw = gcp_raw(f"t{prefix}", controllers, workers, mirror)
    bridge = str(ipaddress.IPv4Network(raw["network"]["node_cidr"]).supernet(1))
    # the nodes read their metadata from the fake once it runs, as a guest agent asks the metadata server
    backing = NodeBacking(tmp_path / "instances", prefix, bridge, lambda name: fake.instance_metadata(name), apt=apt, packages=packages)
    if releases_on_bridge:
        backing.serve(mirror["tree"].root)
        urls = raw["binaries"]["urls"]
        raw["binaries"]["urls"] = {name: url.replace(mirror["server"].url, backing.served[-1].url) for name, url in urls.items()}
    try:
        with FakeCompute(project=PROJECT, backing=backing, **knobs) as fake:
            raw["gcp"] = {"project": PROJECT, "region": REGION, "zone": ZONE, "api_endpoint": fake.endpoint, **(gcp or {})}
            cluster = LocalCluster(tmp_path / "c", raw)
            try:
                yield fake, cluster
            finally:
                cluster.down()
    finally:
        backing.close()


def up(cluster: LocalCluster, *args: str) -> None:
    result = cluster.khwtui("up", "--auto", *args)
    assert result.returncode == 0, result.stdout + result.stderr


def cluster_config(cluster: LocalCluster) -> Config:
    return config_mod.load(cluster.config_path)


# --- what the checks read -----------------------------------------------------------------------


def kthw_bodies(config: Config, client_public_key: str, external_ips: list[str]) -> dict[tuple[str, str], dict]:
    """Every insert KTHW's lab 03 makes, as the exact JSON sent (metadata items as a dict), and
    khwtui's rule opening the API port to the nodes' external addresses."""
    topo, cluster, cidr = Topology(config), config.cluster.name, config.network.node_cidr
    names, marker, labels = topo.names, f"khwtui-cluster={cluster}", {"khwtui-cluster": cluster}
    network = f"global/networks/{names.network}"
    ingress = {"network": network, "direction": "INGRESS", "description": marker}
    bodies: dict[tuple[str, str], dict] = {
        ("networks", names.network): {"name": names.network, "autoCreateSubnetworks": False, "description": marker},
        ("subnetworks", names.subnet): {"name": names.subnet, "network": network, "ipCidrRange": cidr, "description": marker},
        ("firewalls", names.allow_internal): {
            "name": names.allow_internal,
            "allowed": [{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}, {"IPProtocol": "icmp"}],
            "sourceRanges": [cidr, config.network.cluster_cidr],
            **ingress,
        },
        ("firewalls", names.allow_external): {
            "name": names.allow_external,
            "allowed": [{"IPProtocol": "tcp", "ports": ["22", "6443"]}, {"IPProtocol": "icmp"}],
            "sourceRanges": ["0.0.0.0/0"],
            **ingress,
        },
        ("addresses", names.address): {"name": names.address, "addressType": "EXTERNAL", "description": marker},
        ("firewalls", names.allow_node_api): {
            "name": names.allow_node_api,
            "allowed": [{"IPProtocol": "tcp", "ports": ["6443"]}],
            "sourceRanges": sorted((f"{ip}/32" for ip in external_ips), key=ipaddress.IPv4Network),
            "targetTags": ["controller"],
            **ingress,
        },
    }
    for node in topo.nodes:
        pods = {"pod-cidr": node.pod_cidr} if node.pod_cidr else {}
        bodies["instances", node.name] = {
            "name": node.name,
            "machineType": f"zones/{ZONE}/machineTypes/e2-standard-2",
            "canIpForward": True,
            "tags": {"items": [cluster, node.role]},
            "labels": labels,
            "metadata": pods | {"ssh-keys": f"khwtui:{client_public_key}", "enable-oslogin": "FALSE", "enable-guest-attributes": "TRUE"},
            "disks": [
                {
                    "boot": True,
                    "autoDelete": True,
                    "type": "PERSISTENT",
                    "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12", "diskSizeGb": "50", "labels": labels},
                }
            ],
            "networkInterfaces": [
                {
                    "subnetwork": f"regions/{REGION}/subnetworks/{names.subnet}",
                    "networkIP": node.internal_ip,
                    "accessConfigs": [{"name": "external-nat", "type": "ONE_TO_ONE_NAT"}],
                }
            ],
            "serviceAccounts": [{"email": "default", "scopes": KTHW_SCOPES}],
        }
    return bodies


def as_sent(body: dict) -> dict:
    """An insert body with its metadata items as a dict (their order means nothing to GCE)."""
    if "metadata" not in body:
        return body
    return {**body, "metadata": {item["key"]: item["value"] for item in body["metadata"]["items"]}}


def assert_exactly_the_kthw_resources(fake: FakeCompute, cluster: LocalCluster) -> None:
    """The plan's resources, each inserted once (every retry with its one requestId) with KTHW's
    properties field by field, and nothing else exists (boot disks only with their instances)."""
    config = cluster_config(cluster)
    _, public_key = client_key(cluster.state_dir / "ssh")
    nat = [vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"] for vm in fake.resources("instances")]
    wanted = kthw_bodies(config, public_key, nat)
    plan = GcpProvider(config, Topology(config), cluster.state_dir, public_key).plan()
    assert {(KINDS[c].noun, name) for c, name in wanted} == {(r.kind, r.name) for r in plan.resources if not r.stage}
    sent = insert_requests(fake)
    assert sorted(sent) == sorted(wanted)
    for key, requests in sent.items():
        assert len({r.query["requestId"] for r in requests}) == 1, key
        assert [as_sent(r.body) for r in requests] == [wanted[key]] * len(requests), key
    exists = {(c, r["name"]) for c in KINDS for r in fake.resources(c) if c != "disks"}
    assert exists == set(wanted)
    assert sorted(d["name"] for d in fake.resources("disks")) == sorted(n.name for n in Topology(config).nodes)


def assert_host_keys_pinned_from_guest_attributes(fake: FakeCompute, cluster: LocalCluster) -> None:
    """state pins what the guest attributes publish, and each node really presents that key."""
    api = GceApi(PROJECT, REGION, ZONE, fake.endpoint, AnonymousCredentials())
    served = {vm["name"]: vm["networkInterfaces"][0] for vm in fake.resources("instances")}
    nodes = cluster.state()["nodes"]
    assert sorted(nodes) == sorted(served)
    for name, node in nodes.items():
        published = asyncio.run(api.host_keys(name))
        assert node["host_key"] == f"ssh-ed25519 {published['ssh-ed25519']}", name
        nic = served[name]
        assert (node["internal_ip"], node["external_ip"], node["ssh_host"]) == (nic["networkIP"], nic["accessConfigs"][0]["natIP"], nic["accessConfigs"][0]["natIP"])
        assert keyscan(node["ssh_host"]) == node["host_key"], name


def san_ips(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return {str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)}


def kubeconfig_server(path: Path) -> str:
    return yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"]


def assert_assigned_addresses_in_certificates_and_kubeconfigs(fake: FakeCompute, cluster: LocalCluster) -> None:
    [static] = [a["address"] for a in fake.resources("addresses")]
    assert ipaddress.ip_address(static).is_loopback  # the fake's "external" range
    state, pki, kubeconfigs = cluster.state(), cluster.state_dir / "pki", cluster.state_dir / "kubeconfigs"
    assert state["public_address"] == static
    assert static in san_ips(pki / "kubernetes.pem")
    workers = {name: node for name, node in state["nodes"].items() if node["role"] == "worker"}
    assert workers
    for name, node in workers.items():
        assert kubeconfig_server(kubeconfigs / f"{name}.kubeconfig") == f"https://{static}:6443"
        assert {node["external_ip"], node["internal_ip"]} <= san_ips(pki / f"{name}.pem")
    assert kubeconfig_server(kubeconfigs / "kube-proxy.kubeconfig") == f"https://{static}:6443"


def assert_healthy_etcd(cluster: LocalCluster, mirror: dict, tmp_path: Path) -> None:
    health = host_etcdctl(cluster, mirror, tmp_path, "endpoint", "health")
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = host_etcdctl(cluster, mirror, tmp_path, "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["controller-0", "controller-1", "controller-2"]


def assert_stop_and_start_leave_status_as_it_was(fake: FakeCompute, cluster: LocalCluster, mirror: dict, tmp_path: Path) -> None:
    """`stop` stops every instance through the API, `start` brings them back, and without any `up`
    in between `status` exits as before, with the same probes passing (issue 22)."""
    before = status_results(cluster)
    stopped = cluster.khwtui("stop", "--yes")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "still billed while stopped: the boot disks" in stopped.stdout
    assert {i["status"] for i in fake.resources("instances")} == {"TERMINATED"}
    started = cluster.khwtui("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert {i["status"] for i in fake.resources("instances")} == {"RUNNING"}
    assert status_results(cluster) == before
    assert_healthy_etcd(cluster, mirror, tmp_path)


# --- on real nodes ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_up_until_etcd_builds_on_the_instances_a_second_run_changes_nothing_and_down_removes_them(tmp_path: Path, unique_prefix: str, release_mirror: dict) -> None:
    with gcp_cluster(tmp_path, unique_prefix, release_mirror, 3, 1) as (fake, cluster):
        up(cluster, "--until", "etcd")
        assert_exactly_the_kthw_resources(fake, cluster)
        assert_host_keys_pinned_from_guest_attributes(fake, cluster)
        assert_assigned_addresses_in_certificates_and_kubeconfigs(fake, cluster)
        assert_healthy_etcd(cluster, release_mirror, tmp_path)

        before = len(fake.requests)
        up(cluster, "--until", "etcd")
        assert len(fake.requests) > before and mutating(fake, before) == []

        assert_stop_and_start_leave_status_as_it_was(fake, cluster, release_mirror, tmp_path)

        down = cluster.khwtui("down", "--yes")
        assert down.returncode == 0, down.stdout + down.stderr
        assert [r for c in KINDS for r in fake.resources(c)] == []
        shared = nspawn.Names(unique_prefix)  # the bridge and its guard rules stay until the backing closes
        assert sorted(o.name for o in nspawn.discover(unique_prefix)) == sorted([shared.bridge, shared.guard_chain])


@pytest.mark.integration
def test_with_faults_and_lost_replies_the_same_run_makes_exactly_the_same_resources(tmp_path: Path, unique_prefix: str, release_mirror: dict) -> None:
    with gcp_cluster(tmp_path, unique_prefix, release_mirror, 3, 1, fault_rate=0.1, seed=8) as (fake, cluster):
        for collection in COLLECTIONS:
            fake.lose_replies("POST", rf"/{collection}$")  # carried out, but the client sees a 503
        up(cluster, "--until", "etcd")

        refused = [r.status for r in fake.requests if not r.lost_reply]  # the random faults
        assert refused.count(429) > 0 and refused.count(503) > 0
        lost = [r for r in fake.requests if r.lost_reply]
        assert sorted(r.path.rsplit("/", 1)[1] for r in lost) == sorted(COLLECTIONS)
        assert_exactly_the_kthw_resources(fake, cluster)
        assert_healthy_etcd(cluster, release_mirror, tmp_path)


@pytest.mark.integration
def test_closing_numbers_compute_of_three_plus_three_with_two_second_operations(tmp_path: Path, unique_prefix: str, release_mirror: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with gcp_cluster(tmp_path, unique_prefix, release_mirror, 3, 3, op_latency=2.0) as (fake, cluster):
        started = time.monotonic()
        up(cluster, "--only", "compute")
        wall = time.monotonic() - started

        stage = cluster.state()["stages"]["compute"]
        operations = fake.operation_seconds()
        inserts = [seconds for kind, seconds in operations if kind == "instances.insert"]
        assert len(inserts) == 6 and len(fake.resources("instances")) == 6
        assert fake.max_in_flight("instances.insert") == 6
        with capsys.disabled():
            print(
                f"\ncompute 3+3, 2 s per operation: {wall:.1f} s wall ({stage['finished'] - stage['started']:.1f} s in the stage); "
                f"{len(operations)} operations summing to {sum(s for _, s in operations):.1f} s, "
                f"of which {len(inserts)} instance inserts {sum(inserts):.1f} s, all 6 in flight at once"
            )


# --- no credentials, no project -----------------------------------------------------------------


@dataclass(frozen=True)
class TrafficGuard:
    """TRAFFIC_GUARD as the sitecustomize of a subprocess, and what it refused."""

    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "refused.log"

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(self.folder), os.environ.get("PYTHONPATH", "")]))
        return {**os.environ, "PYTHONPATH": path, "KHWTUI_TEST_TRAFFIC_LOG": str(self.log)}

    def refused(self) -> list[str]:
        return self.log.read_text().splitlines()  # the guard creates the file as it loads


@pytest.fixture
def guard(tmp_path: Path) -> TrafficGuard:
    """A guard proven to load and refuse (a numeric host: nothing is looked up or sent)."""
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(TRAFFIC_GUARD)
    found = TrafficGuard(folder)
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('192.0.2.1', 443)"], capture_output=True, check=False, env=found.env())
    assert probe.returncode == 1 and found.refused() == ["getaddrinfo 192.0.2.1"]
    found.log.write_text("")
    return found


def up_offline(tmp_path: Path, guard: TrafficGuard, gcp: dict) -> subprocess.CompletedProcess[str]:
    """`khwtui up --auto --until etcd` for a 3 + 1 gcp config, on a fresh state folder, guarded."""
    config = tmp_path / "cluster.toml"
    config.write_text(tomli_w.dumps({"provider": {"kind": "gcp"}, "gcp": gcp, "topology": {"controllers": 3, "workers": 1}}))
    argv = [sys.executable, "-m", "khwtui", "up", "--auto", "--until", "etcd", "--config", str(config), "--state-dir", str(tmp_path / "state")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=guard.env(), check=False)


def test_without_credentials_up_says_so_in_one_line_with_the_fix_and_exits_2_sending_nothing(tmp_path: Path, guard: TrafficGuard) -> None:
    result = up_offline(tmp_path, guard, {"project": PROJECT})  # Google's own endpoint: real credentials needed
    [line] = result.stderr.splitlines()
    assert "no Google credentials" in line and "fix: run `gcloud auth application-default login`" in line and "GOOGLE_APPLICATION_CREDENTIALS" in line
    assert result.returncode == 2
    assert guard.refused() == []


def test_without_a_project_up_says_so_in_one_line_with_the_fix_and_exits_2_sending_nothing(tmp_path: Path, guard: TrafficGuard) -> None:
    with FakeCompute(project=PROJECT) as fake:
        result = up_offline(tmp_path, guard, {"api_endpoint": fake.endpoint})
        assert fake.requests == []
    [line] = result.stderr.splitlines()
    assert line.endswith("gcp.project: no GCP project is set; fix: set gcp.project in the config, or CLOUDSDK_CORE_PROJECT")
    assert result.returncode == 2
    assert guard.refused() == []


# --- an API that cannot be used, a quota too small: exit 2, one line, nothing created -----------------


def closed_port() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    ("knobs", "project", "wanted"),
    [
        ({"refuse": "credentials"}, PROJECT, "Google credentials were refused"),
        ({"refuse": "api-disabled"}, PROJECT, "gcp.project: the Compute Engine API is not enabled in project khwtui-test"),
        ({}, "khwtui-nosuch", "gcp.project: project khwtui-nosuch does not exist or these credentials cannot see it; fix: "),
        (None, PROJECT, "gcp.api_endpoint: no connection to the Compute API"),
        ({"quotas": {"DISKS_TOTAL_GB": 100}}, PROJECT, "quota DISKS_TOTAL_GB of region us-west1: 200 more needed, 100 of 100 free; fix: "),
    ],
    ids=["401", "403-accessNotConfigured", "404-project", "connection-refused", "disks-quota"],
)
def test_an_api_that_cannot_be_used_or_a_small_quota_stops_up_with_one_line_and_nothing_created(
    tmp_path: Path, guard: TrafficGuard, knobs: dict | None, project: str, wanted: str
) -> None:
    with FakeCompute(project=PROJECT, **(knobs or {})) as fake:
        endpoint = fake.endpoint if knobs is not None else closed_port()
        result = up_offline(tmp_path, guard, {"project": project, "api_endpoint": endpoint, "region": REGION, "zone": ZONE})
        assert mutating(fake) == [] and fake.resources("networks") == []
    [line] = result.stderr.splitlines()
    assert wanted in line and "; fix: " in line, line
    assert result.returncode == 2
    assert guard.refused() == []
