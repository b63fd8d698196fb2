"""Every action of the app, once: its key (shown in the footer) and its command palette entry.

`BINDINGS` and the palette are both made from `COMMANDS`, so no action is reachable one way
and not the other. `TargetCommands` adds one palette entry per stage and per node ("Run stage
etcd", "Explain stage etcd", "Full log of worker-0", "Shell on worker-0").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.command import Hit, Hits, Provider

if TYPE_CHECKING:
    from khwtui.tui.app import KhwApp


@dataclass(frozen=True)
class Command:
    action: str
    key: str
    label: str  # in the footer
    title: str  # in the palette ("" = only the key: the palette has its own entry)
    help: str
    footer: bool = True
    narrow: bool = True  # in the footer on narrow terminals too (80 columns fit nine keys)
    key_display: str | None = None


COMMANDS = (
    Command("run_all", "r", "run", "Run all stages", "Build or resume: each stage checks first and changes only what differs"),
    Command("run_stage", "s", "stage", "Run the selected stage", "Only the stage under the cursor in the stage list"),
    Command("run_from", "f", "from", "Run from the selected stage", "The stage under the cursor and every stage after it", narrow=False),
    Command("retry_failed", "t", "retry", "Retry the failed stages", "Run the failed stages again", narrow=False),
    Command("toggle_health", "h", "health", "Show or hide the health panel", "Live probes of every done stage, refreshed on an interval"),
    Command("probe_now", "H", "probe now", "Probe now", "Start a health round now instead of at the next interval", footer=False),
    Command("explain_stage", "e", "why", "Explain the selected stage",
            "What the stage under the cursor does and why, its resources, files, commands and checks, with this cluster's values",
            narrow=False),
    Command("show_certs", "c", "certs", "Certificates", "Every certificate: CN, O, SANs, expiry (khwtui certs)"),
    Command("teardown", "d", "teardown", "Tear down the cluster", "Shows every resource that would be deleted and asks first"),
    Command("node_log", "n", "node log", "Full log of the selected node", "The whole logs/<node>.log of the node under the tree's cursor"),
    Command("node_shell", "x", "shell", "Shell on the selected node", "ssh to the node under the tree's cursor (the app waits until you exit)"),
    Command("focus_log", "l", "log", "Focus the log", "Move the focus to the log pane to scroll it: ↑↓ lines, ←→ sideways for long ones", narrow=False),
    Command("search", "slash", "search", "Search the log", "Highlight every match; Enter steps to older ones", narrow=False, key_display="/"),
    Command("clear_filters", "escape", "all logs", "Show all logs", "Clear the node and stage filters of the log pane", footer=False),
    Command("toggle_dark", "ctrl+t", "theme", "Toggle light and dark theme", "Switch between textual-light and textual-dark", narrow=False),
    Command("quit", "q", "quit", "", "Quit (asks first while a build or a teardown runs)"),
)


def bindings() -> list[BindingType]:
    return [Binding(c.key, c.action, c.label, show=c.footer, key_display=c.key_display, tooltip=c.help) for c in COMMANDS]


WIDE_ONLY = frozenset(c.action for c in COMMANDS if not c.narrow)


def system_commands(app: KhwApp) -> Iterator[SystemCommand]:
    """The palette entries of the actions that are possible right now."""
    for c in COMMANDS:
        if c.title and app.check_action(c.action, ()) is True:
            yield SystemCommand(c.title, f"{c.help} · key {c.key_display or c.key}", partial(app.run_action, c.action))


class TargetCommands(Provider):
    """One entry per stage and per node, found by typing (too many to list on an empty palette)."""

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = cast("KhwApp", self.app)  # the palette's providers run only inside KhwApp
        entries: list[tuple[str, str, Callable[[], object]]] = []
        if app.check_action("run_stage", ()) is True:
            for name in app.progress.stages:
                entries.append((f"Run stage {name}", "only this stage", partial(app.start_run, only=[name])))
                entries.append((f"Run from {name}", "this stage and every stage after it", partial(app.start_run, start=name)))
        if app.services.explain is not None:
            entries += [(f"Explain stage {name}", "what it does and why, with this cluster's values", partial(app.explain, name))
                        for name in app.progress.stages]
        for node in [*app.progress.nodes, ""]:
            label = node or "this machine"
            if app.state_dir is not None:
                entries.append((f"Full log of {label}", f"logs/{node or 'khwtui'}.log", partial(app.show_node_log, node)))
            if node and app.can_open_shell:
                entries.append((f"Shell on {label}", "ssh with the cluster key and the pinned host key", partial(app.open_shell, node)))
        return entries

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
