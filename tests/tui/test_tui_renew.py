"""Renewing from the certificates view (issue 22): `r` asks which certificates, with the ones that
need attention filled in; only names of the table's leaves are accepted, the CA never; a yes hands
the names to the renewal service and the view reopens with fresh rows; Escape renews nothing."""

from __future__ import annotations

from textual.widgets import Button, Input, Static

from khwtui.model import config as config_module
from khwtui.model.topology import Topology
from khwtui.tui.app import make_app
from khwtui.tui.certs_screen import CertsScreen
from khwtui.tui.contracts import Services
from khwtui.tui.renew_screen import ConfirmRenew

from .fake_engine import FakeEngine
from .fake_services import aged_pki, cert_rows
from .support import wait_until

RAW = {"gcp": {"project": "khw-demo-1234", "region": "us-west1", "zone": "us-west1-c"}, "pki": {"key_type": "ecdsa-p256"}}


def app_with(tmp_path, renewed: list[list[str]]):
    config = config_module.from_dict(RAW)
    topo = Topology(config)
    pki = aged_pki(tmp_path / "pki", topo)
    reads: list[int] = []

    def rows():
        reads.append(1)
        return cert_rows(pki, topo)

    async def renew(names: list[str]) -> str:
        renewed.append(names)
        return f"renewed {', '.join(names)}"

    return make_app(config, topo, FakeEngine([]), services=Services(certs=rows, renew=renew)), reads


async def open_renew(pilot, app) -> ConfirmRenew:
    await pilot.press("c")
    await wait_until(pilot, lambda: isinstance(app.screen, CertsScreen), "the certificates view")
    await pilot.press("r")
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmRenew), "the renewal question")
    return app.screen


async def test_r_renews_the_certificates_that_need_attention_and_the_view_reopens_fresh(tmp_path) -> None:
    renewed: list[list[str]] = []
    app, reads = app_with(tmp_path, renewed)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_renew(pilot, app)
        assert screen.query_one("#names", Input).value == "worker-1, kube-proxy"
        await pilot.click("#renew")
        await wait_until(pilot, lambda: renewed == [["worker-1", "kube-proxy"]], "the renewal service to be called")
        await wait_until(pilot, lambda: isinstance(app.screen, CertsScreen) and len(reads) == 2, "the view to reopen with fresh rows")


async def test_the_ca_and_unknown_names_are_refused_and_escape_renews_nothing(tmp_path) -> None:
    renewed: list[list[str]] = []
    app, _ = app_with(tmp_path, renewed)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_renew(pilot, app)
        names = screen.query_one("#names", Input)
        for typed, problem in (("ca", "the CA is not renewed here"), ("etcd", "not a certificate of this cluster: etcd"), ("", "type one or more")):
            names.value = typed
            await pilot.pause()
            assert screen.query_one("#renew", Button).disabled
            assert problem in str(screen.query_one("#problem", Static).render())
        names.value = "kubernetes"
        await pilot.pause()
        assert not screen.query_one("#renew", Button).disabled
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmRenew), "the question to close")
    assert renewed == []


async def test_without_a_renewal_service_r_is_not_offered(tmp_path) -> None:
    config = config_module.from_dict(RAW)
    topo = Topology(config)
    pki = aged_pki(tmp_path / "pki", topo)
    app = make_app(config, topo, FakeEngine([]), services=Services(certs=lambda: cert_rows(pki, topo)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CertsScreen), "the certificates view")
        assert app.screen.check_action("renew", ()) is False
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, CertsScreen)
