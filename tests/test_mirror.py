"""The test mirror: upstream-layout release files built from Debian 12, a signed apt repository,
and the HTTP server the nodes fetch both from (tests/mirror/README.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import multiprocessing
import os
import subprocess
import tarfile
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mirror import MirrorError, default_cache, tarballs
from mirror.aptrepo import NODE_PACKAGES, AptRepo, build_apt_repo, fetch_debs, host_arch, signing_key
from mirror.server import MirrorServer
from mirror.tarballs import MIRROR_URL_TEMPLATES, ReleaseTree, build_release_tree, sha256_file

from khwtui.model import config

COMPONENTS = ["etcd", "containerd", "runc", "cni_plugins"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> ReleaseTree:
    return build_release_tree(tmp_path_factory.mktemp("releases"), default_cache())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> AptRepo:
    return build_apt_repo(tmp_path_factory.mktemp("apt"), default_cache(), list(NODE_PACKAGES))


def members(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        return tar.getnames()


def unpack_debian(packages: list[str], into: Path) -> Path:
    """The files of the Debian packages the release claims to come from."""
    for deb in fetch_debs(default_cache(), packages).values():
        subprocess.run(["dpkg-deb", "-x", str(deb.path), str(into)], check=True)
    return into


def output(*args: str | Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True, env=env).stdout


# --- release files -------------------------------------------------------------------------


def test_every_release_sits_at_its_upstream_path_with_its_checksum_file(tree: ReleaseTree) -> None:
    arch = tree.arch
    published = {c: (a.path, a.checksum_path) for c, a in tree.artifacts.items()}
    assert published == {
        "etcd": (f"etcd/v3.4.23/etcd-v3.4.23-linux-{arch}.tar.gz", "etcd/v3.4.23/SHA256SUMS"),
        "containerd": (f"containerd/v1.6.20/containerd-1.6.20-linux-{arch}.tar.gz",
                       f"containerd/v1.6.20/containerd-1.6.20-linux-{arch}.tar.gz.sha256sum"),
        "runc": (f"runc/v1.1.5/runc.{arch}", "runc/v1.1.5/runc.sha256sum"),
        "cni_plugins": (f"cni-plugins/v1.1.1/cni-plugins-linux-{arch}-v1.1.1.tgz",
                        f"cni-plugins/v1.1.1/cni-plugins-linux-{arch}-v1.1.1.tgz.sha256"),
    }
    for component, template in MIRROR_URL_TEMPLATES.items():
        assert template.format(version=tree.versions()[component], arch=arch) == published[component][0]
    assert tree.versions() == {"etcd": "3.4.23", "containerd": "1.6.20", "runc": "1.1.5", "cni_plugins": "1.1.1"}


def test_archives_have_the_upstream_member_layout(tree: ReleaseTree) -> None:
    root, arch = tree.root, tree.arch
    assert members(root / tree.artifacts["etcd"].path) == [
        f"etcd-v3.4.23-linux-{arch}", f"etcd-v3.4.23-linux-{arch}/etcd", f"etcd-v3.4.23-linux-{arch}/etcdctl"]
    containerd = members(root / tree.artifacts["containerd"].path)
    assert containerd[0] == "bin"
    assert {"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"} <= set(containerd)
    assert all(name.startswith("bin/") for name in containerd[1:])
    cni = members(root / tree.artifacts["cni_plugins"].path)
    assert cni[0] == "."
    assert {"./bridge", "./loopback", "./host-local", "./portmap"} <= set(cni)
    assert all(name.count("/") == 1 and name.startswith("./") for name in cni[1:])  # flat, as upstream
    with open(root / tree.artifacts["runc"].path, "rb") as runc:
        assert runc.read(4) == b"\x7fELF"


def test_the_binaries_are_debians_and_run(tree: ReleaseTree, tmp_path: Path) -> None:
    debian = unpack_debian([p for a in tree.artifacts.values() for p in a.debian], tmp_path / "debian")
    out = tmp_path / "out"
    for component in ("etcd", "containerd", "cni_plugins"):
        (out / component).mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(tree.root / tree.artifacts[component].path), "-C", str(out / component)], check=True)
    arch = tree.arch
    etcd = out / "etcd" / f"etcd-v3.4.23-linux-{arch}"
    runc = tree.root / tree.artifacts["runc"].path
    pairs = {etcd / "etcd": "usr/bin/etcd", etcd / "etcdctl": "usr/bin/etcdctl", runc: "usr/sbin/runc",
             **{binary: f"usr/bin/{binary.name}" for binary in (out / "containerd/bin").iterdir()},
             **{plugin: f"usr/lib/cni/{plugin.name}" for plugin in (out / "cni_plugins").iterdir()}}
    assert len(pairs) >= 4 + 16
    for shipped, original in pairs.items():
        assert shipped.read_bytes() == (debian / original).read_bytes(), shipped
        assert os.access(shipped, os.X_OK), shipped
    assert "etcd Version: 3.4.23" in output(etcd / "etcd", "--version")
    assert "etcdctl version: 3.4.23" in output(etcd / "etcdctl", "version")
    assert " 1.6.20" in output(out / "containerd/bin/containerd", "--version")
    assert output(runc, "--version").startswith("runc version 1.1.5")
    bridge = json.loads(output(out / "cni_plugins/bridge", env={"CNI_COMMAND": "VERSION"}))
    assert "1.0.0" in bridge["supportedVersions"]


def test_checksum_files_vouch_for_the_published_bytes(tree: ReleaseTree) -> None:
    for artifact in tree.artifacts.values():
        folder = tree.root / artifact.checksum_path
        assert folder.read_text() == f"{artifact.sha256}  {artifact.name}\n"
        assert sha256_file(tree.root / artifact.path) == artifact.sha256
        subprocess.run(["sha256sum", "--check", "--strict", "--quiet", folder.name], cwd=folder.parent, check=True)
    assert tree.sha256() == {a.name: a.sha256 for a in tree.artifacts.values()}
    assert set(tree.artifacts["etcd"].debian) == {"etcd-server", "etcd-client"}
    assert all(v.startswith(tree.artifacts[c].version) for c in COMPONENTS for v in tree.artifacts[c].debian.values())


def test_a_rebuild_from_scratch_is_byte_identical(tree: ReleaseTree, tmp_path: Path) -> None:
    fresh_cache = tmp_path / "cache"
    fresh_cache.mkdir()
    (fresh_cache / "debs").symlink_to(default_cache() / "debs")  # same packages, no built releases
    again = build_release_tree(tmp_path / "root", fresh_cache)
    assert len(list((fresh_cache / "releases").glob("[!.]*"))) == 4  # really rebuilt, not copied (.lock aside)
    for component in COMPONENTS:
        for rel in (tree.artifacts[component].path, tree.artifacts[component].checksum_path):
            assert (again.root / rel).read_bytes() == (tree.root / rel).read_bytes(), rel
    assert again.sha256() == tree.sha256()


def test_a_warm_build_reuses_the_cached_releases(tree: ReleaseTree, tmp_path: Path) -> None:
    builds = sorted((default_cache() / "releases").iterdir())
    again = build_release_tree(tmp_path, default_cache())
    assert sorted((default_cache() / "releases").iterdir()) == builds
    assert again.sha256() == tree.sha256()


def test_the_tree_fills_a_valid_config_for_kubernetes_1_35(tree: ReleaseTree) -> None:
    raw = tomllib.loads((Path(config.__file__).parents[1] / "configs/local.toml").read_text())
    raw["cluster"]["kubernetes_version"] = "1.35.4"
    tables = tree.config("http://10.240.0.1:8080")
    raw["versions"].update(tables["versions"])
    raw["binaries"] = tables["binaries"]
    loaded = config.from_dict(raw)
    assert loaded.versions.containerd == "1.6.20"
    assert loaded.binaries.urls["runc"] == "http://10.240.0.1:8080/runc/v{version}/runc.{arch}"
    assert loaded.binaries.sha256 == tree.sha256()


@pytest.mark.parametrize("component", COMPONENTS)
def test_tamper_changes_one_byte_and_republishes_a_matching_sum(component: str, tree: ReleaseTree, tmp_path: Path) -> None:
    victim = build_release_tree(tmp_path, default_cache())
    artifact = victim.artifacts[component]
    path = tmp_path / artifact.path
    before = (tree.root / artifact.path).read_bytes()
    victim.tamper(component)
    assert sha256_file(path) != artifact.sha256  # only the pinned sum still tells
    subprocess.run(["sha256sum", "--check", "--strict", "--quiet", Path(artifact.checksum_path).name],
                   cwd=path.parent, check=True)  # the published checksum file is fooled
    if artifact.archive:
        with tarfile.open(tree.root / artifact.path) as old, tarfile.open(path) as new:
            assert old.getnames() == new.getnames()
            changed = [(m.name, old.extractfile(m).read(), new.extractfile(m.name).read())  # type: ignore[union-attr]
                       for m in old.getmembers() if m.isfile()]
            changed = [(name, a, b) for name, a, b in changed if a != b]
        assert len(changed) == 1
        _, original, tampered = changed[0]
    else:
        original, tampered = before, path.read_bytes()
    assert len(original) == len(tampered)
    assert sum(a != b for a, b in zip(original, tampered, strict=True)) == 1


def test_a_debian_version_that_is_not_the_pinned_release_is_refused(tree: ReleaseTree, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mirror import tarballs

    moved = [dataclasses.replace(r, version="3.5.0") if r.component == "etcd" else r for r in tarballs.RELEASES]
    monkeypatch.setattr(tarballs, "RELEASES", tuple(moved))
    with pytest.raises(MirrorError, match=r"etcd-server 3\.4\.23.* is not etcd 3\.5\.0"):
        build_release_tree(tmp_path, default_cache())


# --- apt repository ------------------------------------------------------------------------


def test_the_release_file_is_signed_by_the_test_key(repo: AptRepo, tmp_path: Path) -> None:
    dist = repo.path / "dists" / repo.suite
    subprocess.run(["gpgv", "--keyring", str(repo.keyring), str(dist / "InRelease")], check=True, capture_output=True)
    subprocess.run(["gpgv", "--keyring", str(repo.keyring), str(dist / "Release.gpg"), str(dist / "Release")],
                   check=True, capture_output=True)
    forged = tmp_path / "InRelease"
    forged.write_text((dist / "InRelease").read_text().replace("Origin: khwtui-tests", "Origin: khwtui-forged"))
    assert subprocess.run(["gpgv", "--keyring", str(repo.keyring), str(forged)], capture_output=True).returncode != 0
    other = signing_key(tmp_path / "other").keyring
    assert subprocess.run(["gpgv", "--keyring", str(other), str(dist / "InRelease")], capture_output=True).returncode != 0


def test_the_repo_holds_the_node_packages_and_their_dependencies(repo: AptRepo) -> None:
    assert set(NODE_PACKAGES) <= set(repo.packages)
    assert {"libyaml-0-2", "libpython3.11-stdlib", "libipset13"} <= set(repo.packages)  # dependencies came along
    index = (repo.path / "dists" / repo.suite / "main" / f"binary-{repo.arch}" / "Packages").read_text()
    listed = {line.split(": ", 1)[1] for line in index.splitlines() if line.startswith("Package: ")}
    assert listed == set(repo.packages)
    assert len(list((repo.path / "pool/main").iterdir())) == len(repo.packages)


def apt(workdir: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """apt-get/apt-cache with a private configuration: only `source`, none of the host's settings."""
    for folder in ("parts", "sources.d", "prefs.d", "lists/partial", "cache/archives/partial"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    (workdir / "sources.list").write_text(source + "\n")
    settings = {"Dir::Etc::Parts": "parts", "Dir::Etc::Main": "/dev/null", "Dir::Etc::SourceList": "sources.list",
                "Dir::Etc::SourceParts": "sources.d", "Dir::Etc::PreferencesParts": "prefs.d",
                "Dir::Etc::Preferences": "/dev/null", "Dir::State::Lists": "lists", "Dir::Cache": "cache",
                "APT::Sandbox::User": "root", "Acquire::Languages": "none"}
    conf = workdir / "apt.conf"
    conf.write_text("".join(f'{key} "{value if value.startswith("/") else workdir / value}";\n'
                            for key, value in settings.items()))
    return subprocess.run(list(args), cwd=workdir, capture_output=True, text=True, env={**os.environ, "APT_CONFIG": str(conf)})


def test_apt_installs_from_the_repo_through_the_server_with_signed_by(repo: AptRepo, tmp_path: Path) -> None:
    with MirrorServer(repo.path) as mirror:
        update = apt(tmp_path, repo.source(mirror.url), "apt-get", "update")
        assert update.returncode == 0, update.stdout + update.stderr
        policy = apt(tmp_path, repo.source(mirror.url), "apt-cache", "policy", "python3-yaml").stdout
        download = apt(tmp_path, repo.source(mirror.url), "apt-get", "download", "python3-yaml")
        hits = mirror.hits
    assert f"Candidate: {repo.packages['python3-yaml']}" in policy
    assert f"{mirror.url} {repo.suite}/main" in policy
    assert download.returncode == 0, download.stderr
    [deb] = tmp_path.glob("python3-yaml_*.deb")
    assert hits[f"/dists/{repo.suite}/InRelease"] == 1
    assert hits[f"/pool/main/{deb.name.replace('%3a', ':')}"] == 1


def test_apt_refuses_the_repo_under_another_key(repo: AptRepo, tmp_path: Path) -> None:
    other = signing_key(tmp_path / "other").keyring
    source = repo.source("URL").replace(str(repo.keyring), str(other))
    with MirrorServer(repo.path) as mirror:
        update = apt(tmp_path / "apt", source.replace("URL", mirror.url), "apt-get", "update")
        policy = apt(tmp_path / "apt", source.replace("URL", mirror.url), "apt-cache", "policy", "python3-yaml").stdout
    assert update.returncode != 0
    assert "NO_PUBKEY" in update.stdout + update.stderr
    assert mirror.url not in policy


# --- server --------------------------------------------------------------------------------


def test_the_server_serves_files_read_only_and_counts_hits(tmp_path: Path) -> None:
    (tmp_path / "www/etcd").mkdir(parents=True)
    (tmp_path / "www/etcd/SHA256SUMS").write_bytes(b"abc  etcd.tar.gz\n")
    (tmp_path / "secret").write_text("outside the root")
    with MirrorServer(tmp_path / "www") as mirror:
        assert mirror.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{mirror.url}/etcd/SHA256SUMS") as reply:
            assert reply.read() == b"abc  etcd.tar.gz\n"
        head = urllib.request.Request(f"{mirror.url}/etcd/SHA256SUMS", method="HEAD")
        with urllib.request.urlopen(head) as reply:
            assert reply.headers["Content-Length"] == "17" and reply.read() == b""
        for missing in ("/etcd/nope", "/etcd/", "/"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(f"{mirror.url}{missing}")
            assert error.value.code == 404
        for hostile in ("/../secret", "/%00"):
            raw = http.client.HTTPConnection("127.0.0.1", int(mirror.url.rsplit(":", 1)[1]))
            raw.request("GET", hostile)
            assert raw.getresponse().status == 404
            raw.close()
        post = urllib.request.Request(f"{mirror.url}/etcd/SHA256SUMS", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(post)
        assert error.value.code == 501
        hits = mirror.hits
    assert hits == {"/etcd/SHA256SUMS": 2, "/etcd/nope": 1, "/etcd/": 1, "/": 1, "/../secret": 1, "/\x00": 1}


@pytest.mark.parametrize("host", ["0.0.0.0", "", "localhost", "::1"])
def test_the_server_binds_one_ipv4_address_only(host: str, tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match="not one IPv4 address"):
        MirrorServer(tmp_path, host=host)


def test_sessions_racing_on_a_cold_cache_build_each_release_once_and_all_publish_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # xdist workers start their release mirrors at once; on a fresh machine the cache is empty
    runc = next(release for release in tarballs.RELEASES if release.component == "runc")  # the smallest
    [deb] = fetch_debs(default_cache(), list(runc.packages)).values()
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    os.link(deb.path, cache / "debs" / deb.path.name)
    monkeypatch.setattr(tarballs, "RELEASES", (runc,))
    fork = multiprocessing.get_context("fork")
    inside = fork.Barrier(3)
    build = tarballs._build_into
    log = tmp_path / "builds"

    def counted_build(*args: object) -> None:
        with open(log, "a") as out:
            out.write("built\n")
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait(timeout=2)  # all three inside a build at once, unless builds take turns
        build(*args)

    monkeypatch.setattr(tarballs, "_build_into", counted_build)
    sessions = [fork.Process(target=build_release_tree, args=(tmp_path / f"root{n}", cache)) for n in range(3)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(timeout=120)
    assert [s.exitcode for s in sessions] == [0, 0, 0]
    assert log.read_text() == "built\n"
    assert len({sha256_file(tmp_path / f"root{n}" / runc.path(host_arch())) for n in range(3)}) == 1
