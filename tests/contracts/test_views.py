"""Views: unknown and closed positions, position lists, prices, accumulated PnL, constants."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.chain.vault import VaultReader, position_from_tuple
from relayer.constants import BPS_DENOMINATOR, CLOSE_ALL_SIZE, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import TriggerOrder, realized_pnl_e8
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EMPTY_VIEW = (ZERO_ADDRESS, b"\0" * 32, False, 0, 0, (0, 0), (0, 0))


def test_unknown_position_is_all_zero(contract: Contract, vault: VaultReader) -> None:
    unknown = b"\x99" * 32
    assert contract.functions.getPosition(unknown).call() == EMPTY_VIEW
    assert contract.functions.getPositionWithPrice(unknown).call() == [EMPTY_VIEW, 0, 0]
    position = vault.position(unknown)
    assert not position.exists
    assert not position.is_open


def test_closed_position_keeps_its_identity_but_no_size_or_orders(
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    position_id = open_position(is_long=False, market="ETHUSDT", size="3")
    transact(trader, calldata.set_take_profit(position_id, usd("3000"), 5_000))
    transact(trader, calldata.set_stop_loss(position_id, usd("4000"), 5_000))
    transact(trader, calldata.close_position(position_id, CLOSE_ALL_SIZE, 0))

    position = vault.position(position_id)
    assert position.exists
    assert not position.is_open
    assert (position.owner, position.market, position.is_long) == (trader.address, "ETHUSDT", False)
    assert (position.entry_price_e8, position.size) == (usd("3500"), 0)
    assert position.take_profit == position.stop_loss == TriggerOrder(0, 0)
    assert vault.position_ids_of(trader.address) == [position_id]  # closed ones stay listed


def test_get_position_with_price_matches_get_position_and_price_of(
    contract: Contract,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    position_id = open_position(market="SOLUSDT", size="10")
    set_market_price("SOLUSDT", "201.25")
    raw, price, updated_at = contract.functions.getPositionWithPrice(position_id).call()
    assert position_from_tuple(position_id, raw) == vault.position(position_id)
    assert [price, updated_at] == contract.functions.priceOf(symbol_to_bytes32("SOLUSDT")).call()
    assert price == usd("201.25")
    assert updated_at > 0


def test_price_of_an_unlisted_market_is_zero(contract: Contract) -> None:
    assert contract.functions.priceOf(symbol_to_bytes32("NOPEUSDT")).call() == [0, 0]


def test_realized_pnl_totals_are_the_sum_of_the_events(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    other_trader: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    long_id = open_position(is_long=True, size="0.3")
    short_id = open_position(is_long=False, size="0.2")
    set_market_price("BTCUSDT", "96123.45678901")
    booked = []
    for position_id, size_delta in (
        (long_id, units("0.1")),
        (short_id, units("0.2")),
        (long_id, CLOSE_ALL_SIZE),
    ):
        receipt = transact(trader, calldata.close_position(position_id, size_delta, 0))
        booked.append(event(contract, receipt, "PositionDecreased")["realizedPnl"])
    exit_price = usd("96123.45678901")
    assert booked == [
        realized_pnl_e8(True, usd("96000"), exit_price, units("0.1")),
        realized_pnl_e8(False, usd("96000"), exit_price, units("0.2")),
        realized_pnl_e8(True, usd("96000"), exit_price, units("0.2")),
    ]
    assert booked[0] > 0 > booked[1]
    # No total in storage (issue 12: a first close no longer pays 22,100 gas for it): totals come from events.
    assert not any(item.get("name") == "realizedPnlOf" for item in contract.abi)
    logs = contract.events.PositionDecreased().get_logs(
        from_block=0, argument_filters={"owner": trader.address}
    )
    assert sum(log["args"]["realizedPnl"] for log in logs) == sum(booked)
    assert (
        contract.events.PositionDecreased().get_logs(
            from_block=0, argument_filters={"owner": other_trader.address}
        )
        == []
    )


def test_constants(contract: Contract) -> None:
    assert contract.functions.CLOSE_ALL().call() == CLOSE_ALL_SIZE
    assert contract.functions.BPS_DENOMINATOR().call() == BPS_DENOMINATOR
    assert contract.functions.SIZE_ONE().call() == 10**SIZE_DECIMALS
