"""Refuse an `up` whose config drops nodes the state still holds, or changes the controller count.

Scale-in (cordon, drain, Node deletion, then removing the node) and etcd membership changes are not
built yet; without this guard a lowered count left the removed nodes running, routed and billed
with nothing said.
"""

from __future__ import annotations

from khwtui.core.errors import ConfigError
from khwtui.model.state import State
from khwtui.model.topology import Topology


def refuse_unsupported_resize(state: State, topo: Topology) -> None:
    """Raise a one-line ConfigError (exit 2) before any stage runs; a first build or scale-out passes."""
    had = {name: rec.role for name, rec in state.nodes.items()}
    had_controllers = sum(1 for role in had.values() if role == "controller")
    if had_controllers and had_controllers != len(topo.controllers):
        raise ConfigError(
            "topology.controllers",
            f"changing the controller count of a running cluster ({had_controllers} -> {len(topo.controllers)})"
            " needs etcd membership changes, which are not yet supported",
            f"set it back to {had_controllers}",
        )
    wanted = {n.name for n in topo.nodes}
    gone = sorted(name for name, role in had.items() if role == "worker" and name not in wanted)
    if gone:
        raise ConfigError(
            "topology.workers",
            f"removing workers ({', '.join(gone)}) from a running cluster is not yet supported",
            f"set it back to {len(topo.workers) + len(gone)}, or run `khwtui down` to remove the whole cluster",
        )
