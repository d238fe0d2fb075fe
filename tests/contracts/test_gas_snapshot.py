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


CEILINGS = {
    "partial_close": 40_000,  # the owner's first close (issue 12)
    "partial_close_later": 40_000,
    "partial_close_operator": 42_000,  # another owner's first close, sent by an operator with RIGHT_CLOSE
    "execute_ladder_tier": 45_000,
    "execute_ladder_tier_later": 45_000,
}
"""Issue 12's gas bounds, asserted on the committed snapshot (deterministic gas counts, not timings)."""


def test_committed_figures_stay_within_the_issue_12_ceilings() -> None:
    recorded = load_snapshot()
    over = {name: recorded[name] for name, ceiling in CEILINGS.items() if recorded[name] > ceiling}
    assert not over, f"above the ceilings {CEILINGS}: {over}"
    assert recorded["partial_close"] < 60_744 - 20_000  # the per-owner PnL total is no longer written
