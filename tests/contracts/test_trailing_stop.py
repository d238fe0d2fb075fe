"""The ratcheting (trailing) stop: anyone moves it toward the price, the vault refuses every move against the
trader, and the trailed stop fires like any stop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.domain import calldata
from tests.conftest import usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, reverts_with

TRAIL_BPS = 200  # 2%


def ratchet(position_id: bytes, order_id: int = 4) -> bytes:
    return calldata.encode_call("ratchetStop", position_id, order_id)


def stop_price(contract: Contract, position_id: bytes, order_id: int = 4) -> int:
    orders, _ = contract.functions.ordersOf(position_id).call()
    return int(next(o[2] for o in orders if o[0] == order_id))


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_the_stop_ratchets_with_the_price_and_never_back(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    set_price_e8: Callable[[str, int], object],
    is_long: bool,
) -> None:
    sign = 1 if is_long else -1  # the trader's favourable direction
    position_id = open_position(is_long=is_long, size="1")
    initial = usd("96000") - sign * usd("3000")
    transact(trader, calldata.encode_call("setOrder", position_id, 4, initial, 10_000, TRAIL_BPS))

    # At 96,000 a 2% trail is 94,080 (long) / 97,920 (short): tighter than the initial 93,000 / 99,000.
    receipt = transact(stranger, ratchet(position_id))  # anyone (a keeper) may ratchet
    moved = usd("96000") - sign * usd("1920")
    assert event(contract, receipt, "StopRatcheted") == {
        "positionId": position_id,
        "keeper": stranger.address,
        "orderId": 4,
        "previousTrigger": initial,
        "trigger": moved,
        "price": usd("96000"),
    }
    assert stop_price(contract, position_id) == moved

    # The same price again: no move, refused (nothing to do is not a move in the trader's favour).
    with reverts_with("StopRatchetAgainstTrader", orderId=4, trigger=moved, proposedTrigger=moved):
        transact(stranger, ratchet(position_id))

    # The price moves against the trader: the trail would loosen the stop; refused, the stop stays.
    set_market_price("BTCUSDT", str(96000 - sign * 1000))
    against = usd(str(96000 - sign * 1000)) * (10_000 - sign * TRAIL_BPS) // 10_000
    with reverts_with("StopRatchetAgainstTrader", orderId=4, trigger=moved, proposedTrigger=against):
        transact(stranger, ratchet(position_id))
    assert stop_price(contract, position_id) == moved

    # The price moves for the trader: the stop follows it.
    set_market_price("BTCUSDT", str(96000 + sign * 4000))
    transact(stranger, ratchet(position_id))
    followed = (
        usd(str(96000 + sign * 4000)) - sign * usd(str(100000 if is_long else 92000)) * TRAIL_BPS // 10_000
    )
    assert stop_price(contract, position_id) == followed

    # ... and fires when the price comes back through it, closing everything (a full stop).
    set_price_e8("BTCUSDT", followed - sign)
    receipt = transact(stranger, calldata.execute_trigger(position_id))
    executed = event(contract, receipt, "TriggerExecuted")
    assert (executed["orderId"], executed["triggerPrice"]) == (4, followed)
    assert event(contract, receipt, "PositionDecreased")["remainingSize"] == 0


def test_only_trailing_stops_ratchet(
    transact: Transact, trader: LocalAccount, stranger: LocalAccount, open_position: Callable[..., bytes]
) -> None:
    position_id = open_position(size="1")
    transact(trader, calldata.set_stop_loss(position_id, usd("90000"), 10_000))  # a fixed stop
    with reverts_with("StopNotTrailing", orderId=4):
        transact(stranger, ratchet(position_id))
    with reverts_with("OrderNotFound", orderId=5):
        transact(stranger, ratchet(position_id, 5))
    with reverts_with("OrderIdInvalid", orderId=0):
        transact(stranger, ratchet(position_id, 0))  # a take-profit does not trail
