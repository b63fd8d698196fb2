"""Command line: one grammar for every command (docs/ARCHITECTURE.md "Command line and exit codes").

The TUI is imported lazily and only for the interactive `up`, so every other command runs
without textual or rich.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from khwtui import __version__
from khwtui.core.errors import EXIT_USAGE, KhwError, UsageError

COMMANDS = ("up", "down", "status", "plan", "render", "certs", "kubeconfig", "explain", "script")
DAY2_COMMANDS = ("backup", "restore", "stop", "start", "ssh")
EPILOG = """\
commands:
  up           build or resume the cluster (the default; opens the TUI unless --auto)
  down         tear down everything khwtui made (asks unless --yes)
  status       one round of health probes (--deep: the full checks)
  plan         every resolved setting, node, address, resource and certificate; changes nothing
  render       write the hard-way bundle (certificates, kubeconfigs, node files) to --out DIR
  certs        the certificate table: CN, O, SANs, expiry (--renew NAME[,NAME] | --renew-all: roll out new ones)
  kubeconfig   print the path of your admin kubeconfig (--merge: into ~/.kube/config)
  explain      what each stage does and why, with this cluster's values (--markdown: one document)
  script       the build as bash scripts to read and run by hand (gcloud, ssh, scp) into --out DIR
  backup       etcd snapshot + CA, service-account keys, encryption key, state (one 0600 archive)
  restore      etcd disaster recovery from a backup on this (or a rebuilt) cluster (asks unless --yes)
  stop, start  power the nodes off / on again (gcp, local)
  ssh          a shell or one command on a node (the cluster's key, the pinned host key)

exit codes: 0 all checks passed, 1 a stage failed, 2 bad usage/config/state,
            3 finished but some checks could not be verified, 130 interrupted

first steps:
  khwtui plan                          see what would be built (default config: GCP, 2+2)
  khwtui render --out ./bundle         read every certificate and file before anything runs
  khwtui --config configs/local.toml   build on this machine (root) and watch it live
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see khwtui --help)")


def build_parser() -> Parser:
    common = Parser(add_help=False)  # only ever a parent: its options, never parsed alone
    common.add_argument("--config", metavar="F", help="cluster config (TOML); default: the packaged default.toml")
    common.add_argument("--state-dir", metavar="D", help="cluster state folder; default: the user data dir")
    parser = Parser(
        prog="khwtui",
        description="Build Kubernetes the hard way, every step shown live.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"khwtui {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="build or resume the cluster")
    up.add_argument("--auto", action="store_true", help="no TUI: one line per step, for scripts and CI")
    up.add_argument("--json", action="store_true", help="with --auto: the event stream as JSON lines")
    up.add_argument("--verbose", action="store_true", help="with --auto: also stream remote output")
    slice_ = up.add_mutually_exclusive_group()
    slice_.add_argument("--only", metavar="S[,S]", help="run exactly these stages")
    slice_.add_argument("--from", dest="start", metavar="S", help="run from stage S to the end")
    slice_.add_argument("--until", metavar="S", help="run every stage up to and including S")
    down = sub.add_parser("down", parents=[common], help="tear down the cluster")
    down.add_argument("--yes", action="store_true", help="do not ask")
    status = sub.add_parser("status", parents=[common], help="health probes")
    status.add_argument("--deep", action="store_true", help="run the full checks")
    status.add_argument("--json", action="store_true", help="results as JSON lines")
    sub.add_parser("plan", parents=[common], help="what would be built")
    render = sub.add_parser("render", parents=[common], help="write the hard-way bundle")
    render.add_argument("--out", required=True, metavar="DIR", help="output folder")
    render.add_argument("--public-address", metavar="IP", help="the API endpoint address to put in certificates")
    certs = sub.add_parser("certs", parents=[common], help="certificate table")
    renew = certs.add_mutually_exclusive_group()
    renew.add_argument("--renew", metavar="NAME[,NAME]", help="re-issue these certificates and roll them out node by node")
    renew.add_argument("--renew-all", action="store_true", help="re-issue every leaf certificate and roll them out")
    kubeconfig = sub.add_parser("kubeconfig", parents=[common], help="your admin kubeconfig")
    kubeconfig.add_argument("--merge", action="store_true", help="merge into ~/.kube/config (after a backup)")
    explain = sub.add_parser("explain", parents=[common], help="each stage explained with this cluster's values")
    explain.add_argument("stage", nargs="?", metavar="STAGE", help="only this stage (default: every stage, in order)")
    explain.add_argument("--markdown", action="store_true", help="one Markdown document")
    script = sub.add_parser("script", parents=[common], help="the build as bash scripts")
    script.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_day2(sub, common)
    return parser


def _add_day2(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    backup = sub.add_parser("backup", parents=[common], help="etcd snapshot and what a rebuild needs")
    backup.add_argument("--out", metavar="FILE", help="the archive to write (default: <cluster>-<UTC time>.khwtui-backup.tar.gz here)")
    restore = sub.add_parser("restore", parents=[common], help="etcd disaster recovery from a backup")
    restore.add_argument("file", metavar="FILE", help="a file `khwtui backup` wrote")
    restore.add_argument("--yes", action="store_true", help="do not ask")
    stop = sub.add_parser("stop", parents=[common], help="power the nodes off")
    stop.add_argument("--yes", action="store_true", help="do not ask")
    sub.add_parser("start", parents=[common], help="power the nodes on again")
    ssh = sub.add_parser("ssh", parents=[common], help="a shell or a command on a node")
    ssh.add_argument("node", metavar="NODE", help="the node's name, as in `khwtui plan`")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="run this instead of a login shell")


def normalise(argv: Sequence[str]) -> list[str]:
    """No command means `up`: `khwtui --auto` is `khwtui up --auto`."""
    args = list(argv)
    if any(a in ("-h", "--help", "--version") for a in args[:1]):
        return args
    if not args or args[0] not in COMMANDS + DAY2_COMMANDS:
        args.insert(0, "up")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(normalise(sys.argv[1:] if argv is None else argv))
        return dispatch(args)
    except KhwError as exc:
        print(f"khwtui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("khwtui: interrupted", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace) -> int:
    from khwtui.cli import commands

    handler = getattr(commands, args.command.replace("-", "_"), None)
    if handler is None:
        print(f"khwtui: {args.command} is not available yet", file=sys.stderr)
        return EXIT_USAGE
    return handler(args)
