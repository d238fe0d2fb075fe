"""`relayer.domain.exit_plans` against the vault: for random exit plans and single orders (ids, prices on
either side and at the bounds, shares and trails at and past their limits, duplicates, take-profits out of
sequence, shares over 100%), the relayer's checks raise exactly the error the vault's revert maps to (class,
message and details), or nothing when the vault accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.chain.decoding import decode_orders_of
from relayer.chain.vault import call_chain
from relayer.constants import MAX_TRIGGER_PRICE_E8
from relayer.domain import calldata
from relayer.domain.calldata import ExitOrder
from relayer.domain.exit_plans import check_exit_plan, check_set_order
from relayer.errors import RelayerError
from tests.conftest import usd
from tests.contracts.conftest import Transact

PRICE = usd("96000")
FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

prices = st.one_of(
    st.sampled_from([0, 1, PRICE - 1, PRICE, PRICE + 1, MAX_TRIGGER_PRICE_E8, MAX_TRIGGER_PRICE_E8 + 1]),
    st.sampled_from([usd(p) for p in ("93000", "94000", "95000", "97000", "98000", "99000", "100000")]),
)
shares = st.one_of(
    st.sampled_from([0, 1, 2_500, 5_000, 6_000, 9_999, 10_000, 10_001]), st.integers(0, 10_001)
)
trails = st.sampled_from([0, 1, 200, 9_999, 10_000])
orders = st.tuples(st.integers(0, 7), prices, shares, trails)


def _outcome(action: Callable[[], Any]) -> tuple[str, str, dict[str, Any]] | None:
    try:
        action()
    except RelayerError as error:
        return type(error).__name__, error.message, error.details
    return None


@pytest.fixture
def positions(
    open_position: Callable[..., bytes], set_market_price: Callable[[str, str], None]
) -> dict[bool, bytes]:
    """A long and a short at 96000, opened once per test (the examples only simulate)."""
    set_market_price("BTCUSDT", "96000")
    return {is_long: open_position(is_long=is_long, size="0.42") for is_long in (True, False)}


@pytest.fixture
def planned(
    positions: dict[bool, bytes],
    open_position: Callable[..., bytes],
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    set_market_price: Callable[[str, str], None],
) -> dict[tuple[bool, str], bytes]:
    """By (is long, variant), positions holding tiers 0 and 2 of 25% each and a stop, set once per test: a
    stop of 25% (`partial`), a full one (`full`), or a full one with tier 0 already executed, so `D` is 7500
    and tier 2 is the only partial order left (`executed`), or tier 2 cancelled too (`only_full`: any new
    partial order starts a new plan)."""
    found: dict[tuple[bool, str], bytes] = {}
    for is_long in (True, False):
        sign = 1 if is_long else -1
        for variant in ("partial", "full", "executed", "only_full"):
            position_id = open_position(is_long=is_long, size="0.42")
            plan = [
                (0, PRICE + sign * usd("1000"), 2_500, 0),
                (2, PRICE + sign * usd("3000"), 2_500, 0),
                (4, PRICE - sign * usd("2000"), 2_500 if variant == "partial" else 10_000, 0),
            ]
            transact(trader, calldata.set_exit_plan(position_id, plan))
            if variant in ("executed", "only_full"):
                set_market_price("BTCUSDT", "97000" if is_long else "95000")
                transact(stranger, calldata.execute_order(position_id, 0))
                set_market_price("BTCUSDT", "96000")
            if variant == "only_full":
                transact(trader, calldata.cancel_order(position_id, 2))
            found[(is_long, variant)] = position_id
    return found


@pytest.mark.only_backend("eth-tester")
@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES_OK)
@given(is_long=st.booleans(), plan=st.lists(orders, max_size=7))
@example(
    is_long=True,
    plan=[(0, usd("97000"), 2_500, 0), (1, usd("98000"), 2_500, 0), (4, usd("94000"), 10_000, 200)],
)
@example(is_long=True, plan=[(1, usd("97000"), 2_500, 0), (0, usd("98000"), 2_500, 0)])  # out of sequence
@example(is_long=False, plan=[(0, usd("95000"), 6_000, 0), (5, usd("97000"), 6_000, 0)])  # 120%
@example(is_long=True, plan=[(2, usd("97000"), 100, 0), (2, usd("98000"), 100, 0)])  # duplicate
def test_check_exit_plan_is_the_vaults_verdict(
    chain: Chain,
    contract: Contract,
    trader: LocalAccount,
    positions: dict[bool, bytes],
    is_long: bool,
    plan: list[ExitOrder],
) -> None:
    data = calldata.set_exit_plan(positions[is_long], plan)
    on_chain = _outcome(
        lambda: call_chain(
            lambda: chain.w3.eth.call({"from": trader.address, "to": contract.address, "data": data})
        )
    )
    assert _outcome(lambda: check_exit_plan(is_long, PRICE, plan)) == on_chain


@pytest.mark.only_backend("eth-tester")
@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES_OK)
@given(
    is_long=st.booleans(), order=orders, variant=st.sampled_from(["partial", "full", "executed", "only_full"])
)
@example(is_long=True, order=(3, usd("100000"), 5_001, 0), variant="full")  # over what remains
@example(is_long=True, order=(1, usd("100000"), 2_500, 0), variant="partial")  # beyond tier 2
@example(is_long=False, order=(5, usd("97000"), 2_500, 150), variant="partial")
@example(is_long=True, order=(2, usd("99000"), 8_000, 0), variant="executed")  # D stays 7500
@example(is_long=True, order=(5, usd("95000"), 8_000, 0), variant="executed")  # D stays 7500
@example(is_long=True, order=(3, usd("99500"), 5_000, 0), variant="full")
@example(is_long=True, order=(4, usd("95000"), 8_000, 0), variant="only_full")  # a new plan: D 10000
def test_check_set_order_is_the_vaults_verdict(
    chain: Chain,
    contract: Contract,
    trader: LocalAccount,
    planned: dict[tuple[bool, str], bytes],
    is_long: bool,
    order: ExitOrder,
    variant: str,
) -> None:
    """Against a pending plan (see `planned`)."""
    position_id = planned[(is_long, variant)]
    raw = chain.w3.eth.call({"to": contract.address, "data": calldata.encode_call("ordersOf", position_id)})
    pending = decode_orders_of(bytes(raw))

    data = calldata.set_order(position_id, *order)
    on_chain = _outcome(
        lambda: call_chain(
            lambda: chain.w3.eth.call({"from": trader.address, "to": contract.address, "data": data})
        )
    )
    assert _outcome(lambda: check_set_order(is_long, PRICE, pending, order)) == on_chain
