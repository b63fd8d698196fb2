"""The TOML config: read with tomllib into frozen dataclasses, every value validated.

The schema is the dataclasses themselves: a field's name is its key and its default is the
default, so the reader, the validator and `khwtui plan` cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from khwtui.core.errors import ConfigError

SUPPORTED_MINORS = (34, 35, 36, 37)
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
URL_PLACEHOLDERS = {"version", "arch", "name"}
CONTROLLER_START = 10  # KTHW: controllers at .10, .11, ...; workers from the next multiple of ten


@dataclass(frozen=True)
class ClusterSection:
    name: str = "kubernetes-the-hard-way"
    kubernetes_version: str = "1.36.5"


@dataclass(frozen=True)
class ProviderSection:
    kind: str = "gcp"


@dataclass(frozen=True)
class GcpSection:
    project: str = ""
    region: str = ""
    zone: str = ""
    machine_type: str = "e2-standard-2"
    image_project: str = "debian-cloud"
    image_family: str = "debian-12"
    disk_gb: int = 50
    admin_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    api_endpoint: str = ""
    load_balancer: str = "target-pool"


@dataclass(frozen=True)
class LocalSection:
    outbound: bool = True
    debian_mirror: str = ""
    apt_mirror: str = ""
    apt_key: str = ""


@dataclass(frozen=True)
class MachineHost:
    name: str = ""
    role: str = ""
    address: str = ""
    host_key: str = ""


@dataclass(frozen=True)
class MachinesSection:
    trust_on_first_use: bool = False
    hosts: tuple[MachineHost, ...] = ()


@dataclass(frozen=True)
class SshSection:
    user: str = "khwtui"
    port: int = 22


@dataclass(frozen=True)
class TopologySection:
    controllers: int = 2
    workers: int = 2
    name_prefix: str = ""


@dataclass(frozen=True)
class NetworkSection:
    node_cidr: str = "10.240.0.0/24"
    cluster_cidr: str = "10.200.0.0/16"
    pod_prefix: int = 24
    service_cidr: str = "10.32.0.0/24"
    dns_ip: str = "10.32.0.10"
    cluster_domain: str = "cluster.local"
    api_port: int = 6443


@dataclass(frozen=True)
class VersionsSection:
    etcd: str = "3.6.12"
    containerd: str = "2.2.3"
    runc: str = "1.4.2"
    cni_plugins: str = "1.9.0"
    crictl: str = "1.36.0"
    coredns: str = "1.14.3"


@dataclass(frozen=True)
class BinariesSection:
    mirror: str = ""
    delivery: str = "auto"  # auto | node | push: who downloads release files (release_delivery)
    urls: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PkiSection:
    key_type: str = "rsa-2048"
    validity_days: int = 365
    renew_before_days: int = 30


@dataclass(frozen=True)
class EncryptionSection:
    provider: str = "aescbc"


@dataclass(frozen=True)
class DemoSection:
    enabled: bool = False


@dataclass(frozen=True)
class AddonsSection:
    metrics_server: bool = False  # applied by the dns stage after CoreDNS (khwtui/toolkit/addons.py)


@dataclass(frozen=True)
class Config:
    """The whole validated config. `sources` maps each key path to where its value came from."""

    cluster: ClusterSection = ClusterSection()
    provider: ProviderSection = ProviderSection()
    gcp: GcpSection = GcpSection()
    local: LocalSection = LocalSection()
    machines: MachinesSection = MachinesSection()
    ssh: SshSection = SshSection()
    topology: TopologySection = TopologySection()
    network: NetworkSection = NetworkSection()
    versions: VersionsSection = VersionsSection()
    binaries: BinariesSection = BinariesSection()
    pki: PkiSection = PkiSection()
    encryption: EncryptionSection = EncryptionSection()
    demo: DemoSection = DemoSection()
    addons: AddonsSection = AddonsSection()
    path: str = ""
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def minor(self) -> int:
        """The Kubernetes minor version (36 for 1.36.5): templates branch on it."""
        return version_tuple(self.cluster.kubernetes_version)[1]


SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name not in ("path", "sources")]


def version_tuple(text: str) -> tuple[int, int, int]:
    match = VERSION.match(text)
    if not match:
        raise ValueError(text)
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def default_config_path() -> Path:
    """The config shipped in the package, used when no --config is given."""
    return Path(str(resources.files("khwtui") / "configs" / "default.toml"))


def load(path: str | Path | None = None) -> Config:
    """Read, type-check and validate a config file; any problem raises one ConfigError."""
    file = Path(path) if path else default_config_path()
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file {file}", "give the path of a khwtui TOML config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{file} is not valid TOML ({exc})", "fix the TOML syntax") from None
    return from_dict(raw, str(file))


def from_dict(raw: dict[str, Any], origin: str = "<dict>") -> Config:
    """Build a validated Config from parsed TOML."""
    sources: dict[str, str] = {}
    _reject_unknown(raw, SECTIONS, "")
    sections = {}
    for f in dataclasses.fields(Config):
        if f.name in ("path", "sources"):
            continue
        table = raw.get(f.name, {})
        if not isinstance(table, dict):
            raise ConfigError(f.name, "must be a table", f"write it as [{f.name}]")
        sections[f.name] = _section(_field_class(f), table, f.name, origin, sources)
    config = Config(**sections, path=origin, sources=sources)
    validate(config)
    return config


def _field_class(f: dataclasses.Field) -> type:
    return typing.get_type_hints(Config)[f.name]


def _section(cls: type, table: dict[str, Any], prefix: str, origin: str, sources: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    _reject_unknown(table, list(hints), prefix)
    values = {}
    for name, hint in hints.items():
        key = f"{prefix}.{name}"
        if name in table:
            values[name] = _convert(table[name], hint, key, origin, sources)
            sources.setdefault(key, origin)
        else:
            sources.setdefault(key, "default")
    return cls(**values)


def _convert(value: Any, hint: Any, key: str, origin: str, sources: dict[str, str]) -> Any:
    origin_type = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, not {value!r}", f"write {key.split('.')[-1]} = true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, not {value!r}", "write a number without quotes")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, not {value!r}", "put the value in double quotes")
        return value
    if origin_type is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, not {value!r}", 'write it as ["a", "b"]')
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return tuple(
                _section(item, _table(entry, f"{key}[{i}]"), f"{key}[{i}]", origin, sources)
                for i, entry in enumerate(value)
            )
        return tuple(_convert(entry, item, f"{key}[{i}]", origin, sources) for i, entry in enumerate(value))
    if origin_type is dict:
        table = _table(value, key)
        return {k: _convert(v, str, f"{key}.{k}", origin, sources) for k, v in table.items()}
    raise TypeError(hint)  # a schema bug, not a user error


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table, not {value!r}", f"write it as [{key}] with key = value lines")
    return value


def _reject_unknown(table: dict[str, Any], known: list[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(key, known, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"remove it (known: {', '.join(known)})"
            raise ConfigError(where, "unknown key", fix)


# --- validation -----------------------------------------------------------------------------


def validate(c: Config) -> None:
    """Check every rule; the first broken one raises a ConfigError naming its key."""
    _validate_cluster(c)
    _validate_provider(c)
    _validate_network(c)
    _validate_topology(c)
    _validate_versions(c)
    _validate_rest(c)


def _rfc1035(key: str, value: str, what: str = "name") -> None:
    if len(value) > 63:
        raise ConfigError(key, f"{what} {value!r} is {len(value)} characters, GCE allows 63", "use a shorter name")
    if not RFC1035.match(value):
        raise ConfigError(
            key,
            f"{what} {value!r} is not a valid RFC 1035 name",
            "use lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen",
        )


def _validate_cluster(c: Config) -> None:
    _rfc1035("cluster.name", c.cluster.name)
    key = "cluster.kubernetes_version"
    try:
        major, minor, _ = version_tuple(c.cluster.kubernetes_version)
    except ValueError:
        raise ConfigError(key, f"{c.cluster.kubernetes_version!r} is not a version like 1.36.5", 'write e.g. "1.36.5"') from None
    if major != 1 or minor not in SUPPORTED_MINORS:
        supported = ", ".join(f"1.{m}" for m in SUPPORTED_MINORS)
        raise ConfigError(key, f"Kubernetes {c.cluster.kubernetes_version} is not supported", f"use a version of {supported}")


def _validate_provider(c: Config) -> None:
    kinds = ("gcp", "local", "machines")
    if c.provider.kind not in kinds:
        raise ConfigError("provider.kind", f"{c.provider.kind!r} is not a provider", f"use one of {', '.join(kinds)}")
    g = c.gcp
    if g.load_balancer not in ("target-pool", "backend-service"):
        raise ConfigError("gcp.load_balancer", f"{g.load_balancer!r} is not a design", 'use "target-pool" or "backend-service"')
    if not 10 <= g.disk_gb <= 65536:
        raise ConfigError("gcp.disk_gb", f"{g.disk_gb} GB is outside 10..65536", "use a boot disk of at least 10 GB")
    for key, value in (("gcp.machine_type", g.machine_type), ("gcp.image_project", g.image_project), ("gcp.image_family", g.image_family)):
        if not value:
            raise ConfigError(key, "is empty", "set it, e.g. the default from the docs")
    if g.project and not re.match(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$", g.project):
        raise ConfigError("gcp.project", f"{g.project!r} is not a GCP project ID", "use the project ID (6-30 lower-case letters, digits, hyphens)")
    if g.region and not re.match(r"^[a-z]+-[a-z]+\d+$", g.region):
        raise ConfigError("gcp.region", f"{g.region!r} is not a region name", 'use e.g. "us-west1"')
    if g.zone and not re.match(r"^[a-z]+-[a-z]+\d+-[a-z]$", g.zone):
        raise ConfigError("gcp.zone", f"{g.zone!r} is not a zone name", 'use e.g. "us-west1-c"')
    if g.region and g.zone and not g.zone.startswith(g.region + "-"):
        raise ConfigError("gcp.zone", f"zone {g.zone} is not in region {g.region}", f"use a zone of {g.region}, e.g. {g.region}-c")
    if not g.admin_cidrs:
        raise ConfigError("gcp.admin_cidrs", "is empty, so nobody could reach the nodes", 'list your address, e.g. ["203.0.113.7/32"]')
    for i, cidr in enumerate(g.admin_cidrs):
        _network(f"gcp.admin_cidrs[{i}]", cidr)
    if g.api_endpoint:
        _url("gcp.api_endpoint", g.api_endpoint)
    for key, value in (("local.debian_mirror", c.local.debian_mirror), ("local.apt_mirror", c.local.apt_mirror)):
        if value:
            _url(key, value)
    if c.local.apt_mirror and not c.local.apt_key:
        raise ConfigError("local.apt_key", "is empty while local.apt_mirror is set", "give the keyring that signs the mirror (unsigned sources are refused)")
    if c.local.apt_key and not Path(c.local.apt_key).is_file():
        raise ConfigError("local.apt_key", f"no such file {c.local.apt_key}", "give the path of the mirror's keyring")
    if c.provider.kind == "machines":
        _validate_machines(c)


def _validate_machines(c: Config) -> None:
    hosts = c.machines.hosts
    if not hosts:
        raise ConfigError("machines.hosts", "is empty", "add a [[machines.hosts]] table per host")
    names: set[str] = set()
    addresses: set[str] = set()
    for i, h in enumerate(hosts):
        key = f"machines.hosts[{i}]"
        _rfc1035(f"{key}.name", h.name, "host name")
        if h.name in names:
            raise ConfigError(f"{key}.name", f"{h.name!r} is used by two hosts", "give every host its own name")
        names.add(h.name)
        if h.role not in ("controller", "worker", "lb"):
            raise ConfigError(f"{key}.role", f"{h.role!r} is not a role", 'use "controller", "worker" or "lb"')
        try:
            ipaddress.IPv4Address(h.address)
        except ValueError:
            raise ConfigError(f"{key}.address", f"{h.address!r} is not an IPv4 address", 'write e.g. "192.0.2.10"') from None
        if h.address in addresses:
            raise ConfigError(f"{key}.address", f"{h.address} is used by two hosts", "give every host its own address")
        addresses.add(h.address)
        if h.host_key:
            parts = h.host_key.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
                raise ConfigError(f"{key}.host_key", "is not an OpenSSH public key", 'paste "ssh-ed25519 AAAA..." from ssh-keyscan')
        elif not c.machines.trust_on_first_use:
            raise ConfigError(f"{key}.host_key", "is empty and trust-on-first-use is off", "pin the key (ssh-keyscan the host) or set machines.trust_on_first_use = true")
    roles = [h.role for h in hosts]
    for role in ("controller", "worker"):
        if role not in roles:
            raise ConfigError("machines.hosts", f"has no {role}", f'add a host with role = "{role}"')
    if roles.count("lb") > 1:
        raise ConfigError("machines.hosts", "has more than one lb host", "keep one host with role = \"lb\"")


def _network(key: str, text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as exc:
        hint = "clear the host bits" if "host bits" in str(exc) else 'write a CIDR like "10.240.0.0/24"'
        raise ConfigError(key, f"{text!r} is not a valid IPv4 CIDR ({exc})", hint) from None


def _url(key: str, text: str) -> None:
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https", "file") or not (parsed.netloc or parsed.scheme == "file"):
        raise ConfigError(key, f"{text!r} is not an http(s) URL", 'write e.g. "http://127.0.0.1:8080/"')


def _validate_network(c: Config) -> None:
    n = c.network
    node = _network("network.node_cidr", n.node_cidr)
    cluster = _network("network.cluster_cidr", n.cluster_cidr)
    service = _network("network.service_cidr", n.service_cidr)
    pairs = (("network.node_cidr", node), ("network.cluster_cidr", cluster), ("network.service_cidr", service))
    for i, (key_a, a) in enumerate(pairs):
        for key_b, b in pairs[i + 1 :]:
            if a.overlaps(b):
                raise ConfigError(key_b, f"{b} overlaps {key_a} {a}", "choose ranges that do not overlap")
    if node.prefixlen > 28:
        raise ConfigError("network.node_cidr", f"/{node.prefixlen} leaves no room for nodes", "use /28 or larger, e.g. /24")
    if not cluster.prefixlen <= n.pod_prefix <= 28:
        raise ConfigError("network.pod_prefix", f"/{n.pod_prefix} does not fit in cluster_cidr {cluster}", f"use a prefix between {cluster.prefixlen} and 28")
    if service.prefixlen > 29:
        raise ConfigError("network.service_cidr", f"/{service.prefixlen} is too small for services", "use /24 or larger")
    try:
        dns = ipaddress.IPv4Address(n.dns_ip)
    except ValueError:
        raise ConfigError("network.dns_ip", f"{n.dns_ip!r} is not an IPv4 address", 'write e.g. "10.32.0.10"') from None
    hosts = list(_first_hosts(service, 2))
    if dns not in service or dns in (service.network_address, service.broadcast_address):
        raise ConfigError("network.dns_ip", f"{dns} is not a usable address in service_cidr {service}", f"use an address inside {service}, e.g. {service.network_address + 10}")
    if dns == hosts[0]:
        raise ConfigError("network.dns_ip", f"{dns} is the kubernetes service address", f"use another address inside {service}, e.g. {service.network_address + 10}")
    labels = n.cluster_domain.split(".")
    if n.cluster_domain.endswith(".") or not all(RFC1035.match(label) or re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", label) for label in labels):
        raise ConfigError("network.cluster_domain", f"{n.cluster_domain!r} is not a DNS domain", 'use e.g. "cluster.local"')
    if not 1 <= n.api_port <= 65535:
        raise ConfigError("network.api_port", f"{n.api_port} is not a TCP port", "use 1..65535, normally 6443")


def _first_hosts(net: ipaddress.IPv4Network, count: int) -> typing.Iterator[ipaddress.IPv4Address]:
    for i in range(1, count + 1):
        yield net.network_address + i


def _validate_topology(c: Config) -> None:
    t = c.topology
    if t.name_prefix:
        _rfc1035("topology.name_prefix", t.name_prefix, "prefix")
    if c.provider.kind == "machines":
        return  # the inventory decides the nodes
    for key, count in (("topology.controllers", t.controllers), ("topology.workers", t.workers)):
        if count < 1:
            raise ConfigError(key, f"{count} is not a node count", "use at least 1")
    room_controllers, room_workers = address_room(c)
    if t.controllers > room_controllers:
        raise ConfigError("topology.controllers", f"{t.controllers} controllers do not fit node_cidr {c.network.node_cidr} (room for {room_controllers})", "use fewer controllers or a larger network.node_cidr")
    if t.workers > room_workers:
        raise ConfigError("topology.workers", f"{t.workers} workers do not fit node_cidr {c.network.node_cidr} (room for {room_workers})", "use fewer workers or a larger network.node_cidr, e.g. a /23")
    if t.workers > pod_room(c):
        raise ConfigError("topology.workers", f"{t.workers} pod CIDRs of /{c.network.pod_prefix} do not fit cluster_cidr {c.network.cluster_cidr} (room for {pod_room(c)})", "use a larger network.cluster_cidr or a longer network.pod_prefix")


def _last_offset(net: ipaddress.IPv4Network) -> int:
    """GCE reserves the last two addresses of a subnet (and .0/.1), so nodes stop before them."""
    return net.num_addresses - 3


def worker_start(controllers: int) -> int:
    return CONTROLLER_START + 10 * max(1, math.ceil(controllers / 10))


def address_room(config: Config) -> tuple[int, int]:
    """(room for controllers, room for workers given the configured controllers) in node_cidr."""
    net = ipaddress.IPv4Network(config.network.node_cidr)
    last = _last_offset(net)
    max_controllers = max(0, last - CONTROLLER_START - 10 + 1)
    workers = max(0, last - worker_start(config.topology.controllers) + 1)
    return max_controllers, workers


def pod_room(config: Config) -> int:
    cluster = ipaddress.IPv4Network(config.network.cluster_cidr)
    return 2 ** (config.network.pod_prefix - cluster.prefixlen)


COMPANION_MINIMUMS = {"etcd": (3, 4), "containerd": (1, 6), "runc": (1, 1), "cni_plugins": (1, 0), "coredns": (1, 8)}


def _validate_versions(c: Config) -> None:
    v = c.versions
    parsed = {}
    for name in ("etcd", "containerd", "runc", "cni_plugins", "crictl", "coredns"):
        text = getattr(v, name)
        if name == "crictl" and text == "":
            continue
        try:
            parsed[name] = version_tuple(text)
        except ValueError:
            raise ConfigError(f"versions.{name}", f"{text!r} is not a version like 1.2.3", 'write e.g. "1.2.3" (quotes included)') from None
    for name, minimum in COMPANION_MINIMUMS.items():
        if parsed[name][:2] < minimum:
            raise ConfigError(f"versions.{name}", f"{getattr(v, name)} is older than {minimum[0]}.{minimum[1]}, the oldest khwtui supports", f"use {minimum[0]}.{minimum[1]} or newer")
    if c.minor >= 36 and parsed["containerd"] < (2, 0, 0):
        raise ConfigError("versions.containerd", f"Kubernetes 1.{c.minor} needs containerd 2.0 or newer, not {v.containerd}", 'use e.g. "2.2.3", or Kubernetes 1.35 for containerd 1.x')
    if "crictl" in parsed and abs(parsed["crictl"][1] - c.minor) > 1:
        raise ConfigError("versions.crictl", f"crictl {v.crictl} does not follow Kubernetes 1.{c.minor}", f'use crictl 1.{c.minor}.x, or "" to skip it')


def _validate_rest(c: Config) -> None:
    if not USERNAME.match(c.ssh.user) or c.ssh.user == "root":
        raise ConfigError("ssh.user", f"{c.ssh.user!r} is not a usable login", 'use a non-root user name like "khwtui"')
    if not 1 <= c.ssh.port <= 65535:
        raise ConfigError("ssh.port", f"{c.ssh.port} is not a TCP port", "use 1..65535, normally 22")
    if c.pki.key_type not in ("rsa-2048", "ecdsa-p256"):
        raise ConfigError("pki.key_type", f"{c.pki.key_type!r} is not a key type", 'use "rsa-2048" or "ecdsa-p256"')
    if not 1 <= c.pki.validity_days <= 3653:
        raise ConfigError("pki.validity_days", f"{c.pki.validity_days} days is outside 1..3653", "use e.g. 365")
    if not 0 <= c.pki.renew_before_days < c.pki.validity_days:
        raise ConfigError("pki.renew_before_days", f"{c.pki.renew_before_days} must be below validity_days ({c.pki.validity_days})", "use e.g. 30")
    if c.encryption.provider not in ("aescbc", "secretbox"):
        raise ConfigError("encryption.provider", f"{c.encryption.provider!r} is not a provider", 'use "aescbc" or "secretbox"')
    if c.binaries.mirror:
        _url("binaries.mirror", c.binaries.mirror)
    if c.binaries.delivery not in ("auto", "node", "push"):
        raise ConfigError("binaries.delivery", f"{c.binaries.delivery!r} is not a delivery mode",
                          'use "auto", "node" (nodes download) or "push" (this machine uploads)')
    for name, url in c.binaries.urls.items():
        unknown = set(re.findall(r"{(\w*)}", url)) - URL_PLACEHOLDERS
        if unknown:
            raise ConfigError(f"binaries.urls.{name}", f"unknown placeholder {{{sorted(unknown)[0]}}}", "use only {version}, {arch} and {name}")
        _url(f"binaries.urls.{name}", url.replace("{", "").replace("}", ""))
    for name, digest in c.binaries.sha256.items():
        if not SHA256.match(digest):
            raise ConfigError(f"binaries.sha256.{name}", "is not a SHA-256 hex digest", "paste the 64 lower-case hex digits from sha256sum")
