"""A walkthrough as text: Markdown (`explain --markdown`) or plain text for the terminal and the
TUI's explanation screen. One writer, two flavours, the same content."""

from __future__ import annotations

from dataclasses import dataclass, field

from khwtui.console.table import table
from khwtui.learn.explain import Explanation, Walkthrough
from khwtui.learn.files import FileEntry, Shown
from khwtui.learn.steps import LOCAL, Fetch, Note, Place, Run, Step


@dataclass
class Writer:
    markdown: bool
    lines: list[str] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        if self.markdown:
            self.lines += ["#" * level + " " + text, ""]
        else:
            self.lines += [text, ("=" if level <= 2 else "-") * min(len(text), 100), ""]

    def para(self, text: str) -> None:
        self.lines += [text, ""]

    def item(self, text: str) -> None:
        self.lines.append(f"- {text}" if self.markdown else f"  • {text}")

    def end_list(self) -> None:
        self.lines.append("")

    def code(self, text: str, lang: str = "") -> None:
        if self.markdown:
            fence = "````" if "```" in text else "```"
            self.lines += [fence + lang, text.rstrip("\n"), fence, ""]
        else:
            self.lines += ["    " + line for line in text.rstrip("\n").splitlines()] + [""]

    def table(self, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        if not self.markdown:
            self.lines += [table(header, rows), ""]
            return
        cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""]

    def literal(self, text: str) -> str:
        return f"`{text}`" if self.markdown else text

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def walkthrough_text(w: Walkthrough, markdown: bool) -> str:
    out = Writer(markdown)
    out.heading(1, f"Kubernetes the hard way, explained: {w.title}")
    out.para("Every stage khwtui runs, in order, with this cluster's own values: what it does and why, the cloud resources it makes, "
             "the files it places on each node, the commands it runs and how it is checked.")
    for index, e in enumerate(w.stages, 1):
        _stage(out, e, index)
    if w.other_files:
        out.heading(2, "Other files of the bundle")
        _files(out, list(w.other_files))
    return out.text()


def stage_text(e: Explanation, index: int, markdown: bool) -> str:
    out = Writer(markdown)
    _stage(out, e, index)
    return out.text()


def _stage(out: Writer, e: Explanation, index: int) -> None:
    out.heading(2, f"{index}. {e.stage.name} — {e.stage.description}")
    out.para(f"{e.lesson.lab}.")
    out.para(f"What: {e.lesson.what}")
    out.para(f"Why: {e.lesson.why}")
    for note in e.notes:
        out.para(f"Note: {note}")
    if e.values:
        out.heading(3, "This cluster's values")
        out.table(("setting", "value"), list(e.values))
    if e.resources:
        out.heading(3, "Cloud resources")
        out.table(("kind", "name", "detail"), [(r.kind, r.name, r.detail) for r in e.resources])
        if e.cloud_commands:
            out.code("\n".join(e.cloud_commands), "bash")
    if e.files:
        out.heading(3, "Files")
        _files(out, list(e.files))
    commands = [s for s in e.steps if not (isinstance(s, Run) and s.is_check)]
    if commands:
        out.heading(3, "Commands")
        out.code("\n".join(step_lines(commands)), "bash")
    checks = [s for s in e.steps if isinstance(s, Run) and s.is_check]
    if checks:
        out.heading(3, "How it is checked")
        for s in checks:
            where = "on your machine" if s.node == LOCAL else f"on {s.node}"
            out.item(f"{s.what} ({where}): {out.literal(s.command)}")
        out.end_list()


def _files(out: Writer, entries: list[FileEntry]) -> None:
    node = None
    for f in entries:
        if f.node != node:
            node = f.node
            out.end_list() if out.lines and out.lines[-1] != "" else None
            out.heading(4, f"on {node}" if node else "on your machine (the state folder; `khwtui render` writes them too)")
        head = f"{out.literal(f.path)} — {f.mode:04o} {f.owner}:{f.group}" + (f" — bundle {out.literal(f.bundle_path)}" if f.node else "")
        if f.same_as and not f.diff:
            out.item(f"{head} — same as on {f.same_as}")
        elif f.diff:
            out.item(f"{head} — differs from {f.same_as}:")
            out.end_list()
            out.code(f.diff, "diff") if f.shown is not Shown.SECRET else out.para(f.diff)
        elif f.shown is Shown.TEXT:
            out.item(head)
            out.end_list()
            out.code(f.text)
        else:
            out.item(f"{head} — {f.text}")
    out.end_list()


def step_lines(steps: list[Step]) -> list[str]:
    """Each step as one or more lines to read: `node$ command`, files placed, downloads verified."""
    lines: list[str] = []
    for s in steps:
        if isinstance(s, Note):
            lines.append(f"# {s.text}")
        elif isinstance(s, Run):
            prompt = "you$" if s.node == LOCAL else f"{s.node}#"
            fed = f" < {s.stdin}" if s.stdin else ""
            lines.append(f"{prompt} {s.command}{fed}" + (f"    # {s.what}" if s.what else ""))
        elif isinstance(s, Place):
            placed = ", ".join(f"{f.path} ({f.mode:04o})" for f in s.files)
            lines.append(f"# place on {s.node} from {s.source}/: {placed}")
        elif isinstance(s, Fetch):
            d = s.download
            sha = f"SHA-256 {d.sha256}" if d.sha256 else f"the SHA-256 published at {d.sums_url}"
            taken = ", ".join(f"{name} -> {path}" for name, path in d.members)
            lines.append(f"# download {d.url}, verify {sha}, install {taken} (0755) on {', '.join(s.nodes)}")
    return lines
