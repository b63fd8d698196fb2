"""How the frontend stage reads haproxy's "show stat" CSV (haproxy 2.6, Debian 12): which
controllers of our backend are healthy, and the line a user sees for each."""

from __future__ import annotations

from khwtui.stages.frontend import BACKEND, parse_backends

HEADER = "# pxname,svname,status,check_status,last_chk,check_desc,\n"


def stats(*rows: tuple[str, str, str, str]) -> str:
    return HEADER + "".join(f"{px},{sv},{status},{check},{last},,\n" for px, sv, status, check, last in (
        (BACKEND, *row[:3], row[3]) for row in rows))


def test_a_check_in_progress_reports_the_last_result_without_its_mark() -> None:
    # "* L7OK": haproxy marks the last status while the next check runs (doc/management.txt, field 36)
    backends = parse_backends(stats(("controller-0", "UP", "* L7OK", "Layer7 check passed")))
    assert backends["controller-0"].healthy
    assert str(backends["controller-0"]) == "controller-0 UP (L7OK: Layer7 check passed)"


def test_a_failing_check_is_unhealthy_with_haproxys_words() -> None:
    backends = parse_backends(stats(("controller-1", "DOWN", "* L4CON", "Connection refused"), ("controller-0", "UP 1/2", "L7STS", "HTTP status check returned code <500>")))
    assert not backends["controller-1"].healthy and str(backends["controller-1"]) == "controller-1 DOWN (L4CON: Connection refused)"
    assert not backends["controller-0"].healthy


def test_only_our_backends_servers_are_read() -> None:
    text = HEADER + f"{BACKEND},BACKEND,UP,,,,\n{BACKEND},FRONTEND,OPEN,,,,\nother,controller-0,DOWN,L4CON,x,,\n"
    assert parse_backends(text) == {}
