"""admin-access: your own admin kubeconfig, checked through the load balancer (KTHW Lab 10).

KTHW writes it into ~/.kube/config; khwtui keeps it as a separate file in the state folder
(0600) and merges it into ~/.kube/config only when asked (`khwtui kubeconfig --merge`, after a
backup). The check uses that very file: a SelfSubjectReview through its server URL, the API
endpoint, must come back as KTHW's admin (user "admin" in group "system:masters").
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from khwtui.artifacts.kubeconfigs import ADMIN_USER, kubeconfig, spec_named
from khwtui.core.errors import StateError, UserError
from khwtui.core.fsutil import mkdirs_private, write_atomic, write_if_changed
from khwtui.core.outcome import Outcome
from khwtui.model.state import StateDir
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext
from khwtui.transport.kubeapi import ApiClient, ApiError, KubeconfigError

SECRET = 0o600
WANTED_USER, WANTED_GROUP = "admin", "system:masters"  # KTHW's admin certificate: CN admin, O system:masters
REVIEW = "SelfSubjectReview through the API endpoint"


def admin_kubeconfig_path(folder: StateDir) -> Path:
    return folder.kubeconfig_dir / f"{ADMIN_USER}.kubeconfig"


class AdminAccessStage(Stage):
    def _wanted(self, run: RunContext) -> bytes:
        return kubeconfig(run.topo, run.artifacts.pki, spec_named(run.topo, ADMIN_USER)).encode()

    async def check(self, run: RunContext) -> list[Outcome]:
        path = admin_kubeconfig_path(run.cluster.state_dir)
        try:
            current = path.is_file() and path.read_bytes() == self._wanted(run) and path.stat().st_mode & 0o777 == SECRET
        except KeyError:  # no spec before the API endpoint is known
            return [Outcome.failed("admin kubeconfig", evidence="the API endpoint address is not known yet; run the compute stage first")]
        if not current:
            return [Outcome.failed("admin kubeconfig", evidence=f"{path} missing or out of date")]
        usage = f"{path} — use it with KUBECONFIG={path} kubectl ..., or merge it: khwtui kubeconfig --merge"
        return [Outcome.passed("admin kubeconfig", evidence=usage), await self._review(path)]

    async def _review(self, path: Path) -> Outcome:
        try:
            api = ApiClient.from_kubeconfig(path)
            reason = await api.unserved("authentication.k8s.io/v1", "selfsubjectreviews")
            if reason:
                return Outcome.unverified(REVIEW, reason=reason)
            user, groups = await api.who_am_i()
        except (ApiError, KubeconfigError) as exc:
            return Outcome.failed(REVIEW, evidence=str(exc))
        seen = f"{api.server} says you are {user!r} in {', '.join(groups) or 'no group'}"
        if user == WANTED_USER and WANTED_GROUP in groups:
            return Outcome.passed(REVIEW, evidence=seen)
        return Outcome.failed(REVIEW, evidence=f"{seen}; wanted {WANTED_USER!r} in {WANTED_GROUP}")

    async def apply(self, run: RunContext) -> None:
        path = admin_kubeconfig_path(run.cluster.state_dir)
        if write_if_changed(path, self._wanted(run), SECRET):
            run.log("", f"wrote your admin kubeconfig {path}")

    async def probe(self, run: RunContext) -> list[Outcome]:
        return [await self._review(admin_kubeconfig_path(run.cluster.state_dir))]


STAGE = AdminAccessStage


# --- `khwtui kubeconfig --merge` ------------------------------------------------------------------


@dataclass(frozen=True)
class Merged:
    target: Path
    context: str
    changed: bool
    backup: Path | None  # None: nothing was there to back up, or nothing changed
    current: bool  # current-context names our context


def merge_into(source: Path, target: Path) -> Merged:
    """Merge the admin kubeconfig into `target` (~/.kube/config): same-named entries are replaced,
    the rest is kept; the user entry is named "<context>-admin" so another cluster's "admin" is not
    overwritten. current-context is set only when `target` has none. The old file is first copied
    to "<target>.khwtui-backup-<time>" (0600); an unchanged result writes nothing."""
    ours = _load(source)
    old_bytes = target.read_bytes() if target.exists() else None
    old: dict[str, Any] = _load(target) if old_bytes is not None else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    merged = copy.deepcopy(old)
    context = ours["current-context"]
    user = f"{context}-admin"
    entries = {
        "clusters": ours["clusters"],
        "users": [{**u, "name": user} for u in ours["users"]],
        "contexts": [{**c, "context": {**c["context"], "user": user}} for c in ours["contexts"]],
    }
    for section, items in entries.items():
        names = {item["name"] for item in items}
        merged[section] = [e for e in merged.get(section) or [] if e.get("name") not in names] + items
    if not merged.get("current-context"):
        merged["current-context"] = context
    current = merged["current-context"] == context
    if merged == old:
        return Merged(target, context, False, None, current)
    backup = None
    if old_bytes is not None:
        backup = _backup_path(target)
        write_atomic(backup, old_bytes, SECRET)
    mkdirs_private(target.parent)
    write_atomic(target, yaml.safe_dump(merged, sort_keys=False).encode(), SECRET)
    return Merged(target, context, True, backup, current)


def _backup_path(target: Path) -> Path:
    """"<target>.khwtui-backup-<time>", numbered when a backup of the same second exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates = (target.with_name(f"{target.name}.khwtui-backup-{stamp}{f'-{n}' if n else ''}") for n in itertools.count())
    return next(path for path in candidates if not path.exists())


def _load(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix it or move it aside, nothing was changed") from None
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror}") from None
    if doc is None:
        return {"apiVersion": "v1", "kind": "Config"}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(s) or [], list) for s in ("clusters", "users", "contexts")):
        raise UserError(f"{path}: not a kubeconfig (clusters, users and contexts must be lists); fix it or move it aside, nothing was changed")
    return doc
