"""Open a cluster: its validated config, its state folder and the topology it implies.

Every command starts here, so the CLI, the engine and the TUI see the same addresses: the
ones the config fixes plus the ones learned at run time and saved in state.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from khwtui.model import config as config_mod
from khwtui.model.config import Config
from khwtui.model.state import State, StateDir, default_state_dir
from khwtui.model.topology import Addresses, Topology, check_names


@dataclass
class Cluster:
    config: Config
    state_dir: StateDir
    state: State

    @property
    def topology(self) -> Topology:
        return topology_from_state(self.config, self.state)


def topology_from_state(config: Config, state: State, public_address: str | None = None) -> Topology:
    """The topology with the external and public addresses saved by the compute stage."""
    external = {name: node.external_ip for name, node in state.nodes.items() if node.external_ip}
    public = public_address or state.public_address or None
    return Topology(config, Addresses(external=external, public=public))


def open_cluster(config_path: str | None, state_dir: str | None) -> Cluster:
    """Load the config and the cluster's saved state (nothing is written)."""
    config = config_mod.load(config_path)
    check_names(config)  # the derived names, checked where they are made
    folder = StateDir(Path(state_dir) if state_dir else default_state_dir(config.cluster.name))
    return Cluster(config, folder, folder.load())
