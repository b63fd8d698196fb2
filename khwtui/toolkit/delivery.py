"""Who downloads release files: the nodes themselves ("node") or this machine, which uploads them
("push"). `[binaries] delivery = "auto"` decides once per run: push where the nodes have no way
out (local.outbound = false), otherwise node if every node reaches every release origin (one
HEAD request per node and origin), push if one does not.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from khwtui.model.config import Config
from khwtui.toolkit.run_context import RunContext

NODE, PUSH, AUTO = "node", "push", "auto"
PROBE_TIMEOUT = 15


@dataclass(frozen=True)
class Choice:
    mode: str  # node | push
    reason: str


def fixed_choice(config: Config) -> Choice | None:
    """The mode when it needs no probe; None when auto must ask the nodes."""
    wanted = config.binaries.delivery
    if wanted == NODE:
        return Choice(NODE, 'binaries.delivery = "node": each node downloads and verifies its release files')
    if wanted == PUSH:
        return Choice(PUSH, 'binaries.delivery = "push": this machine downloads, verifies and uploads release files')
    if config.provider.kind == "local" and not config.local.outbound:
        return Choice(PUSH, "auto: local.outbound = false, so the nodes cannot reach the release origin")
    return None


def plan_line(config: Config) -> str:
    """What `plan` says about delivery: the mode and why, or how auto will decide."""
    fixed = fixed_choice(config)
    if fixed is not None:
        return f"Binary delivery: {fixed.mode} ({fixed.reason})"
    return ("Binary delivery: auto (node if every node reaches the release origin, probed once per run with one "
            "HEAD request; push otherwise)")


def origins(urls: list[str]) -> list[str]:
    """One URL per origin (scheme and host): the probe asks each origin once."""
    seen: dict[str, str] = {}
    for url in urls:
        parts = urlsplit(url)
        seen.setdefault(f"{parts.scheme}://{parts.netloc}", url)
    return list(seen.values())


def probe_command(url: str) -> str:
    """Succeeds only when the node has curl and the URL answers a HEAD request."""
    head = shlex.join(["curl", "--silent", "--show-error", "--fail", "--location", "--head", "--max-time", str(PROBE_TIMEOUT),
                       "--output", "/dev/null", url])
    return f"command -v curl >/dev/null || {{ echo 'curl is missing' >&2; exit 127; }}; {head}"


async def probe(run: RunContext, nodes: list[str], urls: list[str]) -> Choice:
    """node when every node reaches every origin; else push, naming the first node and URL that failed."""
    asks = [(node, url) for node in nodes for url in origins(urls)]
    results = await asyncio.gather(*(run.sh(node, probe_command(url), sudo=False, check=False, timeout=PROBE_TIMEOUT + 15)
                                     for node, url in asks))
    for (node, url), result in zip(asks, results, strict=True):
        if result.exit_status != 0:
            cause = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
            return Choice(PUSH, f"auto: {node} cannot fetch {url} ({cause})")
    return Choice(NODE, f"auto: every node reaches {', '.join(origins(urls))}")
