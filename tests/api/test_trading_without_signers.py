"""A server without relayer signers still serves reads by API key; what sends (or reads relay records) is 503.

The API keys have their own store, so positions are read with a key on a node the relayer cannot send on
(REST and MCP alike), while the trading actions, `get_transaction` and the relay routes answer
`relay_not_configured`, decided in one place (`Runtime.require_relay`). The key store of such a server never
makes the journal file: a key made after the server started (the file appears then) works at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import Client
from mcp_types import CallToolResult

from relayer.faces.cli import keys as keys_cli
from relayer.faces.mcp import build_mcp_server
from relayer.runtime import Runtime
from relayer.stores.keys import SqliteKeyStore
from tests.trading.conftest import tool_error, tool_json

CLOSE_33 = {"symbol": "BTCUSDT", "exit_pct": 33}


def _runtime(client: TestClient) -> Runtime:
    app = client.app
    assert isinstance(app, FastAPI)
    runtime: Runtime = app.state.runtime
    return runtime


def _key(client: TestClient, owner: LocalAccount, scopes: str = "read,trade") -> str:
    """A key made as `relayer keys create` makes it: by its own store on the server's journal file."""
    with closing(SqliteKeyStore(_runtime(client).settings.relay.journal_path)) as store:
        key, _ = keys_cli.create_key(store, account=owner.address, scopes=scopes)
    return key


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _mcp(client: TestClient, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    """A tool call on the server's own trading service, as `relayer mcp` serves it, on the app's loop."""
    runtime = _runtime(client)

    async def call() -> CallToolResult:
        async with Client(build_mcp_server(lambda: runtime.trading)) as mcp:
            return await mcp.call_tool(tool, arguments)

    portal = client.portal
    assert portal is not None
    result: CallToolResult = portal.call(call)
    return result


def test_the_server_has_no_relay_and_has_not_made_a_journal_file(client: TestClient) -> None:
    runtime = _runtime(client)

    assert runtime.relay is None
    assert not Path(runtime.settings.relay.journal_path).exists()


def test_positions_by_api_key_need_no_relayer_signer(
    client: TestClient, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    long_id = open_position(owner=accounts[1])
    short_id = open_position(owner=accounts[1], market="ETHUSDT", is_long=False)
    open_position(owner=accounts[2])  # another account's: never listed
    key = _key(client, accounts[1], "read")  # made while the server runs, in a file it did not make

    response = client.get("/api/trade/positions", headers=_bearer(key))
    one_market = client.get("/api/trade/positions", headers=_bearer(key), params={"symbol": "ETHUSDT"})
    by_tool = tool_json(_mcp(client, "get_positions", {"api_key": key}))

    assert response.status_code == 200, response.text
    assert response.json()["account"] == accounts[1].address
    assert {p["positionId"] for p in response.json()["positions"]} == {
        "0x" + long_id.hex(),
        "0x" + short_id.hex(),
    }
    assert [p["positionId"] for p in one_market.json()["positions"]] == ["0x" + short_id.hex()]
    assert by_tool == response.json()
    long_hex = "0x" + long_id.hex()
    orders = client.get("/api/trade/orders", headers=_bearer(key), params={"positionId": long_hex})
    assert orders.status_code == 200, orders.text
    assert orders.json()["orders"] == []
    assert tool_json(_mcp(client, "get_orders", {"api_key": key, "position_id": long_hex})) == orders.json()
    (stored,) = _runtime(client).keys.api_keys()
    assert stored.last_used_at is not None


def test_keys_are_checked_as_on_a_relaying_server(
    client: TestClient, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    trade_only = _key(client, accounts[1], "trade")

    unknown = client.get("/api/trade/positions", headers=_bearer("vrk_" + "A" * 32))
    no_scope = client.get("/api/trade/positions", headers=_bearer(trade_only))
    by_tool = tool_error(_mcp(client, "get_positions", {"api_key": trade_only}))

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "unauthenticated")
    assert (no_scope.status_code, no_scope.json()["error"]["code"]) == (403, "insufficient_scope")
    assert by_tool["code"] == "insufficient_scope"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/partialclose", CLOSE_33),
        ("/api/trade/close", {"positionId": "0x" + "ab" * 32}),
        ("/api/trade/takeprofit", {"positionId": "0x" + "ab" * 32, "price": "99000"}),
        ("/api/trade/stoploss", {"positionId": "0x" + "ab" * 32, "price": "90000"}),
        ("/api/trade/breakeven", {"positionId": "0x" + "ab" * 32}),
        ("/api/trade/exitplan", {"symbol": "BTCUSDT", "take_profits": [{"price": "99000", "exit_pct": 25}]}),
        ("/api/trade/orders/cancel", {"positionId": "0x" + "ab" * 32, "orderId": 0}),
        ("/api/trade/emergencyexit", {}),
        ("/api/relay/raw", {"transaction": "0x00"}),
    ],
)
def test_what_sends_is_503_relay_not_configured(
    client: TestClient,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    path: str,
    body: dict[str, Any],
) -> None:
    open_position(owner=accounts[1])
    key = _key(client, accounts[1])

    response = client.post(path, json=body, headers=_bearer(key))

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "relay_not_configured"


def test_relay_records_are_503_relay_not_configured(client: TestClient, accounts: list[LocalAccount]) -> None:
    key = _key(client, accounts[1])

    for response in (
        client.get("/api/trade/transactions/some-id", headers=_bearer(key)),
        client.get("/api/transactions/some-id"),
        client.get("/api/transactions", headers=_bearer(key)),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "relay_not_configured"
    for tool, arguments in (
        ("partial_close", {"symbol": "BTCUSDT", "exit_pct": 33}),
        ("get_transaction", {"transaction_id": "some-id"}),
    ):
        assert tool_error(_mcp(client, tool, {**arguments, "api_key": key}))["code"] == "relay_not_configured"
