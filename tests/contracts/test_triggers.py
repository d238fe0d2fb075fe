"""Take-profit and stop-loss: setting, validation, crossing both ways, execution, SL first, dust rule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.types import TxReceipt

from relayer.chain.vault import VaultReader
from relayer.constants import CLOSE_ALL_SIZE, MAX_TRIGGER_PRICE_E8, PRICE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import TriggerOrder, realized_pnl_e8, tier_size, trigger_on_valid_side
from relayer.domain.units import format_fixed
from relayer.errors import (
    InvalidCloseBpsError,
    InvalidPriceError,
    InvalidTriggerPriceError,
    PositionNotFoundError,
    TriggerNotCrossedError,
)
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, event_names, reverts

BTC_PRICE = usd("96000")
NO_ORDER = TriggerOrder(0, 0)


def set_trigger(position_id: bytes, is_take_profit: bool, price_e8: int, close_bps: int) -> bytes:
    setter = calldata.set_take_profit if is_take_profit else calldata.set_stop_loss
    return setter(position_id, price_e8, close_bps)


def _fmt(price_e8: int) -> str:
    return format_fixed(price_e8, PRICE_DECIMALS)


@pytest.mark.parametrize("is_take_profit", [True, False], ids=["tp", "sl"])
@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_set_replace_and_cancel_an_order(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    is_long: bool,
    is_take_profit: bool,
) -> None:
    position_id = open_position(is_long=is_long)
    direction = 1 if is_long == is_take_profit else -1  # which side of the price this order must sit on
    first, second = BTC_PRICE + direction * usd("1000"), BTC_PRICE + direction * usd("2000")

    def order() -> TriggerOrder:
        position = vault.position(position_id)
        return position.take_profit if is_take_profit else position.stop_loss

    def other() -> TriggerOrder:
        position = vault.position(position_id)
        return position.stop_loss if is_take_profit else position.take_profit

    receipt = transact(trader, set_trigger(position_id, is_take_profit, first, 2_500))
    assert event_names(contract, receipt) == ["TriggerSet"]
    assert event(contract, receipt, "TriggerSet") == {
        "positionId": position_id,
        "owner": trader.address,
        "orderId": 0 if is_take_profit else 4,  # the primary take-profit / stop
        "isTakeProfit": is_take_profit,
        "price": first,
        "shareBps": 2_500,
        "trailBps": 0,
    }
    assert order() == TriggerOrder(first, 2_500)
    assert other() == NO_ORDER

    transact(trader, set_trigger(position_id, is_take_profit, second, 10_000))
    assert order() == TriggerOrder(second, 10_000)

    # Cancelling ignores closeBps (even an invalid one) and reports 0.
    cancelled = event(
        contract, transact(trader, set_trigger(position_id, is_take_profit, 0, 0)), "TriggerSet"
    )
    assert (cancelled["price"], cancelled["shareBps"]) == (0, 0)
    assert order() == NO_ORDER


@pytest.mark.parametrize("offset", [-1, 0, 1], ids=["below", "at", "above"])
@pytest.mark.parametrize("is_take_profit", [True, False], ids=["tp", "sl"])
@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_trigger_price_must_be_strictly_on_its_side(
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    is_long: bool,
    is_take_profit: bool,
    offset: int,
) -> None:
    position_id = open_position(is_long=is_long)
    price = BTC_PRICE + offset
    call = set_trigger(position_id, is_take_profit, price, 5_000)
    if trigger_on_valid_side(is_long, is_take_profit, price, BTC_PRICE):
        transact(trader, call)
        position = vault.position(position_id)
        assert (position.take_profit if is_take_profit else position.stop_loss) == TriggerOrder(price, 5_000)
        return
    with reverts(
        InvalidTriggerPriceError,
        isTakeProfit=is_take_profit,
        triggerPrice=_fmt(price),
        currentPrice=_fmt(BTC_PRICE),
        revert="InvalidTriggerPrice",
    ):
        transact(trader, call)


@pytest.mark.parametrize("close_bps", [0, 10_001, 65_535])
def test_close_bps_outside_1_to_10000_is_rejected(
    transact: Transact, trader: LocalAccount, open_position: Callable[..., bytes], close_bps: int
) -> None:
    position_id = open_position()
    for is_take_profit, price in ((True, usd("100000")), (False, usd("90000"))):
        with reverts(InvalidCloseBpsError, closeBps=close_bps, revert="InvalidCloseBps"):
            transact(trader, set_trigger(position_id, is_take_profit, price, close_bps))


@pytest.mark.parametrize(
    ("price", "accepted"),
    [(MAX_TRIGGER_PRICE_E8, True), (MAX_TRIGGER_PRICE_E8 + 1, False), (2**256 - 1, False)],
    ids=["uint112-max", "uint112-max-plus-one", "uint256-max"],
)
def test_trigger_price_must_fit_112_bits(
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    price: int,
    accepted: bool,
) -> None:
    position_id = open_position(is_long=True)
    call = set_trigger(position_id, True, price, 1)
    if accepted:
        transact(trader, call)
        assert vault.position(position_id).take_profit == TriggerOrder(price, 1)
        return
    with reverts(InvalidPriceError, price=str(price), revert="InvalidPrice"):
        transact(trader, call)


def test_orders_on_unknown_or_closed_positions_are_position_not_found(
    transact: Transact, trader: LocalAccount, open_position: Callable[..., bytes]
) -> None:
    position_id = open_position()
    transact(trader, calldata.close_position(position_id, CLOSE_ALL_SIZE, 0))
    for missing in (position_id, b"\x07" * 32):
        with reverts(PositionNotFoundError, positionId="0x" + missing.hex()):
            transact(trader, set_trigger(missing, True, usd("100000"), 5_000))
        with reverts(PositionNotFoundError, positionId="0x" + missing.hex()):
            transact(trader, calldata.execute_trigger(missing))


# (is_long, is_take_profit, trigger price, closeBps, a price just short of crossing, the crossing price)
CROSSINGS = [
    pytest.param(True, True, "100000", 2_500, "99999.99999999", "100000", id="long-tp-rises-to-it"),
    pytest.param(True, False, "90000", 10_000, "90000.00000001", "89000.5", id="long-sl-falls-through"),
    pytest.param(False, True, "90000", 5_000, "90000.00000001", "89000", id="short-tp-falls-through"),
    pytest.param(False, False, "100000", 3_333, "99999.99999999", "100000", id="short-sl-rises-to-it"),
]


@pytest.mark.parametrize(
    ("is_long", "is_take_profit", "trigger", "close_bps", "short_of", "crossing"), CROSSINGS
)
def test_execute_a_crossed_order(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    is_long: bool,
    is_take_profit: bool,
    trigger: str,
    close_bps: int,
    short_of: str,
    crossing: str,
) -> None:
    size = units("1.5")
    position_id = open_position(is_long=is_long, size="1.5")
    transact(trader, set_trigger(position_id, is_take_profit, usd(trigger), close_bps))
    # The opposite order, far away, must survive the execution untouched. It is a full order (10_000 bps,
    # "whatever remains"), so it does not count against the plan's partial shares.
    opposite_price = BTC_PRICE + (usd("50000") if is_long != is_take_profit else -usd("50000"))
    transact(trader, set_trigger(position_id, not is_take_profit, opposite_price, 10_000))

    set_market_price("BTCUSDT", short_of)
    with reverts(TriggerNotCrossedError, positionId="0x" + position_id.hex(), currentPrice=short_of):
        transact(stranger, calldata.execute_trigger(position_id))

    set_market_price("BTCUSDT", crossing)
    receipt = transact(stranger, calldata.execute_trigger(position_id))  # anyone may execute

    size_delta, _ = tier_size(size, close_bps, 10_000)  # a new plan: D = 10_000
    assert event_names(contract, receipt) == ["TriggerExecuted", "PositionDecreased"]
    assert event(contract, receipt, "TriggerExecuted") == {
        "positionId": position_id,
        "keeper": stranger.address,
        "orderId": 0 if is_take_profit else 4,
        "isTakeProfit": is_take_profit,
        "triggerPrice": usd(trigger),
        "executionPrice": usd(crossing),
        "sizeDelta": size_delta,
    }
    pnl = realized_pnl_e8(is_long, BTC_PRICE, usd(crossing), size_delta)
    assert event(contract, receipt, "PositionDecreased") == {
        "positionId": position_id,
        "owner": trader.address,
        "sizeDelta": size_delta,
        "remainingSize": size - size_delta,
        "exitPrice": usd(crossing),
        "realizedPnl": pnl,
    }
    assert (pnl > 0) == is_take_profit

    position = vault.position(position_id)
    executed, kept = (
        (position.take_profit, position.stop_loss)
        if is_take_profit
        else (position.stop_loss, position.take_profit)
    )
    assert position.size == size - size_delta
    assert executed == NO_ORDER  # consumed
    if position.size == 0:
        assert kept == NO_ORDER  # a full close clears every order
        with reverts(PositionNotFoundError):
            transact(stranger, calldata.execute_trigger(position_id))
    else:
        assert kept == TriggerOrder(opposite_price, 10_000)
        with reverts(TriggerNotCrossedError, currentPrice=crossing):  # the consumed order cannot fire twice
            transact(stranger, calldata.execute_trigger(position_id))


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
def test_stop_loss_goes_first_when_both_orders_are_crossed(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    is_long: bool,
) -> None:
    """Orders are validated against the price when set, so after a move a TP can sit inside the SL.

    Both are 50% of one plan: the stop closes half of the 2 (D 10_000 -> 5_000), then the take-profit's share
    equals what is left of the plan, so it closes the rest (the size rule), not half of it."""
    away = -1 if is_long else 1  # the losing direction
    position_id = open_position(is_long=is_long, size="2")
    stop_loss = BTC_PRICE + away * usd("1000")
    transact(trader, set_trigger(position_id, False, stop_loss, 5_000))
    set_market_price("BTCUSDT", str(96000 + away * 6000))
    take_profit = BTC_PRICE + away * usd("2000")
    transact(trader, set_trigger(position_id, True, take_profit, 5_000))
    set_market_price("BTCUSDT", str(96000 + away * 1500))  # crosses both

    def execute() -> TxReceipt:
        return transact(stranger, calldata.execute_trigger(position_id))

    first = event(contract, execute(), "TriggerExecuted")
    assert (first["isTakeProfit"], first["triggerPrice"], first["sizeDelta"]) == (
        False,
        stop_loss,
        units("1"),
    )
    assert vault.position(position_id).stop_loss == NO_ORDER
    second = event(contract, execute(), "TriggerExecuted")
    assert (second["isTakeProfit"], second["triggerPrice"], second["sizeDelta"]) == (
        True,
        take_profit,
        units("1"),
    )
    position = vault.position(position_id)
    assert (position.size, position.take_profit) == (0, NO_ORDER)


@pytest.mark.parametrize(
    ("size", "close_bps", "size_delta"),
    [
        (units("1"), 3_333, units("0.3333")),
        (3 * 10**9, 5_000, 15 * 10**8),  # exact half, the rest (1.5e9) is above MIN_REMAINING_SIZE
        (20_000 * 10**9 - 1, 1, 2 * 10**9 - 1),  # 1.9999... rounds down
        (2 * 10**9 - 2, 5_000, 2 * 10**9 - 2),  # would leave 999_999_999 < MIN_REMAINING_SIZE: closes all
        (3, 5_000, 3),  # dust: closed whole
        (1, 9_999, 1),  # share rounds to zero: the dust is closed whole
        (7, 10_000, 7),
    ],
)
def test_trigger_share_rounds_down_and_dust_below_the_minimum_closes_whole(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    set_market_price: Callable[[str, str], None],
    size: int,
    close_bps: int,
    size_delta: int,
) -> None:
    assert contract.functions.tierSize(size, close_bps, 10_000).call() == [size_delta, 10_000 - close_bps]
    opened = event(
        contract,
        transact(trader, calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, size, 0)),
        "PositionOpened",
    )
    position_id = bytes(opened["positionId"])
    transact(trader, set_trigger(position_id, True, usd("97000"), close_bps))
    set_market_price("BTCUSDT", "97000")
    decreased = event(
        contract, transact(stranger, calldata.execute_trigger(position_id)), "PositionDecreased"
    )
    assert (decreased["sizeDelta"], decreased["remainingSize"]) == (size_delta, size - size_delta)
