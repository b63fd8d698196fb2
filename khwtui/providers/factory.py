"""Pick the provider for a cluster's `provider.kind`."""

from __future__ import annotations

from khwtui.artifacts.sshkey import client_key
from khwtui.model.cluster import Cluster
from khwtui.providers.base import Provider


def make_provider(cluster: Cluster, public_key: str | None = None) -> Provider:
    """The provider object for this cluster; imports only the module it needs.

    `public_key=""` is for planning only: nothing is written (the SSH key is made on first real use).
    """
    kind = cluster.config.provider.kind
    if public_key is None:
        _, public_key = client_key(cluster.state_dir.ssh_dir, f"khwtui@{cluster.config.cluster.name}")
    if kind == "local":
        from khwtui.providers.local import LocalProvider

        return LocalProvider(cluster.config, cluster.topology, cluster.state_dir.path, public_key)
    if kind == "machines":
        from khwtui.providers.machines import MachinesProvider

        return MachinesProvider(cluster.config, cluster.topology, cluster.state_dir.path, public_key)
    from khwtui.providers.gcp import GcpProvider

    return GcpProvider(cluster.config, cluster.topology, cluster.state_dir.path, public_key)
