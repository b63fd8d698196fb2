"""The cluster tree: controllers, workers and the load balancer, each node with its addresses
and a mark for what runs on it. Selecting a node (or a group) filters the log to it.

Wide: "⟳ controller-0 10.240.0.10 · etcd" while a stage runs there, "✖ controller-1 10.240.0.11
· etcd failing" while a live probe fails there, else the external address after the internal
one. Compact (narrow terminals): the mark, the name and ".10".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from khwtui.core.events import FAILED, PENDING, RUNNING
from khwtui.model.topology import Topology
from khwtui.transport.transfers import short
from khwtui.tui.marks import NODE_MARKS, mark, status_style
from khwtui.tui.progress import NodeView, Progress

GROUPS = (("controller", "controllers"), ("worker", "workers"), ("lb", "load balancer"))
FRONTEND = "frontend"  # the stage that builds a cloud load balancer (no node of its own)


@dataclass(frozen=True)
class Pick:
    """What a tree entry stands for in the log filter: a set of node names and a label."""

    nodes: frozenset[str]
    label: str


def short_ip(ip: str, cidr: str) -> str:
    """Drop the octets every node shares: 10.240.0.21 in 10.240.0.0/24 -> .21."""
    try:
        network, address = ipaddress.IPv4Network(cidr, strict=False), ipaddress.IPv4Address(ip)
    except ValueError:
        return ip
    fixed = network.prefixlen // 8
    if address not in network or fixed == 0:
        return ip
    return "." + ".".join(ip.split(".")[fixed:])


class NodeTree(Tree[Pick | None]):
    DEFAULT_CSS = """
    NodeTree {
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        background: $surface;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
        &:focus { border: round $primary; }
    }
    """

    compact: reactive[bool] = reactive(False)
    """Short addresses and no external ones, for narrow terminals."""

    @dataclass
    class NodesSelected(Message):
        """The user chose an entry: filter the log to `pick` (None: every node)."""

        pick: Pick | None

    def __init__(self, topo: Topology, progress: Progress) -> None:
        super().__init__(Text(topo.config.cluster.name, style="bold"), None, id="nodes")
        self.border_title = "Cluster"
        self.show_root = False  # the header names the cluster
        self.auto_expand = False  # Enter filters the log; space or a click on ▶ folds
        self._topo = topo
        self._api_address = topo.api_address
        self._progress = progress
        self._entries: dict[str, TreeNode[Pick | None]] = {}
        self._api: TreeNode[Pick | None] | None = None

    def on_mount(self) -> None:
        self.root.expand()
        for role, title in GROUPS:
            views = [v for v in self._progress.nodes.values() if v.node.role == role]
            if role == "lb" and not views:
                self._add_api_leaf(title)
                continue
            if not views:
                continue
            group = self.root.add(title, Pick(frozenset(v.node.name for v in views), title), expand=True)
            for view in views:
                self._entries[view.node.name] = group.add_leaf(self._label(view), Pick(frozenset({view.node.name}), view.node.name))
        self.root.add_leaf(Text("⌂ this machine"), Pick(frozenset({""}), "this machine"))

    def _add_api_leaf(self, title: str) -> None:
        """A cloud load balancer is no node: show its address and the frontend stage's mark."""
        group = self.root.add(title, None, expand=True)
        self._api = group.add_leaf(self._api_label())

    @property
    def _name_width(self) -> int:
        return max((len(name) for name in self._progress.nodes), default=0)

    def _address(self, ip: str) -> str:
        return short_ip(ip, self._topo.config.network.node_cidr) if self.compact else ip

    def _label(self, view: NodeView) -> Text:
        variables = self.app.theme_variables
        unhealthy = self._progress.node_unhealthy(view.node.name)
        label = mark(FAILED if unhealthy else view.status, variables, NODE_MARKS)
        label.append(f" {view.node.name:<{self._name_width}} ")
        label.append(self._address(view.node.internal_ip), style="dim")
        if self.compact:
            return label
        if unhealthy:
            label.append(f" · {unhealthy} failing", style=status_style(FAILED, variables))
        elif view.status == RUNNING and view.transfer is not None:
            label.append(f" · {short(view.transfer)}", style="italic")
        elif view.status == RUNNING and view.stage:
            label.append(f" · {view.stage}", style="italic")
        elif view.external:
            label.append(f" {view.external}", style="dim")
        return label

    def _api_label(self) -> Text:
        stage = self._progress.stages.get(FRONTEND)
        status = stage.status if stage else PENDING
        label = mark(status, self.app.theme_variables, NODE_MARKS)
        label.append(" api ")
        label.append(self._api_address or "address pending", style="dim")
        return label

    def refresh_node(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            entry.set_label(self._label(self._progress.nodes[name]))

    def refresh_api(self, address: str | None) -> None:
        """The frontend stage's mark and the address as known now (None: pending)."""
        self._api_address = address
        self._relabel_api()

    def _relabel_api(self) -> None:
        if self._api is not None:
            self._api.set_label(self._api_label())

    def watch_compact(self) -> None:
        self.relabel()

    def relabel(self) -> None:
        for name in self._entries:
            self.refresh_node(name)
        self._relabel_api()

    def label_of(self, name: str) -> str:
        """The text shown for a node (tests and screenshots read it)."""
        return str(self._entries[name].label)

    @property
    def api_text(self) -> str:
        """The text of the cloud load balancer's line ("" without one)."""
        return str(self._api.label) if self._api is not None else ""

    def on_tree_node_selected(self, event: Tree.NodeSelected[Pick | None]) -> None:
        event.stop()
        self.post_message(self.NodesSelected(event.node.data))
