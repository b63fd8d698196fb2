"""The kernel settings local nodes' kubelets need, set on the host and put back by the last `down`
(on a copy of /proc/sys and a record in a temporary folder: these tests never touch the host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from khwtui.providers.host_tunables import KUBELET_TUNABLES, HostTunables

HOST = {"vm.overcommit_memory": "0", "vm.panic_on_oom": "0", "kernel.panic": "1", "kernel.panic_on_oops": "0",
        "kernel.keys.root_maxkeys": "1000000", "kernel.keys.root_maxbytes": "25000000"}


@pytest.fixture
def host(tmp_path: Path) -> HostTunables:
    for key, value in HOST.items():
        path = tmp_path / "sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return HostTunables(tmp_path / "sys", tmp_path / "run" / "kernel-tunables.toml")


def values(host: HostTunables) -> dict[str, str]:
    return {key: host.read(key) for key in HOST}


def test_the_plan_names_exactly_the_settings_that_differ(host: HostTunables) -> None:
    assert host.to_change() == {"vm.overcommit_memory": "0", "kernel.panic": "1", "kernel.panic_on_oops": "0"}


def test_hold_sets_what_the_kubelet_needs_and_the_last_release_puts_back_what_was_there(host: HostTunables) -> None:
    changes = host.hold("kh000001")
    assert [c.split()[2] for c in changes] == ["vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops"]
    assert values(host) == KUBELET_TUNABLES and host.to_change() == {}
    assert host.hold("kh000002") == []  # already set: nothing to change, but it holds them too
    assert host.release("kh000001", present={"kh000002"}) == []
    assert values(host) == KUBELET_TUNABLES  # kh000002's kubelets still run
    assert host.held_by("kh000002") and not host.held_by("kh000001")
    assert host.release("kh000002", present=set()) == [
        "kernel setting vm.overcommit_memory back to 0", "kernel setting kernel.panic back to 1", "kernel setting kernel.panic_on_oops back to 0"]
    assert values(host) == HOST and not host.record.exists()


def test_a_holder_with_nothing_left_on_the_host_does_not_keep_the_settings(host: HostTunables) -> None:
    host.hold("kh000001")
    host.hold("kh000002")  # then its nodes and links were removed without a down
    host.release("kh000001", present=set())
    assert values(host) == HOST


def test_a_setting_someone_changed_since_is_theirs_and_left_alone(host: HostTunables) -> None:
    host.hold("kh000001")
    (host.proc_sys / "kernel/panic").write_text("30")
    assert host.release("kh000001", present=set()) == [
        "kernel setting vm.overcommit_memory back to 0", "kernel setting kernel.panic_on_oops back to 0"]
    assert host.read("kernel.panic") == "30"


def test_release_without_a_record_changes_nothing(host: HostTunables) -> None:
    assert host.release("kh000001", present=set()) == [] and values(host) == HOST
