"""Tool arguments are taken exactly as each tool's schema declares them; every refusal is the REST error body.

An unknown argument (a REST spelling such as `sizeDelta`, a guess such as `exit_percent`) must be refused, not
dropped: dropped, `sizeDelta` turned a partial close into a close of the whole position and `dryRun` sent a
real transaction. Each refusal here also checks that nothing was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any, cast

import anyio
from eth_account.signers.local import LocalAccount
from mcp import Client
from mcp_types import CallToolResult

from relayer import __version__
from relayer.chain.vault import VaultReader
from relayer.errors import InvalidFieldError, InvalidMarketError, RelayerError
from relayer.faces import mcp_tools
from relayer.faces.mcp import build_mcp_server
from relayer.services import trading_requests
from relayer.services.trading import TradingService
from tests.conftest import units
from tests.trading.conftest import Trading, tool_error, tool_json

TOOL_REST_PATHS = {
    "partial_close": "/api/partialclose",
    "close_position": "/api/trade/close",
    "set_take_profit": "/api/trade/takeprofit",
    "set_stop_loss": "/api/trade/stoploss",
    "move_to_breakeven": "/api/trade/breakeven",
}


def _valid_arguments(position_id: str) -> dict[str, dict[str, Any]]:
    """Per tool, arguments it accepts (without `api_key`)."""
    return {
        "partial_close": {"symbol": "BTCUSDT", "position_id": position_id},
        "close_position": {"position_id": position_id},
        "set_take_profit": {"position_id": position_id, "price": "99000"},
        "set_stop_loss": {"position_id": position_id, "price": "90000"},
        "move_to_breakeven": {"position_id": position_id},
        "get_positions": {},
        "get_transaction": {"transaction_id": "tx-1"},
    }


def _no_service() -> TradingService:
    raise AssertionError("a refused call must not reach the service")


def _call_without_chain(provider: Callable[[], TradingService], tool: str, arguments: dict[str, Any]) -> Any:
    async def call() -> CallToolResult:
        async with Client(build_mcp_server(provider)) as client:
            return await client.call_tool(tool, arguments)

    return anyio.run(call)


def test_every_tool_schema_says_no_additional_properties() -> None:
    async def listing() -> Any:
        async with Client(build_mcp_server(_no_service)) as client:
            return await client.list_tools()

    tools = anyio.run(listing).tools

    assert len(tools) == 12
    for tool in tools:
        assert tool.input_schema["additionalProperties"] is False, tool.name
        assert tool.input_schema["type"] == "object", tool.name


def test_server_info_carries_the_package_version() -> None:
    async def info() -> Any:
        async with Client(build_mcp_server(_no_service)) as client:
            return client.server_info

    server_info = anyio.run(info)

    assert server_info is not None
    assert (server_info.name, server_info.version) == ("vault-relayer", __version__)
    assert __version__ == version("vault-relayer")  # the installed package's, not a second constant


def test_close_position_refuses_the_rest_spelling_and_sends_nothing(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid, key = "0x" + position.hex(), trading.key(accounts[1])

    for extra in (
        {"sizeDelta": "0.001", "dry_run": True},
        {"sizeDelta": "0.001"},  # before: a close of the WHOLE position
        {"size_delta": "0.001", "sizeDelta": "0.001"},  # both spellings: still refused, never merged
    ):
        result = trading.mcp("close_position", {"position_id": pid, "api_key": key, **extra})
        assert result.is_error, extra
        error = tool_error(result)
        assert error == {
            "code": "invalid_field",
            "message": (
                "sizeDelta: is not a field of this request (fields: position_id, api_key, size_delta, "
                "allowed_price, max_slippage_bps, dry_run, idempotency_key)"
            ),
            "details": {"field": "sizeDelta"},
        }, extra

    assert vault.position(position).size == units("1")
    assert trading.relay.journal.all() == []
    # REST refuses the MCP spelling the same way, in the same words.
    rest = trading.post("/api/trade/close", {"positionId": pid, "size_delta": "0.001"}, key)
    assert rest.status_code == 422
    assert rest.json()["error"]["details"] == {"field": "size_delta"}
    assert rest.json()["error"]["message"].startswith("size_delta: is not a field of this request (fields: ")


def test_every_tool_refuses_an_unknown_argument_and_sends_nothing(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid, key = "0x" + position.hex(), trading.key(accounts[1])
    valid = _valid_arguments(pid)

    for tool, unknown in (
        ("partial_close", {"exit_percent": 10}),  # before: closed the default 50%
        ("partial_close", {"dryRun": True}),  # before: ignored, and a real close was sent
        ("close_position", {"dryRun": True}),
        ("set_take_profit", {"closePct": 10}),
        ("set_stop_loss", {"dryRun": True}),
        ("move_to_breakeven", {"dryRun": True}),
        ("get_positions", {"market": "ETHUSDT"}),
        ("get_transaction", {"transactionId": "tx-1"}),
    ):
        (name,) = unknown
        error = tool_error(trading.mcp(tool, {**valid[tool], "api_key": key, **unknown}))
        assert error["code"] == "invalid_field", tool
        assert error["details"] == {"field": name}, tool
        assert error["message"].startswith(f"{name}: is not a field of this request (fields: "), tool
        listed = error["message"].partition("(fields: ")[2].removesuffix(")").split(", ")
        assert "api_key" in listed, tool
        assert set(valid[tool]) <= set(listed), tool

    assert vault.position(position).size == units("1")
    assert not vault.position(position).take_profit.active
    assert trading.relay.journal.all() == []


def test_a_wrong_type_is_invalid_field_naming_the_argument_and_sends_nothing(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid, key = "0x" + position.hex(), trading.key(accounts[1])
    valid = _valid_arguments(pid)

    for tool, argument, value, expected in (
        ("partial_close", "exit_pct", 33.5, "an integer"),
        ("partial_close", "exit_pct", "33", "an integer"),
        ("partial_close", "exit_pct", 33.0, "an integer"),  # a JSON float never stands for an integer
        ("partial_close", "exit_pct", True, "an integer"),
        ("partial_close", "dry_run", "true", "true or false"),
        ("partial_close", "dry_run", 0, "true or false"),
        ("partial_close", "symbol", 5, "a string"),
        ("close_position", "size_delta", 0.5, "a string or an integer"),  # money is never a float
        ("close_position", "allowed_price", 96000.5, "a string or an integer"),
        ("close_position", "max_slippage_bps", "50", "an integer"),
        ("close_position", "position_id", 5, "a string"),
        ("close_position", "idempotency_key", 5, "a string"),
        ("set_take_profit", "price", 99000.0, "a string or an integer"),
        ("set_stop_loss", "close_pct", 25.0, "an integer"),
        ("move_to_breakeven", "position_id", ["0x"], "a string"),
        ("get_positions", "symbol", {"symbol": "BTCUSDT"}, "a string"),
        ("get_transaction", "transaction_id", 7, "a string"),
    ):
        result = trading.mcp(tool, {**valid[tool], "api_key": key, argument: value})
        assert result.is_error, (tool, argument, value)
        assert tool_error(result) == {
            "code": "invalid_field",
            "message": f"{argument}: must be {expected}",
            "details": {"field": argument},
        }, (tool, argument, value)

    assert vault.position(position).size == units("1")
    assert trading.relay.journal.all() == []


def test_a_string_is_not_reread_as_json(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid, key = "0x" + position.hex(), trading.key(accounts[1])

    # The SDK's default turned "null" into an absent argument: no price bound at all, silently.
    bound = tool_error(
        trading.mcp("close_position", {"position_id": pid, "allowed_price": "null", "api_key": key})
    )
    side = tool_error(trading.mcp("partial_close", {"symbol": "BTCUSDT", "side": "null", "api_key": key}))

    assert (bound["code"], bound["details"]["field"]) == ("invalid_field", "allowed_price")
    assert (side["code"], side["details"]["field"]) == ("invalid_field", "side")
    assert vault.position(position).size == units("1")
    assert trading.relay.journal.all() == []


def test_a_missing_argument_is_invalid_field_naming_it(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    pid, key = "0x" + open_position(owner=accounts[1]).hex(), trading.key(accounts[1])
    valid = _valid_arguments(pid)

    for tool, missing in (
        ("partial_close", "symbol"),
        ("close_position", "position_id"),
        ("set_take_profit", "price"),
        ("set_stop_loss", "position_id"),
        ("move_to_breakeven", "position_id"),
        ("get_transaction", "transaction_id"),
    ):
        arguments = {name: value for name, value in valid[tool].items() if name != missing}
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": key}))
        assert error == {
            "code": "invalid_field",
            "message": f"{missing}: is required",
            "details": {"field": missing},
        }, tool
    assert trading.relay.journal.all() == []


def test_no_api_key_is_unauthenticated_as_in_rest(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid = "0x" + position.hex()
    rest = trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, None)
    assert rest.status_code == 401
    unauthenticated = rest.json()["error"]

    for tool, arguments in _valid_arguments(pid).items():
        for no_key in ({}, {"api_key": None}, {"api_key": ""}):
            result = trading.mcp(tool, {**arguments, **no_key})
            assert result.is_error, (tool, no_key)
            assert tool_error(result) == unauthenticated, (tool, no_key)
    for tool, path in TOOL_REST_PATHS.items():
        assert trading.post(path, {}, None).json()["error"] == unauthenticated, tool

    assert vault.position(position).size == units("1")
    assert trading.relay.journal.all() == []


def _renamed(rest_error: dict[str, Any], field: str, argument: str) -> dict[str, Any]:
    """The REST error about `field` as the MCP tool words it about its `argument`."""
    assert rest_error["message"].startswith(f"{field}: ")
    return {
        "code": rest_error["code"],
        "message": argument + rest_error["message"].removeprefix(field),
        "details": {**rest_error["details"], "field": argument},
    }


def test_a_refused_field_is_named_as_the_tool_argument(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position = open_position(owner=accounts[1], size="1")
    pid, key = "0x" + position.hex(), trading.key(accounts[1])

    for tool, arguments, body, field, argument in (
        ("close_position", {"size_delta": "abc"}, {"sizeDelta": "abc"}, "sizeDelta", "size_delta"),
        (
            "close_position",
            {"size_delta": "0.0000000000000000001"},
            {"sizeDelta": "0.0000000000000000001"},
            "sizeDelta",
            "size_delta",
        ),
        (
            "close_position",
            {"allowed_price": "1", "max_slippage_bps": 5},
            {"allowedPrice": "1", "maxSlippageBps": 5},
            "maxSlippageBps",
            "max_slippage_bps",
        ),
        (
            "close_position",
            {"max_slippage_bps": 10_000},
            {"maxSlippageBps": 10_000},
            "maxSlippageBps",
            "max_slippage_bps",
        ),
        ("set_take_profit", {"price": "-1"}, {"price": "-1"}, "price", "price"),
        ("partial_close", {"exit_pct": 0}, {"exit_pct": 0}, "exit_pct", "exit_pct"),
    ):
        mcp_arguments = {**_valid_arguments(pid)[tool], **arguments, "api_key": key}
        rest_body = {"positionId": pid, **({"symbol": "BTCUSDT"} if tool == "partial_close" else {}), **body}
        rest = trading.post(TOOL_REST_PATHS[tool], rest_body, key)
        assert rest.status_code == 422, (tool, rest.text)
        assert tool_error(trading.mcp(tool, mcp_arguments)) == _renamed(rest.json()["error"], field, argument)

    bad_id = tool_error(trading.mcp("move_to_breakeven", {"position_id": "0x12", "api_key": key}))
    assert (bad_id["code"], bad_id["details"]["field"]) == ("invalid_field", "position_id")
    assert bad_id["message"].startswith("position_id: ")
    no_id = tool_error(trading.mcp("get_transaction", {"transaction_id": "", "api_key": key}))
    assert (no_id["code"], no_id["details"]["field"]) == ("invalid_field", "transaction_id")
    too_much = tool_error(
        trading.mcp("close_position", {"position_id": pid, "size_delta": "2", "api_key": key})
    )
    assert too_much["code"] == "size_delta_exceeds_position"  # not a field error: passed on as it is
    assert vault.position(position).size == units("1")
    assert trading.relay.journal.all() == []


def test_numbers_are_read_by_the_same_parser_as_rest(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    pid, key = "0x" + open_position(owner=accounts[1], size="1").hex(), trading.key(accounts[1])

    for text in (" 0.1 ", "0.1", "+0.1", "1e-1", ".1", "0.1\n", "0x1", "1_0", "", "\u0660.\u0661"):
        rest = trading.post("/api/trade/close", {"positionId": pid, "sizeDelta": text, "dry_run": True}, key)
        tool = trading.mcp(
            "close_position", {"position_id": pid, "size_delta": text, "dry_run": True, "api_key": key}
        )
        if rest.status_code == 200:
            assert tool_json(tool) == rest.json(), repr(text)
        else:
            assert tool_error(tool) == _renamed(rest.json()["error"], "sizeDelta", "size_delta"), repr(text)
    assert trading.relay.journal.all() == []


def test_an_unknown_tool_is_invalid_field_naming_the_tools() -> None:
    error = tool_error(_call_without_chain(_no_service, "close_all", {"api_key": "vrk_x"}))

    assert error["code"] == "invalid_field"
    assert error["details"] == {"field": "name"}
    assert error["message"].startswith("name: is not a tool of this server (tools: partial_close, ")


def test_a_crash_in_a_tool_is_internal_error_without_its_text() -> None:
    def crashing() -> TradingService:
        raise RuntimeError("secret detail of a bug")

    result = _call_without_chain(crashing, "get_positions", {"api_key": "vrk_x"})

    assert tool_error(result) == RelayerError("internal error; see the server log").to_dict()
    assert "secret" not in result.content[0].text


class _Refusing:
    """A stand-in service whose `close_position` refuses with the given error, for the renaming rule alone."""

    def __init__(self, error: RelayerError) -> None:
        self.error = error

    async def close_position(self, api_key: str | None, body: Any, **_: Any) -> Any:
        raise self.error

    def as_service(self) -> TradingService:
        """The stand-in where the server expects the service (the test only reaches `close_position`)."""
        return cast(TradingService, self)


def test_a_renamed_field_error_keeps_its_class_code_and_details() -> None:
    pid = "0x" + "ab" * 32

    for error, code in (
        (InvalidFieldError("sizeDelta", "has more than 18 decimal places", max_decimals=18), "invalid_field"),
        (InvalidMarketError("positionId", "is in another market"), "invalid_market"),  # a subclass
        (InvalidFieldError("symbol", "is not a market"), "invalid_field"),  # not renamed by close_position
    ):
        provider = _Refusing(error).as_service
        body = tool_error(_call_without_chain(provider, "close_position", {"position_id": pid}))
        argument = {"sizeDelta": "size_delta", "positionId": "position_id"}.get(
            error.details["field"], "symbol"
        )
        assert body == {
            "code": code,
            "message": argument + error.message.removeprefix(error.details["field"]),
            "details": {**error.details, "field": argument},
        }, error


def test_every_tool_argument_maps_to_a_field_the_service_takes() -> None:
    """A tool argument missing from its table would crash `_body`; a table naming a field the service does
    not take would be refused as unknown by the service. Both directions, for every tool."""
    tables = {
        "partial_close": (mcp_tools.PARTIAL_CLOSE_FIELDS, trading_requests.PARTIAL_CLOSE_FIELDS),
        "close_position": (mcp_tools.CLOSE_POSITION_FIELDS, trading_requests.CLOSE_FIELDS),
        "set_take_profit": (mcp_tools.TAKE_PROFIT_FIELDS, trading_requests.TAKE_PROFIT_FIELDS),
        "set_stop_loss": (mcp_tools.STOP_LOSS_FIELDS, trading_requests.STOP_LOSS_FIELDS),
        "move_to_breakeven": (mcp_tools.BREAKEVEN_FIELDS, trading_requests.BREAKEVEN_FIELDS),
        "set_exit_plan": (mcp_tools.EXIT_PLAN_FIELDS, trading_requests.EXIT_PLAN_FIELDS),
        "cancel_order": (mcp_tools.CANCEL_ORDER_FIELDS, trading_requests.CANCEL_ORDER_FIELDS),
        "emergency_exit": (mcp_tools.EMERGENCY_EXIT_FIELDS, trading_requests.EMERGENCY_EXIT_FIELDS),
        "get_orders": (mcp_tools.GET_ORDERS_FIELDS, trading_requests.ORDERS_FIELDS),
        "get_positions": (mcp_tools.GET_POSITIONS_FIELDS, ("symbol",)),
        "get_transaction": (mcp_tools.GET_TRANSACTION_FIELDS, ("transactionId",)),
        "get_recent_fills": (mcp_tools.GET_RECENT_FILLS_FIELDS, ("after", "limit")),
    }

    async def listing() -> Any:
        async with Client(build_mcp_server(_no_service)) as client:
            return await client.list_tools()

    for tool in anyio.run(listing).tools:
        table, service_fields = tables[tool.name]
        arguments = set(tool.input_schema["properties"]) - {"api_key", "idempotency_key"}
        assert arguments == set(table), tool.name
        assert set(table.values()) == set(service_fields), tool.name
