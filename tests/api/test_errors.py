"""Every error the builder's HTTP face can answer, with its status, stable code and the field or values named.
Runs on eth-tester and on anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain, rpc_chain
from relayer.chain.deploy import Deployment, deploy_vault
from relayer.config import Settings
from relayer.constants import DEFAULT_MAX_PRICE_AGE_S
from relayer.errors import ConfigurationError, VaultNotDeployedError
from relayer.faces.api.app import create_app
from tests.api.conftest import settings_for
from tests.conftest import start_anvil, stop_anvil

JSON = {"content-type": "application/json"}


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    details: dict[str, Any] = body["error"]["details"]
    return details


def close(client: TestClient, **body: Any) -> Any:
    return client.post("/api/closeposition", json=body)


@pytest.fixture
def position(open_position: Callable[..., bytes]) -> str:
    """A 1 BTC long opened at 96000 by accounts[1]."""
    return "0x" + open_position(size="1").hex()


# --- 422 invalid_field --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        ('{"positionId": NaN}', "body"),
        ('{"positionId": "0x00", "sizeDelta": Infinity}', "body"),
        ("", "body"),
        ("{}", "positionId"),
        ('{"positionId": "0x1234"}', "positionId"),
        ('{"positionId": true}', "positionId"),
    ],
)
def test_malformed_bodies(client: TestClient, body: str, field: str) -> None:
    details = error_of(client.post("/api/closeposition", content=body, headers=JSON), 422, "invalid_field")
    assert details["field"] == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sizeDelta": "0"}, "sizeDelta"),
        ({"sizeDelta": "-1"}, "sizeDelta"),
        ({"sizeDelta": "0.0000000000000000001"}, "sizeDelta"),
        ({"sizeDelta": "1" + "0" * 80}, "sizeDelta"),
        ({"sizeDelta": True}, "sizeDelta"),
        ({"sizeDelta": [1]}, "sizeDelta"),
        ({"sizeDelta": {"value": 1}}, "sizeDelta"),
        ({"allowedPrice": "1.000000001"}, "allowedPrice"),
        ({"takeProfit": "99000"}, "takeProfitClosePercent"),
        ({"stopLossClosePercent": 100}, "stopLossClosePercent"),
        ({"takeProfit": "99000", "takeProfitClosePercent": 1.5}, "takeProfitClosePercent"),
        ({"takeProfit": "99000", "takeProfitClosePercent": 5000, "allowedPrice": "1"}, "allowedPrice"),
        ({"sizedelta": "1"}, "sizedelta"),
    ],
)
def test_invalid_fields_are_named(
    client: TestClient, position: str, fields: dict[str, Any], field: str
) -> None:
    details = error_of(close(client, positionId=position, **fields), 422, "invalid_field")
    assert details["field"] == field


def test_full_close_combined_with_orders_is_refused(client: TestClient, position: str) -> None:
    details = error_of(
        close(client, positionId=position, sizeDelta="1", stopLoss="90000", stopLossClosePercent=10000),
        422,
        "invalid_field",
    )
    assert details["field"] == "sizeDelta"


# --- 422 with their own codes -------------------------------------------------------------------------------


def test_size_delta_exceeds_position(client: TestClient, position: str) -> None:
    details = error_of(
        close(client, positionId=position, sizeDelta="1.000000000000000001"),
        422,
        "size_delta_exceeds_position",
    )
    assert details == {"sizeDelta": "1.000000000000000001", "size": "1"}


@pytest.mark.parametrize("bps", [0, 10_001])
def test_invalid_close_bps(client: TestClient, position: str, bps: int) -> None:
    details = error_of(
        close(client, positionId=position, takeProfit="99000", takeProfitClosePercent=bps),
        422,
        "invalid_close_bps",
    )
    assert details["field"] == "takeProfitClosePercent"


def test_invalid_price(client: TestClient, position: str) -> None:
    response = close(client, positionId=position, stopLoss="1" + "0" * 30, stopLossClosePercent=1)
    assert error_of(response, 422, "invalid_price")["field"] == "stopLoss"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"takeProfit": "95000", "takeProfitClosePercent": 1}, "takeProfit"),  # a long's TP below the price
        ({"stopLoss": "96000", "stopLossClosePercent": 1}, "stopLoss"),  # at the price is not below it
    ],
)
def test_invalid_trigger_price(client: TestClient, position: str, fields: dict[str, Any], field: str) -> None:
    details = error_of(close(client, positionId=position, **fields), 422, "invalid_trigger_price")
    assert details["field"] == field
    assert details["currentPrice"] == "96000"


# --- 404 ----------------------------------------------------------------------------------------------------


def test_position_never_opened(client: TestClient) -> None:
    details = error_of(close(client, positionId="0x" + "00" * 32), 404, "position_not_found")
    assert details["positionId"] == "0x" + "00" * 32
    error_of(client.get("/api/positions/0x" + "00" * 32), 404, "position_not_found")


def test_position_already_closed(
    client: TestClient, position: str, transact: Callable[..., Any], accounts: list[Any]
) -> None:
    from relayer.constants import CLOSE_ALL_SIZE
    from relayer.domain import calldata

    transact(accounts[1], calldata.close_position(bytes.fromhex(position[2:]), CLOSE_ALL_SIZE, 0))
    assert error_of(close(client, positionId=position), 404, "position_not_found")["status"] == "closed"


def test_unknown_route_and_method(client: TestClient) -> None:
    error_of(client.get("/api/nothing-here"), 404, "not_found")
    error_of(client.get("/api/closeposition"), 405, "method_not_allowed")


# --- 409: the market moved ----------------------------------------------------------------------------------


def test_price_slippage_long_and_short(
    client: TestClient,
    position: str,
    open_position: Callable[..., bytes],
    set_market_price: Callable[..., None],
) -> None:
    set_market_price("BTCUSDT", "95999.99")
    details = error_of(close(client, positionId=position, allowedPrice="96000"), 409, "price_slippage")
    assert details == {"price": "95999.99", "allowedPrice": "96000"}
    short = "0x" + open_position(is_long=False).hex()
    set_market_price("BTCUSDT", "96000.01")
    error_of(close(client, positionId=short, allowedPrice="96000"), 409, "price_slippage")


def test_stale_price(client: TestClient, position: str, chain: Chain) -> None:
    chain.advance_time(DEFAULT_MAX_PRICE_AGE_S + 60)
    details = error_of(close(client, positionId=position), 409, "stale_price")
    assert details["market"] == "BTCUSDT"
    assert details["maxPriceAge"] == DEFAULT_MAX_PRICE_AGE_S
    markets = {m["symbol"]: m for m in client.get("/api/markets").json()["markets"]}
    assert markets["BTCUSDT"]["stale"] is True


# --- start-up and the node ----------------------------------------------------------------------------------


def test_vault_not_deployed(chain: Chain, deployment: Deployment, accounts: list[Any]) -> None:
    settings = settings_for(chain, deployment).model_copy(update={"vault_address": accounts[5].address})
    with pytest.raises(VaultNotDeployedError), TestClient(create_app(settings, chain=chain)):
        pass


def test_nothing_to_serve_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError), TestClient(create_app(Settings())):
        pass


def test_node_down_answers_503_chain_unavailable() -> None:
    node = start_anvil()
    chain = rpc_chain(node.url, test_keys=list(ANVIL_DEFAULT_KEYS))
    deployment = deploy_vault(chain.w3, chain.test_accounts()[0])
    app = create_app(Settings.load({}, rpc_url=node.url, vault_address=deployment.address), chain=chain)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        stop_anvil(node)
        error_of(client.get("/health"), 503, "chain_unavailable")
        error_of(close(client, positionId="0x" + "01" * 32), 503, "chain_unavailable")
        error_of(client.get("/api/markets"), 503, "chain_unavailable")
