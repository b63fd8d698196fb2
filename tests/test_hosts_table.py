"""Every node's name in /etc/hosts between markers naming the cluster: the commands run here by sh on
a copy, as they run on a node."""

from __future__ import annotations

import subprocess
from pathlib import Path

from khwtui.artifacts.hosts_table import CHANGED, PRESENT, check_command, ensure_command, remove_command
from khwtui.model import config
from khwtui.model.topology import Topology

OTHER = "127.0.0.1\tlocalhost\n# BEGIN khwtui other: node names\n10.9.0.10\tcontroller-0\n# END khwtui other\n192.0.2.7\tmine\n"


def topo(workers: int = 2) -> Topology:
    return Topology(config.from_dict({"cluster": {"name": "lab"}, "topology": {"controllers": 1, "workers": workers}}))


def sh(command: str) -> str:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout


def test_the_block_is_added_once_replaced_when_the_nodes_change_and_removed_alone(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(OTHER)
    hosts.chmod(0o644)
    inode = hosts.stat().st_ino
    assert sh(check_command(topo(), str(hosts))) == ""
    assert sh(ensure_command(topo(), str(hosts))).strip() == CHANGED
    assert hosts.read_text() == OTHER + ("# BEGIN khwtui lab: node names\n10.240.0.10\tcontroller-0\n10.240.0.20\tworker-0\n"
                                         "10.240.0.21\tworker-1\n# END khwtui lab\n")
    assert sh(check_command(topo(), str(hosts))).strip() == PRESENT
    assert sh(ensure_command(topo(), str(hosts))) == ""  # already there: not rewritten
    assert sh(ensure_command(topo(3), str(hosts))).strip() == CHANGED
    assert hosts.read_text().count("# BEGIN khwtui lab") == 1 and "10.240.0.22\tworker-2\n" in hosts.read_text()
    sh(remove_command("lab", str(hosts)))
    assert hosts.read_text() == OTHER and hosts.stat().st_ino == inode and hosts.stat().st_mode & 0o777 == 0o644
