"""PKI: every certificate read back with openssl against KTHW's table, and the load-or-create rules."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from khwtui.artifacts.pki import Pki, cert_specs
from khwtui.core.errors import ConfigError, StateError
from khwtui.model import config
from khwtui.model.topology import Addresses, Topology

CLIENT = "TLS Web Client Authentication"
BOTH = "TLS Web Server Authentication, TLS Web Client Authentication"
DAY = 24 * 3600
NOW = dt.datetime.now(dt.UTC)

# --- the two clusters of the table test, with what KTHW's table says for them ------------------

HA = {"provider": {"kind": "gcp"}, "topology": {"controllers": 3, "workers": 3}}
HA_ADDRESSES = Addresses(
    external={**{f"controller-{i}": f"198.51.100.1{i}" for i in range(3)}, **{f"worker-{i}": f"198.51.100.2{i}" for i in range(3)}},
    public="203.0.113.10",
)
WIDE = {
    "provider": {"kind": "gcp"},
    "topology": {"controllers": 1, "workers": 5, "name_prefix": "lab"},
    "network": {
        "node_cidr": "10.9.0.0/24",
        "cluster_cidr": "10.100.0.0/16",
        "service_cidr": "10.96.0.0/16",
        "dns_ip": "10.96.0.10",
        "cluster_domain": "corp.example",
    },
}
WIDE_ADDRESSES = Addresses(external={f"lab-worker-{i}": f"198.51.100.{40 + i}" for i in range(5)}, public="203.0.113.77")


def kubernetes_dns(domain: str) -> set[str]:
    return {
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster",
        f"DNS:kubernetes.default.svc.{domain}",
        f"DNS:kubernetes.svc.{domain}",
    }


def table(workers: dict[str, set[str]], kubernetes_sans: set[str]) -> dict[str, tuple[str, str, set[str], str]]:
    """file stem -> (CN, O, SANs, extendedKeyUsage as openssl prints it)."""
    rows = {
        "admin": ("admin", "system:masters", set(), CLIENT),
        "kube-controller-manager": ("system:kube-controller-manager", "system:kube-controller-manager", set(), CLIENT),
        "kube-proxy": ("system:kube-proxy", "system:node-proxier", set(), CLIENT),
        "kube-scheduler": ("system:kube-scheduler", "system:kube-scheduler", set(), CLIENT),
        "kubernetes": ("kubernetes", "Kubernetes", kubernetes_sans, BOTH),
        "service-account": ("service-accounts", "Kubernetes", set(), CLIENT),
    }
    for name, sans in workers.items():
        rows[name] = (f"system:node:{name}", "system:nodes", {f"DNS:{name}", *sans}, BOTH)
    return rows


HA_TABLE = table(
    {f"worker-{i}": {f"IP:10.240.0.2{i}", f"IP:198.51.100.2{i}"} for i in range(3)},
    kubernetes_dns("cluster.local") | {"IP:10.32.0.1", "IP:127.0.0.1", "IP:10.240.0.10", "IP:10.240.0.11", "IP:10.240.0.12", "IP:203.0.113.10"},
)
WIDE_TABLE = table(
    {f"lab-worker-{i}": {f"IP:10.9.0.{20 + i}", f"IP:198.51.100.{40 + i}"} for i in range(5)},
    kubernetes_dns("corp.example") | {"IP:10.96.0.1", "IP:127.0.0.1", "IP:10.9.0.10", "IP:203.0.113.77"},
)

# --- reading certificates back with openssl ---------------------------------------------------


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)


@dataclass
class ReadBack:
    subject: dict[str, str]
    ext: dict[str, tuple[bool, str]]  # extension name -> (critical, value)
    text: str


def read_back(path: Path) -> ReadBack:
    subject = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", path).stdout.strip()
    fields = dict(part.split("=", 1) for part in subject.removeprefix("subject=").split(","))
    names = "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints,subjectKeyIdentifier,authorityKeyIdentifier"
    ext: dict[str, tuple[bool, str]] = {}
    header = ""
    for line in openssl("x509", "-noout", "-ext", names, "-in", path).stdout.splitlines():
        if line.startswith(" "):
            ext[header] = (ext[header][0], line.strip())
        elif line.startswith("X509v3 "):
            header, _, rest = line.removeprefix("X509v3 ").partition(":")
            ext[header] = ("critical" in rest, "")
    return ReadBack(fields, ext, openssl("x509", "-noout", "-text", "-in", path).stdout)


def sans_of(back: ReadBack) -> set[str]:
    value = back.ext.get("Subject Alternative Name", (False, ""))[1]
    return {item.strip().replace("IP Address:", "IP:") for item in value.split(",") if item.strip()}


def verifies(directory: Path, name: str, purpose: str | None = None, ca: str = "ca") -> bool:
    extra = ("-purpose", purpose) if purpose else ()
    result = openssl("verify", "-CAfile", directory / f"{ca}.pem", *extra, directory / f"{name}.pem")
    return result.returncode == 0 and result.stdout.strip() == f"{directory / name}.pem: OK"


def key_fits_cert(directory: Path, name: str) -> bool:
    from_key = openssl("pkey", "-pubout", "-in", directory / f"{name}-key.pem").stdout
    from_cert = openssl("x509", "-noout", "-pubkey", "-in", directory / f"{name}.pem").stdout
    return bool(from_key) and from_key == from_cert


def valid_for_days(directory: Path, name: str, days: float) -> bool:
    """`openssl x509 -checkend`: still valid `days` from now."""
    return openssl("x509", "-noout", "-checkend", int(days * DAY), "-in", directory / f"{name}.pem").returncode == 0


# --- helpers for the load-or-create rules ---------------------------------------------------------


def make(raw: dict | None = None, key_type: str = "ecdsa-p256", **pki: int) -> config.Config:
    raw = {section: dict(values) for section, values in (raw or {}).items()}
    raw["pki"] = {"key_type": key_type, **pki}
    return config.from_dict(raw)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and inode: an unchanged inode proves the file was not rewritten."""
    return {p.name: (p.read_bytes(), p.stat().st_ino) for p in sorted(directory.iterdir())}


def changed(before: dict[str, tuple[bytes, int]], directory: Path) -> set[str]:
    after = snapshot(directory)
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def kept_except(results: dict[str, str], *names: str) -> dict[str, str]:
    assert {n for n, outcome in results.items() if outcome != "kept"} == set(names), results
    return {n: results[n] for n in names}


@pytest.fixture
def small(tmp_path: Path) -> tuple[Pki, Topology, Path]:
    """A default-sized gcp cluster (2+2) with every certificate made."""
    c = make(HA | {"topology": {"controllers": 2, "workers": 2}})
    topo = Topology(c, Addresses({"worker-0": "198.51.100.20", "worker-1": "198.51.100.21"}, "203.0.113.10"))
    pki = Pki(tmp_path / "pki", c)
    pki.ensure(topo)
    return pki, topo, tmp_path / "pki"


def forge(directory: Path, name: str, cn: str, org: str, dns: list[str], ekus: list[x509.ObjectIdentifier]) -> None:
    """Replace `name`.pem with a cert for its own key, signed by the real CA, saying something else."""
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / f"{name}-key.pem").read_bytes(), None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=300))
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    (directory / f"{name}.pem").write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


# --- the certificate table ------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa-2048", "ecdsa-p256"])
@pytest.mark.parametrize(("raw", "addresses", "expected"), [(HA, HA_ADDRESSES, HA_TABLE), (WIDE, WIDE_ADDRESSES, WIDE_TABLE)], ids=["3+3", "1+5"])
def test_every_certificate_matches_the_kthw_table(tmp_path: Path, raw: dict, addresses: Addresses, expected: dict, key_type: str) -> None:
    c = make(raw, key_type)
    directory = tmp_path / "pki"
    results = Pki(directory, c).ensure(Topology(c, addresses))

    assert results == dict.fromkeys(["ca", "front-proxy-ca", *expected, "front-proxy-client"], "created")
    assert {p.name for p in directory.iterdir()} == {f"{n}{s}" for n in ["ca", "front-proxy-ca", *expected, "front-proxy-client"]
                                                     for s in (".pem", "-key.pem")}
    rsa = key_type == "rsa-2048"

    ca = read_back(directory / "ca.pem")
    assert verifies(directory, "ca")
    assert ca.subject == {"CN": "Kubernetes", "O": "Kubernetes"}
    assert ca.ext["Basic Constraints"] == (True, "CA:TRUE")
    assert ca.ext["Key Usage"] == (True, "Certificate Sign, CRL Sign")
    assert valid_for_days(directory, "ca", 3649) and not valid_for_days(directory, "ca", 3651)
    ca_ski = ca.ext["Subject Key Identifier"][1]

    serials = set()
    for name, (cn, org, sans, eku) in expected.items():
        back = read_back(directory / f"{name}.pem")
        assert verifies(directory, name), name
        assert verifies(directory, name, "sslclient"), name
        assert verifies(directory, name, "sslserver") == (eku == BOTH), name
        assert back.subject == {"CN": cn, "O": org}, name
        assert sans_of(back) == sans, name
        assert back.ext["Key Usage"] == (True, "Digital Signature, Key Encipherment" if rsa else "Digital Signature"), name
        assert back.ext["Extended Key Usage"][1] == eku, name
        assert back.ext["Basic Constraints"] == (True, "CA:FALSE"), name
        assert back.ext["Authority Key Identifier"][1] == ca_ski, name
        assert back.ext["Subject Key Identifier"][1] not in ("", ca_ski), name
        assert ("sha256WithRSAEncryption" if rsa else "ecdsa-with-SHA256") in back.text, name
        assert ("Public-Key: (2048 bit)" if rsa else "Public-Key: (256 bit)") in back.text, name
        assert valid_for_days(directory, name, 364) and not valid_for_days(directory, name, 366), name
        assert key_fits_cert(directory, name), name
        serials.add(openssl("x509", "-noout", "-serial", "-in", directory / f"{name}.pem").stdout)
    assert len(serials) == len(expected)


def test_the_front_proxy_has_its_own_ca_and_a_client_certificate_only_it_signed(tmp_path: Path) -> None:
    """What --requestheader-client-ca-file must hold: a CA that signs nothing but the front proxy's
    client, so no user certificate from the cluster CA can claim request headers."""
    c = make(HA)
    directory = tmp_path / "pki"
    Pki(directory, c).ensure(Topology(c, HA_ADDRESSES))
    ca = read_back(directory / "front-proxy-ca.pem")
    assert ca.subject == {"CN": "front-proxy-ca"} and ca.ext["Basic Constraints"] == (True, "CA:TRUE")
    assert verifies(directory, "front-proxy-ca", ca="front-proxy-ca")
    client = read_back(directory / "front-proxy-client.pem")
    assert client.subject == {"CN": "front-proxy-client"} and client.ext["Extended Key Usage"][1] == CLIENT
    assert verifies(directory, "front-proxy-client", "sslclient", ca="front-proxy-ca")
    assert key_fits_cert(directory, "front-proxy-client")
    assert not verifies(directory, "front-proxy-client", ca="ca")  # the cluster CA did not sign it
    assert not verifies(directory, "admin", ca="front-proxy-ca")  # and users cannot pass as the front proxy
    assert client.ext["Authority Key Identifier"][1] == ca.ext["Subject Key Identifier"][1]


def test_cert_specs_follow_the_topology_order() -> None:
    c = make(HA)
    names = [spec.name for spec in cert_specs(Topology(c, HA_ADDRESSES))]
    assert names == ["admin", "worker-0", "worker-1", "worker-2", "kube-controller-manager", "kube-proxy",
                     "kube-scheduler", "kubernetes", "service-account", "front-proxy-client"]


def test_a_worker_named_like_a_certificate_file_is_a_config_error() -> None:
    hosts = [
        {"name": "controller-0", "role": "controller", "address": "192.0.2.10", "host_key": "ssh-ed25519 AAAA"},
        {"name": "kubernetes", "role": "worker", "address": "192.0.2.20", "host_key": "ssh-ed25519 AAAB"},
    ]
    c = make({"provider": {"kind": "machines"}, "machines": {"hosts": hosts}})
    with pytest.raises(ConfigError, match=r"machines.hosts.*'kubernetes'.*rename"):
        cert_specs(Topology(c))


# --- load or create -------------------------------------------------------------------------------


def test_second_ensure_keeps_every_file_byte_identical(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    before = snapshot(directory)
    results = Pki(directory, pki.config).ensure(topo)
    assert set(results.values()) == {"kept"} and len(results) == 11
    assert changed(before, directory) == set()


def test_new_external_address_reissues_only_that_worker(small: tuple[Pki, Topology, Path]) -> None:
    pki, _topo, directory = small
    before = snapshot(directory)
    moved = Topology(pki.config, Addresses({"worker-0": "198.51.100.20", "worker-1": "198.51.100.99"}, "203.0.113.10"))

    results = pki.ensure(moved)

    assert kept_except(results, "worker-1") == {"worker-1": "reissued: SANs differ (+IP:198.51.100.99 -IP:198.51.100.21)"}
    assert changed(before, directory) == {"worker-1.pem"}  # the key and the CA stay
    assert sans_of(read_back(directory / "worker-1.pem")) == {"DNS:worker-1", "IP:10.240.0.21", "IP:198.51.100.99"}
    assert verifies(directory, "worker-1") and key_fits_cert(directory, "worker-1")


def test_new_public_address_reissues_only_kubernetes(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    before = snapshot(directory)
    results = pki.ensure(Topology(pki.config, Addresses(topo.addresses.external, "203.0.113.11")))
    assert kept_except(results, "kubernetes") == {"kubernetes": "reissued: SANs differ (+IP:203.0.113.11 -IP:203.0.113.10)"}
    assert changed(before, directory) == {"kubernetes.pem"}


def inventory(worker_1: str = "192.0.2.21", controller_0: str = "192.0.2.10") -> config.Config:
    hosts = [
        {"name": "controller-0", "role": "controller", "address": controller_0, "host_key": "ssh-ed25519 AAAA"},
        {"name": "worker-0", "role": "worker", "address": "192.0.2.20", "host_key": "ssh-ed25519 AAAB"},
        {"name": "worker-1", "role": "worker", "address": worker_1, "host_key": "ssh-ed25519 AAAC"},
        {"name": "lb", "role": "lb", "address": "192.0.2.5", "host_key": "ssh-ed25519 AAAD"},
    ]
    return make({"provider": {"kind": "machines"}, "machines": {"hosts": hosts}})


@pytest.mark.parametrize(
    ("changes", "reissued", "reason"),
    [
        ({"worker_1": "192.0.2.31"}, "worker-1", "reissued: SANs differ (+IP:192.0.2.31 -IP:192.0.2.21)"),
        ({"controller_0": "192.0.2.11"}, "kubernetes", "reissued: SANs differ (+IP:192.0.2.11 -IP:192.0.2.10)"),
    ],
    ids=["worker", "controller"],
)
def test_an_inventory_address_change_reissues_only_the_certificate_naming_it(tmp_path: Path, changes: dict, reissued: str, reason: str) -> None:
    directory = tmp_path / "pki"
    Pki(directory, inventory()).ensure(Topology(inventory()))
    before = snapshot(directory)

    results = Pki(directory, inventory(**changes)).ensure(Topology(inventory(**changes)))

    assert kept_except(results, reissued) == {reissued: reason}
    assert changed(before, directory) == {f"{reissued}.pem"}


def test_certificates_inside_the_renewal_window_are_reissued_with_their_keys(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    short = make(validity_days=20, renew_before_days=5)
    topo = Topology(short)
    Pki(directory, short).ensure(topo)
    before = snapshot(directory)

    results = Pki(directory, make()).ensure(Topology(make()))  # default window: 30 days

    assert results.pop("ca") == results.pop("front-proxy-ca") == "kept"
    assert set(results.values()) == {"reissued: expires in 19 days"}
    assert changed(before, directory) == {f"{name}.pem" for name in results}  # keys kept
    assert all(valid_for_days(directory, name, 364) and key_fits_cert(directory, name) for name in results)
    assert set(Pki(directory, make()).ensure(Topology(make())).values()) == {"kept"}


def test_expired_certificates_are_reissued_and_say_so(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, _directory = small
    end = x509.load_pem_x509_certificate(pki.cert_pem("admin")).not_valid_after_utc
    results = pki.ensure(topo, now=NOW + dt.timedelta(days=400))
    assert results["ca"] == "kept"
    assert results["admin"] == f"reissued: expired on {end:%Y-%m-%d}"
    assert all(outcome.startswith("reissued: expired on ") for name, outcome in results.items() if name not in ("ca", "front-proxy-ca"))


def test_a_key_that_does_not_match_is_kept_and_gets_a_new_certificate(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "admin-key.pem").write_bytes(other)
    before = snapshot(directory)

    results = pki.ensure(topo)

    assert kept_except(results, "admin") == {"admin": "reissued: key does not match the certificate"}
    assert changed(before, directory) == {"admin.pem"}
    assert key_fits_cert(directory, "admin") and verifies(directory, "admin")


def test_an_unreadable_key_is_replaced(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    (directory / "kube-proxy-key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    results = pki.ensure(topo)
    assert kept_except(results, "kube-proxy") == {"kube-proxy": "reissued: key unreadable"}
    assert key_fits_cert(directory, "kube-proxy") and verifies(directory, "kube-proxy")


def test_a_missing_certificate_or_key_is_made_again(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    (directory / "kube-scheduler.pem").unlink()
    (directory / "service-account-key.pem").unlink()
    results = pki.ensure(topo)
    assert kept_except(results, "kube-scheduler", "service-account") == {
        "kube-scheduler": "reissued: certificate missing",
        "service-account": "reissued: key missing",
    }
    assert all(key_fits_cert(directory, n) and verifies(directory, n) for n in ("kube-scheduler", "service-account"))


def test_a_certificate_from_another_ca_is_reissued(small: tuple[Pki, Topology, Path], tmp_path: Path) -> None:
    pki, topo, directory = small
    Pki(tmp_path / "other", pki.config).ensure(topo)
    for file in ("admin.pem", "admin-key.pem"):
        shutil.copy(tmp_path / "other" / file, directory / file)
    assert not verifies(directory, "admin")

    results = pki.ensure(topo)

    assert kept_except(results, "admin") == {"admin": "reissued: not signed by the current CA"}
    assert verifies(directory, "admin")


SERVER, CLIENT_OID = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.mark.parametrize(
    ("name", "cn", "org", "dns", "ekus", "reason"),
    [
        ("admin", "admin", "system:nodes", [], [CLIENT_OID], "reissued: subject is CN=admin,O=system:nodes, want CN=admin,O=system:masters"),
        ("kube-proxy", "system:kube-proxy", "system:node-proxier", ["evil.example"], [CLIENT_OID], "reissued: SANs differ (-DNS:evil.example)"),
        ("kube-scheduler", "system:kube-scheduler", "system:kube-scheduler", [], [SERVER], "reissued: extended key usages differ"),
    ],
    ids=["subject", "sans", "ekus"],
)
def test_a_certificate_that_says_something_else_is_reissued(small: tuple[Pki, Topology, Path], name: str, cn: str, org: str,
                                                            dns: list[str], ekus: list, reason: str) -> None:
    pki, topo, directory = small
    forge(directory, name, cn, org, dns, ekus)
    before = snapshot(directory)
    assert verifies(directory, name)  # signed by the right CA, for the right key: only its content is wrong

    results = pki.ensure(topo)

    assert kept_except(results, name) == {name: reason}
    assert changed(before, directory) == {f"{name}.pem"}
    spec = next(s for s in cert_specs(topo) if s.name == name)
    back = read_back(directory / f"{name}.pem")
    assert (back.subject, sans_of(back), back.ext["Extended Key Usage"][1]) == ({"CN": spec.cn, "O": spec.org}, set(), CLIENT)


def test_a_new_key_type_reissues_leaves_with_new_keys_and_keeps_the_ca(small: tuple[Pki, Topology, Path]) -> None:
    _pki, topo, directory = small
    before = snapshot(directory)
    rsa = make(HA | {"topology": {"controllers": 2, "workers": 2}}, "rsa-2048")

    results = Pki(directory, rsa).ensure(Topology(rsa, topo.addresses))

    assert results.pop("ca") == results.pop("front-proxy-ca") == "kept"
    assert set(results.values()) == {"reissued: key type changed to rsa-2048"}
    assert changed(before, directory) == {f"{n}{s}" for n in results for s in (".pem", "-key.pem")}
    assert "id-ecPublicKey" in read_back(directory / "ca.pem").text
    assert all("Public-Key: (2048 bit)" in read_back(directory / f"{n}.pem").text and verifies(directory, n, ca="front-proxy-ca" if n == "front-proxy-client" else "ca") for n in results)


# --- the CA is never replaced -----------------------------------------------------------------------


def test_a_ca_without_its_key_is_an_error_and_nothing_changes(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    (directory / "ca-key.pem").unlink()
    before = snapshot(directory)

    with pytest.raises(StateError) as error:
        pki.ensure(topo)

    message = str(error.value)
    assert "\n" not in message and "ca-key.pem is missing" in message and "restore it from a backup" in message
    assert changed(before, directory) == set()


def test_a_ca_key_of_another_ca_is_an_error_and_nothing_changes(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    shutil.copy(directory / "admin-key.pem", directory / "ca-key.pem")
    before = snapshot(directory)
    with pytest.raises(StateError, match=re.escape("ca-key.pem does not belong to ca.pem")):
        pki.ensure(topo)
    assert changed(before, directory) == set()


def test_a_ca_certificate_lost_after_its_key_was_written_is_remade_from_that_key(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, directory = small
    (directory / "ca.pem").unlink()
    before = snapshot(directory)

    results = pki.ensure(topo)

    assert kept_except(results, "ca") == {"ca": "created"}
    assert changed(before, directory) == {"ca.pem"}
    assert key_fits_cert(directory, "ca")
    assert all(verifies(directory, spec.name, ca=spec.issuer) for spec in cert_specs(topo))  # same key, same name: leaves stay valid


# --- files ----------------------------------------------------------------------------------------------


def test_modes_are_private_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o755)
    old = os.umask(0)
    try:
        Pki(directory, make()).ensure(Topology(make()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    keys = sorted(directory.glob("*-key.pem"))
    assert len(keys) == 11 and {stat.S_IMODE(k.stat().st_mode) for k in keys} == {0o600}
    certs = set(directory.glob("*.pem")) - set(keys)
    assert len(certs) == 11 and {stat.S_IMODE(c.stat().st_mode) for c in certs} == {0o644}


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(small: tuple[Pki, Topology, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pki, _topo, directory = small
    before = snapshot(directory)

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        pki.ensure(Topology(pki.config, Addresses({"worker-0": "198.51.100.50"}, "203.0.113.10")))
    assert changed(before, directory) == set()


def test_temp_files_left_by_a_crash_are_removed(small: tuple[Pki, Topology, Path]) -> None:
    pki, _, directory = small
    (directory / ".admin-key.pem.x1y2.tmp").write_bytes(b"half a key")
    Pki(directory, pki.config)
    assert not list(directory.glob(".*"))


def test_reading_before_the_pki_stage_names_the_stage(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki", make())
    for read in (pki.ca_pem, lambda: pki.cert_pem("admin"), lambda: pki.key_pem("admin")):
        with pytest.raises(StateError, match="does not exist; run the pki stage first"):
            read()


def test_pem_accessors_return_the_files(small: tuple[Pki, Topology, Path]) -> None:
    pki, _, directory = small
    assert pki.ca_pem() == (directory / "ca.pem").read_bytes()
    assert pki.cert_pem("worker-0") == (directory / "worker-0.pem").read_bytes()
    assert pki.key_pem("worker-0").startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8


# --- rows (`khwtui certs`) --------------------------------------------------------------------------


def statuses(pki: Pki, topo: Topology, now: dt.datetime | None = None) -> dict[str, str]:
    return {row.name: row.status for row in pki.rows(topo, now)}


def test_rows_before_anything_was_made_are_all_missing(tmp_path: Path) -> None:
    c = make()
    rows = Pki(tmp_path / "pki", c).rows(Topology(c))
    assert [r.name for r in rows] == ["ca", "front-proxy-ca", "admin", "worker-0", "worker-1", "kube-controller-manager", "kube-proxy",
                                      "kube-scheduler", "kubernetes", "service-account", "front-proxy-client"]
    assert {(r.status, r.not_after, r.days_left) for r in rows} == {("missing", None, None)}
    assert rows[3].cn == "system:node:worker-0" and rows[3].sans == "DNS:worker-0, IP:10.240.0.20"


def test_rows_report_days_left_and_the_renewal_window(small: tuple[Pki, Topology, Path]) -> None:
    pki, topo, _ = small
    rows = pki.rows(topo)
    assert (rows[0].name, rows[0].cn, rows[0].org, rows[0].days_left, rows[0].status) == ("ca", "Kubernetes", "Kubernetes", 3649, "ok")
    assert (rows[1].name, rows[1].cn, rows[1].org, rows[1].days_left) == ("front-proxy-ca", "front-proxy-ca", "", 3649)
    assert {(r.days_left, r.status) for r in rows[2:]} == {(364, "ok")}
    kubernetes = next(r for r in rows if r.name == "kubernetes")
    assert "IP:203.0.113.10" in kubernetes.sans and kubernetes.org == "Kubernetes"

    end = rows[2].not_after
    assert {r.not_after for r in rows[2:]} == {end}
    before_window = pki.rows(topo, end - dt.timedelta(days=30, hours=1))
    assert {r.status for r in before_window} == {"ok"}
    soon = pki.rows(topo, end - dt.timedelta(days=24, hours=12))
    assert soon[0].status == soon[1].status == "ok"
    assert {(r.days_left, r.status) for r in soon[2:]} == {(24, "renew soon")}
    late = pki.rows(topo, end + dt.timedelta(hours=1))
    assert {(r.days_left, r.status) for r in late[2:]} == {(-1, "expired")}


def test_rows_flag_mismatches_and_missing_files_without_changing_anything(small: tuple[Pki, Topology, Path]) -> None:
    pki, _topo, directory = small
    (directory / "kube-proxy-key.pem").unlink()
    before = snapshot(directory)
    moved = Topology(pki.config, Addresses({"worker-0": "198.51.100.77"}, "203.0.113.10"))

    got = statuses(pki, moved)

    assert {name: s for name, s in got.items() if s != "ok"} == {"worker-0": "mismatch", "worker-1": "mismatch", "kube-proxy": "missing"}
    assert changed(before, directory) == set()
    (directory / "ca-key.pem").unlink()
    assert statuses(pki, moved)["ca"] == "mismatch"
