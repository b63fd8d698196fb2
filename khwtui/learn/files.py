"""The render bundle, sorted by the stage that makes or places each file, with how to show it:
text in full, certificates by their subject, SANs and expiry, secrets never (only what they are
for). Where the same file differs between nodes, the difference is a unified diff.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
from collections import defaultdict
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from khwtui.artifacts.frontend_files import CONFIG as HAPROXY_CONFIG
from khwtui.artifacts.frontend_files import HEALTHZ_SITE
from khwtui.artifacts.nodefiles import ETCD_DIR, ETCD_UNIT, SECRET, Artifacts
from khwtui.artifacts.render import NodeFile
from khwtui.artifacts.workers_files import ROUTES_UNIT, unit_path
from khwtui.learn.bundle import bundle_files
from khwtui.model.topology import Topology

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: kubeconfigs are many
OTHER = ""  # files of the bundle no stage below claims (shown at the end, never dropped)
MANIFEST_STAGES = {"apiserver-to-kubelet-rbac.yaml": "rbac"}
MANIFEST_HINTS = (("coredns", "dns"), ("dns", "dns"), ("metrics-server", "dns"), ("smoke", "smoke"), ("nginx", "smoke"), ("demo", "demo"), ("todo", "demo"))


class Shown(enum.Enum):
    TEXT = "text"
    CERTIFICATE = "certificate"
    SECRET = "secret"


@dataclass(frozen=True)
class FileEntry:
    node: str  # "" = a file on your machine (the bundle's pki/, kubeconfigs/, ...)
    path: str  # the path on the node, or the bundle path for your machine's files
    bundle_path: str
    mode: int
    owner: str
    group: str
    sha256: str
    shown: Shown
    text: str  # the content (TEXT), or a summary (CERTIFICATE, SECRET)
    same_as: str = ""  # another node whose identical file is shown in full
    diff: str = ""  # against that node's file, where they differ

    @property
    def where(self) -> str:
        return f"{self.node}:{self.path}" if self.node else self.path


def stage_of(bundle_path: str, topo: Topology) -> str:
    """The stage that makes (pki, kubeconfigs, encryption) or places the bundle file."""
    top, _, rest = bundle_path.partition("/")
    if top in ("pki", "kubeconfigs"):
        return top
    if bundle_path == "encryption-config.yaml":
        return "encryption"
    if top == "manifests":
        return MANIFEST_STAGES.get(rest) or next((stage for hint, stage in MANIFEST_HINTS if hint in rest), OTHER)
    if top != "nodes":
        return OTHER
    node, _, path = rest.partition("/")
    path = "/" + path
    if path.startswith(ETCD_DIR + "/") or path == ETCD_UNIT:
        return "etcd"
    if path == unit_path(ROUTES_UNIT):
        return "routes"
    if path in (HEALTHZ_SITE, HAPROXY_CONFIG) or path.startswith("/etc/haproxy/"):
        return "frontend"
    role = next((n.role for n in topo.nodes if n.name == node), "")
    return {"controller": "control-plane", "worker": "workers", "lb": "frontend"}.get(role, OTHER)


def files_by_stage(a: Artifacts) -> dict[str, list[FileEntry]]:
    """stage -> its bundle files, each node's after the first of its role compared to that one."""
    grouped: dict[str, list[NodeFile]] = defaultdict(list)
    for f in bundle_files(a):
        grouped[stage_of(f.path, a.topo)].append(f)
    return {stage: _compared([_entry(f) for f in files]) for stage, files in grouped.items()}


def _entry(f: NodeFile) -> FileEntry:
    node, path = "", f.path
    if f.path.startswith("nodes/"):
        node, _, rest = f.path.removeprefix("nodes/").partition("/")
        path = "/" + rest
    shown, text = _show(f)
    return FileEntry(node, path, f.path, f.mode, f.owner, f.group, hashlib.sha256(f.content).hexdigest(), shown, text)


def _compared(entries: list[FileEntry]) -> list[FileEntry]:
    """The first node's copy of each path stays whole; later ones say "same as" or carry a diff."""
    first: dict[str, FileEntry] = {}
    out = []
    for e in entries:
        seen = first.get(e.path) if e.node else None
        if seen is None:
            if e.node:
                first[e.path] = e
            out.append(e)
        elif seen.sha256 == e.sha256:
            out.append(dataclasses.replace(e, same_as=seen.node, text=""))
        else:
            out.append(dataclasses.replace(e, same_as=seen.node, diff=_diff(seen, e)))
    return out


def _diff(a: FileEntry, b: FileEntry) -> str:
    if a.shown is Shown.SECRET or b.shown is Shown.SECRET:
        return f"its own secret (sha256 {b.sha256[:16]}…), not shown"
    lines = difflib.unified_diff(a.text.splitlines(), b.text.splitlines(), f"{a.node}:{a.path}", f"{b.node}:{b.path}", lineterm="", n=1)
    return "\n".join(lines)


def _show(f: NodeFile) -> tuple[Shown, str]:
    name = f.path.rsplit("/", 1)[-1]
    if f.mode == SECRET:
        return Shown.SECRET, _secret_summary(name, f.content)
    if name.endswith(".pem") and f.content.startswith(b"-----BEGIN CERTIFICATE"):
        return Shown.CERTIFICATE, certificate_summary(f.content)
    return Shown.TEXT, f.content.decode("utf-8", "replace")


def certificate_summary(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    cn = ", ".join(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    org = ", ".join(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)] + [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    issuer = ", ".join(str(a.value) for a in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME))
    return (f"certificate CN={cn}" + (f", O={org}" if org else "") + (f"; SANs: {', '.join(sans)}" if sans else "")
            + f"; issued by {issuer}; valid until {cert.not_valid_after_utc:%Y-%m-%d}")


def _secret_summary(name: str, content: bytes) -> str:
    if name.endswith(".kubeconfig") or name == "kubeconfig":
        try:
            doc = yaml.load(content, Loader=SAFE_LOADER)
            server = doc["clusters"][0]["cluster"]["server"]
            user = doc["users"][0]["name"]
            return f"kubeconfig: server {server}, user {user}, with its client key (secret, not shown)"
        except (yaml.YAMLError, KeyError, IndexError, TypeError):
            return "kubeconfig with a client key (secret, not shown)"
    if name.endswith("-key.pem"):
        return "private key (secret, not shown)"
    if name == "encryption-config.yaml":
        provider = next((p for p in ("aescbc", "secretbox", "aesgcm") if p.encode() in content), "?")
        return f"EncryptionConfiguration for secrets with {provider}; the key is secret, not shown"
    return "secret, not shown"
