"""The certificates view: the same rows as `khwtui certs`, expiring ones marked, no key material."""

from __future__ import annotations

import argparse
import re

import tomli_w
from rich.style import Style
from rich.table import Table

from khwtui.artifacts.pki import Pki
from khwtui.cli import commands
from khwtui.core.events import UNVERIFIED
from khwtui.model import config as config_module
from khwtui.model.topology import Topology
from khwtui.tui.app import make_app
from khwtui.tui.certs_screen import HEADERS, CertsScreen, CertTable, cells
from khwtui.tui.contracts import Services
from khwtui.tui.marks import status_style

from .fake_engine import FakeEngine
from .fake_services import aged_pki, cert_rows
from .support import wait_until

RAW = {"gcp": {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"}, "pki": {"key_type": "ecdsa-p256"}}


def printed_rows(text: str) -> list[tuple[str, ...]]:
    """Parse `khwtui certs`' table: columns are two or more spaces apart, after a dashed rule."""
    lines = text.rstrip("\n").splitlines()
    assert tuple(lines[0].split()) == ("name", "CN", "O", "SANs", "not", "after", "days", "left", "status")
    return [tuple(re.split(r" {2,}", line.strip())) for line in lines[2:]]


async def open_certs(app, size=(120, 40), look=None):
    """Open the view with c; `look(screen, table)` runs while it is on screen."""
    async with app.run_test(size=size) as pilot:
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CertsScreen), "the certificates view")
        await pilot.pause()
        screen = app.screen
        if look is not None:
            look(screen, screen.query_one(CertTable))
        return screen, screen.query_one(CertTable).plain


async def test_the_view_shows_the_rows_of_khwtui_certs(tmp_path, capsys) -> None:
    config_file = tmp_path / "cluster.toml"
    config_file.write_text(tomli_w.dumps(RAW))
    config = config_module.from_dict(RAW)
    topo = Topology(config)
    state_dir = tmp_path / "state"
    pki = Pki(state_dir / "pki", config)
    pki.ensure(topo)

    assert commands.certs(argparse.Namespace(config=str(config_file), state_dir=str(state_dir))) == 0
    printed = printed_rows(capsys.readouterr().out)

    app = make_app(config, topo, FakeEngine([]), services=Services(certs=lambda: pki.rows(topo)))
    screen, plain = await open_certs(app, size=(160, 40))  # wide enough that no cell wraps
    shown = [cells(r) for r in screen.rows]
    assert len(printed) == len(shown) == 11  # the CA, the front proxy's CA and nine leaves of the 2+2 cluster
    assert shown == printed
    for row in shown:  # and every cell is on screen
        values = dict(zip(HEADERS, row, strict=True))
        line = next(text for text in plain.splitlines() if text.split()[1:2] == [values["name"]])
        for header in ("CN", "O", "not after", "days left", "status"):
            assert values[header] in line, (header, line)
        if values["SANs"] != "-":
            assert f"SANs: {values['SANs']}" in " ".join(plain.split())
    assert screen.summary.startswith("all 11 certificates ok; the first expires in 364 days")
    assert "PRIVATE" not in plain and "BEGIN" not in plain


async def test_expiring_certificates_are_marked_and_coloured(tmp_path) -> None:
    config = config_module.from_dict(RAW)
    topo = Topology(config)
    pki = aged_pki(tmp_path / "pki", topo)
    app = make_app(config, topo, FakeEngine([]), services=Services(certs=lambda: cert_rows(pki, topo)))
    seen: dict[str, object] = {}

    def look(screen, table) -> None:
        rendered = table.table(80)
        seen["row styles"] = {part.rows[0].style for part in rendered.renderables[1:] if isinstance(part, Table)}
        seen["warning"] = status_style(UNVERIFIED, screen.app.theme_variables)

    screen, plain = await open_certs(app, size=(80, 24), look=look)
    assert screen.summary == "2 of 11 need attention: worker-1 (renew soon), kube-proxy (renew soon)"
    lines = plain.splitlines()
    marked = {line.split()[1]: line[0] for line in lines if line[0] in "✔!✖"}
    assert marked == {
        "ca": "✔", "front-proxy-ca": "✔", "admin": "✔", "worker-0": "✔", "worker-1": "!", "kube-controller-manager": "✔",
        "kube-proxy": "!", "kube-scheduler": "✔", "kubernetes": "✔", "service-account": "✔", "front-proxy-client": "✔",
    }  # fmt: skip
    assert lines[lines.index(next(line for line in lines if line.startswith("! kube-proxy"))) + 1] == (
        "  CN: system:kube-proxy · O: system:node-proxier"  # at 80 columns, CN and O go below the name
    )
    assert seen["row styles"] == {Style(), seen["warning"]}  # the two due for renewal in the theme's warning colour


async def test_the_view_is_not_offered_without_certificates_and_says_so_before_the_pki_stage(tmp_path) -> None:
    config = config_module.from_dict(RAW)
    topo = Topology(config)
    bare = make_app(config, topo, FakeEngine([]))
    async with bare.run_test():
        assert bare.check_action("show_certs", ()) is False
    empty = Pki(tmp_path / "pki", config)
    app = make_app(config, topo, FakeEngine([]), services=Services(certs=lambda: empty.rows(topo)))
    screen, _ = await open_certs(app)
    assert screen.summary == "no certificates yet: the pki stage makes them"
    assert {r.status for r in screen.rows} == {"missing"}
