#!/usr/bin/python3
"""Stand-ins for kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy
(tests only).

One program; what it stands in for is the name it was started as (argv[0]). It accepts exactly
the flags of its program's minor (baked in as RELEASE by tests.standins.build), checks every
file they name, and refuses anything wrong with ONE line on stderr and exit status 1, which
systemd's journal then shows. Then:
- kube-apiserver, once a TLS connection to etcd is up (else it exits 255 after 20 s, as the real
  one does), serves /livez, /readyz, /healthz and /version anonymously over TLS on
  --bind-address:--secure-port with its serving certificate (/readyz and /healthz need etcd's
  /health), discovery (/api, /api/v1 without resources, /apis: only authentication.k8s.io/v1)
  to authenticated clients, and SelfSubjectReviews answered from the client certificate (CN =
  user, O = groups); a client certificate that --client-ca-file did not sign gets 401 on every
  path.
- kube-controller-manager and kube-scheduler stay up until SIGTERM.
- kubelet and kube-proxy also check their --config file (a KubeletConfiguration or
  KubeProxyConfiguration: version, strict fields of the minor, every file and kubeconfig it
  names); the kubelet also refuses a CRI socket that does not answer and, from 1.35, a cgroup v1
  host unless failCgroupV1 is false, as the real one does, and a cgroupDriver other than
  containerd 1.x's (where the real one starts and every pod fails). Then they stay up until SIGTERM.
Standard library and PyYAML only: the nodes have python3 and python3-yaml, nothing else.
"""

import base64
import ctypes
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import SplitResult, urlsplit

import yaml

RELEASE = None  # baked in by tests.standins.build(): {"version": "1.36.5", "programs": {name: spec}}

AUTHZ_MODES = {"AlwaysAllow", "AlwaysDeny", "ABAC", "Webhook", "RBAC", "Node"}
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")
ENCRYPTION_KEY_BYTES = {"aescbc": (16, 24, 32), "aesgcm": (16, 24, 32), "secretbox": (32,)}
SCHEDULER_CONFIG_KEYS = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection",
                         "healthzBindAddress", "metricsBindAddress", "enableProfiling", "enableContentionProfiling",
                         "percentageOfNodesToScore", "podInitialBackoffSeconds", "podMaxBackoffSeconds",
                         "profiles", "extenders", "delayCacheUntilActive"}
SSR_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
CONFIG_VERSIONS = {"kubelet": ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
                   "kube-proxy": ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")}
PROXY_MODES = {"", "iptables", "ipvs", "nftables"}
CGROUP_V2_MARK = "/sys/fs/cgroup/cgroup.controllers"  # only the unified hierarchy has it at the top
CGROUP_V1_REFUSED = ("failed to run Kubelet: kubelet is configured to not run on a host using cgroup v1. "
                     "cgroup v1 support is unsupported and will be removed in a future release")
PROGRAM = ""  # the name this stand-in runs as, and its spec (set by main before anything is checked)
SPEC: dict = {}
COMPONENT_CONFIG: dict = {}  # the kubelet's or kube-proxy's --config document, once checked
KUBELET_PORT = 10250  # KubeletConfiguration port's default (staging/src/k8s.io/kubelet/config/v1beta1/types.go)
NODE_PROXY = re.compile(r"^/api/v1/nodes/(?P<node>[^/]+)/proxy(?P<path>/.*)?$")
PUBLIC_PATHS = {"/livez", "/readyz", "/healthz", "/version"}  # system:public-info-viewer


Check = Callable[[str, str], None]  # (flag name, value): raises Refused


class Refused(Exception):
    """Why the program will not start: printed as one line; the program exits with `status`."""

    def __init__(self, line: str, status: int = 1) -> None:
        super().__init__(line)
        self.status = status


# --- flags ---------------------------------------------------------------------------------------


def parse(spec: dict, args: list[str]) -> dict[str, str]:
    """--name=value / --name value / --bool[=true|false] into {name: value}, the way pflag reads them."""
    flags, rest = {}, list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("--") or arg == "--":
            raise Refused(f"unexpected argument {arg!r}: this program takes only --flags")
        name, has_value, value = arg[2:].partition("=")
        if name in spec["removed"]:
            raise Refused(f"unknown flag: --{name} (removed in Kubernetes 1.{spec['removed'][name]})")
        kind = spec["flags"].get(name)
        if kind is None:
            raise Refused(f"unknown flag: --{name}")
        if kind == "bool":
            value = value if has_value else "true"
        elif not has_value:
            if not rest:
                raise Refused(f"flag needs an argument: --{name}")
            value = rest.pop(0)
        flags[name] = value
    return flags


def validate(spec: dict, flags: dict[str, str]) -> None:
    missing = [f"--{name}" for name in spec["required"] if name not in flags]
    if missing:
        raise Refused(f"missing required flag{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name, value in flags.items():
        CHECKS[spec["flags"][name]](name, value)
    where = {name: f"--{name}={value}" for name, value in flags.items()}
    for cert, key in spec["pairs"]:
        if cert in flags and key in flags:
            check_pair(where[cert], read(where[cert], flags[cert]), where[key], read(where[key], flags[key]))
    for kubeconfig, ca in spec["trust"]:
        trusted = kubeconfig_ca(where[kubeconfig], flags[kubeconfig]) if kubeconfig in flags and ca in flags else None
        if trusted is not None and trusted != ca_certs(read(where[ca], flags[ca])):
            raise Refused(f"{where[kubeconfig]} trusts another CA than {where[ca]}")


def read(where: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Refused(f"{where}: {exc.strerror}") from None


def check_value(pattern: Callable[[str], object], what: str) -> Check:
    def check(name: str, value: str) -> None:
        if not pattern(value):
            raise Refused(f"invalid argument {value!r} for --{name}: not {what}")
    return check


def is_ip(value: str) -> bool:
    try:
        return ipaddress.ip_address(value) is not None
    except ValueError:
        return False


def is_cidrs(value: str) -> bool:
    try:
        return all(ipaddress.ip_network(part) is not None for part in value.split(","))
    except ValueError:
        return False


def is_https_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path in ("", "/")


def cert_file(where: str, path: str) -> None:
    ca_certs(read(where, path), where)


def key_file(where: str, path: str) -> None:
    if b"PRIVATE KEY-----" not in read(where, path):
        raise Refused(f"{where} holds no PEM private key")


def check_certs(name: str, path: str) -> None:
    cert_file(f"--{name}={path}", path)


def check_key(name: str, path: str) -> None:
    key_file(f"--{name}={path}", path)


def check_audit_log(name: str, path: str) -> None:
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise Refused(f"--{name}={path}: its folder does not exist")


AUDIT_LEVELS = {"None", "Metadata", "Request", "RequestResponse"}


def check_audit_policy(name: str, path: str) -> None:
    """kubernetes v1.36.0 staging/src/k8s.io/apiserver/pkg/audit/policy/reader.go (LoadPolicyFromFile)
    and validation: an audit.k8s.io/v1 Policy with at least one rule, each with a known level."""
    where = f"--{name}={path}"
    doc = load_yaml(where, path)
    if (doc.get("apiVersion"), doc.get("kind")) != ("audit.k8s.io/v1", "Policy"):
        raise Refused(f'{where}: failed decoding: no kind "{doc.get("kind")}" is registered for version "{doc.get("apiVersion")}"')
    rules = doc.get("rules") or []
    if not rules:
        raise Refused(f"{where}: loaded illegal policy with 0 rules from file {path}")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or rule.get("level") not in AUDIT_LEVELS:
            raise Refused(f"{where}: rules[{i}].level: Unsupported value: {rule.get('level') if isinstance(rule, dict) else rule!r}")


CHECKS: dict[str, Check] = {
    "bool": check_value(lambda v: v in ("true", "false"), "true or false"),
    "string": check_value(bool, "a value"),
    "strings": check_value(lambda v: all(v.split(",")), "a comma-separated list"),
    "map": check_value(lambda v: all("=" in kv for kv in v.split(",")), "key=value pairs"),
    "int": check_value(lambda v: v.lstrip("-").isdigit(), "an integer"),
    "duration": check_value(DURATION.match, "a duration like 1h or 30s"),
    "ip": check_value(is_ip, "an IP address"),
    "ips": check_value(lambda v: all(map(is_ip, v.split(","))), "IP addresses"),
    "cidrs": check_value(is_cidrs, "a CIDR"),
    "portrange": check_value(lambda v: re.fullmatch(r"\d+-\d+", v), "a port range like 30000-32767"),
    "url": check_value(is_https_url, "an https URL"),
    "urls": check_value(lambda v: all(map(is_https_url, v.split(","))), "https URLs"),
    "authz-modes": check_value(lambda v: set(v.split(",")) <= AUTHZ_MODES, f"a list of {','.join(sorted(AUTHZ_MODES))}"),
    "file": lambda name, path: read(f"--{name}={path}", path),
    "cert": check_certs,
    "key": check_key,
    "audit-log": check_audit_log,
    "audit-policy": check_audit_policy,
    "kubeconfig": lambda name, path: kubeconfig_ca(f"--{name}={path}", path),
    "encryption-config": lambda name, path: check_encryption_config(f"--{name}={path}", path),
    "scheduler-config": lambda name, path: check_scheduler_config(f"--{name}={path}", path),
    "kubelet-config": lambda name, path: check_component_config(f"--{name}={path}", path),
    "kube-proxy-config": lambda name, path: check_component_config(f"--{name}={path}", path),
}


# --- certificates, keys and the files that hold them ---------------------------------------------


def ca_certs(pem: bytes, where: str = "certificate data") -> list[bytes]:
    """The DER of the CA certificates in `pem`; refuses data that holds no certificate at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise Refused(f"{where} is not a PEM certificate") from None
    if not context.cert_store_stats()["x509"]:
        raise Refused(f"{where} holds no certificate")
    return sorted(context.get_ca_certs(binary_form=True))


def check_pair(cert_where: str, cert: bytes, key_where: str, key: bytes) -> None:
    """The certificate belongs to the key (OpenSSL compares them when loading both)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), tmp, cert, key)
        except ssl.SSLError as exc:
            raise Refused(f"{cert_where} does not match {key_where} ({exc.reason or exc})") from None


def load_pair(context: ssl.SSLContext, folder: str, cert: bytes, key: bytes) -> None:
    paths = []
    for name, data in (("cert.pem", cert), ("key.pem", key)):
        path = os.path.join(folder, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
        paths.append(path)
    context.load_cert_chain(*paths)


def signed_by(cert: bytes, key: bytes, ca: bytes) -> bool:
    """True when `cert` chains to `ca`: an in-memory TLS handshake in which `cert` is the client's."""
    with tempfile.TemporaryDirectory() as tmp:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        load_pair(client, tmp, cert, key)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pair(server, tmp, cert, key)  # any key pair can serve; only the client side is judged
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(cadata=ca.decode("ascii"))
    wires = [ssl.MemoryBIO() for _ in range(4)]  # client in, client out, server in, server out
    sides = [client.wrap_bio(wires[0], wires[1]), server.wrap_bio(wires[2], wires[3], server_side=True)]
    done = [False, False]
    for _ in range(10):
        for i, side in enumerate(sides):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return False
        if all(done):  # the server's handshake ends only after it verified the client certificate
            return True
        wires[2].write(wires[1].read())
        wires[0].write(wires[3].read())
    return False


# --- config files --------------------------------------------------------------------------------


def load_yaml(where: str, path: str) -> dict:
    try:
        doc = yaml.safe_load(read(where, path))
    except yaml.YAMLError as exc:
        raise Refused(f"{where} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise Refused(f"{where} is not a YAML mapping")
    return doc


def named(items: object, name: str, what: str) -> dict:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            return item[what]
    raise KeyError(f"{what} {name!r}")


def kubeconfig_ca(where: str, path: str) -> list[bytes]:
    """The CA certificates a kubeconfig trusts; refuses one whose current context could not work:
    no https server, a client certificate that does not fit its key or is not signed by that CA."""
    doc = load_yaml(where, path)
    try:
        context = named(doc.get("contexts"), doc["current-context"], "context")
        cluster = named(doc.get("clusters"), context["cluster"], "cluster")
        user = named(doc.get("users"), context["user"], "user")
        server = cluster["server"]
        ca, cert, key = (base64.b64decode(entry, validate=True) for entry in (
            cluster["certificate-authority-data"], user["client-certificate-data"], user["client-key-data"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise Refused(f"{where} is not a usable kubeconfig (missing or bad {exc.args[0] if exc.args else exc})") from None
    if not is_https_url(server):
        raise Refused(f"{where}: server {server!r} is not an https URL")
    trusted = ca_certs(ca, f"{where}: certificate-authority-data")
    check_pair(f"{where}: client-certificate-data", cert, "its client-key-data", key)
    if not signed_by(cert, key, ca):
        raise Refused(f"{where}: the client certificate is not signed by the certificate-authority-data it trusts")
    return trusted


def check_encryption_config(where: str, path: str) -> None:
    doc = load_yaml(where, path)
    if (doc.get("apiVersion"), doc.get("kind")) != ("apiserver.config.k8s.io/v1", "EncryptionConfiguration"):
        raise Refused(f"{where}: not an apiserver.config.k8s.io/v1 EncryptionConfiguration")
    try:
        for rule in doc["resources"]:
            for provider in rule["providers"] if rule["resources"] else ():
                (kind, body), = provider.items()
                if kind == "identity":
                    continue
                if kind not in ENCRYPTION_KEY_BYTES:
                    raise Refused(f"{where}: provider {kind!r} is none of identity, {', '.join(ENCRYPTION_KEY_BYTES)}")
                sizes = ENCRYPTION_KEY_BYTES[kind]
                if not body["keys"] or any(len(base64.b64decode(k["secret"], validate=True)) not in sizes for k in body["keys"]):
                    raise Refused(f"{where}: every {kind} key needs a base64 secret of {' or '.join(map(str, sizes))} bytes")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Refused(f"{where}: not a usable EncryptionConfiguration (missing or bad {exc.args[0] if exc.args else exc})") from None


def check_scheduler_config(where: str, path: str) -> None:
    doc = load_yaml(where, path)
    version = doc.get("apiVersion")
    if doc.get("kind") != "KubeSchedulerConfiguration" or version != "kubescheduler.config.k8s.io/v1":
        raise Refused(f'{where}: no kind "{doc.get("kind")}" is registered for version "{version}"')
    unknown = sorted(set(doc) - SCHEDULER_CONFIG_KEYS)
    if unknown:
        raise Refused(f'{where}: strict decoding error: unknown field "{unknown[0]}"')
    kubeconfig = (doc.get("clientConnection") or {}).get("kubeconfig")
    if not kubeconfig:
        raise Refused(f"{where}: clientConnection.kubeconfig is not set")
    kubeconfig_ca(f"{where}: clientConnection.kubeconfig {kubeconfig}", kubeconfig)


# --- the kubelet's and kube-proxy's config files ---------------------------------------------------


def check_component_config(where: str, path: str) -> None:
    """The program's --config file: its one version, the fields of the minor (strictly), the
    required ones, every field's value, certificate pairs, and the kubelet's host rules."""
    doc = load_yaml(where, path)
    COMPONENT_CONFIG.update(doc)
    version, kind = CONFIG_VERSIONS[PROGRAM]
    if (doc.get("apiVersion"), doc.get("kind")) != (version, kind):
        raise Refused(f'{where}: no kind "{doc.get("kind")}" is registered for version "{doc.get("apiVersion")}"')
    for field in doc:
        if field in SPEC["fields_removed"]:
            raise Refused(f'{where}: strict decoding error: unknown field "{field}" (removed in Kubernetes 1.{SPEC["fields_removed"][field]})')
        if field not in SPEC["fields"]:
            raise Refused(f'{where}: strict decoding error: unknown field "{field}"')
    missing = [field for field in SPEC["fields_required"] if field not in doc]
    if missing:
        raise Refused(f"{where}: missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for field, value in doc.items():
        FIELD_CHECKS[SPEC["fields"][field]](f"{where}: {field}", value)
    for cert, key in SPEC["field_pairs"]:
        labels = [f"{where}: {field}={doc[field]}" for field in (cert, key)]
        check_pair(labels[0], read(labels[0], doc[cert]), labels[1], read(labels[1], doc[key]))
    if PROGRAM == "kubelet":
        check_kubelet_host(doc)
    else:
        check_conntrack(doc)


def default(doc: dict, field: str) -> bool:
    """A bool field's value, or its default in this minor."""
    return doc.get(field, field in SPEC["true_by_default"])


def check_kubelet_host(doc: dict) -> None:
    """What the real kubelet refuses about its host, in the order it looks: a cgroup v1 host while
    failCgroupV1 holds (true by default from 1.35), swap on while failSwapOn holds, a container
    runtime whose socket does not answer, and kernel tunables it cannot set."""
    if not os.path.exists(CGROUP_V2_MARK) and default(doc, "failCgroupV1"):
        raise Refused(CGROUP_V1_REFUSED)
    check_swap(doc)
    check_cri(doc)
    check_cgroup_driver(doc)
    check_kernel_tunables(doc)


def proc(path: str) -> str:
    """A path under /proc, or under KHWTUI_STANDIN_PROC: tests that run a stand-in on the test
    machine itself give it a copy, so it never writes the host kernel's settings."""
    return os.path.join(os.environ.get("KHWTUI_STANDIN_PROC", "/proc"), path)


def check_swap(doc: dict) -> None:
    """kubernetes v1.36.0 pkg/kubelet/cm/container_manager_linux.go, NewContainerManager: with
    failSwapOn (true by default) any active swap in /proc/swaps stops the kubelet;
    cmd/kubelet/app/server.go prints it as "failed to run Kubelet: ..."."""
    if not default(doc, "failSwapOn"):
        return
    with open(proc("swaps")) as swaps:
        active = [line for line in swaps.read().splitlines()[1:] if line.strip()]
    if active:
        raise Refused("failed to run Kubelet: running with swap on is not supported, please disable swap or set "
                      f"--fail-swap-on flag to false. /proc/swaps contained: {active}")


def check_cri(doc: dict) -> None:
    """cmd/kubelet/app/server.go: the CRI runtime must answer before anything else starts."""
    endpoint = doc["containerRuntimeEndpoint"]
    with socket.socket(socket.AF_UNIX) as cri:
        cri.settimeout(5)
        try:
            cri.connect(endpoint.removeprefix("unix://"))
        except OSError as exc:
            raise Refused(f'failed to run Kubelet: validate service connection: validate CRI v1 runtime API for endpoint "{endpoint}": '
                          f"connect: {exc.strerror or exc}") from None


# The cgroup driver. cri-api v0.36.0 pkg/apis/runtime/v1/api.proto: RuntimeConfig answers
# LinuxRuntimeConfiguration.cgroup_driver; kubernetes v1.36.0 cmd/kubelet/app/server.go
# (getCgroupDriverFromCRI, KubeletCgroupDriverFromCRI on since 1.31) then uses the runtime's driver and
# ignores cgroupDriver. containerd answers it from 2.0 on (internal/cri/server/runtime_config_linux.go,
# getCgroupDriver: SystemdCgroup of the default runtime's runc options); 1.x answers Unimplemented and
# the kubelet falls back to cgroupDriver (cgroupfs when unset; the fallback goes in 1.38,
# kubernetes/kubernetes#136731). With a driver other than containerd's the real kubelet starts and
# every pod then fails in runc; the stand-in runs no pods, so it refuses at start instead.
CONTAINERD_CRI_PLUGINS = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}  # by config schema


def check_cgroup_driver(doc: dict) -> None:
    path = os.environ.get("KHWTUI_STANDIN_CONTAINERD_CONFIG", "/etc/containerd/config.toml")
    schema, containerd = containerd_cgroup_driver(path)
    kubelet = doc.get("cgroupDriver", "cgroupfs")
    if schema < 3 and kubelet != containerd:
        raise Refused(f'cgroupDriver "{kubelet}" differs from containerd\'s "{containerd}" (SystemdCgroup of its default runtime in {path}), '
                      "and containerd 1.x has no CRI RuntimeConfig to tell the kubelet: every pod would fail in runc; "
                      "set the same driver on both sides")


def containerd_cgroup_driver(path: str) -> tuple[int, str]:
    """(config schema version, "systemd" or "cgroupfs") as containerd reads its config: no file means
    its defaults (SystemdCgroup false); schema 3 is what only containerd 2.x reads."""
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        return 2, "cgroupfs"
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Refused(f"containerd config {path}: {exc}") from None
    schema = config.get("version", 1)
    cri = config.get("plugins", {}).get(CONTAINERD_CRI_PLUGINS.get(schema, CONTAINERD_CRI_PLUGINS[2]), {}).get("containerd", {})
    runtime = cri.get("runtimes", {}).get(cri.get("default_runtime_name", "runc"), {})
    return schema, "systemd" if runtime.get("options", {}).get("SystemdCgroup") is True else "cgroupfs"


# kubernetes v1.36.0 pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables (values from
# k8s.io/component-helpers/node/util/sysctl): the kubelet's container manager reads each tunable and
# writes the ones that differ; with protectKernelDefaults it only reports them. A failed write is
# ignored only in a user namespace; otherwise pkg/kubelet/kubelet.go
# (initializeRuntimeDependentModules) logs "Failed to start ContainerManager" and exits 1.
KERNEL_TUNABLES = {"kernel/keys/root_maxbytes": 25000000, "kernel/keys/root_maxkeys": 1000000, "kernel/panic": 10,
                   "kernel/panic_on_oops": 1, "vm/overcommit_memory": 1, "vm/panic_on_oom": 0}


def check_kernel_tunables(doc: dict) -> None:
    errors = []
    for name, wanted in KERNEL_TUNABLES.items():
        errors += set_sysctl(name, wanted, write=not doc.get("protectKernelDefaults", False), ignore_failed_write=in_user_namespace())
    if errors:
        raise Refused(f'"Failed to start ContainerManager" err="{aggregate(errors)}"')


def set_sysctl(name: str, wanted: int, *, write: bool = True, ignore_failed_write: bool = False) -> list[str]:
    """k8s.io/component-helpers/node/util/sysctl GetSysctl/SetSysctl as its callers use them: [] when
    the value already is `wanted` or was written, else the error the Go code would return."""
    path = proc(f"sys/{name}")
    try:
        with open(path) as current:
            value = int(current.read().strip())
    except (OSError, ValueError) as exc:
        return [go_error("open", path, exc)]
    if value == wanted:
        return []
    if not write:
        return [f"invalid kernel flag: {name}, expected value: {wanted}, actual value: {value}"]
    try:
        with open(path, "w") as out:
            out.write(str(wanted))
    except OSError as exc:
        return [] if ignore_failed_write else [go_error("open", path, exc)]
    return []


def go_error(op: str, path: str, exc: Exception) -> str:
    """How Go's os.PathError reads: "open /proc/sys/vm/panic_on_oom: read-only file system"."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{op} {path.replace(proc(''), '/proc/')}: {reason[:1].lower()}{reason[1:]}"


def aggregate(errors: list[str]) -> str:
    """k8s.io/apimachinery/pkg/util/errors.NewAggregate(...).Error(): one error alone, else [a, b]."""
    return errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"


def in_user_namespace() -> bool:
    """github.com/moby/sys/userns.RunningInUserNS: any uid_map but the full identity map."""
    with open("/proc/self/uid_map") as uid_map:
        return uid_map.read().split() != ["0", "0", "4294967295"]


# kubernetes v1.36.0 cmd/kube-proxy/app/server_linux.go (platformSetup, getConntrackMax) and
# conntrack.go (SetMax, setIntSysCtl): with conntrack.maxPerCore above 0 (32768 when unset) kube-proxy
# sets net/netfilter/nf_conntrack_max to max(maxPerCore * CPUs, min (131072 when unset)) unless it
# already has that value; a failed write ends it with "Error running ProxyServer". Outside the initial
# network namespace that sysctl is read-only (Linux 5.12+), which is why kind sets maxPerCore: 0.
CONNTRACK_DEFAULTS = {"maxPerCore": 32768, "min": 131072}


def check_conntrack(doc: dict) -> None:
    conntrack = strict("conntrack", doc.get("conntrack") or {}, {"maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout",
                                                                    "tcpBeLiberal", "udpTimeout", "udpStreamTimeout"})
    per_core, floor = (conntrack.get(key, CONNTRACK_DEFAULTS[key]) for key in ("maxPerCore", "min"))
    if not per_core or per_core <= 0:
        return
    errors = set_sysctl("net/netfilter/nf_conntrack_max", max(per_core * (os.cpu_count() or 1), floor or 0))
    if errors:
        raise Refused(f'"Error running ProxyServer" err="{errors[0]}"')


def field_value(test: Callable[[object], object], what: str) -> Callable[[str, object], None]:
    def check(where: str, value: object) -> None:
        if not test(value):
            raise Refused(f"{where}: invalid value {value!r}: not {what}")
    return check


def field_file(check: Callable[[str, str], object]) -> Callable[[str, object], None]:
    """A field naming a file: `check(label, path)` reads it, the label naming field and path."""
    def run(where: str, value: object) -> None:
        if not is_text(value):
            raise Refused(f"{where}: invalid value {value!r}: not a path")
        check(f"{where}={value}", str(value))
    return run


def strict(where: str, value: object, known: set[str]) -> dict:
    if not isinstance(value, dict):
        raise Refused(f"{where}: invalid value {value!r}: not a mapping")
    unknown = sorted(set(value) - known)
    if unknown:
        raise Refused(f'{where}: strict decoding error: unknown field "{unknown[0]}"')
    return value


def check_kubelet_authentication(where: str, value: object) -> None:
    authn = strict(where, value, {"x509", "webhook", "anonymous"})
    ca = strict(f"{where}.x509", authn.get("x509", {}), {"clientCAFile"}).get("clientCAFile")
    if ca is not None:
        field_file(cert_file)(f"{where}.x509.clientCAFile", ca)
    for part in ("webhook", "anonymous"):
        enabled = strict(f"{where}.{part}", authn.get(part, {}), {"enabled", "cacheTTL"}).get("enabled", False)
        field_value(lambda v: isinstance(v, bool), "true or false")(f"{where}.{part}.enabled", enabled)


def check_kubelet_authorization(where: str, value: object) -> None:
    mode = strict(where, value, {"mode", "webhook"}).get("mode", "Webhook")
    field_value(lambda v: v in ("AlwaysAllow", "Webhook"), "AlwaysAllow or Webhook")(f"{where}.mode", mode)


def check_client_connection(where: str, value: object) -> None:
    connection = strict(where, value, {"kubeconfig", "acceptContentTypes", "contentType", "qps", "burst"})
    if not connection.get("kubeconfig"):
        raise Refused(f"{where}.kubeconfig is not set")
    kubeconfig_ca(f"{where}.kubeconfig {connection['kubeconfig']}", connection["kubeconfig"])


def is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


FIELD_CHECKS: dict[str, Callable[[str, object], None]] = {
    "any": lambda where, value: None,
    "bool": field_value(lambda v: isinstance(v, bool), "true or false"),
    "string": field_value(is_text, "a non-empty string"),
    "duration": field_value(lambda v: is_text(v) and DURATION.match(v), "a duration like 15m"),
    "ip": field_value(lambda v: is_text(v) and is_ip(v), "an IP address"),
    "ip-list": field_value(lambda v: isinstance(v, list) and bool(v) and all(is_text(i) and is_ip(i) for i in v), "a list of IP addresses"),
    "cidr": field_value(lambda v: is_text(v) and "," not in v and is_cidrs(v), "a CIDR"),
    "cidrs": field_value(lambda v: is_text(v) and is_cidrs(v), "CIDRs"),
    "cgroup-driver": field_value(lambda v: v in ("systemd", "cgroupfs"), "systemd or cgroupfs"),
    "cri-endpoint": field_value(lambda v: is_text(v) and v.startswith("unix:///"), "a unix:/// socket URL"),
    "proxy-mode": field_value(lambda v: v in PROXY_MODES, "iptables, ipvs, nftables or blank"),
    "file": field_file(read),
    "cert": field_file(cert_file),
    "key": field_file(key_file),
    "kubelet-authentication": check_kubelet_authentication,
    "kubelet-authorization": check_kubelet_authorization,
    "client-connection": check_client_connection,
}


# --- kube-apiserver ------------------------------------------------------------------------------


def identity(cert: dict) -> tuple[str, list[str]] | None:
    """(user, groups) of a verified client certificate, as the x509 authenticator reads it."""
    fields = [pair for rdn in cert.get("subject", ()) for pair in rdn]
    user = next((v for k, v in fields if k == "commonName"), None)
    return (user, [v for k, v in fields if k == "organizationName"] + ["system:authenticated"]) if user else None


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"

    def log_message(self, *args: object) -> None:  # the real one logs no access lines at --v=2
        pass

    def send(self, code: int, body: dict | str) -> None:
        data = (json.dumps(body) + "\n").encode() if isinstance(body, dict) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def bad_certificate(self) -> bool:
        """401 on any path for a client certificate that did not verify: authentication comes first."""
        if self.connection.getpeercert(binary_form=True) and not getattr(VERDICT, "verified", False):
            self.send(401, status(401, "Unauthorized", "Unauthorized"))
            return True
        return False

    def user(self) -> tuple[str, list[str]] | None:
        return identity(self.connection.getpeercert() or {})

    def forbidden(self, verb: str, what: str) -> None:
        self.send(403, status(403, "Forbidden", f'{what} is forbidden: User "system:anonymous" cannot {verb}'))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        api = self.server.api
        if self.bad_certificate():
            return
        if path in PUBLIC_PATHS:
            self.send(*api.public(path))
        elif not self.user():
            self.forbidden("get path", f'path "{path}"')
        elif path in api.discovery:
            self.send(200, api.discovery[path])
        elif NODE_PROXY.match(path):
            match = NODE_PROXY.match(path)
            self.send(*api.node_proxy(match["node"], match["path"] or "/"))
        else:
            self.send(404, status(404, "NotFound", "the server could not find the requested resource"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.bad_certificate():
            return
        if urlsplit(self.path).path != SSR_PATH:
            self.send(404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        user = self.user()
        if not user:
            self.forbidden('create resource "selfsubjectreviews" in API group "authentication.k8s.io"', "selfsubjectreviews.authentication.k8s.io")
            return
        self.send(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": None},
                        "status": {"userInfo": {"username": user[0], "groups": user[1]}}})


class Apiserver:
    """What the apiserver stand-in answers, built from its flags."""

    def __init__(self, flags: dict[str, str]) -> None:
        self.flags = flags
        version = RELEASE["version"]
        self.version = {"major": "1", "minor": version.split(".")[1], "gitVersion": f"v{version}",
                        "gitTreeState": "clean", "goVersion": "khwtui stand-in (python3)", "platform": "linux/amd64"}
        group = {"groupVersion": "authentication.k8s.io/v1", "version": "v1"}
        address = f"{flags.get('advertise-address', flags.get('bind-address', '0.0.0.0'))}:{flags.get('secure-port', '6443')}"
        self.discovery = {
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]},
            "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},  # no objects here
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1",
                      "groups": [{"name": "authentication.k8s.io", "versions": [group], "preferredVersion": group}]},
            "/apis/authentication.k8s.io/v1": {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authentication.k8s.io/v1",
                "resources": [{"name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": False,
                               "kind": "SelfSubjectReview", "verbs": ["create"]}]},
        }

    def public(self, path: str) -> tuple[int, dict | str]:
        if path == "/version":
            return 200, self.version
        if path == "/livez":
            return 200, "ok"
        problem = self.etcd_problem()
        return (500, f"[-]etcd failed: {problem}\n{path[1:]} check failed\n") if problem else (200, "ok")

    def node_proxy(self, node: str, path: str) -> tuple[int, dict | str]:
        """GET nodes/{node}/proxy/{path}: the apiserver's own connection to a kubelet, as logs, exec
        and port-forward make it (kubernetes v1.36.0 pkg/registry/core/node/strategy.go,
        ResourceLocation). The address is the first of --kubelet-preferred-address-types the node
        has; first by default is Hostname, the name the kubelet registers with, which the apiserver's
        host must resolve. The kubelet's certificate is verified against
        --kubelet-certificate-authority for that name, and the apiserver presents
        --kubelet-client-certificate."""
        try:
            socket.getaddrinfo(node, KUBELET_PORT, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return 503, status(503, "ServiceUnavailable", f"error trying to reach service: dial tcp: lookup {node}: no such host")
        context = ssl.create_default_context(cafile=self.flags["kubelet-certificate-authority"])
        context.load_cert_chain(self.flags["kubelet-client-certificate"], self.flags["kubelet-client-key"])
        try:
            with urllib.request.urlopen(f"https://{node}:{KUBELET_PORT}{path}", context=context, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (OSError, ValueError) as exc:
            return 503, status(503, "ServiceUnavailable", f"error trying to reach service: {getattr(exc, 'reason', exc)}")

    def etcd_problem(self) -> str | None:
        """None when one of --etcd-servers answers /health as healthy over TLS with the etcd client certificate."""
        context = etcd_client_tls(self.flags)
        problem = "no etcd server"
        for server in self.flags["etcd-servers"].split(","):
            try:
                with urllib.request.urlopen(server.rstrip("/") + "/health", context=context, timeout=2) as answer:
                    if json.load(answer).get("health") == "true":
                        return None
                    problem = f"{server} is not healthy"
            except (OSError, ValueError) as exc:
                problem = f"{server}: {exc}"
        return problem


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple) -> None:
        print(f"{PROGRAM}: TLS handshake or request from {client_address[0]} failed: {sys.exc_info()[1]}",
              file=sys.stderr, flush=True)


VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
VERDICT = threading.local()  # per connection (one thread each, which also runs its handshake)


@VERIFY_CALLBACK
def record_verdict(preverify_ok: int, store: int) -> int:
    """OpenSSL's verdict on each certificate of the client's chain, kept for the request; the
    handshake goes on either way."""
    VERDICT.verified = getattr(VERDICT, "verified", True) and bool(preverify_ok)
    return 1


def request_client_certificates(context: ssl.SSLContext) -> None:
    """Go's tls.RequestClientCert, as the real apiserver serves: ask for a client certificate and
    never fail the handshake over it, so a bad one gets 401 rather than a TLS alert. Python's ssl
    cannot say that, so the callback goes to OpenSSL directly: the SSL_CTX pointer is the first
    field of CPython's SSLContext object, and SSL_CTX_set_verify comes from the libssl _ssl uses."""
    libssl = ctypes.CDLL(getattr(ssl._ssl, "__file__", None))
    libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, VERIFY_CALLBACK]
    ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    libssl.SSL_CTX_set_verify(ssl_ctx, 1, record_verdict)  # SSL_VERIFY_PEER: ask, do not require


def etcd_client_tls(flags: dict[str, str]) -> ssl.SSLContext:
    """TLS as the apiserver's etcd client: --etcd-cafile trusted, --etcd-certfile presented."""
    context = ssl.create_default_context(cafile=flags["etcd-cafile"])
    context.load_cert_chain(flags["etcd-certfile"], flags["etcd-keyfile"])
    return context


# k8s.io/apiserver v0.36.0 pkg/storage/storagebackend/factory/etcd3.go (newETCD3Client): the etcd client
# dials with grpc.WithBlock() and DialTimeout dialTimeout = 20 s, so the apiserver goes no further until
# a TLS connection to one of --etcd-servers is up. The first storage it makes is the lease endpoint
# reconciler's (kubernetes pkg/controlplane/instance.go createLeaseReconciler; reconcilers/lease.go
# NewLeases wraps the error), which ends it with klog.Fatalf, exit status 255, before it listens.
ETCD_DIAL_TIMEOUT = 20.0
ETCD_RETRY = 1.0  # grpc's first reconnect backoff (google.golang.org/grpc backoff.DefaultConfig BaseDelay)
ETCD_UNREACHABLE = "Error creating leases: error creating storage factory: context deadline exceeded"


def wait_for_etcd(flags: dict[str, str]) -> None:
    """Return once one of --etcd-servers completes a TLS handshake; refuse when none does in time."""
    context = etcd_client_tls(flags)
    deadline = time.monotonic() + ETCD_DIAL_TIMEOUT
    while True:
        for server in flags["etcd-servers"].split(","):
            if etcd_connects(context, urlsplit(server), deadline):
                return
        if time.monotonic() + ETCD_RETRY >= deadline:
            raise Refused(ETCD_UNREACHABLE, status=255)
        time.sleep(ETCD_RETRY)


def etcd_connects(context: ssl.SSLContext, server: SplitResult, deadline: float) -> bool:
    """A TCP connection and TLS handshake with one etcd server, as grpc's transport makes it."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        with socket.create_connection((server.hostname, server.port or 2379), timeout=remaining) as raw, \
                context.wrap_socket(raw, server_hostname=server.hostname):
            return True
    except (OSError, ValueError):
        return False


def run_apiserver(flags: dict[str, str]) -> None:
    wait_for_etcd(flags)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(flags["tls-cert-file"], flags["tls-private-key-file"])
    context.load_verify_locations(flags["client-ca-file"])
    request_client_certificates(context)  # anonymous requests are allowed; a bad certificate gets 401
    host, port = flags.get("bind-address", "0.0.0.0"), int(flags.get("secure-port", "6443"))
    TlsServer.address_family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    try:
        server = TlsServer((host, port), ApiHandler)
    except OSError as exc:
        raise Refused(f"failed to listen on {host}:{port}: {exc.strerror}") from None
    server.api = Apiserver(flags)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    announce(f"serving securely on {host}:{port}")
    server.serve_forever()


def stay_up(flags: dict[str, str]) -> None:
    """Up until SIGTERM. The signal is blocked and waited for: signal.pause() sleeps through a
    SIGTERM that lands after Python's last check for signals and before pause() begins (seen in CI:
    a stopped stand-in that never exited)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    announce("flags and files accepted")
    signal.sigwait({signal.SIGTERM})
    sys.exit(0)


class KubeletHandler(BaseHTTPRequestHandler):
    """The kubelet's server as the apiserver meets it: client certificates from clientCAFile (anonymous
    is off), /healthz answered; what needs pods is not here."""

    protocol_version = "HTTP/1.1"
    server_version = "kubelet-standin"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if not self.connection.getpeercert():
            code, body = 401, "Unauthorized"
        elif urlsplit(self.path).path == "/healthz":
            code, body = 200, "ok"
        else:
            code, body = 404, "404 page not found"
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def run_kubelet(flags: dict[str, str]) -> None:
    """kubernetes v1.36.0 pkg/kubelet/server/server.go: the kubelet serves on address:port (10250)
    with tlsCertFile, authenticating clients by certificates from authentication.x509.clientCAFile;
    a port it cannot listen on ends it."""
    doc = COMPONENT_CONFIG
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(doc["tlsCertFile"], doc["tlsPrivateKeyFile"])
    context.load_verify_locations(doc["authentication"]["x509"]["clientCAFile"])
    context.verify_mode = ssl.CERT_OPTIONAL
    host, port = doc.get("address", "0.0.0.0"), int(doc.get("port", KUBELET_PORT))
    try:
        server = TlsServer((host, port), KubeletHandler)
    except OSError as exc:
        raise Refused(f'"Failed to listen and serve" err="listen tcp {host}:{port}: bind: {exc.strerror.lower()}"') from None
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    announce("flags and files accepted")
    server.serve_forever()


def announce(what: str) -> None:
    print(f"{os.path.basename(sys.argv[0])} stand-in v{RELEASE['version']}: {what}", file=sys.stderr, flush=True)


RUNNERS: dict[str, Callable[[dict[str, str]], None]] = {"kube-apiserver": run_apiserver, "kube-controller-manager": stay_up,
                                                        "kube-scheduler": stay_up, "kubelet": run_kubelet, "kube-proxy": stay_up}


def main() -> None:
    program = os.path.basename(sys.argv[0])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if RELEASE is None:
            raise Refused("no release baked in: install the bytes of tests.standins.build(version)")
        if program not in RELEASE["programs"]:
            raise Refused(f"stands in for {', '.join(sorted(RELEASE['programs']))}; start it under one of those names")
        global PROGRAM
        PROGRAM, spec = program, RELEASE["programs"][program]
        SPEC.update(spec)
        flags = parse(spec, sys.argv[1:])
        validate(spec, flags)
        RUNNERS[program](flags)
    except Refused as exc:
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.status)


if __name__ == "__main__":
    main()
