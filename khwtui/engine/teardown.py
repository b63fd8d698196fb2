"""What `down` needs besides the provider: the confirmation, and a state that forgets the nodes."""

from __future__ import annotations

from typing import TextIO

from khwtui.core.errors import UsageError
from khwtui.core.events import PENDING
from khwtui.model.cluster import Cluster


def confirm(cluster: str, stdin: TextIO, command: str = "down", outcome: str = "nothing was deleted", doing: str = "delete it") -> bool:
    """Ask for the cluster name; with no terminal to ask on, refuse (exit 2) instead of waiting."""
    if not stdin.isatty():
        raise UsageError(f"{command} needs a confirmation and there is no terminal to ask on; {outcome}. Run `khwtui {command} --yes`")
    answer = input(f"type the cluster name ({cluster}) to {doing}: ")
    return answer.strip() == cluster


def forget_nodes(cluster: Cluster) -> None:
    """The nodes are gone: drop their pinned keys and records, and mark every stage pending.

    The PKI, the encryption key and the SSH client key stay, so a rebuild reuses them.
    """
    state = cluster.state
    state.nodes.clear()
    state.public_address = ""
    for record in state.stages.values():
        record.status, record.detail, record.checks = PENDING, "torn down", []
        record.started = record.finished = None
    cluster.state_dir.save(state)
