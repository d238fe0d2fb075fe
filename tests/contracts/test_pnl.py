"""PnL and rounding, longs and shorts: the chain agrees with `relayer.domain.positions.realized_pnl_e8` to the
unit, and every rounding is in the vault's favour (a profit rounds down, a loss rounds up, away from zero)."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.constants import MAX_POSITION_SIZE, MAX_TRIGGER_PRICE_E8
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import SIZE_ONE, realized_pnl_e8
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event

# Small values make rounding visible (products that are not multiples of 10**18); large ones probe the bounds.
prices_e8 = st.one_of(st.integers(1, 10**6), st.integers(1, MAX_TRIGGER_PRICE_E8))
sizes = st.one_of(st.integers(1, 10**19), st.integers(1, MAX_POSITION_SIZE))
FIXTURES_OK = [HealthCheck.function_scoped_fixture]


def assert_rounded_in_vault_favour(is_long: bool, entry: int, exit_: int, size_delta: int, pnl: int) -> None:
    """`pnl` is the exact PnL rounded toward minus infinity: never more than exact, less by under one unit."""
    exact_scaled = (exit_ - entry if is_long else entry - exit_) * size_delta  # exact PnL times 10**18
    assert exact_scaled - SIZE_ONE < pnl * SIZE_ONE <= exact_scaled


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES_OK)
@given(is_long=st.booleans(), entry=prices_e8, exit_=prices_e8, size_delta=sizes)
@example(is_long=True, entry=100, exit_=101, size_delta=1)  # one-wei profit rounds down to 0
@example(is_long=False, entry=100, exit_=101, size_delta=1)  # one-wei loss rounds up to -1
@example(is_long=False, entry=101, exit_=100, size_delta=SIZE_ONE)  # exact: no rounding
@example(is_long=True, entry=MAX_TRIGGER_PRICE_E8, exit_=1, size_delta=MAX_POSITION_SIZE)  # largest loss
def test_realized_pnl_view_matches_python(
    contract: Contract, is_long: bool, entry: int, exit_: int, size_delta: int
) -> None:
    on_chain = contract.functions.realizedPnl(is_long, entry, exit_, size_delta).call()
    assert on_chain == realized_pnl_e8(is_long, entry, exit_, size_delta)
    assert_rounded_in_vault_favour(is_long, entry, exit_, size_delta, on_chain)
    if entry == exit_:
        assert on_chain == 0


@st.composite
def closes(draw: Any) -> tuple[bool, int, int, int, int]:
    size = draw(sizes)
    size_delta = draw(st.one_of(st.just(size), st.integers(1, size)))
    return draw(st.booleans()), draw(prices_e8), draw(prices_e8), size, size_delta


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES_OK)
@given(case=closes())
def test_real_close_books_the_python_pnl(
    chain: Chain,
    contract: Contract,
    transact: Transact,
    deployer: LocalAccount,
    trader: LocalAccount,
    case: tuple[bool, int, int, int, int],
) -> None:
    is_long, entry, exit_, size, size_delta = case
    btc = symbol_to_bytes32("BTCUSDT")
    snapshot = chain.snapshot()  # each example starts from the deployed state
    try:
        transact(deployer, calldata.encode_call("setPrice", btc, entry))
        opened = event(
            contract,
            transact(trader, calldata.encode_call("openPosition", btc, is_long, size, 0)),
            "PositionOpened",
        )
        transact(deployer, calldata.encode_call("setPrice", btc, exit_))
        receipt = transact(trader, calldata.close_position(bytes(opened["positionId"]), size_delta, 0))

        decreased = event(contract, receipt, "PositionDecreased")
        expected = realized_pnl_e8(is_long, entry, exit_, size_delta)
        assert decreased["realizedPnl"] == expected
        assert (decreased["exitPrice"], decreased["sizeDelta"]) == (exit_, size_delta)
        assert decreased["remainingSize"] == size - size_delta
        assert_rounded_in_vault_favour(is_long, entry, exit_, size_delta, expected)
    finally:
        chain.revert(snapshot)
