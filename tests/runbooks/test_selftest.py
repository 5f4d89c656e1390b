"""selftest writes its markers inside the state directory only, whoever asks from where."""

from __future__ import annotations

import pytest

from runbooks.catalog import load_catalog
from runbooks.engine.errors import InvalidInput
from tests.conftest import EngineFactory
from tests.support.people import ALICE, BOB


@pytest.mark.parametrize("workdir", ["/etc", "../../outside", "/tmp/elsewhere"])
def test_a_workdir_outside_the_state_directory_is_refused(
    make_engine: EngineFactory, workdir: str
) -> None:
    engine = make_engine(registry=load_catalog())
    with pytest.raises(InvalidInput, match=r"is outside the state directory .*--workdir rehearsal"):
        engine.prepare("selftest", {"environment": "development", "workdir": workdir}, actor=BOB)
    assert engine.list() == []


def test_a_relative_workdir_goes_under_the_state_directory(make_engine: EngineFactory) -> None:
    engine = make_engine(registry=load_catalog())
    prepared = engine.prepare(
        "selftest", {"environment": "development", "workdir": "rehearsal"}, actor=ALICE
    )
    state = engine.state_dir.resolve()
    directories = {step["args"]["directory"] for step in prepared.plan.steps}
    assert directories == {str(state / "selftest" / "rehearsal")}
    inside = engine.prepare(
        "selftest",
        {"environment": "development", "workdir": str(state / "mine")},
        actor=ALICE,
    )
    assert {s["args"]["directory"] for s in inside.plan.steps} == {str(state / "mine")}
