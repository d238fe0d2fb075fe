"""`GET /api/relay/typed-data` builds a signed close with the trading default slippage bound when the caller
gives no `allowedPrice` (issue 11: it used to be 0, no bound, for a close valid for 600 s), and says which
bound it applied (`priceBound`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.config import TradingSettings
from relayer.constants import DEFAULT_SLIPPAGE_BPS
from relayer.domain.exits import allowed_price_for_slippage
from relayer.domain.typed_data import parse_typed_data_query
from relayer.services.relay.service import RelayService
from tests.blocking import Blocking
from tests.conftest import usd

PRICE = "96000"
"""The BTCUSDT price a fresh deployment sets."""


def _typed(client: TestClient, position_id: bytes, **params: str) -> dict[str, Any]:
    response = client.get(
        "/api/relay/typed-data",
        params={"kind": "close", "positionId": "0x" + position_id.hex(), **params},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_close_without_allowed_price_gets_the_trading_default_bound(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    client: TestClient,
) -> None:
    assert TradingSettings.model_fields["default_slippage_bps"].default == DEFAULT_SLIPPAGE_BPS == 100
    long_id = open_position(owner=accounts[1], is_long=True)
    short_id = open_position(owner=accounts[2], is_long=False)

    long = _typed(client, long_id)
    assert long["typedData"]["message"]["allowedPrice"] == str(usd("95040"))  # a long sells: at least -1%
    assert long["priceBound"] == {
        "source": "defaultSlippage",
        "allowedPrice": "95040",
        "oraclePrice": PRICE,
        "slippageBps": 100,
    }
    short = _typed(client, short_id)
    assert short["typedData"]["message"]["allowedPrice"] == str(usd("96960"))  # a short buys: at most +1%
    assert short["priceBound"]["allowedPrice"] == "96960"

    # A bound the caller gives is kept as given, "0" (no bound) included, and said so.
    unbounded = _typed(client, long_id, allowedPrice="0")
    assert unbounded["typedData"]["message"]["allowedPrice"] == "0"
    assert unbounded["priceBound"] == {"source": "given", "allowedPrice": "0"}
    given = _typed(client, long_id, allowedPrice="90000.5")
    assert given["typedData"]["message"]["allowedPrice"] == str(usd("90000.5"))
    # A trigger has no price bound to fill.
    trigger = client.get(
        "/api/relay/typed-data",
        params={"kind": "trigger", "positionId": "0x" + long_id.hex(), "isTakeProfit": "true", "price": "0"},
    )
    assert trigger.status_code == 200, trigger.text
    assert "priceBound" not in trigger.json()


def test_the_default_is_the_callers_to_set(
    accounts: list[LocalAccount], open_position: Callable[..., bytes], service: Blocking[RelayService]
) -> None:
    position_id = open_position(owner=accounts[1])
    query = parse_typed_data_query({"kind": "close", "positionId": "0x" + position_id.hex()})
    answer = service.typed_data_for(query, default_slippage_bps=250)
    expected = allowed_price_for_slippage(is_long=True, price_e8=usd(PRICE), slippage_bps=250)
    assert answer["typedData"]["message"]["allowedPrice"] == str(expected) == str(usd("93600"))
    assert answer["priceBound"]["slippageBps"] == 250


def test_the_default_bound_keeps_a_signed_close_from_filling_after_a_price_crash(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    client: TestClient,
    service: Blocking[RelayService],
) -> None:
    trader = accounts[1]
    position_id = open_position(owner=trader)
    typed = _typed(client, position_id)["typedData"]  # the caller gave no bound
    signature = Account.sign_typed_data(trader.key, full_message=typed).signature
    set_market_price("BTCUSDT", "90000")  # -6.25% while the signed close waits to be relayed

    response = client.post(
        "/api/relay/signed",
        json={"kind": "close", "request": typed["message"], "signature": "0x" + signature.hex()},
    )
    assert response.status_code == 409, response.text  # before: 202, and closed at 90000
    assert response.json()["error"]["code"] == "price_slippage"
    assert service.journal.all() == []
