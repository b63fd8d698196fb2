"""What each stage does and why, in a few sentences of our own, and the part of Kubernetes the Hard
Way it is. Only prose lives here; every value shown beside it comes from the cluster."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    lab: str  # the KTHW lab it corresponds to
    what: str  # what the stage makes
    why: str  # why Kubernetes needs it


LESSONS: dict[str, Lesson] = {
    "compute": Lesson(
        "KTHW lab 03, compute resources",
        "Makes the machines the cluster runs on and the network between them, then logs in to each one once to "
        "pin its SSH host key before any command is sent.",
        "Kubernetes assumes a flat network: every node reaches every other node, and later every pod. The node "
        "addresses fixed here end up in certificates, etcd's member list and the kubelets' flags, so they are "
        "decided once, from the config.",
    ),
    "pki": Lesson(
        "KTHW lab 04, certificate authority and TLS certificates",
        "Makes a certificate authority on your machine and signs one certificate per identity: the admin, each "
        "kubelet, the controller manager, kube-proxy, the scheduler, the API server and the service-account signer.",
        "Every component proves who it is with a client certificate. The API server reads the user from the "
        "certificate's CN and the groups from O, so system:node:<name> in system:nodes is what lets a kubelet act "
        "as its node and nothing more.",
    ),
    "kubeconfigs": Lesson(
        "KTHW lab 05, kubeconfig files",
        "Writes one kubeconfig per client: where the API server is, the CA to trust, and the client certificate "
        "and key to log in with.",
        "Components on a controller talk to their local API server; kubelets and kube-proxy talk to the cluster's "
        "API endpoint, so they keep working when one controller is down.",
    ),
    "encryption": Lesson(
        "KTHW lab 06, data encryption config and key",
        "Makes a random 32-byte key, once, and the EncryptionConfiguration that tells the API server to encrypt "
        "Secrets with it before they reach etcd.",
        "Without it every Secret is stored in etcd as plain text; anyone with a copy of etcd's data or a backup "
        "could read them.",
    ),
    "etcd": Lesson(
        "KTHW lab 07, bootstrapping the etcd cluster",
        "Installs etcd on every controller with TLS for clients and peers, and starts all members at the same "
        "moment.",
        "etcd is the cluster's only database. A member waits for a quorum before it reports started, so starting "
        "members one after another hangs: they are started together without waiting and then polled for health.",
    ),
    "control-plane": Lesson(
        "KTHW lab 08, bootstrapping the control plane",
        "Installs kube-apiserver, kube-controller-manager and kube-scheduler on every controller as systemd units, "
        "with their certificates, kubeconfigs and the encryption config.",
        "The API server is the only component that talks to etcd; everything else reads and writes the cluster "
        "through it. The controller manager turns desired state into real objects, the scheduler places pods.",
    ),
    "rbac": Lesson(
        "KTHW lab 08, RBAC for kubelet authorization",
        "Creates a ClusterRole that allows reading node logs, metrics and exec endpoints, and binds it to the API "
        "server's own client identity.",
        "kubectl logs and exec go from the API server to the kubelet, which asks the API server whether that "
        "caller may do it. Without this binding the kubelet refuses the API server.",
    ),
    "frontend": Lesson(
        "KTHW lab 08, the Kubernetes frontend load balancer",
        "Puts one address in front of all API servers and only sends traffic to the ones that answer their health "
        "check.",
        "Clients need one endpoint that survives a controller going away; it is also the address in the API "
        "server certificate and in every kubelet's kubeconfig.",
    ),
    "workers": Lesson(
        "KTHW lab 09, bootstrapping the worker nodes",
        "Installs the OS packages, kernel settings, containerd, runc, the CNI plugins, the kubelet and kube-proxy "
        "on every worker, with settings chosen from facts read on the node itself.",
        "The kubelet runs pods through containerd and runc; the CNI bridge gives each pod an address from the "
        "node's pod CIDR; kube-proxy turns Services into packet rules.",
    ),
    "admin-access": Lesson(
        "KTHW lab 10, configuring kubectl for remote access",
        "Writes your own admin kubeconfig pointing at the cluster's API endpoint, kept apart from ~/.kube/config "
        "unless you merge it.",
        "This is how you use the cluster from your own machine, through the load balancer, as a member of "
        "system:masters.",
    ),
    "routes": Lesson(
        "KTHW lab 11, provisioning pod network routes",
        "Adds one route per worker: its pod CIDR is reached through its node address.",
        "Each worker hands out pod addresses from its own range, but nothing else knows where those ranges live; "
        "without the routes a pod reaches only pods on its own node.",
    ),
    "dns": Lesson(
        "KTHW lab 12, the DNS cluster add-on",
        "Deploys CoreDNS behind the kube-dns Service at the cluster DNS address, forwarding outside names to the "
        "nodes' resolvers.",
        "Pods find Services by name (kubernetes.default.svc.<domain>); the kubelets already point every pod at "
        "this address.",
    ),
    "smoke": Lesson(
        "KTHW lab 13, smoke test",
        "Checks the cluster end to end: a Secret is encrypted in etcd, a Deployment runs, and port-forward, logs, "
        "exec and a NodePort Service work.",
        "Each check crosses a different path (API server to etcd, API server to kubelet, kube-proxy's rules), so "
        "together they show the parts above were wired right.",
    ),
    "demo": Lesson(
        "not in KTHW: an optional application on the finished cluster",
        "Deploys a small TODO app: a web app and its database, reachable on a NodePort.",
        "It shows a multi-container workload using Services and DNS on the cluster you just built.",
    ),
}
