"""Chaos on a fresh 3 + 2 gcp-sandbox build: 20 SIGKILLs at seeded random moments of
`up --until frontend`, then one run to the end (tests/chaos.py; CI runs five on a 2 + 1 build).

Run as root: python3 benchmarks/bench_chaos.py [--kills 20] [--seed 15] [--latest 12]
With --latest 12 every one of the twenty runs dies mid-build (2026-12-05: 20 of 20, then exit 3 and
every resource once, 181 s); with 60 the build finishes between kills and only 4 of 20 land.
Prints each kill's moment, the last run's exit code, whether every planned cloud resource exists
exactly once, and the wall time; exits 1 if the build did not converge.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cli_timing  # noqa: F401 - first: puts tests/ on the import path
from chaos import DONE, made, planned, run_with_kills
from gcp_sandbox import sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--latest", type=float, default=12.0, help="each random kill comes within this many seconds of its run's start")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khwtui-chaos-") as tmp, sandbox(Path(tmp), 3, 2, "target-pool") as (fake, cluster):
        chaos = run_with_kills(cluster, args.kills, args.seed, args.latest)
        exact = made(fake) == planned(cluster)
    assert chaos.final is not None
    killed = [k for k in chaos.kills if k is not None]
    print(f"kills: {len(killed)} of {args.kills} runs (seconds after start; 0.0 = at gcp.insert-sent): {chaos.kills}")
    print(f"exit codes of the killed runs: {chaos.exits}")
    print(f"last run: exit {chaos.final.returncode}; every planned resource exactly once: {exact}; total {chaos.seconds:.0f} s")
    if chaos.final.returncode not in DONE or not exact:
        print(chaos.final.stdout[-4000:] + chaos.final.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
