"""`plan_after`, `plan_after_close` and `rights_needed` against the vault itself (eth-tester): random order
changes (single orders, cancellations, whole plans, ids and prices valid or not) with manual partial closes
and executions in between. After each accepted change the vault's `ordersOf` equals the prediction to the
unit; a change the vault refuses raises the very error (class, message, details) the revert maps to; and an
operator holding exactly `rights_needed` succeeds while one missing any of those bits is refused with
`OperatorRightMissing` for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relayer.chain.connect import Chain
from relayer.chain.transact import current_fees
from relayer.chain.vault import VaultReader, call_chain
from relayer.constants import ALL_RIGHTS, FIRST_STOP_ID, ORDER_COUNT
from relayer.domain import calldata
from relayer.domain.calldata import ExitOrder
from relayer.domain.exit_plans import OrderChange, plan_after, plan_after_close, rights_needed
from relayer.domain.fees import fee_fields
from relayer.errors import OperatorRightMissingError, RelayerError
from tests.conftest import units, usd

FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
STEP_USD = 1_000

orders = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 5, 0, 1, 2, 4, 5, 6]),
    st.integers(1, 4),  # trigger: this many times 1000 USD from the current price, on the order's side
    st.sampled_from([1, 1_000, 2_500, 2_500, 5_000, 9_999, 10_000, 10_000]),
    st.sampled_from([0, 0, 150, 9_999]),  # stops only
    st.integers(0, 12),  # 0: on the wrong side, 1: at the price, 2: an invalid trail, else as generated
)
changes = st.tuples(
    st.just("change"),
    st.lists(orders, max_size=4),
    st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6]), max_size=1),
    st.booleans(),
)
closes = st.tuples(st.just("close"), st.sampled_from([1, 2_500, 5_000, 9_999]))
moves = st.tuples(st.just("move"), st.integers(-4, 4))
steps = st.lists(st.one_of(changes, changes, changes, closes, moves), min_size=2, max_size=5)


def _order(is_long: bool, price: int, order_id: int, k: int, share: int, trail: int, bad: int) -> ExitOrder:
    """A mostly valid order: its trigger on its side of `price` (`k` steps away), a trail on stops only;
    `bad` makes one of them invalid now and then."""
    side = 1 if is_long == (order_id < FIRST_STOP_ID) else -1
    if bad == 0:
        side = -side
    trigger = price if bad == 1 else price + side * k * STEP_USD
    trail = trail if order_id >= FIRST_STOP_ID else 0
    if bad == 2:
        trail = 10_000 if order_id >= FIRST_STOP_ID else 150
    return order_id, usd(str(trigger)), share, trail


def _attempt(fn: Callable[..., Any], *args: Any) -> tuple[Any, tuple[str, str, dict[str, Any]] | None]:
    """`fn(*args)`'s result and None, or None and the error it raised (class name, message, details)."""
    try:
        return fn(*args), None
    except RelayerError as error:
        return None, (type(error).__name__, error.message, error.details)


@pytest.mark.only_backend("eth-tester")
@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES_OK)
@given(is_long=st.booleans(), steps=steps)
@example(  # the seed's ladder, a tier executed, a tier added and the stop tightened, then a close
    is_long=True,
    steps=[
        (
            "change",
            [(0, 1, 2_500, 0, 9), (1, 2, 2_500, 0, 9), (2, 3, 2_500, 0, 9), (4, 2, 10_000, 150, 9)],
            [],
            True,
        ),
        ("move", 1),
        ("change", [(3, 3, 2_500, 0, 9), (4, 1, 10_000, 150, 9)], [], False),
        ("close", 5_000),
        ("change", [], [4], False),
    ],
)
@example(  # a whole plan after an execution starts again at D = 10000; a cancel leaves D alone
    is_long=False,
    steps=[
        ("change", [(0, 1, 2_500, 0, 9), (1, 2, 2_500, 0, 9), (5, 1, 5_000, 0, 9)], [], True),
        ("move", -1),
        ("change", [], [1], False),
        ("change", [(1, 2, 2_000, 0, 9)], [], True),
    ],
)
def test_plan_after_is_what_the_vault_holds(
    chain: Chain,
    vault: VaultReader,
    accounts: list[LocalAccount],
    is_long: bool,
    steps: list[tuple[Any, ...]],
) -> None:
    deployer, trader, operator, keeper = accounts[0], accounts[1], accounts[4], accounts[3]
    w3 = chain.w3
    fees = fee_fields(current_fees(w3))

    def call(sender: LocalAccount, data: bytes) -> None:
        call_chain(lambda: w3.eth.call({"from": sender.address, "to": vault.address, "data": data}))

    def transact(sender: LocalAccount, data: bytes) -> None:
        """Sent with a fixed gas limit: eth-tester's gas estimation would take most of this test's time."""
        nonce = w3.eth.get_transaction_count(sender.address, "pending")
        tx: dict[str, Any] = {"to": vault.address, "data": data, "value": 0, "gas": 2_000_000, "nonce": nonce}
        tx.update(fees, chainId=w3.eth.chain_id)
        signed = sender.sign_transaction(cast(TransactionDictType, tx))
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt["status"] == 1

    price = 96_000
    transact(deployer, calldata.set_price("BTCUSDT", usd(str(price))))
    transact(trader, calldata.open_position("BTCUSDT", is_long, units("0.42"), 0))
    position_id = vault.position_ids_of(trader.address)[-1]

    for step in steps:
        plan = vault.orders_of(position_id)
        size = vault.position(position_id).size
        if step[0] == "move":
            price += step[1] * STEP_USD
            transact(deployer, calldata.set_price("BTCUSDT", usd(str(price))))
            for _ in range(ORDER_COUNT):  # every crossed order, once each
                execute = calldata.execute_trigger(position_id)
                if _attempt(call, keeper, execute)[1] is not None:
                    break
                transact(keeper, execute)
            continue
        if step[0] == "close":
            if size == 0:
                continue
            delta = size * step[1] // 10_000 or 1
            transact(trader, calldata.close_position(position_id, delta, 0))
            assert vault.orders_of(position_id) == plan_after_close(size - delta, plan)
            continue
        _, set_orders, cancel, whole = step
        change = OrderChange(
            position_id,
            set=tuple(_order(is_long, price, *order) for order in set_orders),
            cancel=tuple(cancel),
            whole_plan=whole,
        )
        data = change.calldata()
        predicted, refused = _attempt(plan_after, is_long, size, usd(str(price)), plan, change)
        assert refused == _attempt(call, trader, data)[1]
        if refused is not None:
            continue
        rights = rights_needed(is_long, plan, change)
        for bit in (1, 2, 4, 8):
            if rights & bit and ALL_RIGHTS & ~bit:
                transact(trader, calldata.set_operator_rights(operator.address, ALL_RIGHTS & ~bit, 0))
                with pytest.raises(OperatorRightMissingError) as info:
                    call(operator, data)
                assert info.value.details["right"] == bit  # refused for exactly the right it lacks
        if rights:
            transact(trader, calldata.set_operator_rights(operator.address, rights, 0))
            transact(operator, data)
        else:  # nothing changes, so no right is needed: the owner sends it (a grant of none is no grant)
            transact(trader, data)
        assert vault.orders_of(position_id) == predicted
