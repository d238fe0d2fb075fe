"""API keys' expiry and market limits on the trading service, over REST and the MCP tools alike (both call
`TradingService`): an expired key is 401 `api_key_expired` for every route, a key limited to markets trades
only those (403 `market_not_allowed`, before anything is sent) but still reads every position.

Both would fail before issue 11: the limits were stored nowhere and checked nowhere, so the expired key
closed the position and the ETH-only key traded BTC."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from relayer.domain import apikeys
from relayer.domain.apikeys import Scope
from relayer.faces.cli import keys as keys_cli
from tests.conftest import units
from tests.trading.conftest import Trading, tool_error, tool_json

CLOSE_33 = {"symbol": "BTCUSDT", "exit_pct": 33}


def _expired_key(trading: Trading, account: str, expired_s_ago: int = 1) -> tuple[str, int]:
    """A key made earlier with an expiry now past (the store keeps what `create_key` checked back then)."""
    key = apikeys.generate_key()
    now = int(time.time())
    expires_at = now - expired_s_ago
    trading.runtime.keys.insert_api_key(
        key_hash=apikeys.hash_key(key),
        prefix=apikeys.display_prefix(key),
        label="expired",
        account=account,
        scopes=frozenset({Scope.READ, Scope.TRADE}),
        now=now - 86_400,
        expires_at=expires_at,
    )
    return key, expires_at


def _limited_key(trading: Trading, account: LocalAccount, markets: str) -> str:
    key, _ = keys_cli.create_key(
        trading.runtime.keys, account=account.address, scopes="read,trade", markets=markets
    )
    return key


def test_an_expired_key_is_refused_everywhere_and_sends_nothing(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])
    pid = "0x" + position_id.hex()
    key, expires_at = _expired_key(trading, accounts[1].address)
    expected = {"code": "api_key_expired", "details": {"expiresAt": expires_at}}

    answers: list[Any] = [
        trading.post("/api/partialclose", CLOSE_33, key),
        trading.post("/api/trade/close", {"positionId": pid}, key),
        trading.post("/api/trade/stoploss", {"positionId": pid, "price": "80000"}, key),
        trading.get("/api/trade/positions", key),
    ]
    for response in answers:
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert {"code": error["code"], "details": error["details"]} == expected
    for tool, arguments in (
        ("partial_close", {"symbol": "BTCUSDT", "exit_pct": 33}),
        ("close_position", {"position_id": pid}),
        ("get_positions", {}),
    ):
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": key}))
        assert {"code": error["code"], "details": error["details"]} == expected, tool

    assert trading.relay.journal.all() == []
    assert vault.position(position_id).size == units("1")


def test_a_key_works_until_its_expiry(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    """The same routes with a key that expires in an hour; then the service's clock reaches the expiry."""
    position_id = open_position(owner=accounts[1])
    expires_at = int(time.time()) + 3_600
    key, _ = keys_cli.create_key(
        trading.runtime.keys, account=accounts[1].address, scopes="read,trade", expires_at=expires_at
    )

    response = trading.post("/api/partialclose", CLOSE_33, key)
    assert response.status_code == 200, response.text
    assert vault.position(position_id).size == units("0.67")

    trading.service.clock = lambda: expires_at  # the service's own clock reaches the expiry
    refused = trading.post("/api/partialclose", CLOSE_33, key)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "api_key_expired"
    assert vault.position(position_id).size == units("0.67")


def test_a_key_limited_to_other_markets_cannot_trade_but_can_read(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])  # a BTCUSDT long
    pid = "0x" + position_id.hex()
    eth_only = _limited_key(trading, accounts[1], "ETHUSDT,SOLUSDT")
    expected = {
        "code": "market_not_allowed",
        "details": {"market": "BTCUSDT", "allowed": ["ETHUSDT", "SOLUSDT"]},
    }

    answers: list[Any] = [
        trading.post("/api/partialclose", CLOSE_33, eth_only),
        trading.post("/api/partialclose", {**CLOSE_33, "positionId": pid, "dry_run": True}, eth_only),
        trading.post("/api/trade/close", {"positionId": pid}, eth_only),
        trading.post("/api/trade/takeprofit", {"positionId": pid, "price": "120000"}, eth_only),
        trading.post("/api/trade/stoploss", {"positionId": pid, "price": "80000"}, eth_only),
        trading.post("/api/trade/breakeven", {"positionId": pid}, eth_only),
    ]
    for response in answers:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert {"code": error["code"], "details": error["details"]} == expected
    for tool, arguments in (
        ("partial_close", {"symbol": "btcusdt"}),
        ("close_position", {"position_id": pid}),
        ("set_stop_loss", {"position_id": pid, "price": "80000"}),
    ):
        error = tool_error(trading.mcp(tool, {**arguments, "api_key": eth_only}))
        assert {"code": error["code"], "details": error["details"]} == expected, tool
    assert trading.relay.journal.all() == []
    assert vault.position(position_id).size == units("1")

    positions = trading.get("/api/trade/positions", eth_only)  # reads are not limited to the markets
    assert positions.status_code == 200, positions.text
    assert [p["positionId"] for p in positions.json()["positions"]] == [pid]
    assert tool_json(trading.mcp("get_positions", {"api_key": eth_only}))["positions"][0]["positionId"] == pid


def test_a_key_limited_to_the_market_trades_it(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])
    btc = _limited_key(trading, accounts[1], "ETHUSDT,BTCUSDT")

    rest = trading.post("/api/partialclose", CLOSE_33, btc)
    assert rest.status_code == 200, rest.text
    mcp = tool_json(trading.mcp("close_position", {"position_id": "0x" + position_id.hex(), "api_key": btc}))

    assert mcp["positionId"] == "0x" + position_id.hex()
    assert vault.position(position_id).size == 0
