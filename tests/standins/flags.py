"""The command-line flags of each kube-* program, per Kubernetes minor 1.34-1.37, for the stand-ins.

A stand-in accepts exactly the flags its program has in the configured minor and refuses the rest
the way the real binary does ("unknown flag"), naming the minor that removed a flag it knew once.
The lists are a faithful subset of each program's flags: every flag KTHW and khwtui pass, the
common neighbours an operator might add, and the deprecated ones that still parse. A flag missing
here is refused even where the real program would take it, so the stand-ins err on strictness.

Sources:
- KTHW, GCP edition, commit 79a3f79 (docs/08-bootstrapping-kubernetes-controllers.md): the flags
  KTHW passes (reference/kthw.md, Lab 08); current edition 52eb26d for the v1 scheduler config.
- reference/versions.md: --service-account-issuer and --service-account-signing-key-file required
  since 1.20; the removals listed there.
- Kubernetes release notes (CHANGELOG/CHANGELOG-1.<minor>.md in kubernetes/kubernetes) and the
  pull requests named beside each flag below.
- The kube-apiserver, kube-controller-manager and kube-scheduler reference pages
  (kubernetes.io/docs/reference/command-line-tools-reference/) for kinds and deprecations.

Kinds name how the stand-in checks a value (tests/standins/harness.py, CHECKS): "bool" takes no
value (or =true/=false); every other kind takes one.
"""

from __future__ import annotations

from dataclasses import dataclass

MINORS = (34, 35, 36, 37)


@dataclass(frozen=True)
class Flag:
    name: str  # without the leading --
    kind: str  # bool | string | strings | map | int | duration | ip | cidrs | portrange | url | urls |
    #            file | cert | key | kubeconfig | encryption-config | scheduler-config | audit-log | authz-modes
    since: int = 0  # first minor that has it; 0 = older than 1.34
    removed: int = 0  # minor that removed it; 0 = still there in 1.37
    note: str = ""  # deprecation or source

    @property
    def takes_value(self) -> bool:
        return self.kind != "bool"


@dataclass(frozen=True)
class Program:
    """One kube-* program: its flags, and what a KTHW cluster cannot run without."""

    name: str
    flags: tuple[Flag, ...]
    required: tuple[str, ...]  # flags the stand-in refuses to start without (reasons in comments)
    pairs: tuple[tuple[str, str], ...] = ()  # (certificate flag, key flag) that must belong together
    trust: tuple[tuple[str, str], ...] = ()  # (kubeconfig flag, CA flag): the kubeconfig trusts that CA

    def accepted(self, minor: int) -> dict[str, str]:
        """name -> kind of every flag the program parses in 1.<minor>."""
        return {f.name: f.kind for f in self.flags if f.since <= minor and not (f.removed and f.removed <= minor)}

    def removed(self, minor: int) -> dict[str, int]:
        """name -> the minor that removed it, for flags gone by 1.<minor>."""
        return {f.name: f.removed for f in self.flags if f.removed and f.removed <= minor}

    def spec(self, minor: int) -> dict:
        """What the harness is built with for this program in 1.<minor> (plain data, baked into it)."""
        return {
            "flags": self.accepted(minor),
            "removed": self.removed(minor),
            "required": list(self.required),
            "pairs": [list(p) for p in self.pairs],
            "trust": [list(t) for t in self.trust],
        }


F = Flag
DEPRECATED_IGNORED_WITH_CONFIG = "deprecated: ignored when --config is given"

# Flags every component gets from the shared component-base and secure-serving options.
COMMON = (
    F("v", "int"),
    F("vmodule", "strings"),
    F("logging-format", "string"),
    F("feature-gates", "map"),
    F("profiling", "bool"),
    F("bind-address", "ip"),
    F("secure-port", "int"),
    F("tls-cert-file", "cert"),
    F("tls-private-key-file", "key"),
    F("tls-cipher-suites", "strings"),
    F("tls-min-version", "string"),
    F("client-ca-file", "cert"),
    F("requestheader-client-ca-file", "cert"),
    F("emulated-version", "strings"),
    F("min-compatibility-version", "strings", since=35, note="kubernetes/kubernetes#133980 (CHANGELOG-1.35)"),
    F("tls-curve-preferences", "strings", since=36, note="kubernetes/kubernetes#137115 (CHANGELOG-1.36)"),
)

KUBE_APISERVER = Program(
    "kube-apiserver",
    COMMON + (
        F("advertise-address", "ip"),
        F("allow-privileged", "bool"),
        F("anonymous-auth", "bool"),
        F("api-audiences", "strings"),
        F("apiserver-count", "int", note="only read by the master-count endpoint reconciler; the default lease reconciler ignores it"),
        F("admission-control", "strings", note="deprecated: use --enable-admission-plugins"),
        F("admission-control-config-file", "file"),
        F("audit-log-format", "string"),
        F("audit-log-maxage", "int"),
        F("audit-log-maxbackup", "int"),
        F("audit-log-maxsize", "int"),
        F("audit-log-path", "audit-log"),
        F("audit-policy-file", "file"),
        F("authorization-mode", "authz-modes"),
        F("authorization-config", "file"),
        F("disable-admission-plugins", "strings"),
        F("enable-admission-plugins", "strings"),
        F("enable-aggregator-routing", "bool"),
        F("enable-bootstrap-token-auth", "bool"),
        F("encryption-provider-config", "encryption-config"),
        F("encryption-provider-config-automatic-reload", "bool"),
        F("endpoint-reconciler-type", "string"),
        F("etcd-cafile", "cert"),
        F("etcd-certfile", "cert"),
        F("etcd-keyfile", "key"),
        F("etcd-prefix", "string"),
        F("etcd-servers", "urls"),
        F("event-ttl", "duration"),
        F("kubelet-certificate-authority", "cert"),
        F("kubelet-client-certificate", "cert"),
        F("kubelet-client-key", "key"),
        F("kubelet-preferred-address-types", "strings"),
        F("kubelet-timeout", "duration"),
        F("max-requests-inflight", "int"),
        F("requestheader-allowed-names", "strings"),
        F("runtime-config", "map"),
        F("service-account-issuer", "url"),
        F("service-account-key-file", "cert"),
        F("service-account-lookup", "bool"),
        F("service-account-max-token-expiration", "duration"),
        F("service-account-signing-key-file", "key"),
        F("service-cluster-ip-range", "cidrs"),
        F("service-node-port-range", "portrange"),
        F("token-auth-file", "file"),
        # removed: the stand-in names the minor, the real binary just says "unknown flag"
        F("basic-auth-file", "file", removed=19, note="basic authentication removed (CHANGELOG-1.19)"),
        F("kubelet-https", "bool", removed=22, note="deprecated 1.19 (#91630), removed 1.22 (#101178)"),
        F("address", "ip", removed=24, note="insecure serving gone 1.20, flags removed 1.24 (#95856)"),
        F("insecure-bind-address", "ip", removed=24, note="#95856"),
        F("insecure-port", "int", removed=24, note="#95856"),
        F("port", "int", removed=24, note="#95856"),
        F("cloud-config", "file", removed=33, note="deprecated 1.29 (#120903), removed 1.33 (#130162)"),
        F("cloud-provider", "string", removed=33, note="#130162"),
    ),
    required=(
        "etcd-servers",  # the real binary: "--etcd-servers must be specified"
        "service-account-issuer", "service-account-key-file", "service-account-signing-key-file",  # since 1.20
        "etcd-cafile", "etcd-certfile", "etcd-keyfile",  # the etcd cluster is TLS-only (KTHW GCP edition)
        "client-ca-file", "tls-cert-file", "tls-private-key-file",  # client certificates and the SANs KTHW made
        "kubelet-certificate-authority", "kubelet-client-certificate", "kubelet-client-key",  # logs, exec
        "authorization-mode",  # without it every request is allowed (AlwaysAllow)
        "encryption-provider-config",  # KTHW's smoke test reads an encrypted Secret from etcd
        "service-cluster-ip-range",  # the current edition dropped it: 10.0.0.1 is not in the SANs (#905)
    ),
    pairs=(
        ("tls-cert-file", "tls-private-key-file"),
        ("etcd-certfile", "etcd-keyfile"),
        ("kubelet-client-certificate", "kubelet-client-key"),
        ("service-account-key-file", "service-account-signing-key-file"),  # tokens it signs must verify
    ),
)

KUBE_CONTROLLER_MANAGER = Program(
    "kube-controller-manager",
    COMMON + (
        F("allocate-node-cidrs", "bool"),
        F("authentication-kubeconfig", "kubeconfig"),
        F("authorization-kubeconfig", "kubeconfig"),
        F("cloud-provider", "string"),
        F("cluster-cidr", "cidrs"),
        F("cluster-name", "string"),
        F("cluster-signing-cert-file", "cert"),
        F("cluster-signing-duration", "duration"),
        F("cluster-signing-key-file", "key"),
        F("concurrent-deployment-syncs", "int"),
        F("concurrent-resourceclaim-syncs", "int", since=36, note="kubernetes/kubernetes#134701 (CHANGELOG-1.36)"),
        F("controllers", "strings"),
        F("kubeconfig", "kubeconfig"),
        F("leader-elect", "bool"),
        F("leader-elect-lease-duration", "duration"),
        F("leader-elect-resource-lock", "string"),
        F("node-cidr-mask-size", "int"),
        F("root-ca-file", "cert"),
        F("service-account-private-key-file", "key"),
        F("service-cluster-ip-range", "cidrs"),
        F("terminated-pod-gc-threshold", "int"),
        F("use-service-account-credentials", "bool"),
        F("deleting-pods-burst", "int", removed=25, note="kubernetes/kubernetes#109612"),
        F("deleting-pods-qps", "string", removed=25, note="#109612"),
        F("register-retry-count", "int", removed=25, note="#109612"),
        F("horizontal-pod-autoscaler-downscale-delay", "duration", removed=31, note="#124948"),
        F("horizontal-pod-autoscaler-upscale-delay", "duration", removed=31, note="#124948"),
        F("volume-host-allow-local-loopback", "bool", removed=31, note="deprecated 1.28, removed (#124017)"),
        F("volume-host-cidr-denylist", "strings", removed=31, note="#124017"),
    ),
    required=(
        "kubeconfig",  # without it the real one tries in-cluster config and fails outside a pod
        "root-ca-file",  # service account token secrets carry it to pods
        "cluster-signing-cert-file", "cluster-signing-key-file",  # CSR signing (kubelet serving certs)
        "service-account-private-key-file",  # the tokens controller signs with it
        "service-cluster-ip-range",
    ),
    pairs=(("cluster-signing-cert-file", "cluster-signing-key-file"), ("tls-cert-file", "tls-private-key-file")),
    trust=(("kubeconfig", "root-ca-file"),),
)

KUBE_SCHEDULER = Program(
    "kube-scheduler",
    COMMON + (
        F("authentication-kubeconfig", "kubeconfig"),
        F("authorization-kubeconfig", "kubeconfig"),
        F("config", "scheduler-config"),
        F("kubeconfig", "kubeconfig", note=DEPRECATED_IGNORED_WITH_CONFIG),
        F("kube-api-burst", "int", note=DEPRECATED_IGNORED_WITH_CONFIG),
        F("kube-api-qps", "string", note=DEPRECATED_IGNORED_WITH_CONFIG),
        F("leader-elect", "bool"),
        F("master", "url", note="deprecated: overrides the kubeconfig's server"),
        F("write-config-to", "string"),
        F("policy-config-file", "file", removed=23, note="the Policy API ended in 1.23 (CHANGELOG-1.23)"),
        F("policy-configmap", "string", removed=23),
        F("policy-configmap-namespace", "string", removed=23),
        F("use-legacy-policy-config", "bool", removed=23),
    ),
    required=("config",),  # KTHW configures the scheduler only through its config file
    pairs=(("tls-cert-file", "tls-private-key-file"),),
)

PROGRAMS: dict[str, Program] = {p.name: p for p in (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)}
