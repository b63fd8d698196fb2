"""`khwtui script --out DIR`: the build as plain bash scripts to read and run by hand.

DIR holds the render bundle (bundle/, with each worker's files as its own facts decide them),
lib.sh (ssh/put/fetch/wait_for helpers), nodes.sh and known_hosts (where the nodes are, their
pinned host keys), then one script per stage in stage order and build.sh to run them all. gcp's
cloud part is gcloud lines made from the same objects `plan` lists. The scripts place the same
bytes, modes and owners as `khwtui up`, with the stages' own commands and checks.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from khwtui.artifacts.render import render
from khwtui.artifacts.workers_files import worker_config_files
from khwtui.core.fsutil import mkdirs_private, write_if_changed
from khwtui.learn.bundle import write_bundle
from khwtui.learn.gcloud import Made
from khwtui.learn.lessons import LESSONS
from khwtui.learn.steps import LOCAL, Fetch, Inputs, Note, Place, Run, Step, stage_steps
from khwtui.stages import STAGES

SCRIPT_MODE = 0o755
HEADER = """#!/usr/bin/env bash
# {title}
# shellcheck disable=SC2016  # the commands in single quotes are expanded on the node, not here
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${{BASH_SOURCE[0]}}")/lib.sh"
cd "$KHW_DIR"
"""


@dataclass(frozen=True)
class Endpoint:
    """Where SSH reaches one node, and its pinned host key."""

    name: str
    address: str
    port: int
    host_key: str

    @property
    def known_hosts_line(self) -> str:
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {self.host_key}"


def write_script_set(out: Path, i: Inputs, endpoints: list[Endpoint], key_path: Path, cloud: dict[str, list[Made]],
                     nodes_missing: str) -> list[Path]:
    """Write the script set under `out`; `nodes_missing` (a reason) makes the node steps stop with it."""
    mkdirs_private(out)
    out.chmod(0o700)  # the bundle holds private keys
    write_bundle(out / "bundle", i.artifacts)
    for w in i.topo.workers:  # the bundle renders workers for a typical VM; these are the node's own
        for f in worker_config_files(i.topo, w, i.facts[w.name]):
            write_if_changed(out / "bundle" / "nodes" / w.name / f.path.lstrip("/"), f.content, f.mode)
    files = {
        "lib.sh": render("script-lib.sh.j2"),
        "nodes.sh": render("script-nodes.sh.j2", cluster=i.config.cluster.name, key=shlex.quote(str(key_path)),
                           user=shlex.quote(i.config.ssh.user), nodes=[_quoted(e) for e in endpoints]),
        "known_hosts": "".join(f"{e.known_hosts_line}\n" for e in endpoints),
    }
    scripts = []
    for index, info in enumerate(STAGES, 1):
        if info.name == "demo" and not i.config.demo.enabled:
            continue
        name = f"{index:02d}-{info.name}.sh"
        files[name] = stage_script(info.name, i, [line for made in cloud.get(info.name, []) for line in made.script()], nodes_missing)
        scripts.append(name)
    files["build.sh"] = build_script(scripts)
    written = []
    for name, text in files.items():
        mode = SCRIPT_MODE if name.endswith(".sh") and name not in ("lib.sh", "nodes.sh") else 0o644
        if write_if_changed(out / name, text.encode(), mode):
            written.append(out / name)
    return written


def _quoted(e: Endpoint) -> Endpoint:
    return Endpoint(e.name, shlex.quote(e.address), e.port, e.host_key)


def build_script(scripts: list[str]) -> str:
    body = "\n".join(f'bash "$KHW_DIR/{name}"' for name in scripts)
    return HEADER.format(title="The whole build, stage by stage; each stage script can also be run on its own.") + body + "\n"


NODE_API_SOURCES_LINE = (
    'NODE_API_SOURCES="${{NODE_API_SOURCES:-$(gcloud compute instances list --filter={cluster} '
    "--format='value(networkInterfaces[0].accessConfigs[0].natIP)' | sed 's|$|/32|' | paste -sd, -)}}\""
)


def stage_script(stage: str, i: Inputs, cloud: list[str], nodes_missing: str) -> str:
    """One stage: its node steps and cloud lines in the order the stage runs them, then its checks.
    Cloud resources that exist already are skipped, so a stage script can be run again."""
    lesson = LESSONS[stage]
    lines = [HEADER.format(title=f"{stage}: {lesson.lab}").rstrip("\n")]
    lines += [f"# {line}" for line in _wrap(lesson.what)]
    steps = stage_steps(stage, i)
    cloud_lines = ["", "# cloud resources (the same as `khwtui plan` lists); what exists already is skipped", *cloud] if cloud else []
    if any("NODE_API_SOURCES" in line for line in cloud):
        cloud_lines.insert(1, NODE_API_SOURCES_LINE.format(cluster=shlex.quote(f"labels.khwtui-cluster={i.config.cluster.name}")))
    if any("NODE_PORT" in line for line in cloud):
        cloud_lines.insert(1, ': "${NODE_PORT:?set NODE_PORT to the NodePort of the Service (kubectl get service -o wide)}"')
    if nodes_missing and any(_on_nodes(s) for s in steps):
        message = shlex.quote(nodes_missing.replace("`", '"'))
        return "\n".join([*lines, *cloud_lines, "", f"echo {message} >&2", "exit 1"]) + "\n"
    actions = [s for s in steps if not (isinstance(s, Run) and s.is_check)]
    checks = [s for s in steps if isinstance(s, Run) and s.is_check]
    body = [line for step in actions for line in step_script(step)]
    lines += cloud_lines + ([""] + body if body else []) if stage == "compute" else ([""] + body if body else []) + cloud_lines
    if checks:
        lines += ["", "# checks", *(line for step in checks for line in step_script(step))]
    return "\n".join(lines) + "\n"


def _on_nodes(step: Step) -> bool:
    return isinstance(step, (Place, Fetch)) or (isinstance(step, Run) and step.node != LOCAL and not step.manual)


def step_script(step: Step) -> list[str]:
    """The bash lines of one step."""
    if isinstance(step, Note):
        return [f"# {line}" for line in _wrap(step.text)]
    if isinstance(step, Place):
        return [f"put {step.node} {shlex.quote(f'{step.source}{f.path}')} {shlex.quote(f.path)} {f.mode:04o} {f.owner} {f.group}"
                for f in step.files]
    if isinstance(step, Fetch):
        return _fetch_lines(step)
    return _run_lines(step)


def _fetch_lines(step: Fetch) -> list[str]:
    d = step.download
    lines = [f"fetch {shlex.quote(d.file)} {shlex.quote(d.url)} {shlex.quote(d.sha256)} {shlex.quote(d.sums_url)}"]
    sources = []
    for name, path in d.members:
        if d.archive:
            lines.append(f"member {shlex.quote(d.file)} {shlex.quote(name)}")
            sources.append((f"downloads/{d.file}.d/{name}", path))
        else:
            sources.append((f"downloads/{d.file}", path))
    for node in step.nodes:
        lines += [f"put {node} {shlex.quote(source)} {shlex.quote(path)} 0755 root root" for source, path in sources]
    return lines


def _run_lines(step: Run) -> list[str]:
    comment = [f"# {step.what}"] if step.what else []
    if step.manual:
        where = "on your machine" if step.node == LOCAL else f"as root on {step.node}"
        return [f"# check by hand, {where}: {step.what}", *(f"#   {line}" for line in step.command.splitlines())]
    if step.node == LOCAL:
        command = step.command if not step.wait else f"bash -c {shlex.quote(step.command)}"
    else:
        command = f"on {step.node} {shlex.quote(step.command)}" if not step.stdin else \
            f"on_input {step.node} {shlex.quote(step.command)} <{shlex.quote(step.stdin)}"
    if step.wait:
        return [f"wait_for {step.wait} {shlex.quote(step.what)} {command}"]
    return [*comment, command]


def _wrap(text: str, width: int = 98) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]
