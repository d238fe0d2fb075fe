"""The keeper executes every crossed take-profit and stop-loss exactly once, also across a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.transact import build_transaction
from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import TriggerOrder
from relayer.services.keeper import Keeper
from tests.blocking import Blocking
from tests.conftest import units, usd
from tests.trading.conftest import Mining, Trading, set_automine


def _executed(vault: VaultReader, from_block: int) -> list[dict[str, Any]]:
    logs = vault.contract.events.TriggerExecuted().get_logs(from_block=from_block)
    return [dict(entry["args"]) for entry in logs]


def _set_orders(
    trading: Trading, take_profit_on: bytes, stop_loss_on: bytes, key: str, short_key: str | None = None
) -> None:
    """A 50% take-profit at 97000 on a long and a full stop-loss at 97000 on a short, through the API."""
    tp = trading.post(
        "/api/trade/takeprofit",
        {"positionId": "0x" + take_profit_on.hex(), "price": "97000", "close_pct": 50},
        key,
    )
    sl = trading.post(
        "/api/trade/stoploss", {"positionId": "0x" + stop_loss_on.hex(), "price": "97000"}, short_key or key
    )
    assert tp.status_code == sl.status_code == 200, (tp.text, sl.text)


def test_keeper_executes_a_take_profit_and_a_stop_loss_once_each(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    start = vault.w3.eth.block_number
    long_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    short_id = open_position(market="BTCUSDT", is_long=False, size="0.5", owner=accounts[2])
    _set_orders(trading, long_id, short_id, trading.key(accounts[1]), trading.key(accounts[2]))
    assert trading.keeper.tick() == []  # nothing crossed yet
    set_market_price("BTCUSDT", "96999.99")
    assert trading.keeper.tick() == []

    set_market_price("BTCUSDT", "97000")
    first = trading.keeper.tick()
    trading.settle()

    assert {(e.position_id, e.is_take_profit, e.created) for e in first} == {
        (long_id, True, True),
        (short_id, False, True),
    }
    for execution in first:
        record = trading.relay.get(execution.record_id)
        assert record.status.value == "confirmed"
        assert record.account == vault.position(execution.position_id).owner  # executed for the owner
    executed = _executed(vault, start)
    assert sorted((bytes(e["positionId"]), e["isTakeProfit"]) for e in executed) == sorted(
        [(long_id, True), (short_id, False)]
    )
    assert {e["keeper"] for e in executed} <= {s.address for s in trading.signers}
    long_after, short_after = vault.position(long_id), vault.position(short_id)
    assert long_after.size == units("0.5")
    assert long_after.take_profit == TriggerOrder(0, 0)  # consumed
    assert short_after.size == 0

    assert trading.keeper.tick() == []
    set_market_price("BTCUSDT", "97100")
    assert trading.keeper.tick() == []
    assert trading.relay.tick() == 0
    assert len(_executed(vault, start)) == 2
    assert len(trading.relay.journal.all()) == 4  # 2 orders set + 2 executions, nothing more


def test_keeper_restarted_mid_way_still_executes_each_order_once(
    make_trading: Callable[..., Trading],
    approve_operators: Callable[..., None],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
    mining: Mining,
) -> None:
    """Tick once with automine off (journaled and sent, not mined), stop the whole app, start a new one on the
    same journal, tick again: the new keeper finds its earlier records instead of sending twice."""
    approve_operators(accounts[1])
    start = vault.w3.eth.block_number
    long_id = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    short_id = open_position(market="BTCUSDT", is_long=False, size="0.5", owner=accounts[1])
    before = make_trading()
    _set_orders(before, long_id, short_id, before.key(accounts[1]))
    set_market_price("BTCUSDT", "97000")

    mining.stop()
    sent = before.keeper.tick()
    assert {(e.position_id, e.is_take_profit, e.created) for e in sent} == {
        (long_id, True, True),
        (short_id, False, True),
    }
    assert _executed(vault, start) == []
    before.client.__exit__(None, None, None)  # the process dies with both records in flight

    after = make_trading()
    fresh = Blocking(Keeper(relay=after.relay.inner, from_block=start), after.portal)
    for keeper in (after.keeper, fresh):
        again = keeper.tick()
        assert {(e.position_id, e.record_id, e.created) for e in again} == {
            (e.position_id, e.record_id, False) for e in sent
        }
    mining.mine()
    after.settle()

    executed = _executed(vault, start)
    assert sorted((bytes(e["positionId"]), e["isTakeProfit"]) for e in executed) == sorted(
        [(long_id, True), (short_id, False)]
    )
    assert vault.position(long_id).size == units("0.5")
    assert vault.position(short_id).size == 0
    assert after.keeper.tick() == fresh.tick() == []
    kinds = sorted(r.kind.value for r in after.relay.journal.all())
    assert kinds == ["execute", "execute", "trigger", "trigger"]  # 2 orders set, 2 executed, nothing more
    assert usd("97000") == vault.price("BTCUSDT").price_e8


@pytest.mark.only_backend(
    "anvil"
)  # needs a node that simulates at `latest` while a price move waits in the pool
def test_an_execution_that_reverted_on_chain_does_not_use_the_order_up(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
    deployer: LocalAccount,
    deployment: Deployment,
    chain: Chain,
    mining: Mining,
) -> None:
    start = vault.w3.eth.block_number
    short_id = open_position(market="BTCUSDT", is_long=False, size="0.5", owner=accounts[2])
    sl = trading.post(
        "/api/trade/stoploss",
        {"positionId": "0x" + short_id.hex(), "price": "97000"},
        trading.key(accounts[2]),
    )
    assert sl.status_code == 200, sl.text
    set_market_price("BTCUSDT", "97000")  # crossed

    mining.stop()
    # The price goes back below the stop in the pool first; the keeper simulates at `latest` (still crossed)
    # and its executeTrigger lands after the price move in the same block, where it reverts.
    back = build_transaction(
        chain.w3,
        deployer.address,
        deployment.address,
        calldata.encode_call("setPrice", symbol_to_bytes32("BTCUSDT"), usd("96900")),
    )
    chain.w3.eth.send_raw_transaction(deployer.sign_transaction(back).raw_transaction)
    (failed,) = trading.keeper.tick()
    mining.mine()
    set_automine(chain, True)
    trading.settle()
    assert trading.relay.get(failed.record_id).status.value == "failed"
    assert vault.position(short_id).stop_loss.active  # the order is still there
    assert trading.keeper.tick() == []  # not crossed any more

    set_market_price("BTCUSDT", "97000")
    (retried,) = trading.keeper.tick()
    trading.settle()
    assert retried.created
    assert retried.record_id != failed.record_id
    assert trading.relay.get(retried.record_id).status.value == "confirmed"
    assert [bytes(e["positionId"]) for e in _executed(vault, start)] == [short_id]  # executed exactly once
    assert vault.position(short_id).size == 0
    assert trading.keeper.tick() == []
