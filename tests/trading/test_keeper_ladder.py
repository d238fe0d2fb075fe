"""The keeper on exit plans (issue 12): the seed's ladder of three 25% take-profits and a trailing stop on the
rest executes 25/25/25/25 of 0.42 to the unit as the price walks through it, the trail follows the price
(only when the move is worth the gas) and fires; a restart in the middle doubles nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.positions import OrderView
from relayer.services.keeper import Execution, Keeper
from tests.blocking import Blocking
from tests.conftest import units, usd
from tests.trading.conftest import Mining, Trading, set_automine

QUARTER = units("0.105")
TRAIL_BPS = 200
STOP_ID = 4


def _ladder(position_id: bytes) -> bytes:
    """Tiers of 25% at 97000, 98000 and 99000, and a 2% trailing stop for the rest, starting at 94000."""
    return calldata.set_exit_plan(
        position_id,
        [
            (0, usd("97000"), 2_500, 0),
            (1, usd("98000"), 2_500, 0),
            (2, usd("99000"), 2_500, 0),
            (STOP_ID, usd("94000"), 10_000, TRAIL_BPS),
        ],
    )


def _executed(vault: VaultReader, from_block: int) -> list[tuple[int, int]]:
    logs = vault.contract.events.TriggerExecuted().get_logs(from_block=from_block)
    return [(int(entry["args"]["orderId"]), int(entry["args"]["sizeDelta"])) for entry in logs]


def _ratchets(vault: VaultReader, from_block: int) -> list[tuple[int, int]]:
    logs = vault.contract.events.StopRatcheted().get_logs(from_block=from_block)
    return [(int(entry["args"]["previousTrigger"]), int(entry["args"]["trigger"])) for entry in logs]


def _stop_price(vault: VaultReader, position_id: bytes) -> int:
    stop = vault.orders_of(position_id).order(STOP_ID)
    assert stop is not None
    assert stop.trail_bps == TRAIL_BPS
    return stop.price_e8


def _actions(executions: list[Execution]) -> list[tuple[str, int, bool]]:
    return [(e.action, e.order_id, e.created) for e in executions]


def _until_quiet(trading: Trading) -> list[tuple[str, int, bool]]:
    """Keeper passes, each settled, until one submits nothing; what they submitted, in order."""
    done: list[tuple[str, int, bool]] = []
    for _ in range(10):
        executions = trading.keeper.tick()
        if not executions:
            return done
        done += _actions(executions)
        trading.settle()
    raise AssertionError(f"the keeper never went quiet: {done}")


def test_ladder_and_trailing_stop_execute_quarters_of_042_and_the_trail_follows_and_fires(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
) -> None:
    set_market_price("BTCUSDT", "96000")
    start = vault.w3.eth.block_number
    position_id = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    transact(accounts[1], _ladder(position_id))
    keeper = trading.keeper

    # At 96000 the trail would move the stop from 94000 to 94080: 8 bps of the price, below the threshold.
    assert keeper.tick() == []

    expected_stops = {"97000": "95060", "98000": "96040", "99000": "97020"}
    for tier, price in enumerate(("97000", "98000", "99000")):
        set_market_price("BTCUSDT", price)
        assert _actions(keeper.tick()) == [("execute", tier, True)]  # a crossed order first, no ratchet
        trading.settle()
        assert _executed(vault, start)[-1] == (tier, QUARTER)
        assert _actions(keeper.tick()) == [("ratchet", STOP_ID, True)]  # then the trail follows
        trading.settle()
        assert _stop_price(vault, position_id) == usd(expected_stops[price])
        assert keeper.tick() == []  # nothing more at this price

    set_market_price("BTCUSDT", "99040")  # the trail would gain 3.9 bps: not worth a transaction
    assert keeper.tick() == []
    assert _stop_price(vault, position_id) == usd("97020")

    set_market_price("BTCUSDT", "97020")  # back down to the trailed stop: it fires on the rest
    assert _actions(keeper.tick()) == [("execute", STOP_ID, True)]
    trading.settle()

    assert _executed(vault, start) == [(0, QUARTER), (1, QUARTER), (2, QUARTER), (STOP_ID, QUARTER)]
    assert vault.position(position_id).size == 0
    assert _ratchets(vault, start) == [
        (usd("94000"), usd("95060")),
        (usd("95060"), usd("96040")),
        (usd("96040"), usd("97020")),
    ]
    assert keeper.tick() == []
    kinds = sorted(record.kind.value for record in trading.relay.journal.all())
    assert kinds == ["execute"] * 7  # 4 executions + 3 ratchets, each once


def test_ladder_with_the_keeper_restarted_mid_walk_doubles_nothing(
    make_trading: Callable[..., Trading],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
    mining: Mining,
    chain: Chain,
) -> None:
    """An execution and then a ratchet are each sent with mining off, the app dies with them in flight, and a
    new app (and a keeper that scans from scratch) finds its records instead of sending again."""
    set_market_price("BTCUSDT", "96000")
    start = vault.w3.eth.block_number
    position_id = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    transact(accounts[1], _ladder(position_id))

    first = make_trading()
    set_market_price("BTCUSDT", "97000")
    mining.stop()
    sent = first.keeper.tick()
    assert _actions(sent) == [("execute", 0, True)]
    first.client.__exit__(None, None, None)  # the process dies with the execution in flight

    second = make_trading()
    fresh: Blocking[Keeper] = Blocking(Keeper(relay=second.relay.inner, from_block=start), second.portal)
    for keeper in (second.keeper, fresh):
        again = keeper.tick()
        assert [(e.action, e.order_id, e.record_id, e.created) for e in again] == [
            ("execute", 0, sent[0].record_id, False)
        ]
    mining.mine()
    set_automine(chain, True)
    second.settle()
    assert _executed(vault, start) == [(0, QUARTER)]

    mining.stop()
    (ratchet,) = second.keeper.tick()
    assert (ratchet.action, ratchet.created) == ("ratchet", True)
    second.client.__exit__(None, None, None)  # and dies again, with the ratchet in flight

    third = make_trading()
    fresh = Blocking(Keeper(relay=third.relay.inner, from_block=start), third.portal)
    for keeper in (third.keeper, fresh):
        assert _actions(keeper.tick()) == [("ratchet", STOP_ID, False)]
    mining.mine()
    set_automine(chain, True)
    third.settle()
    assert _ratchets(vault, start) == [(usd("94000"), usd("95060"))]
    assert third.keeper.tick() == fresh.tick() == []

    for price in ("98000", "99000"):
        set_market_price("BTCUSDT", price)
        assert _until_quiet(third) == [("execute", int(price[1]) - 7, True), ("ratchet", STOP_ID, True)]
        assert fresh.tick() == []  # the other keeper finds the same records, sends nothing
    set_market_price("BTCUSDT", "95000")
    assert _until_quiet(third) == [("execute", STOP_ID, True)]

    assert _executed(vault, start) == [(0, QUARTER), (1, QUARTER), (2, QUARTER), (STOP_ID, QUARTER)]
    assert vault.position(position_id).size == 0
    assert third.keeper.tick() == fresh.tick() == []
    records: list[Any] = third.relay.journal.all()
    assert sorted(record.kind.value for record in records) == ["execute"] * 7  # 4 executions, 3 ratchets
    assert len(_ratchets(vault, start)) == 3


def test_a_short_trails_upward_from_below_and_its_stop_fires_on_the_rest(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    accounts: list[LocalAccount],
) -> None:
    set_market_price("BTCUSDT", "96000")
    start = vault.w3.eth.block_number
    position_id = open_position(market="BTCUSDT", is_long=False, size="0.42", owner=accounts[2])
    plan = [(0, usd("95000"), 5_000, 0), (5, usd("98000"), 10_000, 100)]  # half at 95000, a 1% trail
    transact(accounts[2], calldata.set_exit_plan(position_id, plan))

    set_market_price("BTCUSDT", "95000")
    assert _until_quiet(trading) == [("execute", 0, True), ("ratchet", 5, True)]
    assert vault.orders_of(position_id).order(5) == OrderView(
        5, False, usd("95950"), 10_000, 100, units("0.21")
    )
    set_market_price("BTCUSDT", "95949.99")  # a short's stop fires at or above its trigger: not yet
    assert _until_quiet(trading) == []
    set_market_price("BTCUSDT", "95950")
    assert _until_quiet(trading) == [("execute", 5, True)]
    assert _executed(vault, start) == [(0, units("0.21")), (5, units("0.21"))]
    assert _ratchets(vault, start) == [(usd("98000"), usd("95950"))]
    assert vault.position(position_id).size == 0
