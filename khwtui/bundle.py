"""`khwtui render --out DIR`: everything the hard way makes, written to a folder to read or diff.

Layout: pki/ (0700), kubeconfigs/<name>.kubeconfig, encryption-config.yaml, and
nodes/<node>/<absolute path on the node> for every file a stage places. Only files whose bytes
(or mode) differ are written, each atomically, so a re-render leaves unchanged files untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from khwtui.encryption import encryption_config
from khwtui.fsutil import mkdirs_private, write_if_changed
from khwtui.kubeconfigs import kubeconfig, kubeconfig_specs
from khwtui.nodefiles import SECRET, Artifacts, node_files
from khwtui.pki import Pki, cert_specs
from khwtui.render import NodeFile
from khwtui.topology import Topology

PRIVATE_DIRS = ("pki", "kubeconfigs", "nodes")  # they hold keys, so 0700 whatever existed before


def write_bundle(out: Path, a: Artifacts) -> list[Path]:
    """Write the bundle under `out`; returns the files written or re-moded ([] when nothing changed)."""
    mkdirs_private(out)
    for name in PRIVATE_DIRS:
        mkdirs_private(out / name)
        (out / name).chmod(0o700)
    return [out / f.path for f in bundle_files(a) if write_if_changed(out / f.path, f.content, f.mode)]


def bundle_files(a: Artifacts) -> list[NodeFile]:
    """Every bundle file, its path relative to the bundle folder."""
    topo = a.topo
    files = _pki_files(a.pki, topo)
    files += [
        NodeFile(f"kubeconfigs/{spec.name}.kubeconfig", kubeconfig(topo, a.pki, spec).encode(), SECRET)
        for spec in kubeconfig_specs(topo)
    ]
    config = encryption_config(topo.config.encryption.provider, a.encryption_key)
    files.append(NodeFile("encryption-config.yaml", config.encode(), SECRET))
    for node, placed in node_files(a).items():
        files += [dataclasses.replace(f, path=f"nodes/{node}{f.path}") for f in placed]
    return files


def _pki_files(pki: Pki, topo: Topology) -> list[NodeFile]:
    files = [NodeFile("pki/ca.pem", pki.ca_pem()), NodeFile("pki/ca-key.pem", pki.key_pem("ca"), SECRET)]
    for name in (spec.name for spec in cert_specs(topo)):
        files += [NodeFile(f"pki/{name}.pem", pki.cert_pem(name)), NodeFile(f"pki/{name}-key.pem", pki.key_pem(name), SECRET)]
    return files
