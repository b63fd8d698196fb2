"""`khwtui explain` and `khwtui script` offline (issue 23): the walkthrough names every resource
`plan` names and every file `render` writes, with the same values; the gcp script's gcloud lines,
parsed, create exactly the resources of the plan; the scripts pass shellcheck; bad input is one
line and exit 2.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomli_w

from khwtui.cli import command_line as cli
from khwtui.model import config
from khwtui.model.cluster import open_cluster
from khwtui.model.topology import HEALTH_CHECK_SOURCES
from khwtui.providers import gcp_resources as res
from khwtui.providers.factory import make_provider

SECRET = 0o600
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx4ZHd0ZXN0a2V5Zm9yZG9jdW1lbnRhdGlvbm9ubHk"


@pytest.fixture(autouse=True)
def _no_gcloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    for name in ("CLOUDSDK_CORE_PROJECT", "CLOUDSDK_COMPUTE_REGION", "CLOUDSDK_COMPUTE_ZONE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


# --- explain --markdown names what plan and render name -------------------------------------------


@pytest.fixture
def default_gcp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """The default config: its walkthrough, its plan and its rendered bundle, from one state folder."""
    state = str(tmp_path / "state")
    code, markdown, err = run(capsys, "explain", "--markdown", "--state-dir", state)
    assert code == 0, err
    code, _, err = run(capsys, "render", "--out", str(tmp_path / "bundle"), "--state-dir", state)
    assert code == 0, err
    plan = make_provider(open_cluster(None, state), public_key="").plan()
    return {"markdown": markdown, "bundle": tmp_path / "bundle", "plan": plan}


def test_explain_dns_shows_the_metrics_server_add_on_and_its_manifest_when_it_is_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.toml", {"addons": {"metrics_server": True}})
    code, out, err = run(capsys, "explain", "dns", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert "metrics-server  v0.8.1" in lines and "• manifests/metrics-server.yaml — 0644 root:root" in lines


def test_explain_names_every_planned_resource_with_its_detail(default_gcp: dict) -> None:
    rows = set(default_gcp["markdown"].splitlines())
    assert len(default_gcp["plan"].resources) >= 16
    for r in default_gcp["plan"].resources:
        assert f"| {r.kind} | {r.name} | {r.detail} |" in rows, r


def test_explain_names_every_rendered_file_with_its_content(default_gcp: dict) -> None:
    markdown, bundle = default_gcp["markdown"], default_gcp["bundle"]
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    assert len(files) > 60
    for file in files:
        relative = str(file.relative_to(bundle))
        node_path = "/" + relative.split("/", 2)[2] if relative.startswith("nodes/") else relative
        assert f"`{node_path}` — {file.stat().st_mode & 0o777:04o} root:root" in markdown, relative
        assert f"`{relative}`" in markdown or not relative.startswith("nodes/"), relative
        text = file.read_bytes()
        if file.stat().st_mode & 0o777 == SECRET:
            assert text.decode(errors="replace").strip() not in markdown  # never a secret
        elif text.startswith(b"-----BEGIN CERTIFICATE"):
            from cryptography import x509

            cn = x509.load_pem_x509_certificate(text).subject.rfc4514_string().split(",")
            assert any(f"certificate CN={part.split('=', 1)[1]}" in markdown for part in cn if part.startswith("CN=")), relative
        else:
            shown = set(markdown.splitlines()) | {line[1:] for line in markdown.splitlines() if line.startswith("+")}
            assert set(text.decode().splitlines()) <= shown, relative


def test_where_two_nodes_differ_the_walkthrough_shows_the_difference(default_gcp: dict) -> None:
    markdown = default_gcp["markdown"]
    assert "--- controller-0:/etc/systemd/system/etcd.service\n+++ controller-1:/etc/systemd/system/etcd.service" in markdown
    assert "-  --name controller-0 \\\n+  --name controller-1 \\" in markdown
    assert "`/etc/etcd/ca.pem` — 0644 root:root — bundle `nodes/controller-1/etc/etcd/ca.pem` — same as on controller-0" in markdown


def test_one_stage_in_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "etcd", "--state-dir", str(tmp_path / "s"))
    assert code == 0
    assert out.startswith("5. etcd — TLS etcd cluster on the controllers, all members at once\n")
    assert "KTHW lab 07" in out and "--initial-cluster controller-0=https://10.240.0.10:2380,controller-1=https://10.240.0.11:2380" in out
    assert "```" not in out and "compute —" not in out


@pytest.mark.parametrize(("argv", "line"), [
    (["explain", "nope"], "khwtui: explain: no stage 'nope'; choose one of compute, pki,"),
    (["explain", "demo"], "khwtui: explain: the demo stage is off in this config (demo.enabled = false); fix: set it to true"),
    (["script"], "khwtui: the following arguments are required: --out (see khwtui --help)"),
])
def test_bad_usage_is_one_line_and_exit_2(argv: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv, "--state-dir", str(tmp_path / "s"))
    assert code == 2 and err.startswith(line) and len(err.splitlines()) == 1 and out == ""


def test_script_for_nodes_not_reached_yet_stops_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "local.toml", {"provider": {"kind": "local"}})
    code, _, err = run(capsys, "script", "--out", str(tmp_path / "out"), "--config", str(path), "--state-dir", str(tmp_path / "s"))
    assert code == 2
    assert err == ("khwtui: no pinned host key or address for controller-0, controller-1, worker-0, worker-1, lb yet; "
                   "fix: run `khwtui up --only compute` first (it pins the host keys), then export again\n")
    assert not (tmp_path / "out").exists()


# --- the gcp script's gcloud lines are the plan ------------------------------------------------------


def gcloud_lines(out: Path) -> list[list[str]]:
    lines = []
    for script in sorted(out.glob("[0-9][0-9]-*.sh")):
        lines += [shlex.split(line.split(" >/dev/null")[0].removeprefix("if ! ")) for line in script.read_text().splitlines()
                  if line.lstrip().startswith(("gcloud ", "if ! gcloud "))]
    return lines


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "") for a in argv if a.startswith("--"))


def created(lines: list[list[str]]) -> dict[str, tuple[str, dict[str, str]]]:
    """resource name -> (the gcloud group, e.g. "firewall-rules", its flags), from the create lines."""
    found = {}
    for argv in lines:
        words = [a for a in argv[2:] if not a.startswith("--")]
        verb = next(i for i, w in enumerate(words) if w in ("create", "update", "add-instances", "add-backend", "describe"))
        if words[verb] == "create":
            name = words[verb + 1] if words[verb + 1:verb + 2] != ["https"] else words[verb + 2]
            assert name not in found, f"{name} created twice"
            found[name] = (" ".join(words[:verb]), flags(argv))
    return found


def described(lines: list[list[str]]) -> set[str]:
    return {argv[argv.index("describe") + 1] for argv in lines if "describe" in argv}


@pytest.mark.parametrize("design", ["target-pool", "backend-service"])
def test_the_gcp_scripts_gcloud_lines_create_exactly_the_planned_resources(design: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "gcp.toml", {"gcp": {"load_balancer": design, "admin_cidrs": ["198.51.100.0/24"]}})
    code, _out, err = run(capsys, "script", "--out", str(tmp_path / "out"), "--config", str(path), "--state-dir", str(tmp_path / "s"))
    assert code == 0, err
    cluster = open_cluster(str(path), str(tmp_path / "s"))
    cfg, topo = cluster.config, cluster.topology
    plan = make_provider(cluster, public_key="").plan()
    made = created(gcloud_lines(tmp_path / "out"))
    assert set(made) == {r.name for r in plan.resources}
    assert described(gcloud_lines(tmp_path / "out")) == set(made)  # each create runs only when it does not exist yet
    names, net = topo.names, cfg.network

    assert made[names.subnet][1]["range"] == net.node_cidr
    internal, external = made[names.allow_internal][1], made[names.allow_external][1]
    assert internal["source-ranges"].split(",") == [net.node_cidr, net.cluster_cidr] and internal["allow"] == "tcp,udp,icmp"
    assert external["source-ranges"] == "198.51.100.0/24" and external["allow"] == f"tcp:22,tcp:{net.api_port},icmp"
    for node in topo.nodes:
        group, f = made[node.name]
        assert group == "instances" and f["private-network-ip"] == node.internal_ip and "can-ip-forward" in f
        assert f["tags"] == f"{cfg.cluster.name},{node.role}" and f["labels"] == f"khwtui-cluster={cfg.cluster.name}"
        assert ("pod-cidr=" + node.pod_cidr if node.pod_cidr else "enable-oslogin=FALSE") in f["metadata"]
    for w in topo.workers:
        route = made[topo.route_names()[w.name]][1]
        assert (route["destination-range"], route["next-hop-address"]) == (w.pod_cidr, w.internal_ip)
    health = made[names.allow_health_check][1]
    assert health["source-ranges"].split(",") == list(HEALTH_CHECK_SOURCES) and health["target-tags"] == "controller"
    rule = made[names.forwarding_rule][1]
    assert rule["ports"] == str(net.api_port) and rule["address"] == names.address
    if design == "target-pool":
        check = made[names.http_health_check][1]
        assert (check["host"], check["request-path"], check["port"]) == (f"kubernetes.default.svc.{net.cluster_domain}", "/healthz", "80")
        assert health["allow"] == "tcp:80" and rule["target-pool"] == names.target_pool
    else:
        check = made[names.health_check][1]
        assert (check["request-path"], check["port"]) == ("/readyz", str(net.api_port))
        assert health["allow"] == f"tcp:{net.api_port}" and rule["backend-service"] == names.backend_service
    smoke = made[names.allow_smoke][1]
    assert smoke["allow"] == "tcp:${NODE_PORT}" and smoke["target-tags"] == "worker" and smoke["source-ranges"] == "198.51.100.0/24"
    for name, (_group, f) in made.items():
        resource_marker = f.get("description") or f.get("labels") or _later_label(tmp_path / "out", name)
        assert resource_marker == f"khwtui-cluster={cfg.cluster.name}", name  # `up` adopts them, `down` removes them


def _later_label(out: Path, name: str) -> str:
    for argv in gcloud_lines(out):
        if "update" in argv and name in argv:
            return flags(argv).get("update-labels", "")
    return ""


def test_gcloud_lines_come_from_the_same_objects_as_the_plan() -> None:
    cfg = config.from_dict({})
    from khwtui.learn.gcloud import cloud_commands
    from khwtui.model.topology import Topology
    from khwtui.providers.gcloud_settings import resolve

    topo = Topology(cfg)
    wanted = res.desired(cfg, topo, resolve(cfg), "ssh-ed25519 AAAA me")
    made = cloud_commands(cfg, topo, "ssh-ed25519 AAAA me")["compute"]
    assert [g.creates for m in made for g in m.lines if g.creates] == [m.name for m in made] == [w.name for w in wanted.all()]


# --- shellcheck -----------------------------------------------------------------------------------


def test_the_exported_scripts_pass_shellcheck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [{"name": "cp", "role": "controller", "address": "127.0.0.2", "host_key": KEY},
             {"name": "w", "role": "worker", "address": "127.0.0.3", "host_key": KEY},
             {"name": "edge", "role": "lb", "address": "127.0.0.4", "host_key": KEY}]
    machines = write_config(tmp_path / "m.toml", {"provider": {"kind": "machines"}, "machines": {"hosts": hosts},
                                                  "network": {"node_cidr": "127.0.0.0/24"}})
    for name, extra in (("gcp", []), ("machines", ["--config", str(machines)])):
        code, _, err = run(capsys, "script", "--out", str(tmp_path / name), "--state-dir", str(tmp_path / f"s-{name}"), *extra)
        assert code == 0, err
        scripts = sorted(str(p) for p in (tmp_path / name).glob("*.sh"))
        done = subprocess.run(["shellcheck", "--external-sources", *scripts], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout
    assert "127.0.0.3 " + KEY in (tmp_path / "machines" / "known_hosts").read_text()
    workers = (tmp_path / "machines" / "09-workers.sh").read_text()
    assert re.search(r"^fetch containerd-\S+ \S+ '' \S+\.sha256sum$", workers, re.M)  # the official published sum
    assert (tmp_path / "machines").stat().st_mode & 0o777 == 0o700


# --- the TUI's explanation: read only -----------------------------------------------------------


def test_the_tuis_explanation_reads_the_state_folder_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from khwtui.tui.launch import explain_stage  # the function the app is given

    state = tmp_path / "state"
    text = explain_stage(open_cluster(None, str(state)), "etcd")
    assert "Note: the certificates are not made yet, so the files are not shown" in text and "/etc/etcd" not in text
    assert not state.exists()
    code, _, _ = run(capsys, "render", "--out", str(tmp_path / "bundle"), "--state-dir", str(state))
    assert code == 0
    text = explain_stage(open_cluster(None, str(state)), "etcd")
    assert "/etc/etcd/kubernetes-key.pem — 0600 root:root" in text and "Note:" not in text
