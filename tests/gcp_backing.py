"""Real machines behind the fake Compute API: each GCE instance boots as a local nspawn node.

NodeBacking is a fakegce InstanceBacking built on the local provider's own node machinery: a
LocalProvider whose topology holds just that instance makes the node (overlay over the cached
Debian root, its own network namespace on the bridge, the login user, a freshly generated host
key) and waits until sshd answers with that key. The node's address is the instance's networkIP
on a bridge whose host side is the node CIDR's first address, so natIP, networkIP and the SSH
endpoint are all that one address. Like a guest agent, the backing reads the instance's own
metadata (`ssh-keys`: "user:key" lines) to create the login user with its client key.

With `apt` (an AptRepo), the repository is served on the bridge and is every node's only apt
source, and `packages` are installed from it as the node boots — the image's packages: GCE's
Debian and Ubuntu images come with python3 and python3-yaml, which the kube-* stand-ins need.

Every host object carries one "kt..." test prefix (the janitor's family), so a crashed run is
swept; `close()` removes them all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import serve_apt_on_bridge, serve_on_bridge
from workerbed import shells

from khwtui.model import config as config_mod
from khwtui.model.topology import Node
from khwtui.providers import nspawn
from khwtui.providers.local import LocalProvider
from khwtui.providers.nspawn import HostObject, Names

Metadata = Callable[[str], dict[str, str]]  # instance name -> its metadata items by key


@dataclass(frozen=True)
class Machines:
    """The topology a LocalProvider is given: it reads nothing of it but `nodes`."""

    nodes: tuple[Node, ...]


class NodeBacking:
    """create(name, network_ip) boots a node and returns (its address, {"ssh-ed25519": key})."""

    def __init__(
        self, root: Path, prefix: str, node_cidr: str, metadata: Metadata, ssh_port: int = 22, apt: object | None = None, packages: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.names = Names(prefix)
        self.node_cidr = ipaddress.IPv4Network(node_cidr)
        self._metadata = metadata
        self._ssh_port = ssh_port
        self._packages = packages
        self._addresses: dict[str, str] = {}  # instance -> its node's address
        self._logins: dict[str, tuple[str, str]] = {}  # instance -> (login user, its client keys)
        self._apt_server = serve_apt_on_bridge(prefix, node_cidr, apt) if apt is not None else None
        self._prefix = prefix
        self.served: list = []  # more folders served on the bridge (serve())
        self._apt = {"apt_mirror": self._apt_server.url, "apt_key": str(apt.keyring)} if self._apt_server else {}  # type: ignore[attr-defined]
        # With no nodes, ensure() makes exactly the shared parts: node root, bridge, guard rules.
        asyncio.run(self._provider(".shared", (), "khwtui", "").ensure(_quiet))

    def create(self, name: str, network_ip: str) -> tuple[str, dict[str, str]]:
        if ipaddress.IPv4Address(network_ip) not in self.node_cidr:
            raise ValueError(f"instance {name}: networkIP {network_ip} is outside the node CIDR {self.node_cidr}")
        user, keys = login(name, self._metadata(name).get("ssh-keys", ""))
        node = Node(name, "instance", 0, network_ip)
        self._addresses[name], self._logins[name] = network_ip, (user, "\n".join(keys))
        [endpoint] = asyncio.run(self._provider(name, (node,), user, "\n".join(keys)).ensure(_quiet))
        if self._packages:
            shells(self._folder(name))[name].run(f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {shlex.join(self._packages)}", timeout=600)
        return endpoint.ssh_host, {"ssh-ed25519": endpoint.host_key.split()[1]}

    def stop(self, name: str) -> None:
        """instances.stop: the node powers off through its systemd; its disk and network stay."""
        asyncio.run(self._provider(name, (self._node(name),), *self._logins[name]).stop(_quiet))

    def start(self, name: str) -> str:
        """instances.start: boot the node from its disk; it answers at its one address again."""
        [endpoint] = asyncio.run(self._provider(name, (self._node(name),), *self._logins[name]).start(_quiet))
        return endpoint.ssh_host

    def _node(self, name: str) -> Node:
        """The node behind an instance, as create() made it (its address is in its runtime record)."""
        return Node(name, "instance", 0, self._addresses[name])

    def namespaces(self) -> dict[str, str]:
        """The network namespace (a /proc path) of each running instance's node, by name: where the
        data plane also listens, so that a node's own connections to a load balancer reach it."""
        found: dict[str, str] = {}
        for runtime in self.root.glob("*/local/runtime.toml"):
            try:
                nodes = tomllib.loads(runtime.read_text())["nodes"]
            except (OSError, tomllib.TOMLDecodeError, KeyError):
                continue  # being written, or gone
            found |= {name: f"/proc/{node['init_pid']}/ns/net" for name, node in nodes.items() if node.get("init_pid")}
        return found

    def delete(self, name: str) -> None:
        """Stop the node and remove its host objects and disk; the bridge stays for the others."""
        folder = self._folder(name)
        nspawn.remove([o for o in nspawn.discover(re.escape(self.names.prefix)) if self._of(name, o)], _quiet)
        if folder.exists():
            nspawn.unmount_under(folder)
            shutil.rmtree(folder)

    def serve(self, folder: Path) -> None:
        """Serve `folder` to the nodes too, on the bridge's host address, until close()."""
        self.served.append(serve_on_bridge(self._prefix, str(self.node_cidr), folder))

    def close(self) -> None:
        """Remove every host object of the prefix: the nodes still running, the bridge, the rules;
        stop serving the apt repository and the other folders."""
        for server in ([self._apt_server] if self._apt_server is not None else []) + self.served:
            server.__exit__(None, None, None)
        nspawn.remove(nspawn.discover(re.escape(self.names.prefix)), _quiet)

    def _provider(self, name: str, nodes: tuple[Node, ...], user: str, client_keys: str) -> LocalProvider:
        raw = {
            "provider": {"kind": "local"},
            "local": {"outbound": False, **self._apt},
            "network": {"node_cidr": str(self.node_cidr)},
            "ssh": {"user": user, "port": self._ssh_port},
        }
        config = config_mod.from_dict(raw)
        return LocalProvider(config, Machines(nodes), self._folder(name), client_keys, prefix=self.names.prefix)  # type: ignore[arg-type]

    def _folder(self, name: str) -> Path:
        return self.root / name

    def _of(self, name: str, obj: HostObject) -> bool:
        """Whether a host object of the prefix belongs to instance `name`'s node."""
        machine = self.names.machine(name)
        if obj.kind in ("machine", "netns"):
            return obj.name == machine
        if obj.kind == "cgroup":
            return Path(obj.name).name == machine
        if obj.kind == "mount":
            return Path(obj.name).is_relative_to(self._folder(name).resolve())
        return obj.kind == "link" and obj.name == self.names.veth(name)


def login(instance: str, ssh_keys: str) -> tuple[str, list[str]]:
    """The one login user of GCE's `ssh-keys` metadata ("user:key" lines) and its keys."""
    by_user: dict[str, list[str]] = {}
    for line in filter(None, map(str.strip, ssh_keys.splitlines())):
        user, _, key = line.partition(":")
        by_user.setdefault(user, []).append(key.strip())
    if len(by_user) != 1:
        raise ValueError(f"instance {instance}: ssh-keys names {sorted(by_user) or 'no user'}; this backing makes exactly one login user")
    [(user, keys)] = by_user.items()
    return user, keys


def _quiet(line: str) -> None:
    """The node machinery's progress lines; the test reads the nodes themselves instead."""
