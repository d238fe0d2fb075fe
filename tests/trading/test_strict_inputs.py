"""Input is refused, never reinterpreted, on every REST route: repeated JSON keys, bodies not declared as
JSON, padded numbers, unknown or repeated query parameters, out-of-range query values.

Each case that could once move money also checks that nothing was sent (no relay record, size unchanged).
Runs on eth-tester and on anvil.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from tests.conftest import units
from tests.trading.conftest import Trading

JSON = "application/json"
PID = "0x" + "ab" * 32

# Every route that takes a JSON body, with a body that is otherwise acceptable in shape.
BODY_ROUTES: list[tuple[str, str]] = [
    ("/api/closeposition", f'{{"positionId": "{PID}"}}'),
    ("/api/partialclose", '{"symbol": "BTCUSDT"}'),
    ("/api/trade/close", f'{{"positionId": "{PID}"}}'),
    ("/api/trade/takeprofit", f'{{"positionId": "{PID}", "price": "99000"}}'),
    ("/api/trade/stoploss", f'{{"positionId": "{PID}", "price": "90000"}}'),
    ("/api/trade/breakeven", f'{{"positionId": "{PID}"}}'),
    ("/api/relay/signed", '{"kind": "close"}'),
    ("/api/relay/raw", '{"transaction": "0x00"}'),
]


def _post(trading: Trading, path: str, text: str, key: str | None, content_type: str | None = JSON) -> Any:
    headers = {} if content_type is None else {"content-type": content_type}
    if key is not None:
        headers["x-api-key"] = key
    return trading.client.post(path, content=text, headers=headers)


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


@pytest.fixture
def trader(accounts: list[LocalAccount]) -> LocalAccount:
    return accounts[1]


@pytest.fixture
def long_btc(trading: Trading, open_position: Callable[..., bytes], trader: LocalAccount) -> str:
    """A 0.42 BTC long of the trader, who (as the `trading` fixture sets up) approved the relayer."""
    return "0x" + open_position(market="BTCUSDT", is_long=True, size="0.42", owner=trader).hex()


# --- repeated keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), BODY_ROUTES, ids=[p for p, _ in BODY_ROUTES])
def test_a_key_given_twice_is_refused_on_every_body_route(
    trading: Trading, trader: LocalAccount, path: str, body: str
) -> None:
    doubled = body[:-1] + ', "dup": 1, "dup": 2}'

    error = _error(_post(trading, path, doubled, trading.key(trader)), 422, "invalid_field")

    assert error["details"]["field"] == "dup"
    assert "more than once" in error["message"]


def test_a_repeated_size_delta_does_not_become_a_full_close(
    trading: Trading, vault: VaultReader, long_btc: str
) -> None:
    body = f'{{"positionId": "{long_btc}", "sizeDelta": "0.1", "sizeDelta": null}}'

    error = _error(_post(trading, "/api/closeposition", body, None), 422, "invalid_field")

    assert error["details"]["field"] == "sizeDelta"
    assert vault.position(bytes.fromhex(long_btc[2:])).size == units("0.42")


def test_a_repeated_dry_run_sends_nothing(
    trading: Trading, vault: VaultReader, long_btc: str, trader: LocalAccount
) -> None:
    body = '{"symbol": "BTCUSDT", "exit_pct": 1, "dry_run": true, "dry_run": false}'

    error = _error(_post(trading, "/api/partialclose", body, trading.key(trader)), 422, "invalid_field")

    assert error["details"]["field"] == "dry_run"
    assert trading.relay.journal.all() == []
    assert vault.position(bytes.fromhex(long_btc[2:])).size == units("0.42")


def test_a_key_repeated_inside_a_nested_object_is_refused(trading: Trading) -> None:
    body = '{"kind": "close", "request": {"owner": "0x01", "owner": "0x02"}, "signature": "0x"}'

    error = _error(_post(trading, "/api/relay/signed", body, None), 422, "invalid_field")

    assert error["details"]["field"] == "owner"


# --- content type -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"])
@pytest.mark.parametrize(("path", "body"), BODY_ROUTES, ids=[p for p, _ in BODY_ROUTES])
def test_a_body_not_declared_json_is_415(
    trading: Trading, trader: LocalAccount, path: str, body: str, content_type: str | None
) -> None:
    response = _post(trading, path, body, trading.key(trader), content_type=content_type)

    error = _error(response, 415, "unsupported_media_type")
    assert error["details"]["contentType"] == (content_type or "")
    assert trading.relay.journal.all() == []


def test_json_with_a_charset_is_json(trading: Trading, long_btc: str) -> None:
    body = f'{{"positionId": "{long_btc}", "sizeDelta": "0.1"}}'

    content_type = "Application/JSON; charset=utf-8"
    response = _post(trading, "/api/closeposition", body, None, content_type=content_type)

    assert response.status_code == 200, response.text
    assert response.json()["preview"]["sizeDelta"] == "0.1"


# --- padded numbers and names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "field"),
    [
        ("/api/closeposition", {"sizeDelta": " 0.1 "}, "sizeDelta"),
        ("/api/closeposition", {"allowedPrice": "96000\n"}, "allowedPrice"),
        ("/api/trade/close", {"sizeDelta": "0.1 "}, "sizeDelta"),
        ("/api/partialclose", {"exit_pct": " 10"}, "exit_pct"),
        ("/api/partialclose", {"symbol": "BTCUSDT "}, "symbol"),
        ("/api/partialclose", {"side": " long"}, "side"),
    ],
)
def test_text_with_spaces_around_it_is_refused_not_trimmed(
    trading: Trading,
    vault: VaultReader,
    long_btc: str,
    trader: LocalAccount,
    path: str,
    fields: dict[str, Any],
    field: str,
) -> None:
    body = {"symbol": "BTCUSDT"} if path == "/api/partialclose" else {"positionId": long_btc}
    response = trading.post(path, {**body, **fields}, trading.key(trader))

    error = response.json()["error"]
    assert response.status_code == 422, response.text
    assert error["code"] in {"invalid_field", "invalid_market"}
    assert error["details"]["field"] == field
    assert trading.relay.journal.all() == []
    assert vault.position(bytes.fromhex(long_btc[2:])).size == units("0.42")


# --- query strings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"offset": "9223372036854775808"}, "offset"),
        ({"offset": "1000000001"}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"statuss": "queued"}, "statuss"),
    ],
)
def test_out_of_range_or_unknown_query_parameters_are_422(
    trading: Trading, trader: LocalAccount, params: dict[str, str], field: str
) -> None:
    error = _error(trading.get("/api/transactions", trading.key(trader), **params), 422, "invalid_field")

    assert error["details"]["field"] == field


def test_a_repeated_query_parameter_is_422(trading: Trading, trader: LocalAccount) -> None:
    owner = trader.address
    response = trading.client.get(f"/api/positions?owner={owner}&include_closed=false&include_closed=true")

    error = _error(response, 422, "invalid_field")
    assert error["details"]["field"] == "include_closed"


def test_a_misspelt_query_parameter_is_not_ignored(trading: Trading, trader: LocalAccount) -> None:
    response = trading.client.get("/api/positions", params={"owner": trader.address, "includeClosed": "true"})

    error = _error(response, 422, "invalid_field")
    assert error["details"]["field"] == "includeClosed"
    assert "include_closed" in error["message"]


def test_a_wrong_method_is_405_json_with_allow(trading: Trading) -> None:
    response = trading.client.get("/api/closeposition")

    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
