"""A local cluster driven through the real CLI, as a user would: config file, state folder, khwtui.

Binaries come from the test mirror on 127.0.0.1 (the operator's machine downloads and verifies
them); the cluster's host prefix is registered with the janitor so a crashed run is cleaned up.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import janitor
import tomli_w

from khwtui.providers import nspawn
from khwtui.providers.local import cluster_prefix

K8S_VERSION = "1.35.4"  # the last minor that accepts containerd 1.x (Debian 12 ships 1.6)
_subnets = itertools.count(1)


def local_config(name: str, controllers: int, workers: int, mirror: dict, **extra: dict) -> dict:
    """A local-provider config pinned to the Debian versions the test mirror serves."""
    subnet = 240 - (os.getpid() % 50) * 4 - next(_subnets) % 4  # distinct per run and cluster
    raw = {
        "cluster": {"name": name, "kubernetes_version": K8S_VERSION},
        "provider": {"kind": "local"},
        "local": {"outbound": False},
        "topology": {"controllers": controllers, "workers": workers},
        "network": {"node_cidr": f"10.{subnet}.0.0/24"},
        "versions": {**mirror["versions"], "crictl": ""},
        "binaries": mirror["binaries"],
        "pki": {"key_type": "ecdsa-p256"},
    }
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    return raw


@dataclass
class LocalCluster:
    root: Path
    raw: dict
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomli_w.dumps(self.raw))
        self.prefix = cluster_prefix(self.raw["cluster"]["name"], self.state_dir)
        janitor.register(self.prefix)

    @property
    def config_path(self) -> Path:
        return self.root / "cluster.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def khwtui(self, *args: str, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess; stdout and stderr are captured as text."""
        command = [sys.executable, "-m", "khwtui", *args, "--config", str(self.config_path), "--state-dir", str(self.state_dir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input, stdin=None if input else subprocess.DEVNULL)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "khwtui", *args, "--config", str(self.config_path), "--state-dir", str(self.state_dir)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def state(self) -> dict:
        return tomllib.loads((self.state_dir / "state.toml").read_text())

    def host_objects(self) -> list[nspawn.HostObject]:
        return nspawn.discover(self.prefix)

    def runtime(self) -> dict:
        return tomllib.loads((self.state_dir / "local" / "runtime.toml").read_text())

    def down(self) -> None:
        """Tear down through the CLI; whatever is left is the janitor's (and the test's failure)."""
        if (self.state_dir / "state.toml").exists():
            self.khwtui("down", "--yes", timeout=300)


def keyscan(address: str) -> str:
    """The ed25519 host key a node presents, as `ssh-keyscan` sees it ("ssh-ed25519 AAAA...")."""
    out = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", address], capture_output=True, text=True, check=True).stdout
    fields = [line.split() for line in out.splitlines() if line and not line.startswith("#")]
    return " ".join(fields[0][1:3])
