"""Every MCP tool end to end through the SDK's own client (in-process); errors carry the REST codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from mcp import Client

from relayer.chain.vault import VaultReader
from relayer.domain.positions import TriggerOrder
from relayer.faces.mcp import build_mcp_server
from tests.conftest import units, usd
from tests.trading.conftest import Trading, tool_error, tool_json

TOOLS = {
    "partial_close",
    "close_position",
    "set_take_profit",
    "set_stop_loss",
    "move_to_breakeven",
    "set_exit_plan",
    "cancel_order",
    "emergency_exit",
    "get_orders",
    "get_positions",
    "get_transaction",
    "get_recent_fills",
}


def test_list_tools_describes_every_tool_with_an_api_key_parameter(trading: Trading) -> None:
    async def listing() -> Any:
        async with Client(build_mcp_server(lambda: trading.service)) as client:
            return await client.list_tools()

    tools = {tool.name: tool for tool in trading.run(listing).tools}

    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description is not None
        assert len(tool.description) > 80, tool.name
        assert "scope" in tool.description
        assert "api_key" in tool.input_schema["properties"], tool.name
        assert "api_key" in tool.input_schema["required"], tool.name
    partial = tools["partial_close"].input_schema["properties"]
    assert partial["exit_pct"]["default"] == 50
    assert "1-100" in partial["exit_pct"]["description"]  # documented; enforced by the service
    assert tools["partial_close"].input_schema["required"] == ["symbol", "api_key"]


# (readOnlyHint, destructiveHint, idempotentHint) as each tool truly behaves: a close closes again when called
# again (an idempotency key makes a retry safe, it does not make the tool idempotent); setting an order
# replaces the one before (destructive) and the same order again changes nothing more; a stop that trails from
# the current price, or a whole plan (percents of the size at the call), is a new one when set again later;
# an emergency exit closes whatever is open at the call; reads change nothing.
HINTS = {
    "partial_close": (False, True, False),
    "close_position": (False, True, False),
    "set_take_profit": (False, True, True),
    "set_stop_loss": (False, True, False),
    "move_to_breakeven": (False, True, True),
    "set_exit_plan": (False, True, False),
    "cancel_order": (False, True, True),
    "emergency_exit": (False, True, False),
    "get_orders": (True, False, True),
    "get_positions": (True, False, True),
    "get_transaction": (True, False, True),
    "get_recent_fills": (True, False, True),
}


def test_each_tool_says_what_it_changes_and_in_which_units(trading: Trading) -> None:
    async def listing() -> Any:
        async with Client(build_mcp_server(lambda: trading.service)) as client:
            return await client.list_tools()

    tools = {tool.name: tool for tool in trading.run(listing).tools}
    raw = {tool.name: tool.model_dump(by_alias=True, exclude_none=True) for tool in tools.values()}

    hints = {
        name: (t.annotations.read_only_hint, t.annotations.destructive_hint, t.annotations.idempotent_hint)
        for name, t in tools.items()
        if t.annotations is not None
    }
    assert hints == HINTS
    assert raw["partial_close"]["annotations"]["destructiveHint"] is True  # the wire spelling agents read
    descriptions = {name: tool.description or "" for name, tool in tools.items()}
    for name in ("partial_close", "close_position", "get_positions", "get_recent_fills"):
        assert "base-asset units" in descriptions[name], name
    for name in set(TOOLS) - {"get_transaction"}:
        assert "USD" in descriptions[name], name
    assert "percent" in descriptions["partial_close"]
    assert "percent" in descriptions["set_take_profit"]
    size_delta = tools["close_position"].input_schema["properties"]["size_delta"]
    assert "base-asset units" in size_delta["description"]


def test_every_tool_end_to_end(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
) -> None:
    btc = open_position(market="BTCUSDT", is_long=True, size="1", owner=accounts[1])
    eth = open_position(market="ETHUSDT", is_long=False, size="4", owner=accounts[1])
    set_market_price("BTCUSDT", "96500")
    key = trading.key(accounts[1])
    btc_id, eth_id = "0x" + btc.hex(), "0x" + eth.hex()

    positions = tool_json(trading.mcp("get_positions", {"api_key": key}))
    assert positions == trading.get("/api/trade/positions", key).json()
    assert {p["positionId"] for p in positions["positions"]} == {btc_id, eth_id}
    assert (
        tool_json(trading.mcp("get_positions", {"api_key": key, "symbol": "ETHUSDT"}))["positions"][0][
            "positionId"
        ]
        == eth_id
    )

    dry = tool_json(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": key, "dry_run": True}))
    assert (dry["dry_run"], dry["closed_qty"], dry["exit_price"]) == (True, "0.5", "96500")
    assert trading.relay.journal.all() == []

    tp = tool_json(trading.mcp("set_take_profit", {"position_id": btc_id, "price": "99000", "api_key": key}))
    assert tp["takeProfit"] == {"price": "99000", "closeBps": 10000}
    sl = tool_json(
        trading.mcp("set_stop_loss", {"position_id": btc_id, "price": 95000, "close_pct": 25, "api_key": key})
    )
    assert sl["stopLoss"] == {"price": "95000", "closeBps": 2500}
    even = tool_json(trading.mcp("move_to_breakeven", {"position_id": btc_id, "api_key": key}))
    assert even["stopLoss"] == {"price": "96000", "closeBps": 10000}
    assert vault.position(btc).take_profit == TriggerOrder(usd("99000"), 10_000)
    assert vault.position(btc).stop_loss == TriggerOrder(usd("96000"), 10_000)

    part = tool_json(
        trading.mcp(
            "close_position",
            {"position_id": eth_id, "size_delta": "1.5", "allowed_price": "3600", "api_key": key},
        )
    )
    assert (part["closed_qty"], part["remaining_qty"], part["realized_pnl_usd"]) == ("1.5", "2.5", "0")
    assert vault.position(eth).size == units("2.5")
    full = tool_json(trading.mcp("close_position", {"position_id": eth_id, "api_key": key}))
    assert full["remaining_qty"] == "0"
    assert vault.position(eth).size == 0

    status = tool_json(
        trading.mcp("get_transaction", {"transaction_id": part["transactionId"], "api_key": key})
    )
    assert status["id"] == part["transactionId"]
    assert status["transactionHash"] == part["transactionHash"]
    assert status == trading.get(f"/api/trade/transactions/{part['transactionId']}", key).json()


def _same_error_as_rest(result_error: dict[str, Any], response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    assert result_error["code"] == response.json()["error"]["code"]
    assert result_error["message"] == response.json()["error"]["message"]


@pytest.mark.parametrize("who", ["unknown", "revoked"])
def test_unauthenticated_is_a_tool_error_with_the_rest_code(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount], who: str
) -> None:
    open_position(owner=accounts[1])
    key = "vrk_" + "x" * 32
    if who == "revoked":
        key = trading.key(accounts[1])
        (record,) = trading.runtime.keys.api_keys()
        trading.runtime.keys.revoke_api_key(record.key_id, 1)

    for tool, arguments in (
        ("partial_close", {"symbol": "BTCUSDT"}),
        ("get_positions", {}),
        ("get_transaction", {"transaction_id": "x"}),
    ):
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": key}))
        assert error["code"] == "unauthenticated", tool
    _same_error_as_rest(
        tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": key})),
        trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, key),
        401,
    )


def test_scope_and_ownership_are_tool_errors_with_the_rest_codes(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    theirs = "0x" + open_position(owner=accounts[2]).hex()
    read_only, mine = trading.key(accounts[1], "read"), trading.key(accounts[1])

    scope = tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": read_only}))
    assert scope["details"] == {"required": "trade", "scopes": ["read"]}
    _same_error_as_rest(scope, trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, read_only), 403)

    for tool, arguments in (
        ("close_position", {"position_id": theirs}),
        ("set_take_profit", {"position_id": theirs, "price": "99000"}),
        ("set_stop_loss", {"position_id": theirs, "price": "90000"}),
        ("move_to_breakeven", {"position_id": theirs}),
        ("partial_close", {"symbol": "BTCUSDT", "position_id": theirs}),
    ):
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": mine}))
        assert error["code"] == "not_authorized", tool
    _same_error_as_rest(
        tool_error(trading.mcp("close_position", {"position_id": theirs, "api_key": mine})),
        trading.post("/api/trade/close", {"positionId": theirs}, mine),
        403,
    )
    assert trading.relay.journal.all() == []
    assert vault.position(bytes.fromhex(theirs[2:])).size == units("1")


def test_conflicts_are_tool_errors_with_the_rest_codes(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    long_id = open_position(market="BTCUSDT", is_long=True, owner=accounts[1])
    short_id = open_position(market="BTCUSDT", is_long=False, owner=accounts[1])
    open_position(owner=accounts[3])  # trader 3 never approved the relayer
    key, unapproved = trading.key(accounts[1]), trading.key(accounts[3])

    ambiguous = tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": key}))
    assert ambiguous["code"] == "ambiguous_position"
    assert {p["positionId"] for p in ambiguous["details"]["positions"]} == {
        "0x" + long_id.hex(),
        "0x" + short_id.hex(),
    }
    _same_error_as_rest(ambiguous, trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, key), 409)

    operator = tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "api_key": unapproved}))
    assert operator["code"] == "operator_not_approved"
    assert operator["details"]["signers"] == [s.address for s in trading.signers]
    _same_error_as_rest(operator, trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, unapproved), 409)

    missing = tool_error(trading.mcp("partial_close", {"symbol": "ETHUSDT", "api_key": key}))
    _same_error_as_rest(missing, trading.post("/api/partialclose", {"symbol": "ETHUSDT"}, key), 404)

    resolved = tool_json(trading.mcp("partial_close", {"symbol": "BTCUSDT", "side": "short", "api_key": key}))
    assert resolved["positionId"] == "0x" + short_id.hex()
    assert len(trading.relay.journal.all()) == 1


def test_invalid_arguments_are_tool_errors_and_send_nothing(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    key = trading.key(accounts[1])

    out_of_range = trading.mcp("partial_close", {"symbol": "BTCUSDT", "exit_pct": 101, "api_key": key})
    wrong_side = trading.mcp("partial_close", {"symbol": "BTCUSDT", "side": "sideways", "api_key": key})

    # Bounds are checked by the service, not repeated in the tool schema: the agent gets the REST error JSON.
    rest = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 101}, key)
    assert tool_error(out_of_range) == rest.json()["error"]
    assert tool_error(out_of_range)["details"]["field"] == "exit_pct"
    assert tool_error(wrong_side)["code"] == "invalid_field"
    assert trading.relay.journal.all() == []
