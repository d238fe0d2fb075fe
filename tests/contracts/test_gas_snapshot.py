"""The gas snapshot guard: a change that makes a vault operation cost more must update gas-snapshot.json."""

from __future__ import annotations

from tests.contracts.gas import OPERATIONS, differences, load_snapshot, measure_gas, rises


def test_no_figure_rises_above_the_committed_snapshot() -> None:
    recorded = load_snapshot()
    assert tuple(recorded) == OPERATIONS, "gas-snapshot.json is missing: run python scripts/gas_snapshot.py"
    problems = rises(measure_gas(), recorded)
    assert not problems, "gas rose; if intended, run python scripts/gas_snapshot.py:\n" + "\n".join(problems)


def test_rises_flags_increases_and_unknown_figures_but_not_savings() -> None:
    recorded = {"open": 100, "full_close": 50}
    assert rises({"open": 100, "full_close": 49}, recorded) == []
    assert rises({"open": 101, "full_close": 50}, recorded) == ["open: 101 gas > snapshot 100 (+1)"]
    assert rises({"open": 100, "full_close": 50, "new_op": 7}, recorded) == [
        "new_op: 7 gas is not in the snapshot"
    ]
    assert rises({"open": 100}, recorded) == ["full_close: in the snapshot but no longer measured"]
    assert differences({"open": 100, "full_close": 49}, recorded) == ["full_close: 49 gas < snapshot 50 (-1)"]
