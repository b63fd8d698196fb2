"""Build the SSH runner for a cluster: its client key, and log lines routed to the run's log."""

from __future__ import annotations

from collections.abc import Callable

from khwtui.artifacts.sshkey import client_key
from khwtui.model.cluster import Cluster
from khwtui.transport.remote import Remote


def make_remote(cluster: Cluster, log: Callable[[str, str, str], None]) -> Remote:
    """`log(node, line, stream)` receives every streamed line; Remote calls (node, stream, line)."""
    key_path, _ = client_key(cluster.state_dir.ssh_dir, f"khwtui@{cluster.config.cluster.name}")
    return Remote(key_path, on_line=lambda node, stream, line: log(node, line, stream))
