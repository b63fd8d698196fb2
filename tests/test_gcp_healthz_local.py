"""The controllers' /healthz proxy for gcp's target pool (KTHW lab 08) on a real node: khwtui's
nginx site, nginx from the test apt repository, in front of the kube-apiserver stand-in over TLS
that nginx verifies against the cluster CA. The site is installed as the gcp frontend stage
installs it (its rendered file, `nginx -t`, the unit), here on a local controller, since the
nginx and TLS behaviour is the node's, not the cloud's."""

from __future__ import annotations

import shlex
import subprocess
import time

import janitor
import pytest
from localcluster import LocalCluster, local_config
from test_frontend_local import on_node

from khwtui import config as config_mod
from khwtui.frontend_files import healthz_files
from khwtui.stages.frontend import apt_install, healthz_probe
from khwtui.topology import Topology

pytestmark = pytest.mark.integration


def settled(c: LocalCluster, command: str, wanted: str) -> subprocess.CompletedProcess[str]:
    """`command` on controller-0 until it prints `wanted` or 20 s pass: a reload swaps nginx's
    workers in the background, so the old configuration answers for a moment."""
    deadline = time.monotonic() + 20
    while True:
        answer = on_node(c, "controller-0", command, check=False)
        if answer.stdout == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_the_healthz_proxy_answers_200_for_the_kubernetes_host_through_verified_tls(tmp_path, release_mirror: dict, apt_repo) -> None:
    raw = local_config(f"t{janitor.new_prefix()}", 1, 1, release_mirror)
    c = LocalCluster(tmp_path / "c", raw, apt=apt_repo)
    try:
        compute = c.khwtui("up", "--auto", "--until", "compute")
        assert compute.returncode == 0, compute.stdout + compute.stderr
        on_node(c, "controller-0", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-yaml")
        plane = c.khwtui("up", "--auto", "--until", "control-plane")
        assert plane.returncode == 0, plane.stdout + plane.stderr
        topo = Topology(config_mod.from_dict(raw))
        [site] = healthz_files(topo)
        on_node(c, "controller-0", apt_install("nginx"))
        on_node(c, "controller-0", f"cat > {shlex.quote(site.path)}", stdin=site.content.decode())
        on_node(c, "controller-0", "nginx -t -q && systemctl enable nginx && systemctl reload-or-restart nginx")

        answer = settled(c, healthz_probe(topo), "200")
        assert (answer.returncode, answer.stdout) == (0, "200")
        other = on_node(c, "controller-0", "curl --silent --output /dev/null --write-out %{http_code} http://127.0.0.1/healthz", check=False)
        assert other.stdout == "404"  # without the Host the load balancer sends, Debian's default site answers
        wrong_ca = f"sed -i 's#proxy_ssl_trusted_certificate .*#proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;#' {shlex.quote(site.path)}"
        on_node(c, "controller-0", f"{wrong_ca} && systemctl reload nginx")
        refused = settled(c, healthz_probe(topo), "502")
        assert refused.stdout == "502"  # the upstream is verified: another CA's trust is not enough
    finally:
        c.down()
