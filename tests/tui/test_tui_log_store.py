"""The pane's bounded memory and line format, and the tree's short addresses."""

from __future__ import annotations

from khwtui.core.events import CheckResult, LogLines
from khwtui.tui.log_store import LineFormat, LogFilter, LogStore
from khwtui.tui.node_tree import short_ip

from .support import T0


def log(node: str, stage: str, *lines: str, stream: str = "out") -> LogLines:
    return LogLines(node, stage, lines, stream, T0)


def test_each_node_and_stage_keeps_a_bounded_tail() -> None:
    store = LogStore(per_key=5)
    store.add(log("worker-0", "workers", *(f"apt {i}" for i in range(8))))
    store.add(log("worker-1", "workers", "only line"))
    kept = store.select(LogFilter(frozenset({"worker-0"})), limit=100)
    assert [e.text for e in kept] == ["apt 3", "apt 4", "apt 5", "apt 6", "apt 7"]


def test_select_merges_tails_in_arrival_order_and_keeps_the_newest() -> None:
    store = LogStore()
    store.add(log("controller-0", "etcd", "a"))
    store.add(log("controller-1", "etcd", "b"))
    store.add(log("controller-0", "control-plane", "c"))
    store.add(log("controller-1", "etcd", "d"))
    assert [e.text for e in store.select(LogFilter(), limit=10)] == ["a", "b", "c", "d"]
    assert [e.text for e in store.select(LogFilter(), limit=2)] == ["c", "d"]
    assert [e.text for e in store.select(LogFilter(stage="etcd"), limit=10)] == ["a", "b", "d"]
    both = LogFilter(frozenset({"controller-0"}), "controller-0", "etcd")
    assert [e.text for e in store.select(both, limit=10)] == ["a"]


def test_lines_with_newlines_and_check_evidence_become_one_entry_per_line() -> None:
    store = LogStore()
    assert [e.text for e in store.add(log("", "pki", "one\ntwo"))] == ["one", "two"]
    check = CheckResult("etcd", "endpoint health", "failed", "controller-1", "$ etcdctl endpoint health\nunhealthy", T0)
    assert [(e.mark, e.text) for e in store.add(check)] == [
        ("✖", "check endpoint health"),
        ("✖", "  $ etcdctl endpoint health"),
        ("✖", "  unhealthy"),
    ]


def test_the_format_drops_the_columns_a_filter_fixes() -> None:
    entry = LogStore().add(log("controller-1", "etcd", "ready", stream="cmd"))[0]
    names = ["controller-0", "controller-1"]
    assert LineFormat.for_filter(LogFilter(), names).line(entry) == "14:13:20 controller-1 etcd          $ ready"
    one_node = LogFilter(frozenset({"controller-1"}), "controller-1")
    assert LineFormat.for_filter(one_node, names).line(entry) == "14:13:20 etcd          $ ready"
    assert LineFormat.for_filter(LogFilter(stage="etcd"), names).line(entry) == "14:13:20 controller-1 $ ready"
    assert LineFormat.for_filter(LogFilter(), names, compact=True).line(entry) == "controller-1 etcd          $ ready"
    fmt = LineFormat.for_filter(LogFilter(), names)
    assert fmt.line(entry)[fmt.mark_column] == "$"


def test_short_addresses_drop_the_octets_the_node_cidr_fixes() -> None:
    assert short_ip("10.240.0.21", "10.240.0.0/24") == ".21"
    assert short_ip("10.240.1.21", "10.240.0.0/23") == ".1.21"
    assert short_ip("192.0.2.10", "10.240.0.0/24") == "192.0.2.10"
