"""`khwtui explain [STAGE] [--markdown]` and `khwtui script --out DIR`: each returns its exit code.

Both make the certificates and the encryption key as `render` does (under the state lock), so
every value shown or scripted is this cluster's own. `script` reads each worker's facts on the
node once the compute stage has reached it; before that the workers are rendered for a typical VM
and the script checks that assumption on the node before it places anything.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from khwtui.artifacts.nodefiles import Artifacts
from khwtui.artifacts.workers_files import FACTS_COMMAND, NodeFacts
from khwtui.core.errors import EXIT_OK, StateError, UsageError
from khwtui.learn.bundle import RENDER_FACTS
from khwtui.learn.explain import Walkthrough, stage_names, walkthrough
from khwtui.learn.gcloud import Made, cloud_commands
from khwtui.learn.markdown import stage_text, walkthrough_text
from khwtui.learn.script import Endpoint, write_script_set
from khwtui.learn.steps import Inputs
from khwtui.model.cluster import Cluster, open_cluster


def explain(args: argparse.Namespace) -> int:
    cluster = open_cluster(args.config, args.state_dir)
    if args.stage and args.stage not in stage_names():
        raise UsageError(f"explain: no stage {args.stage!r}; choose one of {', '.join(stage_names())}")
    w = cluster_walkthrough(cluster, made_artifacts(cluster))
    if args.stage:
        names = [e.stage.name for e in w.stages]
        if args.stage not in names:
            raise UsageError(f"explain: the {args.stage} stage is off in this config (demo.enabled = false); fix: set it to true")
        print(stage_text(w.stage(args.stage), names.index(args.stage) + 1, args.markdown), end="")
    else:
        print(walkthrough_text(w, args.markdown), end="")
    return EXIT_OK


def stage_explanation(cluster: Cluster, stage: str) -> str:
    """One stage's explanation as plain text, from the certificates as they are (none yet: no files)."""
    w = cluster_walkthrough(cluster, existing_artifacts(cluster))
    names = [e.stage.name for e in w.stages]
    return stage_text(w.stage(stage), names.index(stage) + 1, markdown=False)


def made_artifacts(cluster: Cluster) -> Artifacts:
    """The certificates and the encryption key, made when missing (as `render` makes them)."""
    from khwtui.artifacts.encryption import load_or_create_key
    from khwtui.artifacts.pki import Pki

    folder = cluster.state_dir
    with folder.lock():
        folder.ensure_layout()
        pki = Pki(folder.pki_dir, cluster.config)
        pki.ensure(cluster.topology)
        key = load_or_create_key(folder.pki_dir)
    return Artifacts(cluster.topology, pki, key)


def existing_artifacts(cluster: Cluster) -> Artifacts | None:
    """The certificates and key if the pki and encryption stages made them; nothing is written."""
    from khwtui.artifacts.encryption import KEY_FILE, load_or_create_key
    from khwtui.artifacts.pki import Pki, cert_specs

    folder = cluster.state_dir.pki_dir
    names = ["ca", *(spec.name for spec in cert_specs(cluster.topology))]
    needed = [folder / KEY_FILE] + [folder / f"{name}{end}" for name in names for end in (".pem", "-key.pem")]
    if not all(path.is_file() for path in needed):
        return None
    return Artifacts(cluster.topology, Pki(folder, cluster.config), load_or_create_key(folder))


def cluster_walkthrough(cluster: Cluster, artifacts: Artifacts | None) -> Walkthrough:
    """Every stage explained; the workers' files as the bundle renders them (RENDER_FACTS)."""
    from khwtui.providers.factory import make_provider

    inputs = Inputs(cluster.config, cluster.topology, artifacts, {w.name: RENDER_FACTS for w in cluster.topology.workers}) if artifacts else None
    cloud = {stage: [g.line for made in resources for g in made.lines] for stage, resources in _cloud(cluster, "<your public key>").items()}
    return walkthrough(cluster, artifacts, inputs, list(make_provider(cluster, public_key="").plan().resources), cloud)


def _cloud(cluster: Cluster, public_key: str) -> dict[str, list[Made]]:
    if cluster.config.provider.kind != "gcp":
        return {}
    return cloud_commands(cluster.config, cluster.topology, public_key)


# --- script ---------------------------------------------------------------------------------


def script(args: argparse.Namespace) -> int:
    from khwtui.artifacts.sshkey import client_key

    cluster = open_cluster(args.config, args.state_dir)
    endpoints, missing = node_endpoints(cluster)
    if missing and cluster.config.provider.kind != "gcp":
        raise StateError(f"{missing}; fix: run `khwtui up --only compute` first (it pins the host keys), then export again")
    artifacts = made_artifacts(cluster)
    key_path, public_key = client_key(cluster.state_dir.ssh_dir, f"khwtui@{cluster.config.cluster.name}")
    pinned = [e for e in endpoints if e.name in cluster.state.nodes]  # compute has reached them: SSH works
    facts, problems = worker_facts(cluster, pinned, key_path) if pinned and not missing else ({}, [])
    inputs = Inputs(cluster.config, cluster.topology, artifacts, {w.name: facts.get(w.name, RENDER_FACTS) for w in cluster.topology.workers})
    reason = ""
    if missing or cluster.topology.api_url is None:
        reason = f"{missing or 'the API endpoint address is not known yet'}: run 01-compute.sh, then `khwtui up --only compute` (it adopts what the script made and pins the host keys), then `khwtui script` again"
    out = Path(args.out)
    written = write_script_set(out, inputs, endpoints, key_path, _cloud(cluster, public_key), reason)
    print(f"wrote {len(written)} changed files into {out}: run {out / 'build.sh'}, or the stage scripts one by one in their order")
    if reason:
        print(f"note: the node steps wait for the nodes: {reason}")
    for problem in problems:
        print(f"note: {problem}; its files are rendered for a typical VM, and its script stops if the node differs")
    return EXIT_OK


def node_endpoints(cluster: Cluster) -> tuple[list[Endpoint], str]:
    """Where SSH reaches each node and its pinned key (state, else the machines config); and what is missing."""
    hosts = {h.name: h for h in cluster.config.machines.hosts} if cluster.config.provider.kind == "machines" else {}
    endpoints, unknown = [], []
    for node in cluster.topology.nodes:
        record = cluster.state.nodes.get(node.name)
        host = hosts.get(node.name)
        address = (record.ssh_host or record.internal_ip) if record else (host.address if host else "")
        key = (record.host_key if record else "") or (host.host_key if host else "")
        port = record.ssh_port if record else cluster.config.ssh.port
        if not address or not key:
            unknown.append(node.name)
        endpoints.append(Endpoint(node.name, address, port, " ".join(key.split()[:2])))
    missing = f"no pinned host key or address for {', '.join(unknown)} yet" if unknown else ""
    return endpoints, missing


def worker_facts(cluster: Cluster, endpoints: list[Endpoint], key_path: Path) -> tuple[dict[str, NodeFacts], list[str]]:
    """Each worker's facts, read on it over SSH with its pinned host key (one command each). A worker
    that cannot be read is left out, with the reason: its files are rendered for a typical VM and
    the script checks that on the node before it places anything."""
    from khwtui.core.errors import KhwError
    from khwtui.transport.remote import Host, Remote

    by_name = {e.name: e for e in endpoints}
    user = cluster.config.ssh.user

    async def read() -> tuple[dict[str, NodeFacts], list[str]]:
        remote = Remote(key_path, on_line=lambda node, stream, line: None)
        found, problems = {}, []
        try:
            for w in (w for w in cluster.topology.workers if w.name in by_name):
                e = by_name[w.name]
                try:
                    result = await remote.run(Host(w.name, e.address, e.port, user, e.host_key), FACTS_COMMAND, sudo=True, timeout=60)
                    found[w.name] = NodeFacts.parse(result.stdout)
                except (KhwError, OSError, ValueError) as exc:
                    problems.append(f"{w.name}: facts not read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            return found, problems
        finally:
            await remote.close()

    return asyncio.run(read())
