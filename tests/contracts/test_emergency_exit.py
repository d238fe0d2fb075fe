"""The emergency exit: every open position of an account (or of one market) closed in one transaction."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.errors import NotAuthorizedError, PriceNotSetError, StalePriceError
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, event_names, events, reverts, reverts_with

EVERY_MARKET = b"\x00" * 32


def exit_call(owner: str, market: bytes = EVERY_MARKET) -> bytes:
    return calldata.encode_call("emergencyExit", owner, market)


def test_closes_every_open_position_of_the_account_and_nothing_else(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    other_trader: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    set_market_price("ETHUSDT", "3000")
    btc_long = open_position(size="0.5")
    btc_short = open_position(is_long=False, size="0.2")
    eth_long = open_position(market="ETHUSDT", size="3")
    already_closed = open_position(size="0.1")
    transact(trader, calldata.close_position(already_closed, 2**256 - 1, 0))
    bystander = open_position(size="1", owner=other_trader)
    transact(trader, calldata.encode_call("setExitPlan", btc_long, [(0, usd("97000"), 2_500, 0)]))

    receipt = transact(trader, exit_call(trader.address))
    assert event_names(contract, receipt) == ["PositionDecreased"] * 3 + ["EmergencyExited"]
    closed = {bytes(e["positionId"]): e for e in events(contract, receipt, "PositionDecreased")}
    assert set(closed) == {btc_long, btc_short, eth_long}
    assert [closed[p]["sizeDelta"] for p in (btc_long, btc_short, eth_long)] == [
        units("0.5"),
        units("0.2"),
        units("3"),
    ]
    assert all(e["remainingSize"] == 0 for e in closed.values())
    assert event(contract, receipt, "EmergencyExited") == {
        "owner": trader.address,
        "market": EVERY_MARKET,
        "caller": trader.address,
        "positionsClosed": 3,
    }
    for position_id in (btc_long, btc_short, eth_long):
        assert contract.functions.getPosition(position_id).call()[3] == 0
        assert contract.functions.ordersOf(position_id).call()[0] == []  # no order outlives its position
    assert contract.functions.getPosition(bystander).call()[3] == units("1")
    # Nothing left: a second exit closes nothing (and says so).
    again = transact(trader, exit_call(trader.address))
    assert event(contract, again, "EmergencyExited")["positionsClosed"] == 0


def test_one_market_only(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    set_market_price("ETHUSDT", "3000")
    btc = open_position(size="0.5")
    eth = open_position(market="ETHUSDT", size="3")
    receipt = transact(trader, exit_call(trader.address, symbol_to_bytes32("ETHUSDT")))
    assert [bytes(e["positionId"]) for e in events(contract, receipt, "PositionDecreased")] == [eth]
    assert contract.functions.getPosition(btc).call()[3] == units("0.5")
    with reverts(PriceNotSetError):
        transact(trader, exit_call(trader.address, symbol_to_bytes32("NOPEUSDT")))


def test_an_operator_with_close_may_exit_others_may_not(
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    open_position(size="0.5")
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, exit_call(trader.address))
    transact(trader, calldata.encode_call("setOperatorRights", stranger.address, 2 | 4 | 8, 0))
    with reverts_with("OperatorRightMissing", operator=stranger.address, right=1):
        transact(stranger, exit_call(trader.address))
    transact(trader, calldata.encode_call("setOperatorRights", stranger.address, 1, 0))
    receipt = transact(stranger, exit_call(trader.address))
    assert event(contract, receipt, "EmergencyExited")["caller"] == stranger.address
    assert event(contract, receipt, "PositionDecreased")["owner"] == trader.address


def test_a_stale_price_stops_the_whole_exit(
    chain: Chain,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    contract: Contract,
) -> None:
    """All or nothing: no position is closed at a price the vault would refuse for a single close."""
    position_id = open_position(size="0.5")
    chain.advance_time(contract.functions.maxPriceAge().call() + 1)
    with reverts(StalePriceError):
        transact(trader, exit_call(trader.address))
    assert contract.functions.getPosition(position_id).call()[3] == units("0.5")
