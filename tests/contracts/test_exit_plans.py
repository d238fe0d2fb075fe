"""Exit plans (issue 12): several orders per position under one size rule, each executed once, in a defined
order.

The seed's tiered exit ("close 25% at TP1, 25% at TP2, 25% at TP3, trail the final 25%") end to end on the
vault, then the rules one by one: ids, set / replace / cancel, the plan's shares, the take-profit sequence,
the order of execution when several orders are crossed at once, and a manual close between tiers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.errors import InvalidCloseBpsError, InvalidTriggerPriceError, TriggerNotCrossedError
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, event_names, events, reverts, reverts_with

ExitOrder = tuple[int, int, int, int]  # (orderId, price e8, shareBps, trailBps)
SIZE_ONE = 10**18


def set_plan(position_id: bytes, orders: list[ExitOrder]) -> bytes:
    return calldata.encode_call("setExitPlan", position_id, orders)


def set_order(position_id: bytes, order_id: int, price: int, share_bps: int, trail_bps: int = 0) -> bytes:
    return calldata.encode_call("setOrder", position_id, order_id, price, share_bps, trail_bps)


def orders_of(contract: Contract, position_id: bytes) -> tuple[list[dict[str, Any]], int]:
    """`ordersOf` as dicts in the vault's execution priority, and the plan's remaining denominator."""
    raw, plan_bps = contract.functions.ordersOf(position_id).call()
    keys = ("orderId", "isTakeProfit", "price", "shareBps", "trailBps", "sizeIfExecuted")
    return [dict(zip(keys, item, strict=True)) for item in raw], plan_bps


def test_the_seeds_tiered_exit_closes_exactly_25_25_25_and_the_trailing_stop_the_rest(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    """A 0.42 BTC long at 96,000: three tiers of 25% and a 2% trailing stop for the rest, set in one
    transaction."""
    position_id = open_position(size="0.42")
    plan = [
        (0, usd("97000"), 2_500, 0),
        (1, usd("98000"), 2_500, 0),
        (2, usd("99000"), 2_500, 0),
        (4, usd("94000"), 2_500, 200),
    ]
    receipt = transact(trader, set_plan(position_id, plan))
    assert event_names(contract, receipt) == ["TriggerSet"] * 4 + ["ExitPlanSet"]
    listed, plan_bps = orders_of(contract, position_id)
    assert plan_bps == 10_000
    assert [(o["orderId"], o["sizeIfExecuted"]) for o in listed] == [
        (4, units("0.105")),  # stops first in the listing, as in execution
        (0, units("0.105")),
        (1, units("0.105")),
        (2, units("0.105")),
    ]

    fills = []
    for price in ("97000", "98000", "99000"):
        set_market_price("BTCUSDT", price)
        receipt = transact(stranger, calldata.execute_trigger(position_id))
        assert event_names(contract, receipt) == ["TriggerExecuted", "PositionDecreased"]
        fills.append(event(contract, receipt, "PositionDecreased")["sizeDelta"])
        # The stop trails the rising price, only ever up.
        transact(stranger, calldata.encode_call("ratchetStop", position_id, 4))
    assert fills == [units("0.105")] * 3  # exactly 25% of 0.42, to the unit

    listed, plan_bps = orders_of(contract, position_id)
    assert plan_bps == 2_500
    (stop,) = listed
    assert (stop["orderId"], stop["price"], stop["sizeIfExecuted"]) == (4, usd("97020"), units("0.105"))

    set_market_price("BTCUSDT", "97020")  # the trailed stop (99,000 - 2%) fires
    receipt = transact(stranger, calldata.execute_trigger(position_id))
    executed = event(contract, receipt, "TriggerExecuted")
    assert (executed["orderId"], executed["isTakeProfit"], executed["sizeDelta"]) == (
        4,
        False,
        units("0.105"),
    )
    assert event(contract, receipt, "PositionDecreased")["remainingSize"] == 0
    assert sum(fills) + executed["sizeDelta"] == units("0.42")


def test_orders_have_ids_and_are_set_replaced_and_cancelled_one_by_one(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    position_id = open_position(size="1")
    for order_id, price in ((0, "97000"), (1, "98000"), (2, "99000"), (3, "100000")):
        transact(trader, set_order(position_id, order_id, usd(price), 2_000))
    transact(trader, set_order(position_id, 4, usd("95000"), 10_000))
    receipt = transact(trader, set_order(position_id, 5, usd("94000"), 1_000, 300))
    assert event(contract, receipt, "TriggerSet") == {
        "positionId": position_id,
        "owner": trader.address,
        "orderId": 5,
        "isTakeProfit": False,
        "price": usd("94000"),
        "shareBps": 1_000,
        "trailBps": 300,
    }
    listed, _ = orders_of(contract, position_id)
    assert [o["orderId"] for o in listed] == [4, 5, 0, 1, 2, 3]

    transact(trader, set_order(position_id, 2, usd("99500"), 2_500))  # replace one
    transact(trader, calldata.encode_call("cancelOrder", position_id, 1))  # cancel one
    listed, _ = orders_of(contract, position_id)
    assert [(o["orderId"], o["price"], o["shareBps"]) for o in listed] == [
        (4, usd("95000"), 10_000),
        (5, usd("94000"), 1_000),
        (0, usd("97000"), 2_000),
        (2, usd("99500"), 2_500),
        (3, usd("100000"), 2_000),
    ]
    # The primary orders are what getPosition (and so the relayer today) shows.
    position = vault.position(position_id)
    assert (position.take_profit.price_e8, position.stop_loss.price_e8) == (usd("97000"), usd("95000"))

    # A whole plan replaces everything: what it does not list is cancelled (a TriggerSet with price 0).
    receipt = transact(trader, set_plan(position_id, [(1, usd("98000"), 5_000, 0)]))
    cancelled = [e["orderId"] for e in events(contract, receipt, "TriggerSet") if e["price"] == 0]
    assert cancelled == [0, 2, 3, 4, 5]
    listed, plan_bps = orders_of(contract, position_id)
    assert ([o["orderId"] for o in listed], plan_bps) == ([1], 10_000)


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_plan_rules_are_enforced(
    transact: Transact, trader: LocalAccount, open_position: Callable[..., bytes], is_long: bool
) -> None:
    position_id = open_position(is_long=is_long, size="1")
    sign = 1 if is_long else -1  # take-profits above a long, below a short
    tp1, tp2, sl = (
        usd("96000") + sign * usd("1000"),
        usd("96000") + sign * usd("2000"),
        usd("96000") - sign * usd("1000"),
    )

    with reverts_with("OrderIdInvalid", orderId=6):
        transact(trader, set_order(position_id, 6, tp1, 1_000))
    with reverts(InvalidCloseBpsError):
        transact(trader, set_order(position_id, 0, tp1, 0))
    with reverts(InvalidTriggerPriceError):
        transact(trader, set_order(position_id, 4, tp1, 1_000))  # a stop on the profit side
    with reverts_with("OrderTrailInvalid", orderId=0, trailBps=100):
        transact(trader, set_order(position_id, 0, tp1, 1_000, 100))  # take-profits do not trail
    with reverts_with("OrderTrailInvalid", orderId=4, trailBps=10_000):
        transact(trader, set_order(position_id, 4, sl, 1_000, 10_000))
    # Take-profit ids follow the order a price reaches them.
    with reverts_with("OrderOutOfSequence", orderId=1, price=tp1, otherOrderId=0, otherPrice=tp2):
        transact(trader, set_plan(position_id, [(0, tp2, 1_000, 0), (1, tp1, 1_000, 0)]))
    with reverts_with("PlanOrderDuplicated", orderId=0):
        transact(trader, set_plan(position_id, [(0, tp1, 1_000, 0), (0, tp2, 1_000, 0)]))
    # Partial shares may not exceed the plan; full (10_000) orders are not counted.
    with reverts_with("PlanSharesExceeded", sharesBps=10_001, remainingBps=10_000):
        transact(trader, set_plan(position_id, [(0, tp1, 5_000, 0), (1, tp2, 4_000, 0), (4, sl, 1_001, 0)]))
    transact(trader, set_plan(position_id, [(0, tp1, 5_000, 0), (1, tp2, 5_000, 0), (4, sl, 10_000, 0)]))
    with reverts_with("PlanSharesExceeded", sharesBps=10_001, remainingBps=10_000):
        transact(trader, set_order(position_id, 5, sl - sign * usd("100"), 1))


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_a_gap_across_several_orders_executes_them_in_the_defined_order_once_each(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    is_long: bool,
) -> None:
    """Stops first (the one the price reaches first), then take-profits nearest the entry first."""
    sign = 1 if is_long else -1
    position_id = open_position(is_long=is_long, size="1")

    def at(offset_usd: int) -> int:
        return usd("96000") + sign * offset_usd * 10**8

    # Stops are set while the price is on the far side, so that later a take-profit can sit inside them.
    set_market_price("BTCUSDT", str(96000 + sign * 3000))
    transact(trader, set_order(position_id, 4, at(2000), 2_000))
    transact(trader, set_order(position_id, 5, at(1000), 2_000))
    set_market_price("BTCUSDT", str(96000 - sign * 3000))
    plan_tps = [(0, at(-2000), 2_000), (1, at(-1000), 2_000), (2, at(500), 2_000)]
    for order_id, price, share in plan_tps:
        transact(trader, set_order(position_id, order_id, price, share))

    set_market_price("BTCUSDT", str(96000 + sign * 1500))  # crosses stop 4 (not 5) and every take-profit
    with reverts_with("OrderNotNext", orderId=0, nextOrderId=4):
        transact(stranger, calldata.encode_call("executeOrder", position_id, 0))
    with reverts(TriggerNotCrossedError):
        transact(stranger, calldata.encode_call("executeOrder", position_id, 5))

    executed = []
    while True:
        try:
            receipt = transact(stranger, calldata.execute_trigger(position_id))
        except TriggerNotCrossedError:
            break
        executed.append(event(contract, receipt, "TriggerExecuted")["orderId"])
    assert executed == [4, 0, 1, 2]
    listed, plan_bps = orders_of(contract, position_id)
    assert [o["orderId"] for o in listed] == [5]  # the uncrossed stop is all that is left
    assert plan_bps == 2_000
    # Each executed once: naming an executed order finds nothing.
    with reverts_with("OrderNotFound", orderId=0):
        transact(stranger, calldata.encode_call("executeOrder", position_id, 0))
    # Five orders of 20%: four executed, the size left is exactly the last 20% of the 1.
    assert contract.functions.getPosition(position_id).call()[3] == units("0.2")


def test_a_manual_partial_close_keeps_the_remaining_tiers_shape(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    position_id = open_position(size="0.42")
    transact(
        trader,
        set_plan(
            position_id,
            [(0, usd("97000"), 2_500, 0), (1, usd("98000"), 2_500, 0), (2, usd("99000"), 5_000, 0)],
        ),
    )
    set_market_price("BTCUSDT", "97000")
    transact(stranger, calldata.execute_trigger(position_id))  # 0.105 closed, D = 7500, 0.315 left
    transact(trader, calldata.close_position(position_id, units("0.115"), 0))  # by hand: 0.2 left
    listed, plan_bps = orders_of(contract, position_id)
    assert plan_bps == 7_500  # a manual close leaves the plan alone
    # The remaining tiers are still 1/3 and 2/3 of what remains.
    assert [(o["orderId"], o["sizeIfExecuted"]) for o in listed] == [
        (1, units("0.2") * 2_500 // 7_500),
        (2, units("0.2") * 5_000 // 7_500),
    ]
    set_market_price("BTCUSDT", "99000")
    first = event(contract, transact(stranger, calldata.execute_trigger(position_id)), "PositionDecreased")
    second = event(contract, transact(stranger, calldata.execute_trigger(position_id)), "PositionDecreased")
    assert first["sizeDelta"] == units("0.2") // 3
    assert (second["sizeDelta"], second["remainingSize"]) == (units("0.2") - units("0.2") // 3, 0)
