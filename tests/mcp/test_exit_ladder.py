"""The seed's tiered exit (issue 12) end to end over MCP, with the real SDK client, on both chains: "close 25%
at TP1, 25% at TP2, 25% at TP3, trail the final 25%" on a 0.42 BTC long, set in one `set_exit_plan` call,
then the keeper running as the oracle price walks through the tiers: each tier closes 0.105 BTC to the unit,
the trailing stop follows the price up (ratcheted) and fires on the last 0.105 when the price falls back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from tests.conftest import units, usd
from tests.trading.conftest import Trading, tool_json

QUARTER = "0.105"
TRAIL_BPS = 200
STOP_ID = 4


def _keeper_until_quiet(trading: Trading) -> list[tuple[str, int]]:
    """Keeper passes, each settled, until one sends nothing; what they sent (action, order id), in order."""
    done: list[tuple[str, int]] = []
    for _ in range(10):
        executions = trading.keeper.tick()
        if not executions:
            return done
        done += [(e.action, e.order_id) for e in executions]
        trading.settle()
    raise AssertionError(f"the keeper never went quiet: {done}")


def _orders(trading: Trading, key: str, position_id: str) -> dict[int, dict[str, Any]]:
    plan = tool_json(trading.mcp("get_orders", {"position_id": position_id, "api_key": key}))
    return {order["orderId"]: order for order in plan["orders"]}


def test_the_seeds_tiered_exit_over_mcp_fills_a_quarter_of_042_three_times_and_trails_the_rest(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    set_market_price("BTCUSDT", "96000")
    position = open_position(market="BTCUSDT", is_long=True, size="0.42", owner=accounts[1])
    position_id = "0x" + position.hex()
    key = trading.key(accounts[1])

    plan = tool_json(
        trading.mcp(
            "set_exit_plan",
            {
                "symbol": "BTCUSDT",
                "take_profits": [  # any order: ids follow the order the price reaches them
                    {"price": "99000", "exit_pct": 25},
                    {"price": "97000", "exit_pct": 25},
                    {"price": "98000", "exit_pct": 25},
                ],
                "trailing_stop": {"trail_bps": TRAIL_BPS},
                "api_key": key,
            },
        )
    )

    assert plan["positionId"] == position_id
    assert plan["planRemainingBps"] == 10_000
    shown = [(o["orderId"], o["type"], o["price"], o["shareBps"], o["trailBps"]) for o in plan["orders"]]
    assert sorted(shown) == [
        (0, "take_profit", "97000", 2_500, 0),
        (1, "take_profit", "98000", 2_500, 0),
        (2, "take_profit", "99000", 2_500, 0),
        (STOP_ID, "trailing_stop", "94080", 10_000, TRAIL_BPS),  # 2% under 96000
    ]
    assert [o["expectedQty"] for o in plan["orders"]] == [QUARTER] * 4
    assert vault.orders_of(position).order(STOP_ID) is not None
    after = tool_json(trading.mcp("get_recent_fills", {"api_key": key}))["cursor"]

    assert _keeper_until_quiet(trading) == []  # at 96000 nothing is crossed, the trail is where it starts
    trails = {"97000": "95060", "98000": "96040", "99000": "97020"}
    for tier, price in enumerate(("97000", "98000", "99000")):
        set_market_price("BTCUSDT", price)
        assert _keeper_until_quiet(trading) == [("execute", tier), ("ratchet", STOP_ID)]
        orders = _orders(trading, key, position_id)
        assert tier not in orders  # executed once, gone
        assert orders[STOP_ID]["price"] == trails[price]  # the trail followed the price up
        assert orders[STOP_ID]["expectedQty"] == QUARTER

    set_market_price("BTCUSDT", "98000")  # falls back: the stop never moves down
    assert _keeper_until_quiet(trading) == []
    assert _orders(trading, key, position_id)[STOP_ID]["price"] == "97020"
    set_market_price("BTCUSDT", "97020")  # reaches the trailed stop: it fires on the rest
    assert _keeper_until_quiet(trading) == [("execute", STOP_ID)]

    fills = tool_json(trading.mcp("get_recent_fills", {"after": after, "api_key": key}))["fills"]
    decreased = [f["data"] for f in fills if f["type"] == "position.decreased"]
    assert [(f["closed_qty"], f["exit_price"]) for f in decreased] == [
        (QUARTER, "97000"),
        (QUARTER, "98000"),
        (QUARTER, "99000"),
        (QUARTER, "97020"),
    ]
    assert [f["remaining_qty"] for f in decreased] == ["0.315", "0.21", "0.105", "0"]
    logs = vault.contract.events.PositionDecreased().get_logs(from_block=0)
    mine = [int(log["args"]["sizeDelta"]) for log in logs if bytes(log["args"]["positionId"]) == position]
    assert mine == [units(QUARTER)] * 4  # to the unit
    assert vault.position(position).size == 0
    assert vault.position(position).entry_price_e8 == usd("96000")
    assert tool_json(trading.mcp("get_positions", {"api_key": key}))["positions"] == []
