"""The builder's exit-plan transactions on eth-tester and anvil: `build_orders` (the plan after the change in
its preview), the plan read (`plan`), the close preview's plan after a close, and `build_emergency_exit`.
Each built transaction is signed by the owner and sent: the vault's `ordersOf` then equals the preview's plan
to the unit, and the fills equal the preview's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from web3.logs import DISCARD

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.constants import RIGHT_LOOSEN_OR_CANCEL_STOP, RIGHT_SET_TAKE_PROFIT, RIGHT_TIGHTEN_STOP
from relayer.domain.exit_plans import OrderChange, add_take_profit, rights_needed
from relayer.domain.requests import parse_close_request
from relayer.errors import (
    ExitPlanFullError,
    InvalidTriggerPriceError,
    NothingToChangeError,
    OrderNotFoundError,
    PlanSharesExceededError,
    PositionNotFoundError,
    StalePriceError,
)
from relayer.services.builder import TransactionBuilder
from relayer.services.builder_answers import BuiltTransaction, ClosePreview, ExitPreview, PlanPreview
from tests.blocking import Blocking
from tests.conftest import units, usd


@pytest.fixture
def builder(
    chain: Chain, deployment: Deployment, portal: BlockingPortal
) -> Iterator[Blocking[TransactionBuilder]]:
    client = ChainClient(chain_port(chain), deployment.address)
    portal.call(client.start)
    try:
        yield Blocking(TransactionBuilder(client), portal)
    finally:
        portal.call(client.aclose)


@pytest.fixture
def send_built(chain: Chain, accounts: list[LocalAccount]) -> Callable[[BuiltTransaction[Any]], Any]:
    """Sign a built transaction as its sender (the owner) exactly as returned, send it, wait; the receipt."""
    by_address = {str(a.address): a for a in accounts}

    def _send(built: BuiltTransaction[Any]) -> Any:
        signed = by_address[built.sender].sign_transaction(cast(TransactionDictType, built.transaction))
        receipt = chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
        assert receipt["gasUsed"] <= built.gas_limit
        return receipt

    return _send


def seed_ladder(position_id: bytes) -> OrderChange:
    """The seed's tiered exit: 25% at three prices and a trailing stop (1.5%) for the rest."""
    return OrderChange(
        position_id,
        set=(
            (0, usd("97000"), 2_500, 0),
            (1, usd("98000"), 2_500, 0),
            (2, usd("99000"), 2_500, 0),
            (4, usd("94000"), 10_000, 150),
        ),
        whole_plan=True,
    )


def test_the_seed_ladder_preview_is_the_vaults_plan(
    builder: Blocking[TransactionBuilder],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    send_built: Callable[[BuiltTransaction[Any]], Any],
    accounts: list[LocalAccount],
) -> None:
    set_market_price("BTCUSDT", "96000")
    position_id = open_position(is_long=True, size="0.42")
    built = builder.build_orders(seed_ladder(position_id))
    assert built.action == "set_exit_plan"
    assert built.sender == accounts[1].address
    preview = built.preview
    assert isinstance(preview, PlanPreview)
    shown = preview.to_dict()
    assert shown["planRemainingBps"] == 10_000
    assert shown["size"] == "0.42"
    assert [o["orderId"] for o in shown["orders"]] == [4, 0, 1, 2]  # the vault's execution order
    assert [o["type"] for o in shown["orders"]] == [
        "trailing_stop",
        "take_profit",
        "take_profit",
        "take_profit",
    ]
    assert [o["expectedQty"] for o in shown["orders"]] == ["0.105"] * 4
    assert [o["closesNowQty"] for o in shown["orders"]] == ["0.42", "0.105", "0.105", "0.105"]
    assert shown["orders"][1] == {
        "orderId": 0,
        "type": "take_profit",
        "price": "97000",
        "shareBps": 2_500,
        "trailBps": 0,
        "closesNowQty": "0.105",
        "expectedQty": "0.105",
    }
    send_built(built)
    assert vault.orders_of(position_id) == preview.plan
    read = builder.plan("0x" + position_id.hex())
    assert read.plan == preview.plan
    assert read.to_dict() == shown

    # A fourth tier between the first two ids' prices: no id fits, D is 10000, so the plan is rewritten.
    added = add_take_profit(True, preview.plan, usd("97500"), 1_000, position_id)
    assert added.whole_plan
    with pytest.raises(PlanSharesExceededError):  # 4 x 25% + 10%: the vault's error, before simulating
        builder.build_orders(add_take_profit(True, preview.plan, usd("97500"), 2_600, position_id))
    built = builder.build_orders(added)
    send_built(built)
    after = vault.orders_of(position_id)
    assert after == cast(PlanPreview, built.preview).plan
    assert [(o.order_id, o.price_e8) for o in after.orders if o.is_take_profit] == [
        (0, usd("97000")),
        (1, usd("97500")),
        (2, usd("98000")),
        (3, usd("99000")),
    ]
    with pytest.raises(ExitPlanFullError):
        add_take_profit(True, after, usd("99500"), 100, position_id)

    # Tighten the trailing stop and cancel a tier in one multicall.
    built = builder.build_orders(OrderChange(position_id, set=((4, usd("95000"), 10_000, 100),), cancel=(1,)))
    assert built.action == "set_orders"
    send_built(built)
    assert vault.orders_of(position_id) == cast(PlanPreview, built.preview).plan


def test_refusals_are_precise(
    builder: Blocking[TransactionBuilder],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    chain: Chain,
) -> None:
    set_market_price("BTCUSDT", "96000")
    position_id = open_position(is_long=False, size="0.42")
    with pytest.raises(InvalidTriggerPriceError):  # a short's take-profit above the price
        builder.build_orders(OrderChange(position_id, set=((0, usd("97000"), 2_500, 0),)))
    with pytest.raises(PositionNotFoundError):
        builder.build_orders(OrderChange(b"\x01" * 32, cancel=(0,)))
    with pytest.raises(PositionNotFoundError):
        builder.plan("0x" + "01" * 32)
    chain.advance_time(3_601)
    with pytest.raises(StalePriceError):
        builder.build_orders(OrderChange(position_id, set=((0, usd("95000"), 2_500, 0),)))


def test_a_change_is_judged_on_the_state_it_is_built_on(
    builder: Blocking[TransactionBuilder],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    send_built: Callable[[BuiltTransaction[Any]], Any],
) -> None:
    """The rights a change needs, whether it changes anything and whether a cancelled id holds an order are
    all judged on the build's own read, not on an earlier one the position may have moved on from."""
    set_market_price("BTCUSDT", "96000")
    position_id = open_position(is_long=True, size="0.42")
    stop_at = {
        price: OrderChange(position_id, set=((4, usd(price), 10_000, 0),)) for price in ("94000", "95500")
    }
    first = builder.build_orders(stop_at["94000"])
    assert cast(PlanPreview, first.preview).rights_needed == RIGHT_TIGHTEN_STOP  # a new stop
    send_built(first)
    stale_read = builder.plan("0x" + position_id.hex())  # what a caller saw: the stop at 94000
    send_built(builder.build_orders(stop_at["95500"]))  # meanwhile mined
    later = OrderChange(position_id, set=((4, usd("94500"), 10_000, 0),))
    assert rights_needed(True, stale_read.plan, later) == RIGHT_TIGHTEN_STOP  # judged on the stale read
    built = builder.build_orders(later)  # judged on the chain: looser than the stop now at 95500
    assert cast(PlanPreview, built.preview).rights_needed == RIGHT_LOOSEN_OR_CANCEL_STOP

    with pytest.raises(NothingToChangeError) as repeated:
        builder.build_orders(stop_at["95500"])
    assert repeated.value.code == "nothing_to_change"
    assert repeated.value.http_status == 409
    with pytest.raises(OrderNotFoundError) as missing:
        builder.build_orders(OrderChange(position_id, cancel=(0,)))
    assert missing.value.details["orderId"] == 0
    take_profit = builder.build_orders(OrderChange(position_id, set=((0, usd("98000"), 10_000, 0),)))
    assert cast(PlanPreview, take_profit.preview).rights_needed == RIGHT_SET_TAKE_PROFIT
    stop = vault.orders_of(position_id).order(4)
    assert stop is not None
    assert stop.price_e8 == usd("95500")


def test_the_close_preview_shows_the_plan_after_the_close(
    builder: Blocking[TransactionBuilder],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    send_built: Callable[[BuiltTransaction[Any]], Any],
) -> None:
    set_market_price("BTCUSDT", "96000")
    position_id = open_position(is_long=True, size="0.42")
    send_built(builder.build_orders(seed_ladder(position_id)))
    # Half closed by hand and the primary take-profit moved: the tiers keep their shape of what remains.
    body = {
        "positionId": "0x" + position_id.hex(),
        "sizeDelta": "0.21",
        "takeProfit": "97200",
        "takeProfitClosePercent": 2500,
    }
    built = builder.build(parse_close_request(body))
    preview = built.preview
    assert isinstance(preview, ClosePreview)
    assert preview.plan is not None
    shown = preview.to_dict()
    assert shown["takeProfit"] == {"price": "97200", "closeBps": 2500}
    assert shown["planRemainingBps"] == 10_000
    assert [o["expectedQty"] for o in shown["orders"]] == ["0.0525"] * 4
    assert shown["orders"][1]["price"] == "97200"
    send_built(built)
    assert vault.orders_of(position_id) == preview.plan

    # Cancelling the primary stop (price 0) and a full close: no orders left.
    built = builder.build(parse_close_request({"positionId": "0x" + position_id.hex(), "stopLoss": "0"}))
    send_built(built)
    assert vault.orders_of(position_id) == cast(ClosePreview, built.preview).plan
    built = builder.build(parse_close_request({"positionId": "0x" + position_id.hex()}))
    assert cast(ClosePreview, built.preview).to_dict()["orders"] == []
    send_built(built)
    assert vault.orders_of(position_id).orders == ()


def test_emergency_exit_closes_what_its_preview_lists(
    builder: Blocking[TransactionBuilder],
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    send_built: Callable[[BuiltTransaction[Any]], Any],
    accounts: list[LocalAccount],
    chain: Chain,
) -> None:
    owner = accounts[1].address
    set_market_price("BTCUSDT", "96000")
    set_market_price("ETHUSDT", "3000")
    btc = open_position(is_long=True, size="0.42")
    eth = open_position(market="ETHUSDT", is_long=False, size="2")
    closed = open_position(is_long=True, size="0.1")
    send_built(builder.build(parse_close_request({"positionId": "0x" + closed.hex()})))
    set_market_price("BTCUSDT", "97000")

    only_eth = builder.build_emergency_exit(owner, "ETHUSDT")
    assert [p["positionId"] for p in cast(ExitPreview, only_eth.preview).to_dict()["positions"]] == [
        "0x" + eth.hex()
    ]
    built = builder.build_emergency_exit(owner.lower(), None)
    assert built.action == "emergency_exit"
    assert built.sender == owner
    shown = cast(ExitPreview, built.preview).to_dict()
    assert shown["owner"] == owner
    assert shown["market"] is None
    assert shown["positions"] == [
        {
            "positionId": "0x" + btc.hex(),
            "symbol": "BTCUSDT",
            "side": "long",
            "closed_qty": "0.42",
            "exit_price": "97000",
            "realized_pnl_usd": "420",
        },
        {
            "positionId": "0x" + eth.hex(),
            "symbol": "ETHUSDT",
            "side": "short",
            "closed_qty": "2",
            "exit_price": "3000",
            "realized_pnl_usd": "0",
        },
    ]
    receipt = send_built(built)
    fills = vault.contract.events.PositionDecreased().process_receipt(receipt, errors=DISCARD)
    assert [
        (bytes(f["args"]["positionId"]), f["args"]["sizeDelta"], f["args"]["realizedPnl"]) for f in fills
    ] == [
        (btc, units("0.42"), usd("420")),
        (eth, units("2"), 0),
    ]
    assert vault.position(btc).size == vault.position(eth).size == 0
    with pytest.raises(PositionNotFoundError):
        builder.build_emergency_exit(owner, None)

    again = open_position(is_long=True, size="0.1")
    assert again
    chain.advance_time(3_601)
    with pytest.raises(StalePriceError):
        builder.build_emergency_exit(owner, "BTCUSDT")
    with pytest.raises(PositionNotFoundError):  # nothing open in that market
        builder.build_emergency_exit(owner, "ETHUSDT")
