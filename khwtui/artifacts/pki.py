"""The cluster's certificates: the CA, every KTHW leaf and the front proxy's pair, made once,
re-issued only when needed.

The front proxy has its own CA (kubeadm's front-proxy-ca): the apiserver trusts the user and group
headers of a request only from a client certificate that CA signed (--requestheader-client-ca-file),
so it must not be the cluster CA, which signs every user's certificate. Aggregated APIs such as
metrics-server need it (kubernetes v1.36.0 staging/src/k8s.io/apiserver/pkg/server/options/authentication.go,
RequestHeaderAuthenticationOptions).

Every run compares what is on disk with what the topology wants. A leaf is re-issued only when it
is missing, does not fit its key, the CA or its spec, or is about to expire; otherwise it is kept
byte-identical, so a rerun changes nothing on the nodes. The CA is never replaced: every node
trusts it, so a CA without its key is an error for the user to fix, not something to paper over.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from khwtui.core.errors import ConfigError, StateError
from khwtui.core.fsutil import TEMP_SUFFIX, write_atomic
from khwtui.model.config import Config
from khwtui.model.topology import Topology

CA_NAME = "ca"
CA_CN = CA_ORG = "Kubernetes"
FRONT_PROXY_CA = "front-proxy-ca"
FRONT_PROXY_CLIENT = "front-proxy-client"
CAS = {CA_NAME: (CA_CN, CA_ORG), FRONT_PROXY_CA: (FRONT_PROXY_CA, None)}  # file stem -> (CN, O)
CA_VALIDITY_DAYS = 3650
BACKDATE = dt.timedelta(hours=1)  # nodes whose clock is a little behind still accept a new cert
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


@dataclass(frozen=True)
class CertSpec:
    """What one leaf certificate must say; `name` is its file stem."""

    name: str
    cn: str
    org: str | None
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    server: bool  # serverAuth EKU
    client: bool  # clientAuth EKU
    issuer: str = CA_NAME  # the CA that signs it (a key of CAS)


@dataclass(frozen=True)
class CertRow:
    """One line of `khwtui certs`. `not_after` and `days_left` are None when the file is missing."""

    name: str
    cn: str
    org: str
    sans: str
    not_after: dt.datetime | None
    days_left: int | None
    status: str  # ok | renew soon | expired | missing | mismatch


def _client(name: str, cn: str, org: str) -> CertSpec:
    return CertSpec(name, cn, org, (), (), server=False, client=True)


def cert_specs(topo: Topology) -> list[CertSpec]:
    """Every leaf of KTHW's certificate table for this topology, in its order (the CA excluded)."""
    dns, ips = topo.apiserver_sans()
    fixed = [
        _client("admin", "admin", "system:masters"),
        _client("kube-controller-manager", "system:kube-controller-manager", "system:kube-controller-manager"),
        _client("kube-proxy", "system:kube-proxy", "system:node-proxier"),
        _client("kube-scheduler", "system:kube-scheduler", "system:kube-scheduler"),
        # server and client: apiserver, etcd server and peer, apiserver -> etcd and -> kubelet
        CertSpec("kubernetes", "kubernetes", "Kubernetes", tuple(dns), tuple(ips), server=True, client=True),
        _client("service-account", "service-accounts", "Kubernetes"),  # its key signs SA tokens
        # the apiserver's identity towards aggregated API servers, signed by the front proxy's own CA
        CertSpec(FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT, None, (), (), server=False, client=True, issuer=FRONT_PROXY_CA),
    ]
    reserved = set(CAS) | {spec.name for spec in fixed}
    workers = []
    for node in topo.workers:
        if node.name in reserved:
            raise ConfigError("machines.hosts", f"worker name {node.name!r} is also a certificate file name", "rename that host")
        dns, ips = topo.worker_sans(node)
        workers.append(CertSpec(node.name, f"system:node:{node.name}", "system:nodes", tuple(dns), tuple(ips), server=True, client=True))
    return fixed[:1] + workers + fixed[1:]


class Pki:
    """The `pki/` folder of one cluster: `<name>.pem` and `<name>-key.pem`, the CA as `ca`."""

    def __init__(self, directory: Path, config: Config) -> None:
        self.dir = Path(directory)
        self.config = config
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        for stale in self.dir.glob(f".*{TEMP_SUFFIX}"):  # left by a crash between write and rename
            stale.unlink()

    # --- files ------------------------------------------------------------------------------

    def _cert_path(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def _key_path(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StateError(f"{path} does not exist; run the pki stage first (khwtui up --until pki)") from None

    def ca_pem(self) -> bytes:
        return self._read(self._cert_path(CA_NAME))

    def cert_pem(self, name: str) -> bytes:
        return self._read(self._cert_path(name))

    def key_pem(self, name: str) -> bytes:
        """PKCS8 PEM; `key_pem("ca")` is the CA key the controller manager signs with."""
        return self._read(self._key_path(name))

    # --- load or create ---------------------------------------------------------------------

    def ensure(self, topo: Topology, now: dt.datetime | None = None) -> dict[str, str]:
        """Make the CAs and every leaf fit the topology: name -> "created" | "kept" | "reissued: why"."""
        now = now or _utcnow()
        cas: dict[str, tuple[x509.Certificate, PrivateKey]] = {}
        results: dict[str, str] = {}
        for name in CAS:
            cert, key, results[name] = self._ensure_ca(name, now)
            cas[name] = (cert, key)
        for spec in cert_specs(topo):
            results[spec.name] = self._ensure_leaf(spec, *cas[spec.issuer], now)
        return results

    def _ensure_ca(self, name: str, now: dt.datetime) -> tuple[x509.Certificate, PrivateKey, str]:
        """Load the CA, or make one (10 years, so leaves are renewed many times before it ends).

        A CA key without its certificate is what a crash between the two writes leaves behind:
        the certificate is made again from that key, so certificates it signed stay valid.
        """
        cert_path, key_path = self._cert_path(name), self._key_path(name)
        if cert_path.exists():
            return *self._existing_ca(name), "kept"
        key = _load_key(key_path)
        if key is None:
            if key_path.exists():
                raise StateError(f"{key_path} is unreadable and there is no {name}.pem; remove it to make a new CA")
            key = _new_key(self.config.pki.key_type)
            write_atomic(key_path, _key_bytes(key), 0o600)
        cert = _ca_cert(key, *CAS[name], now)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert, key, "created"

    def _existing_ca(self, name: str) -> tuple[x509.Certificate, PrivateKey]:
        cert_path, key_path = self._cert_path(name), self._key_path(name)
        fix = f"restore it from a backup, or remove {self.dir} to make a new CA (every node then needs new certificates)"
        cert = _load_cert(cert_path)
        if cert is None:
            raise StateError(f"{cert_path} is not a readable certificate; {fix}")
        key = _load_key(key_path)
        if key is None or not _matches(cert, key):
            problem = "is missing" if not key_path.exists() else "does not belong to ca.pem"
            raise StateError(f"{key_path} {problem}, so the CA cannot sign; {fix}")
        return cert, key

    def _ensure_leaf(self, spec: CertSpec, ca: x509.Certificate, ca_key: PrivateKey, now: dt.datetime) -> str:
        cert, key = _load_cert(self._cert_path(spec.name)), _load_key(self._key_path(spec.name))
        reason = self._mismatch(spec, cert, key, ca)
        if reason is None and cert is not None:
            reason = self._expiry(cert, now)
        if reason is None:
            return "kept"
        created = not (self._cert_path(spec.name).exists() or self._key_path(spec.name).exists())
        if key is None or _key_type(key) != self.config.pki.key_type:
            key = _new_key(self.config.pki.key_type)
            write_atomic(self._key_path(spec.name), _key_bytes(key), 0o600)
        leaf = _leaf_cert(spec, key, ca, ca_key, self.config.pki.validity_days, now)
        write_atomic(self._cert_path(spec.name), leaf.public_bytes(serialization.Encoding.PEM), 0o644)
        return "created" if created else f"reissued: {reason}"

    def _mismatch(self, spec: CertSpec, cert: x509.Certificate | None, key: PrivateKey | None,
                  ca: x509.Certificate | None) -> str | None:
        """Why the leaf on disk does not fit its spec, or None; expiry is judged apart."""
        if cert is None:
            return "certificate missing" if not self._cert_path(spec.name).exists() else "certificate unreadable"
        if key is None:
            return "key missing" if not self._key_path(spec.name).exists() else "key unreadable"
        if not _matches(cert, key):
            return "key does not match the certificate"
        if _key_type(key) != self.config.pki.key_type:
            return f"key type changed to {self.config.pki.key_type}"
        if ca is None or not _issued_by(cert, ca):
            return "not signed by the current CA"
        if cert.subject != _subject(spec.cn, spec.org):
            return f"subject is {cert.subject.rfc4514_string()}, want {_subject(spec.cn, spec.org).rfc4514_string()}"
        have, want = set(_cert_sans(cert)), set(_sans(spec.dns, spec.ips))
        if have != want:
            changes = [f"+{s}" for s in sorted(want - have)] + [f"-{s}" for s in sorted(have - want)]
            return f"SANs differ ({' '.join(changes)})"
        if _ekus(cert) != set(_wanted_ekus(spec)):
            return "extended key usages differ"
        return None

    def _left(self, cert: x509.Certificate, now: dt.datetime) -> tuple[dt.timedelta, bool]:
        """(time left, inside the renewal window)."""
        left = cert.not_valid_after_utc - now
        return left, left <= dt.timedelta(days=self.config.pki.renew_before_days)

    def _expiry(self, cert: x509.Certificate, now: dt.datetime) -> str | None:
        left, renew = self._left(cert, now)
        if left <= dt.timedelta(0):
            return f"expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        return f"expires in {left.days} days" if renew else None

    def reissue(self, topo: Topology, names: list[str], now: dt.datetime | None = None) -> dict[str, int]:
        """A new certificate (new serial, full validity) for each leaf in `names`, on its existing key
        when that key still fits; returns name -> new serial. The CA is never re-issued here."""
        now = now or _utcnow()
        specs = {spec.name: spec for spec in cert_specs(topo)}
        serials = {}
        for name in names:
            key = _load_key(self._key_path(name))
            if key is None or _key_type(key) != self.config.pki.key_type:
                key = _new_key(self.config.pki.key_type)
                write_atomic(self._key_path(name), _key_bytes(key), 0o600)
            leaf = _leaf_cert(specs[name], key, *self._existing_ca(specs[name].issuer), self.config.pki.validity_days, now)
            write_atomic(self._cert_path(name), leaf.public_bytes(serialization.Encoding.PEM), 0o644)
            serials[name] = leaf.serial_number
        return serials

    def serial(self, name: str) -> int | None:
        """The serial number of the certificate on disk (None when it is missing or unreadable)."""
        cert = _load_cert(self._cert_path(name))
        return cert.serial_number if cert else None

    # --- report -------------------------------------------------------------------------------

    def rows(self, topo: Topology, now: dt.datetime | None = None) -> list[CertRow]:
        """The CAs first, then every leaf; reads only, so it is safe while nothing was made yet."""
        now = now or _utcnow()
        rows, cas = [], {}
        for name, (cn, org) in CAS.items():
            ca, ca_key = cas[name] = _load_cert(self._cert_path(name)), _load_key(self._key_path(name))
            ca_fits = ca is not None and ca_key is not None and _matches(ca, ca_key)
            rows.append(self._row(name, ca, cn, org or "", [], "mismatch" if ca and not ca_fits else None, now))
        for spec in cert_specs(topo):
            cert, key = _load_cert(self._cert_path(spec.name)), _load_key(self._key_path(spec.name))
            missing = not (self._cert_path(spec.name).exists() and self._key_path(spec.name).exists())
            problem = "missing" if missing else "mismatch" if self._mismatch(spec, cert, key, cas[spec.issuer][0]) else None
            rows.append(self._row(spec.name, cert, spec.cn, spec.org or "", _sans(spec.dns, spec.ips), problem, now))
        return rows

    def _row(self, name: str, cert: x509.Certificate | None, cn: str, org: str, sans: list[str],
             problem: str | None, now: dt.datetime) -> CertRow:
        if cert is None:
            return CertRow(name, cn, org, ", ".join(sans), None, None, "missing")
        left, renew = self._left(cert, now)
        status = problem or ("expired" if left <= dt.timedelta(0) else "renew soon" if renew else "ok")
        return CertRow(name, _attribute(cert.subject, NameOID.COMMON_NAME), _attribute(cert.subject, NameOID.ORGANIZATION_NAME),
                       ", ".join(_cert_sans(cert)), cert.not_valid_after_utc, left.days, status)


# --- building certificates ------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _subject(cn: str, org: str | None) -> x509.Name:
    org_part = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*org_part, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(**on: bool) -> x509.KeyUsage:
    return x509.KeyUsage(**{usage: on.get(usage, False) for usage in KEY_USAGES})


def _wanted_ekus(spec: CertSpec) -> list[x509.ObjectIdentifier]:
    wanted = ((ExtendedKeyUsageOID.SERVER_AUTH, spec.server), (ExtendedKeyUsageOID.CLIENT_AUTH, spec.client))
    return [oid for oid, on in wanted if on]


def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int, now: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca_cert(key: PrivateKey, cn: str, org: str | None, now: dt.datetime) -> x509.Certificate:
    name = _subject(cn, org)
    return (
        _builder(name, name, key, CA_VALIDITY_DAYS, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )


def _leaf_cert(spec: CertSpec, key: PrivateKey, ca: x509.Certificate, ca_key: PrivateKey, days: int,
               now: dt.datetime) -> x509.Certificate:
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(_subject(spec.cn, spec.org), ca.subject, key, days, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_wanted_ekus(spec)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if spec.dns or spec.ips:
        names = [x509.DNSName(d) for d in spec.dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


# --- reading certificates -------------------------------------------------------------------


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _load_key(path: Path) -> PrivateKey | None:
    """The private key in `path`; None when it is missing or not an unencrypted RSA/EC key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (FileNotFoundError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else None


def _key_type(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    return "ecdsa-p256" if key.curve.name == "secp256r1" else f"ecdsa-{key.curve.name}"


def _matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _sans(dns: tuple[str, ...] | list[str], ips: tuple[str, ...] | list[str]) -> list[str]:
    return [f"DNS:{d}" for d in dns] + [f"IP:{ipaddress.ip_address(ip)}" for ip in ips]


def _cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return _sans(san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)])


def _ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""

