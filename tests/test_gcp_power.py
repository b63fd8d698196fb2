"""`khwtui stop` / `start` on gcp (issue 22): instances.stop and instances.start through the real
google-cloud-compute client against the fake, which models the API's semantics (TERMINATED while
stopped, the ephemeral external address released on stop and a new one given on start)."""

from __future__ import annotations

import pytest
from fakegce import FakeCompute
from test_gcp_provider import PROJECT, gcp_config, mutating, outside, provider, quiet  # noqa: F401 - outside: the offline guard

pytestmark = pytest.mark.usefixtures("outside")


def statuses(fake: FakeCompute) -> set[str]:
    return {vm["status"] for vm in fake.resources("instances")}


async def test_stop_then_start_reads_back_new_external_addresses_and_keeps_the_host_keys() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        before = {ep.name: ep for ep in await provider(config).ensure(quiet)}

        lines: list[str] = []
        await provider(config).stop(lines.append)
        assert statuses(fake) == {"TERMINATED"}
        assert sorted(lines) == ["controller-0: stopped", "worker-0: stopped"]
        assert all("natIP" not in vm["networkInterfaces"][0]["accessConfigs"][0] for vm in fake.resources("instances"))
        assert await provider(config).nodes() == []  # nothing runs to reach

        count = len(fake.requests)
        lines.clear()
        await provider(config).stop(lines.append)  # already stopped: nothing is sent
        assert mutating(fake, count) == [] and sorted(lines) == ["controller-0: already TERMINATED", "worker-0: already TERMINATED"]

        after = {ep.name: ep for ep in await provider(config).start(quiet)}
        assert statuses(fake) == {"RUNNING"}
        for name, ep in after.items():
            assert ep.host_key == before[name].host_key and ep.internal_ip == before[name].internal_ip
            assert ep.external_ip != before[name].external_ip and ep.ssh_host == ep.external_ip
        [rule] = [f for f in fake.resources("firewalls") if f["name"] == "kubernetes-the-hard-way-allow-nodes-api"]
        assert sorted(rule["sourceRanges"]) == sorted(f"{ep.external_ip}/32" for ep in after.values())  # the nodes reach the API again
        stops = [path for method, path in mutating(fake) if path.endswith(("/stop", "/start"))]
        assert sorted(p.rsplit("/", 2)[1:] for p in stops) == [["controller-0", "start"], ["controller-0", "stop"], ["worker-0", "start"], ["worker-0", "stop"]]


async def test_start_of_a_running_cluster_sends_no_start() -> None:
    with FakeCompute(project=PROJECT) as fake:
        config = gcp_config(fake, topology={"controllers": 1, "workers": 1})
        first = await provider(config).ensure(quiet)
        count = len(fake.requests)
        assert await provider(config).start(quiet) == first
        assert mutating(fake, count) == []

