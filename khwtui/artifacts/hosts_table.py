"""Every node's name in every node's /etc/hosts, as KTHW does: a block between markers that name the
cluster, replaced only when it differs and removed by `down` on hosts khwtui does not delete.

The API server reaches kubelets (logs, exec, port-forward) by the hostname they register with;
nothing else makes `worker-0` resolvable on machines of your own.
"""

from __future__ import annotations

import shlex

from khwtui.artifacts.render import render
from khwtui.model.topology import Topology

HOSTS = "/etc/hosts"
PRESENT, CHANGED = "hosts-table=present", "hosts-table=changed"


def markers(cluster: str) -> tuple[str, str]:
    return f"# BEGIN khwtui {cluster}: node names", f"# END khwtui {cluster}"


def hosts_block(topo: Topology) -> str:
    begin, end = markers(topo.config.cluster.name)
    return render("hosts-block.j2", begin=begin, end=end, nodes=topo.nodes).rstrip("\n")


def _lines(cluster: str, path: str, inside: bool) -> str:
    """awk printing the lines of `path` inside the cluster's block, or every line outside it."""
    begin, end = markers(cluster)
    keep = "f" if inside else "!f"
    return f"awk -v b={shlex.quote(begin)} -v e={shlex.quote(end)} '$0==b{{f=1}} {keep}{{print}} $0==e{{f=0}}' {shlex.quote(path)}"


def _rewrite(path: str, producer: str) -> str:
    """`producer`'s output becomes the file's content in place (it keeps its inode, owner and mode)."""
    temp = shlex.quote(f"{path}.khwtui")
    return f"{{ {producer}; }} > {temp} && cat {temp} > {shlex.quote(path)} && rm -f {temp}"


def check_command(topo: Topology, path: str = HOSTS) -> str:
    """Prints PRESENT when `path` holds exactly this cluster's block."""
    block = shlex.quote(hosts_block(topo))
    return f'if [ "$({_lines(topo.config.cluster.name, path, True)})" = {block} ]; then echo {PRESENT}; fi'


def ensure_command(topo: Topology, path: str = HOSTS) -> str:
    """Replace the cluster's block when it differs; prints CHANGED when it wrote."""
    cluster, block = topo.config.cluster.name, shlex.quote(hosts_block(topo))
    producer = f"{_lines(cluster, path, False)}; printf '%s\\n' {block}"
    return f'if [ "$({_lines(cluster, path, True)})" != {block} ]; then {_rewrite(path, producer)} && echo {CHANGED}; fi'


def remove_command(cluster: str, path: str = HOSTS) -> str:
    """Remove the cluster's block, leaving every other line as it was."""
    return _rewrite(path, _lines(cluster, path, False))
