"""The etcd half of the smoke test's encryption check, on a real etcd (issue 7): values written
into a local cluster's etcd the way the apiserver stores Secrets, read back by the check with
etcdctl on the controller over SSH, and judged with the cluster's own key from the state folder.

Only the value encrypted with the cluster's key in the apiserver's format passes; a plaintext
Secret and one with the right prefix but another key fail, each saying why.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shlex
from collections.abc import AsyncIterator, Iterator

import pytest
from localcluster import LocalCluster, built_until

from khwtui.artifacts.encryption_check import encode
from khwtui.model.cluster import open_cluster
from khwtui.stages.etcd import etcdctl
from khwtui.stages.smoke import ENCRYPTED, SECRET_VALUE, encrypted_at_rest, etcd_key
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.remote_factory import make_remote

pytestmark = pytest.mark.integration

# The start of a Secret as the apiserver serializes it (protobuf with the "k8s\0" magic), holding the value.
SERIALIZED = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x32\n\x19\n\x0ekhwtui-at-rest\x12\x07default\x12\x15\n\x05mykey\x12\x13" + SECRET_VALUE


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, release_mirror: dict) -> Iterator[LocalCluster]:
    with built_until(tmp_path_factory.mktemp("at-rest") / "c", release_mirror, 1, 1, "etcd") as built:
        yield built


@pytest.fixture
async def run(cluster: LocalCluster) -> AsyncIterator[RunContext]:
    opened = open_cluster(str(cluster.config_path), str(cluster.state_dir))
    ctx = RunContext(opened, lambda event: None, None, lambda log: make_remote(opened, log))
    yield ctx
    await ctx.close()


async def put(run: RunContext, key: str, value: bytes) -> None:
    """etcdctl put with the value on stdin (binary-safe), on the controller, with the cluster's certificates."""
    command = f"printf %s {shlex.quote(base64.b64encode(value).decode())} | base64 -d | {etcdctl('put', key)}"
    result = await run.sh(run.topo.controllers[0].name, command, check=False, timeout=60)
    assert (result.exit_status, result.stdout.strip()) == (0, "OK"), result.stderr


@pytest.mark.parametrize("provider", ["aescbc", "secretbox"])
async def test_only_the_value_encrypted_with_the_clusters_key_passes(run: RunContext, provider: str) -> None:
    key = run.artifacts.encryption_key  # the cluster's real key, from its state folder
    config = dataclasses.replace(run.config, encryption=dataclasses.replace(run.config.encryption, provider=provider))
    run.cluster.config = config
    values = {
        "encrypted": encode(provider, key, SERIALIZED),
        "plaintext": SERIALIZED,
        "wrong-key": encode(provider, os.urandom(32), SERIALIZED),
    }
    outcomes = {}
    for name, value in values.items():
        await put(run, etcd_key("default", f"{provider}-{name}"), value)
        outcomes[name] = await encrypted_at_rest(run, etcd_key("default", f"{provider}-{name}"), SECRET_VALUE)
    assert {name: o.result for name, o in outcomes.items()} == {"encrypted": "passed", "plaintext": "failed", "wrong-key": "failed"}
    assert all(o.check == ENCRYPTED and o.node == "controller-0" for o in outcomes.values())
    head = f"k8s:enc:{provider}:v1:key1:"
    assert f"{len(values['encrypted'])} bytes: {head} + " in outcomes["encrypted"].evidence
    assert "decrypts with the cluster's key to the secret's value" in outcomes["encrypted"].evidence
    assert outcomes["plaintext"].evidence.splitlines()[-1] == (
        "the secret is stored in plaintext in etcd (without any k8s:enc: prefix): its value 'khwtui-smoke-mydata' is readable")
    assert f"has the {head} prefix but does not decrypt with this cluster's key" in outcomes["wrong-key"].evidence


async def test_a_key_that_etcd_does_not_hold_fails_saying_the_secret_is_not_stored(run: RunContext) -> None:
    outcome = await encrypted_at_rest(run, etcd_key("default", "never-written"), SECRET_VALUE)
    assert outcome.result == "failed"
    assert outcome.evidence.splitlines() == [
        "$ etcdctl get /registry/secrets/default/never-written --write-out=json",
        "no such key in etcd: the secret is not stored where the apiserver keeps secrets"]
