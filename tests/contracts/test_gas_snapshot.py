"""The gas snapshot guard: a change that makes a vault operation cost more must update gas-snapshot.json."""

from __future__ import annotations

from tests.contracts.gas import OPERATIONS, differences, load_snapshot, measure_gas, over_ceilings, rises


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


def test_committed_figures_stay_within_the_issue_12_ceilings() -> None:
    recorded = load_snapshot()
    assert not over_ceilings(recorded), over_ceilings(recorded)
    assert recorded["partial_close"] < 60_744 - 20_000  # the per-owner PnL total is no longer written


def test_over_ceilings_names_the_figure_and_its_bound() -> None:
    assert over_ceilings({"partial_close": 40_000, "execute_ladder_tier": 45_000}) == []
    assert over_ceilings({"partial_close_operator": 42_001}) == [
        "partial_close_operator: 42001 gas > ceiling 42000"
    ]
