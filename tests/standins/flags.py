"""The command-line flags of each kube-* program, per Kubernetes minor 1.34-1.37, for the stand-ins.

A stand-in accepts exactly the flags its program has in the configured minor and refuses the rest
the way the real binary does ("unknown flag"), naming the minor that removed a flag it knew once.
The lists are a faithful subset of each program's flags: every flag KTHW and khwtui pass, the
common neighbours an operator might add, and the deprecated ones that still parse. A flag missing
here is refused even where the real program would take it, so the stand-ins err on strictness.

Sources:
- KTHW, GCP edition, commit 79a3f79 (docs/08-bootstrapping-kubernetes-controllers.md): the flags
  KTHW passes; current edition 52eb26d for the v1 scheduler config.
- docs/UPSTREAM.md "Kubernetes version changes": --service-account-issuer and --service-account-signing-key-file required
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
    kind: str  # flags: bool | string | strings | map | int | duration | ip | ips | cidrs | portrange | url |
    #            urls | file | cert | key | kubeconfig | encryption-config | scheduler-config | audit-log | audit-policy |
    #            authz-modes | kubelet-config | kube-proxy-config; config fields: FIELD_CHECKS in harness.py
    since: int = 0  # first minor that has it; 0 = older than 1.34
    removed: int = 0  # minor that removed it; 0 = still there in 1.37
    note: str = ""  # deprecation or source
    true_from: int = -1  # bool config fields: the first minor whose default is true (-1: never)

    @property
    def takes_value(self) -> bool:
        return self.kind != "bool"


@dataclass(frozen=True)
class Program:
    """One kube-* program: its flags, the fields of its --config file, and what a KTHW cluster
    cannot run without."""

    name: str
    flags: tuple[Flag, ...]
    required: tuple[str, ...]  # flags the stand-in refuses to start without (reasons in comments)
    pairs: tuple[tuple[str, str], ...] = ()  # (certificate flag, key flag) that must belong together
    trust: tuple[tuple[str, str], ...] = ()  # (kubeconfig flag, CA flag): the kubeconfig trusts that CA
    fields: tuple[Flag, ...] = ()  # top-level fields of the --config file (kinds: FIELD_CHECKS)
    fields_required: tuple[str, ...] = ()  # fields the stand-in refuses to start without
    field_pairs: tuple[tuple[str, str], ...] = ()  # (certificate field, key field)

    def accepted(self, minor: int) -> dict[str, str]:
        """name -> kind of every flag the program parses in 1.<minor>."""
        return _present(self.flags, minor)

    def removed(self, minor: int) -> dict[str, int]:
        """name -> the minor that removed it, for flags gone by 1.<minor>."""
        return _gone(self.flags, minor)

    def accepted_fields(self, minor: int) -> dict[str, str]:
        return _present(self.fields, minor)

    def removed_fields(self, minor: int) -> dict[str, int]:
        return _gone(self.fields, minor)

    def spec(self, minor: int) -> dict:
        """What the harness is built with for this program in 1.<minor> (plain data, baked into it)."""
        return {
            "flags": self.accepted(minor),
            "removed": self.removed(minor),
            "required": list(self.required),
            "pairs": [list(p) for p in self.pairs],
            "trust": [list(t) for t in self.trust],
            "fields": self.accepted_fields(minor),
            "fields_removed": self.removed_fields(minor),
            "fields_required": list(self.fields_required),
            "field_pairs": [list(p) for p in self.field_pairs],
            "true_by_default": sorted(f.name for f in self.fields if 0 <= f.true_from <= minor),
        }


def _present(rows: tuple[Flag, ...], minor: int) -> dict[str, str]:
    return {f.name: f.kind for f in rows if f.since <= minor and not (f.removed and f.removed <= minor)}


def _gone(rows: tuple[Flag, ...], minor: int) -> dict[str, int]:
    return {f.name: f.removed for f in rows if f.removed and f.removed <= minor}


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
        F("audit-policy-file", "audit-policy"),
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
        F("requestheader-extra-headers-prefix", "strings"),
        F("requestheader-group-headers", "strings"),
        F("requestheader-username-headers", "strings"),
        F("proxy-client-cert-file", "cert"),
        F("proxy-client-key-file", "key"),
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
        ("proxy-client-cert-file", "proxy-client-key-file"),
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

# Flags of the kubelet's and kube-proxy's shared logging options (component-base).
LOGGING = (
    F("v", "int"),
    F("vmodule", "strings"),
    F("logging-format", "string"),
    F("feature-gates", "map"),
)
DEPRECATED_USE_CONFIG = "deprecated: set it in the --config file"
DOCKERSHIM = "dockershim removed in 1.24 with its flags (kubernetes/kubernetes#106907; docs/UPSTREAM.md)"

# Sources for the kubelet and kube-proxy: KTHW 79a3f79 Lab 09 (the flags KTHW passed) and 52eb26d
# (configs/kubelet-config.yaml, kube-proxy-config.yaml); docs/UPSTREAM.md "Kubernetes version changes"; the pull requests
# named beside each row; the kubelet and kube-proxy reference pages and the KubeletConfiguration
# v1beta1 / KubeProxyConfiguration v1alpha1 references (kubernetes.io/docs/reference/config-api/).
KUBELET = Program(
    "kubelet",
    LOGGING + (
        F("config", "kubelet-config"),
        F("kubeconfig", "kubeconfig"),
        F("bootstrap-kubeconfig", "file"),
        F("cert-dir", "string"),
        F("hostname-override", "string"),
        F("node-ip", "ips"),
        F("node-labels", "map"),
        F("register-with-taints", "strings"),
        F("root-dir", "string"),
        F("lock-file", "string"),
        F("exit-on-lock-contention", "bool"),
        F("cloud-provider", "string"),
        F("runtime-cgroups", "string"),
        F("address", "ip", note=DEPRECATED_USE_CONFIG),
        F("port", "int", note=DEPRECATED_USE_CONFIG),
        F("anonymous-auth", "bool", note=DEPRECATED_USE_CONFIG),
        F("authorization-mode", "string", note=DEPRECATED_USE_CONFIG),
        F("client-ca-file", "cert", note=DEPRECATED_USE_CONFIG),
        F("tls-cert-file", "cert", note=DEPRECATED_USE_CONFIG),
        F("tls-private-key-file", "key", note=DEPRECATED_USE_CONFIG),
        F("cluster-dns", "ips", note=DEPRECATED_USE_CONFIG),
        F("cluster-domain", "string", note=DEPRECATED_USE_CONFIG),
        F("resolv-conf", "string", note=DEPRECATED_USE_CONFIG),
        F("runtime-request-timeout", "duration", note=DEPRECATED_USE_CONFIG),
        F("pod-cidr", "cidrs", note=DEPRECATED_USE_CONFIG),
        F("cgroup-driver", "string", note=DEPRECATED_USE_CONFIG),
        F("container-runtime-endpoint", "string", note=DEPRECATED_USE_CONFIG),
        F("image-service-endpoint", "string", note=DEPRECATED_USE_CONFIG),
        F("fail-swap-on", "bool", note=DEPRECATED_USE_CONFIG),
        F("fail-cgroupv1", "bool", note=DEPRECATED_USE_CONFIG + "; added in 1.31 with cgroup v1 maintenance mode (KEP-4569)"),
        F("max-pods", "int", note=DEPRECATED_USE_CONFIG),
        F("pod-manifest-path", "string", note=DEPRECATED_USE_CONFIG),
        F("provider-id", "string", note=DEPRECATED_USE_CONFIG),
        F("register-node", "bool", note=DEPRECATED_USE_CONFIG),
        F("seccomp-default", "bool", note=DEPRECATED_USE_CONFIG),
        # removed: the stand-in names the minor, the real binary says "unknown flag"
        F("network-plugin", "string", removed=24, note=DOCKERSHIM),
        F("network-plugin-mtu", "int", removed=24, note=DOCKERSHIM),
        F("cni-bin-dir", "string", removed=24, note=DOCKERSHIM),
        F("cni-conf-dir", "string", removed=24, note=DOCKERSHIM),
        F("cni-cache-dir", "string", removed=24, note=DOCKERSHIM),
        F("docker-endpoint", "string", removed=24, note=DOCKERSHIM),
        F("image-pull-progress-deadline", "duration", removed=24, note=DOCKERSHIM),
        F("container-runtime", "string", removed=27, note="remote is the only runtime (docs/UPSTREAM.md)"),
        F("keep-terminated-pod-volumes", "bool", removed=31, note="Azure/karpenter-provider-azure#1543 passes it only before 1.31"),
        F("pod-infra-container-image", "string", removed=35, note="kubernetes/kubernetes#133779 (CHANGELOG-1.35; docs/UPSTREAM.md)"),
    ),
    required=(
        "config",  # everything KTHW sets lives in the KubeletConfiguration
        "kubeconfig",  # without it the kubelet runs standalone and never registers the node
    ),
    pairs=(("tls-cert-file", "tls-private-key-file"),),
    fields=(
        F("apiVersion", "any"), F("kind", "any"),
        F("address", "ip"), F("port", "any"), F("readOnlyPort", "any"), F("enableServer", "bool"),
        F("tlsCertFile", "cert"), F("tlsPrivateKeyFile", "key"), F("tlsCipherSuites", "any"), F("tlsMinVersion", "any"),
        F("rotateCertificates", "bool"), F("serverTLSBootstrap", "bool"),
        F("authentication", "kubelet-authentication"), F("authorization", "kubelet-authorization"),
        F("clusterDomain", "string"), F("clusterDNS", "ip-list"), F("resolvConf", "file"), F("podCIDR", "cidr"),
        F("containerRuntimeEndpoint", "cri-endpoint"), F("imageServiceEndpoint", "any"),
        F("cgroupDriver", "cgroup-driver"), F("cgroupRoot", "any"), F("cgroupsPerQOS", "bool"),
        F("kubeletCgroups", "any"), F("systemCgroups", "any"), F("runtimeRequestTimeout", "duration"),
        F("registerNode", "bool"), F("registerWithTaints", "any"), F("providerID", "any"),
        F("staticPodPath", "any"), F("staticPodURL", "any"), F("staticPodURLHeader", "any"), F("podLogsDir", "any"),
        F("syncFrequency", "duration"), F("fileCheckFrequency", "duration"), F("httpCheckFrequency", "duration"),
        F("registryPullQPS", "any"), F("registryBurst", "any"), F("eventRecordQPS", "any"), F("eventBurst", "any"),
        F("enableDebuggingHandlers", "bool"), F("enableContentionProfiling", "bool"), F("enableProfilingHandler", "bool"),
        F("enableDebugFlagsHandler", "bool"), F("enableSystemLogHandler", "bool"), F("enableSystemLogQuery", "bool"),
        F("healthzPort", "any"), F("healthzBindAddress", "ip"), F("oomScoreAdj", "any"),
        F("streamingConnectionIdleTimeout", "duration"), F("nodeStatusUpdateFrequency", "duration"),
        F("nodeStatusReportFrequency", "duration"), F("nodeLeaseDurationSeconds", "any"), F("nodeStatusMaxImages", "any"),
        F("imageMinimumGCAge", "duration"), F("imageMaximumGCAge", "duration"),
        F("imageGCHighThresholdPercent", "any"), F("imageGCLowThresholdPercent", "any"), F("volumeStatsAggPeriod", "duration"),
        F("cpuManagerPolicy", "any"), F("cpuManagerPolicyOptions", "any"), F("cpuManagerReconcilePeriod", "duration"),
        F("memoryManagerPolicy", "any"), F("topologyManagerPolicy", "any"), F("topologyManagerScope", "any"),
        F("topologyManagerPolicyOptions", "any"), F("qosReserved", "any"), F("hairpinMode", "any"), F("maxPods", "any"),
        F("podPidsLimit", "any"), F("runOnce", "bool"), F("cpuCFSQuota", "bool"), F("cpuCFSQuotaPeriod", "duration"),
        F("maxOpenFiles", "any"), F("contentType", "any"), F("kubeAPIQPS", "any"), F("kubeAPIBurst", "any"),
        F("serializeImagePulls", "bool"), F("maxParallelImagePulls", "any"),
        F("evictionHard", "any"), F("evictionSoft", "any"), F("evictionSoftGracePeriod", "any"),
        F("evictionPressureTransitionPeriod", "duration"), F("evictionMaxPodGracePeriod", "any"),
        F("evictionMinimumReclaim", "any"), F("podsPerCore", "any"), F("enableControllerAttachDetach", "bool"),
        F("protectKernelDefaults", "bool"), F("makeIPTablesUtilChains", "bool"), F("iptablesMasqueradeBit", "any"),
        F("iptablesDropBit", "any"), F("featureGates", "any"), F("memorySwap", "any"),
        F("containerLogMaxSize", "any"), F("containerLogMaxFiles", "any"), F("containerLogMaxWorkers", "any"),
        F("containerLogMonitorInterval", "duration"), F("configMapAndSecretChangeDetectionStrategy", "any"),
        F("systemReserved", "any"), F("kubeReserved", "any"), F("reservedSystemCPUs", "any"),
        F("showHiddenMetricsForVersion", "any"), F("systemReservedCgroup", "any"), F("kubeReservedCgroup", "any"),
        F("enforceNodeAllocatable", "any"), F("allowedUnsafeSysctls", "any"), F("volumePluginDir", "any"),
        F("kernelMemcgNotification", "bool"), F("logging", "any"), F("shutdownGracePeriod", "duration"),
        F("shutdownGracePeriodCriticalPods", "duration"), F("shutdownGracePeriodByPodPriority", "any"),
        F("crashLoopBackOff", "any"), F("reservedMemory", "any"), F("seccompDefault", "bool"),
        F("memoryThrottlingFactor", "any"), F("tracing", "any"), F("localStorageCapacityIsolation", "bool"),
        F("userNamespaces", "any"), F("singleProcessOOMKill", "bool"),
        F("imagePullCredentialsVerificationPolicy", "any"), F("preloadedImagesVerificationAllowlist", "any"),
        F("failSwapOn", "bool", true_from=0, note="the kubelet refuses to run with swap unless false"),
        F("failCgroupV1", "bool", true_from=35, note="true by default from 1.35: KEP-5573, kubernetes/kubernetes#134298"),
    ),
    fields_required=(
        "authentication",  # anonymous off, client certificates from the cluster CA: how the apiserver's logs/exec calls authenticate
        "tlsCertFile", "tlsPrivateKeyFile",  # the node's certificate (its SANs); else a self-signed one the apiserver refuses
        "containerRuntimeEndpoint",  # the CRI socket: its flags are deprecated or gone (--container-runtime, 1.27)
        "clusterDNS", "clusterDomain",  # what the current KTHW edition dropped: pods without cluster DNS (#864)
    ),
    field_pairs=(("tlsCertFile", "tlsPrivateKeyFile"),),
)

KUBE_PROXY = Program(
    "kube-proxy",
    LOGGING + (
        F("config", "kube-proxy-config"),
        F("bind-address", "ip"),
        F("cleanup", "bool"),
        F("cluster-cidr", "cidrs"),
        F("config-sync-period", "duration"),
        F("conntrack-max-per-core", "int"),
        F("conntrack-min", "int"),
        F("healthz-bind-address", "string"),
        F("hostname-override", "string"),
        F("iptables-masquerade-bit", "int"),
        F("iptables-min-sync-period", "duration"),
        F("iptables-sync-period", "duration"),
        F("kube-api-burst", "int"),
        F("kube-api-content-type", "string"),
        F("kube-api-qps", "string"),
        F("kubeconfig", "kubeconfig"),
        F("masquerade-all", "bool"),
        F("master", "url"),
        F("metrics-bind-address", "string"),
        F("nodeport-addresses", "strings"),
        F("oom-score-adj", "int"),
        F("profiling", "bool"),
        F("proxy-mode", "string"),
        F("write-config-to", "string"),
        F("resource-container", "string", removed=16, note="kubernetes/kubernetes#78294"),
        F("udp-timeout", "duration", removed=26, note="userspace mode removed (kubernetes/kubernetes#112133)"),
    ),
    required=("config",),  # KTHW configures kube-proxy only through its config file
    fields=(
        F("apiVersion", "any"), F("kind", "any"),
        F("clientConnection", "client-connection"), F("clusterCIDR", "cidrs"), F("mode", "proxy-mode"),
        F("hostnameOverride", "string"), F("bindAddress", "ip"), F("bindAddressHardFail", "bool"),
        F("healthzBindAddress", "any"), F("metricsBindAddress", "any"), F("enableProfiling", "bool"),
        F("showHiddenMetricsForVersion", "any"), F("featureGates", "any"), F("logging", "any"),
        F("iptables", "any"), F("ipvs", "any"), F("nftables", "any"), F("winkernel", "any"),
        F("detectLocalMode", "any"), F("detectLocal", "any"), F("nodePortAddresses", "any"),
        F("oomScoreAdj", "any"), F("conntrack", "any"), F("configSyncPeriod", "duration"),
        F("portRange", "any"), F("windowsRunAsService", "bool"),
        F("resourceContainer", "any", removed=16, note="kubernetes/kubernetes#78294"),
        F("udpIdleTimeout", "any", removed=26, note="kubernetes/kubernetes#112133"),
    ),
    fields_required=(
        "clientConnection",  # its kubeconfig: kube-proxy's only credentials
        "clusterCIDR",  # KTHW sets it: traffic to Services from outside the pod network is masqueraded
    ),
)

PROGRAMS: dict[str, Program] = {p.name: p for p in (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBELET, KUBE_PROXY)}
