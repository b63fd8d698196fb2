"""Packages from the node's own apt sources, installed so that a run killed at any instant resumes.

A kill of khwtui does not stop an apt-get it started on a node (commands run detached there), and
a node that went down mid-install leaves packages unpacked or half-configured. So the install
waits for a dpkg lock another apt still holds, first finishes whatever dpkg left unfinished
(`dpkg --configure -a`, then `apt-get install -f` completes dependencies), and counts a package
as present only when dpkg says it is installed (an unpacked binary on PATH is not).
"""

from __future__ import annotations

import shlex

LOCK_WAIT = 600  # seconds apt waits for a dpkg lock held by another apt (a killed run's, still going)
STARTED = "khwtui: apt-get install started"  # printed on the node right before the install
_APT = f"DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout={LOCK_WAIT} -q"


def install_missing(packages: tuple[str, ...] | list[str]) -> str:
    """One node command: apt-get install only for packages dpkg does not call installed, so a rerun
    sends nothing to apt; before that, an install left unfinished is finished."""
    names = shlex.join(packages)
    return (
        f'missing=""; for p in {names}; do '
        '[ "$(dpkg-query -W -f=\'${db:Status-Status}\' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"; done; '
        'if [ -n "$missing" ]; then '
        f'if [ -n "$(dpkg --audit)" ]; then {_APT} check >/dev/null 2>&1; dpkg --configure -a || true; fi; '
        f"{_APT} update && echo {shlex.quote(STARTED)} && {_APT} install -y -f --no-install-recommends $missing; fi"
    )
