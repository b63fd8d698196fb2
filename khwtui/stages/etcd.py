"""etcd: the TLS cluster on every controller, members started at once (KTHW lab 7).

Starting members one after another is the classic KTHW failure (a Type=notify unit blocks
until quorum), so every member is started with --no-block in the same moment and health is
then polled on all of them.
"""

from __future__ import annotations

import shlex

from khwtui.artifacts.nodefiles import ETCD_BINARY, ETCD_DATA_DIR, ETCD_DIR, etcd_files
from khwtui.core.errors import StageFailed
from khwtui.core.outcome import Outcome
from khwtui.core.waiting import poll
from khwtui.model.config import Config
from khwtui.model.topology import Node
from khwtui.stages.base import Stage
from khwtui.toolkit.release_install import ReleaseSpec, StageReleases
from khwtui.toolkit.run_context import RunContext

ETCDCTL = "/usr/local/bin/etcdctl"
ETCDUTL = "/usr/local/bin/etcdutl"  # the offline tool (snapshot restore) from etcd 3.5; 3.4 has it in etcdctl
UNIT = "etcd"
START_TIMEOUT = 180


def etcdctl(*args: str) -> str:
    """etcdctl against the node's own member with the cluster's certificates (KTHW's check)."""
    tls = [f"--cacert={ETCD_DIR}/ca.pem", f"--cert={ETCD_DIR}/kubernetes.pem", f"--key={ETCD_DIR}/kubernetes-key.pem"]
    return shlex.join(["env", "ETCDCTL_API=3", ETCDCTL, "--endpoints=https://127.0.0.1:2379", *tls, *args])


def has_etcdutl(version: str) -> bool:
    """etcd ships etcdutl from 3.5 (and 3.6 removed `etcdctl snapshot restore`)."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (3, 5)


async def wait_member_healthy(run: RunContext, node: Node) -> None:
    """Poll `endpoint health` on the node's own member; on timeout, fail with its journal."""

    async def healthy() -> bool | None:
        result = await run.sh(node.name, etcdctl("endpoint", "health"), check=False, timeout=30)
        return True if result.exit_status == 0 else None

    try:
        await poll(healthy, timeout=START_TIMEOUT, interval=1.0, what=f"etcd on {node.name} to be healthy")
    except TimeoutError as exc:
        journal = await run.sh(node.name, f"journalctl -u {UNIT} -n 20 --no-pager", check=False)
        raise StageFailed(str(exc), node.name, tuple(journal.stdout.splitlines()[-10:])) from None


def etcd_release(config: Config) -> list[ReleaseSpec]:
    """etcd and etcdctl (and etcdutl from 3.5) from the release tarball."""
    targets = [("etcd", ETCD_BINARY), ("etcdctl", ETCDCTL)]
    if has_etcdutl(config.versions.etcd):
        targets.append(("etcdutl", ETCDUTL))
    return [ReleaseSpec("etcd", config.versions.etcd, tuple(targets))]


class EtcdStage(Stage):
    def __init__(self) -> None:
        self.releases = StageReleases(etcd_release)

    async def check(self, run: RunContext) -> list[Outcome]:
        outcomes = await run.each(run.topo.controllers, lambda node: self._check_node(run, node))
        return [o for per_node in outcomes for o in per_node] + await self._check_members(run)

    async def _check_node(self, run: RunContext, node: Node) -> list[Outcome]:
        drift = await self.releases.drifted(run, node.name) + [f.path for f in await run.drifted(node.name, etcd_files(run.artifacts, node))]
        if drift:
            return [Outcome.failed("etcd files", node.name, "differ: " + ", ".join(drift))]
        health = await run.sh(node.name, etcdctl("endpoint", "health"), check=False, timeout=30)
        if health.exit_status != 0:
            return [Outcome.failed("etcd member healthy", node.name, f"$ etcdctl endpoint health\n{health.stdout}{health.stderr}")]
        return [Outcome.passed("etcd member healthy", node.name, health.stdout.strip() or health.stderr.strip())]

    async def _check_members(self, run: RunContext) -> list[Outcome]:
        first = run.topo.controllers[0].name
        listing = await run.sh(first, etcdctl("member", "list"), check=False, timeout=30)
        names = sorted(line.split(", ")[2] for line in listing.stdout.splitlines() if line.count(", ") >= 4)
        wanted = sorted(c.name for c in run.topo.controllers)
        if listing.exit_status == 0 and names == wanted:
            return [Outcome.passed("etcd members", first, f"{len(names)} members: {', '.join(names)}")]
        return [Outcome.failed("etcd members", first, f"wanted {', '.join(wanted)}; etcdctl member list:\n{listing.stdout}{listing.stderr}")]

    async def apply(self, run: RunContext) -> None:
        await run.each(run.topo.controllers, lambda n: self._install(run, n))
        await run.each(run.topo.controllers, lambda n: self._start(run, n))
        await run.each(run.topo.controllers, lambda n: wait_member_healthy(run, n))

    async def _install(self, run: RunContext, node: Node) -> None:
        await run.sh(node.name, f"install -d -m 0700 {ETCD_DATA_DIR} && install -d -m 0755 {ETCD_DIR}")
        files = etcd_files(run.artifacts, node)
        restarts = {UNIT: [ETCD_BINARY, *(f.path for f in files)]}
        await self.releases.install(run, node.name, restarts=restarts)
        await run.place(node.name, files, restarts=restarts)
        await run.sh(node.name, f"systemctl enable {UNIT}")

    async def _start(self, run: RunContext, node: Node) -> None:
        """--no-block: a member's start only completes once a quorum exists."""
        await run.start_units(node.name, [UNIT], options=("--no-block",))

    async def probe(self, run: RunContext) -> list[Outcome]:
        return await run.each(run.topo.controllers, lambda node: self._probe_node(run, node))

    async def _probe_node(self, run: RunContext, node: Node) -> Outcome:
        result = await run.sh(node.name, etcdctl("endpoint", "health"), check=False, timeout=15)
        make = Outcome.passed if result.exit_status == 0 else Outcome.failed
        return make("etcd", node.name, (result.stdout + result.stderr).strip())


STAGE = EtcdStage
