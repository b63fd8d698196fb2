"""Due restarts in what checks and probes report: a unit whose restart is due is failed, never passed.

RunContext.place records a unit as due (in state.toml, per node) before it changes the unit's
inputs; until the stage's check has passed after the restart, that unit runs an older
configuration than its files say, whatever its own health answers. So every outcome of such a
node turns failed, and each due unit gets an outcome of its own, in the engine's checks (which
then applies the stage again, carrying out the restart) as in `status` and the health panel.
"""

from __future__ import annotations

from khwtui.core.events import PASSED
from khwtui.core.outcome import Outcome
from khwtui.model.state import State

PENDING = "configuration changed, restart pending"


def due(state: State, stage: str) -> dict[str, list[str]]:
    """node -> the units `stage` made due there and has not restarted (and checked) since."""
    found = {name: [unit for unit, by in record.restarts.items() if by == stage] for name, record in state.nodes.items()}
    return {name: units for name, units in found.items() if units}


def with_due_restarts(outcomes: list[Outcome], state: State, stage: str) -> list[Outcome]:
    """`outcomes` with every passed one of a node that has due restarts failed, plus one failed
    outcome per due unit."""
    pending = due(state, stage)
    if not pending:
        return outcomes
    marked = [Outcome.failed(o.check, o.node, f"{o.evidence}\n{', '.join(pending[o.node])}: {PENDING}".lstrip())
              if o.result == PASSED and o.node in pending else o for o in outcomes]
    return marked + [Outcome.failed(f"{unit} restarted", node, f"{unit}: {PENDING}") for node, units in pending.items() for unit in units]
