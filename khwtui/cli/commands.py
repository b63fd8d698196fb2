"""The commands that build nothing: plan (on gcp it reads the project when credentials are at hand,
and never writes), render and certs. Each returns its exit code."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from pathlib import Path
from typing import cast

from khwtui.cli.plan_warnings import plan_warnings
from khwtui.console.table import table
from khwtui.core.errors import EXIT_OK, UsageError
from khwtui.model.cluster import Cluster, open_cluster, topology_from_state
from khwtui.model.config import Config
from khwtui.model.topology import Topology
from khwtui.providers import gcloud_settings
from khwtui.providers.base import Plan


def _open(args: argparse.Namespace) -> Cluster:
    return open_cluster(args.config, args.state_dir)


# --- plan ---------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> int:
    from khwtui.providers.factory import make_provider

    cluster = _open(args)
    print(plan_text(cluster.config, cluster.topology))
    print("")
    provider = make_provider(cluster, public_key="")
    print(provider_plan_text(provider.plan()))
    if cluster.config.provider.kind == "gcp":  # exit 2 when a stranger holds a planned name
        from khwtui.providers.gcp import GcpProvider

        print(f"note: {cast(GcpProvider, provider).check_names()}")
    return EXIT_OK


def provider_plan_text(plan: Plan) -> str:
    """The provider's resources to create (or adopt) and, for cloud providers, the cost estimate."""
    rows = [(r.kind, r.name, r.described) for r in plan.resources]
    out = [f"Resources to create ({len(rows)})", table(("kind", "name", "detail"), rows)]
    if plan.hourly_usd:
        out.append(f"Estimated cost: ${plan.hourly_usd:.3f}/hour")
    out += [f"note: {note}" for note in plan.notes]
    return "\n".join(out)


def settings_rows(config: Config) -> list[tuple[str, str, str]]:
    """Every resolved key with its value and where it came from (config file, default, environment)."""
    rows = []
    resolved = gcloud_settings.resolve(config) if config.provider.kind == "gcp" else None
    for section in dataclasses.fields(config):
        if section.name in ("path", "sources"):
            continue
        for key, value in _flatten(section.name, getattr(config, section.name)):
            source = config.sources.get(key, "default")
            if resolved and key in resolved.sources:
                value, source = getattr(resolved, key.split(".")[1]), resolved.sources[key]
            rows.append((key, _show(value), source))
    return rows


def _flatten(prefix: str, value: object) -> list[tuple[str, object]]:
    if dataclasses.is_dataclass(value):
        out = []
        for f in dataclasses.fields(value):
            out += _flatten(f"{prefix}.{f.name}", getattr(value, f.name))
        return out
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        out = []
        for i, item in enumerate(value):
            out += _flatten(f"{prefix}[{i}]", item)
        return out
    return [(prefix, value)]


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}"
    return '""' if value == "" else str(value)


def plan_text(config: Config, topo: Topology) -> str:
    from khwtui.artifacts.kubeconfigs import kubeconfig_specs
    from khwtui.artifacts.pki import cert_specs
    from khwtui.toolkit.delivery import plan_line as delivery_plan_line

    out = [f"khwtui plan · {config.cluster.name} · {config.provider.kind} · Kubernetes {config.cluster.kubernetes_version}", ""]
    out += ["Settings", table(("key", "value", "source"), settings_rows(config)), ""]
    nodes = [(n.name, n.role, n.internal_ip, n.external_ip or "-", n.pod_cidr or "-") for n in topo.nodes]
    out += ["Nodes", table(("name", "role", "internal", "external", "pod CIDR"), nodes), ""]
    endpoint = topo.api_url or "the static address, known after the compute stage"
    out += [f"API endpoint: {endpoint}"]
    if topo.api_endpoint_warning:
        out += [f"warning: {topo.api_endpoint_warning}"]
    if config.provider.kind == "gcp" and "0.0.0.0/0" in config.gcp.admin_cidrs:
        out += ["warning: gcp.admin_cidrs allows 0.0.0.0/0: SSH and the API are open to the internet; list your own address"]
    out += [f"warning: {line}" for line in plan_warnings(config, len(topo.controllers))]
    out += [f"kubernetes service: {topo.kubernetes_service_ip} · cluster DNS: {config.network.dns_ip} · domain: {config.network.cluster_domain}"]
    out += [delivery_plan_line(config), ""]
    certs = [(s.name, s.cn, s.org or "-", ", ".join(s.dns + s.ips) or "-") for s in cert_specs(topo)]
    out += ["Certificates", table(("name", "CN", "O", "SANs"), certs), ""]
    kubeconfigs = [(k.name, k.user, k.server) for k in kubeconfig_specs(topo)]
    out += ["Kubeconfigs", table(("name", "user", "server"), kubeconfigs)]
    return "\n".join(out)


# --- render ---------------------------------------------------------------------------------


def render(args: argparse.Namespace) -> int:
    from khwtui.artifacts.encryption import load_or_create_key
    from khwtui.artifacts.nodefiles import Artifacts
    from khwtui.artifacts.pki import Pki
    from khwtui.learn.bundle import write_bundle

    cluster = _open(args)
    public = _public_address(args.public_address)
    topo = topology_from_state(cluster.config, cluster.state, public)
    folder = cluster.state_dir
    with folder.lock():
        folder.ensure_layout()
        pki = Pki(folder.pki_dir, cluster.config)
        changes = pki.ensure(topo)
        key = load_or_create_key(folder.pki_dir)
        written = write_bundle(Path(args.out), Artifacts(topo, pki, key))
    made = sum(1 for c in changes.values() if c != "kept")
    print(f"rendered {len(written)} changed files into {args.out} ({made} certificates made or re-issued, {len(changes) - made} kept)")
    if topo.api_address is None:
        print("note: the API endpoint address is not known yet, so it is not in the apiserver certificate SANs, and the kubeconfigs and control-plane units that use it were left out; pass --public-address IP")
    return EXIT_OK


def _public_address(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UsageError(f"--public-address: {text!r} is not an IPv4 address; give the API endpoint's address, e.g. 203.0.113.10") from None


# --- certs ----------------------------------------------------------------------------------


def certs(args: argparse.Namespace) -> int:
    from khwtui.artifacts.pki import Pki

    cluster = _open(args)
    renew, renew_all = getattr(args, "renew", None), getattr(args, "renew_all", False)
    if renew or renew_all:
        from khwtui.day2.cert_rollout import renew_command

        return renew_command(cluster, renew, renew_all)
    rows = Pki(cluster.state_dir.pki_dir, cluster.config).rows(cluster.topology)
    shown = [
        (r.name, r.cn, r.org or "-", r.sans or "-", r.not_after.strftime("%Y-%m-%d") if r.not_after else "-", "-" if r.days_left is None else r.days_left, r.status)
        for r in rows
    ]
    print(table(("name", "CN", "O", "SANs", "not after", "days left", "status"), shown))
    return EXIT_OK


# --- up, down, status ------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    from khwtui.console.headless import ConsoleSink, run_with_signals
    from khwtui.engine.runner import Engine
    from khwtui.engine.scale_guard import refuse_unsupported_resize

    cluster = _open(args)
    refuse_unsupported_resize(cluster.state, cluster.topology)
    for line in plan_warnings(cluster.config, len(cluster.topology.controllers)):
        print(f"warning: {line}", file=sys.stderr)
    engine = Engine(cluster)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if not args.auto:
        if args.json or args.verbose:
            raise UsageError("--json and --verbose go with --auto")
        from khwtui.tui.launch import run_interactive

        return run_interactive(cluster, engine, only=only, start=args.start, until=args.until)
    sink = ConsoleSink(json=args.json, verbose=args.verbose)
    return run_with_signals(lambda: engine.run(sink, only=only, start=args.start, until=args.until), engine.cancel)


def status(args: argparse.Namespace) -> int:
    from khwtui.console.headless import ConsoleSink, run_with_signals
    from khwtui.engine.runner import Engine

    cluster = _open(args)
    engine = Engine(cluster)
    sink = ConsoleSink(json=args.json)
    if args.deep:
        return run_with_signals(lambda: engine.check(sink), engine.cancel)
    from khwtui.engine.health import probe_once

    return run_with_signals(lambda: probe_once(cluster, sink), engine.cancel)


def down(args: argparse.Namespace) -> int:
    import asyncio

    from khwtui.engine.teardown import confirm, forget_nodes
    from khwtui.providers.base import LeftInPlace
    from khwtui.providers.factory import make_provider

    cluster = _open(args)
    provider = make_provider(cluster)
    plan = provider.teardown_plan()
    print(table(("kind", "name", "detail"), [(r.kind, r.name, r.detail) for r in plan]))
    print(f"{len(plan)} resources of cluster {cluster.config.cluster.name} will be deleted")
    if not args.yes and not confirm(cluster.config.cluster.name, sys.stdin):
        print("nothing was deleted")
        return 1
    with cluster.state_dir.lock():
        try:
            asyncio.run(provider.teardown(print))
        except LeftInPlace:  # everything of the cluster is gone; what holds its names is not its
            forget_nodes(cluster)
            print(f"deleted {len(plan)} resources")
            raise
        forget_nodes(cluster)
    print(f"deleted {len(plan)} resources")
    return EXIT_OK


# --- kubeconfig -------------------------------------------------------------------------------


def kubeconfig(args: argparse.Namespace) -> int:
    """The path of your admin kubeconfig; with --merge, merged into ~/.kube/config after a backup."""
    from khwtui.core.errors import StateError
    from khwtui.stages.admin_access import admin_kubeconfig_path, merge_into

    cluster = _open(args)
    path = admin_kubeconfig_path(cluster.state_dir)
    if not path.is_file():
        raise StateError(f"no admin kubeconfig at {path} yet; fix: run `khwtui up --until admin-access`")
    if not args.merge:
        print(path)
        return EXIT_OK
    merged = merge_into(path, Path.home() / ".kube" / "config")
    if not merged.changed:
        print(f"{merged.target} already holds context {merged.context}; nothing changed")
    else:
        backup = f" (backup of the old file: {merged.backup})" if merged.backup else ""
        print(f"merged context {merged.context} into {merged.target}{backup}")
    if not merged.current:
        print(f"switch to it with: kubectl config use-context {merged.context}")
    return EXIT_OK


# --- explain, script (khwtui.learn) -------------------------------------------------------------


def explain(args: argparse.Namespace) -> int:
    from khwtui.learn import commands as learn

    return learn.explain(args)


def script(args: argparse.Namespace) -> int:
    from khwtui.learn import commands as learn

    return learn.script(args)
# --- day 2: backup, restore, ssh, stop, start -------------------------------------------------


def backup(args: argparse.Namespace) -> int:
    from khwtui.day2.backup import backup_command

    return backup_command(_open(args), args.out)


def restore(args: argparse.Namespace) -> int:
    from khwtui.day2.backup import restore_command

    return restore_command(_open(args), args.file, args.yes)


def ssh(args: argparse.Namespace) -> int:
    """A login shell on NODE, or the command after `--`; exits with ssh's status."""
    from khwtui.core.errors import StateError
    from khwtui.transport.node_ssh import run_ssh, shell_target

    cluster = _open(args)
    names = [n.name for n in cluster.topology.nodes]
    if args.node not in names:
        raise UsageError(f"NODE: {args.node!r} is not a node of cluster {cluster.config.cluster.name}; pick one of {', '.join(names)}")
    target = shell_target(cluster, args.node)
    if target is None:
        raise StateError(f"{args.node} has no pinned SSH endpoint yet; fix: run `khwtui up --until compute` first")
    command = args.remote_command[1:] if args.remote_command[:1] == ["--"] else args.remote_command
    return run_ssh(target, command)


def stop(args: argparse.Namespace) -> int:
    from khwtui.day2.power import stop_command

    return stop_command(_open(args), args.yes)


def start(args: argparse.Namespace) -> int:
    from khwtui.day2.power import start_command

    return start_command(_open(args))
