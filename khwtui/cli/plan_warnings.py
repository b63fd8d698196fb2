"""What `plan` and `up` warn about in one line each: companion versions below what upstream states
for the configured Kubernetes minor, and an etcd member count whose quorum gains nothing.

Warnings, not errors: the test beds (and Debian users) run Debian's etcd 3.4.23 and containerd
1.6.20, which work for what KTHW does while missing upstream's floors.
"""

from __future__ import annotations

from khwtui.model.config import Config, version_tuple

Version = tuple[int, int, int]

# KEP-2340 (Consistent Reads from Cache, on by default since Kubernetes 1.31): the apiserver relies on
# etcd's watch progress notifications, fixed in etcd 3.4.31 and 3.5.13 (kubernetes/enhancements
# keps/sig-api-machinery/2340-Consistent-reads-from-cache).
ETCD_FLOORS: tuple[Version, ...] = ((3, 5, 13), (3, 4, 31))

# containerd's RELEASES.md, "Kubernetes support" (containerd main at 301026e, 2026-08): the releases
# each Kubernetes minor is supported with. 1.37 is not listed yet; it gets 1.36's row.
CONTAINERD_FLOORS: dict[int, tuple[Version, ...]] = {
    34: ((2, 1, 3), (2, 0, 6), (1, 7, 28), (1, 6, 39)),
    35: ((2, 2, 0), (2, 1, 5), (1, 7, 28)),
    36: ((2, 3, 0), (2, 2, 0)),
    37: ((2, 3, 0), (2, 2, 0)),
}


def meets(version: Version, floors: tuple[Version, ...]) -> bool:
    """At or above the floor of its own release line, or on a line newer than every listed one."""
    same_line = [floor for floor in floors if floor[:2] == version[:2]]
    if same_line:
        return version >= same_line[0]
    return version[:2] > max(floor[:2] for floor in floors)


def _show(floors: tuple[Version, ...]) -> str:
    return ", ".join(f"{'.'.join(map(str, floor))}+" for floor in floors)


def version_warnings(config: Config) -> list[str]:
    """One line per companion version below upstream's floor for this Kubernetes minor."""
    out = []
    etcd, containerd = config.versions.etcd, config.versions.containerd
    if not meets(version_tuple(etcd), ETCD_FLOORS):
        out.append(f"versions.etcd {etcd} is below {_show(ETCD_FLOORS)}, which the API server's consistent reads from its cache "
                   "(KEP-2340) need; use etcd 3.5.13 or newer")
    floors = CONTAINERD_FLOORS[config.minor]
    if not meets(version_tuple(containerd), floors):
        out.append(f"versions.containerd {containerd} is not among the releases containerd supports for Kubernetes 1.{config.minor} "
                   f"({_show(floors)}); use one of those")
    return out


def quorum_warning(controllers: int) -> str | None:
    """An even etcd cluster tolerates no more lost members than one member fewer."""
    if controllers < 2 or controllers % 2:
        return None
    tolerated = (controllers - 1) // 2
    return (f"{controllers} controllers make an etcd cluster of {controllers} members, which tolerates {tolerated} lost "
            f"member{'s' if tolerated != 1 else ''}, no more than {controllers - 1} would; an odd count such as {controllers + 1} "
            "adds tolerance")


def plan_warnings(config: Config, controllers: int) -> list[str]:
    quorum = quorum_warning(controllers)
    return version_warnings(config) + ([quorum] if quorum else [])
