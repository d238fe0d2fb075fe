"""The read endpoints (positions, markets, health) and the served OpenAPI document. eth-tester and anvil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.constants import CLOSE_ALL_SIZE
from relayer.domain import calldata


def test_one_position_with_its_price_and_pnl(
    client: TestClient, open_position: Callable[..., bytes], set_market_price: Callable[..., None]
) -> None:
    position_id = open_position(market="ETHUSDT", is_long=False, size="2.5")
    set_market_price("ETHUSDT", "3400.12345678")
    body = client.get(f"/api/positions/0x{position_id.hex()}").json()
    assert body["market"] == "ETHUSDT"
    assert (body["side"], body["status"], body["size"]) == ("short", "open", "2.5")
    assert (body["entryPrice"], body["currentPrice"]) == ("3500", "3400.12345678")
    assert body["unrealizedPnl"] == "249.69135805"  # 2.5 x 99.87654322, a profit rounded down
    assert body["takeProfit"] is None


def test_position_id_must_be_bytes32_hex(client: TestClient) -> None:
    response = client.get("/api/positions/0x1234")
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "positionId"


def test_owner_positions_open_by_default_closed_on_request(
    client: TestClient,
    open_position: Callable[..., bytes],
    transact: Callable[..., Any],
    accounts: list[LocalAccount],
) -> None:
    owner = accounts[4]
    first, second = open_position(owner=owner), open_position(owner=owner, market="ETHUSDT")
    transact(owner, calldata.close_position(first, CLOSE_ALL_SIZE, 0))

    open_only = client.get("/api/positions", params={"owner": owner.address.lower()}).json()
    assert open_only["owner"] == owner.address
    assert [p["positionId"] for p in open_only["positions"]] == ["0x" + second.hex()]
    everything = client.get(
        "/api/positions", params={"owner": owner.address, "include_closed": "true"}
    ).json()
    assert [(p["positionId"], p["status"]) for p in everything["positions"]] == [
        ("0x" + first.hex(), "closed"),
        ("0x" + second.hex(), "open"),
    ]
    nobody = client.get("/api/positions", params={"owner": "0x" + "00" * 20}).json()
    assert nobody["positions"] == []


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"owner": "0x1234"},
        {"owner": "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cf"},
        {"owner": "0x" + "00" * 20, "include_closed": "maybe"},
    ],
)
def test_owner_query_is_validated(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/api/positions", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_field"


def test_markets_with_prices_and_age(client: TestClient, set_market_price: Callable[..., None]) -> None:
    set_market_price("SOLUSDT", "201.5")
    body = client.get("/api/markets").json()
    markets = {m["symbol"]: m for m in body["markets"]}
    assert set(markets) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert markets["SOLUSDT"]["price"] == "201.5"
    assert markets["BTCUSDT"]["price"] == "96000"
    assert body["maxPriceAge"] == 3600
    for market in markets.values():
        assert market["ageSeconds"] == max(0, body["blockTimestamp"] - market["updatedAt"])
        assert market["stale"] is False


def test_health(client: TestClient, chain: Chain, deployment: Deployment) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["chainId"] == chain.w3.eth.chain_id
    assert body["blockNumber"] == chain.w3.eth.block_number
    assert body["vaultAddress"] == deployment.address


def test_openapi_documents_the_endpoints_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/api/closeposition",
        "/api/positions/{positionId}",
        "/api/positions",
        "/api/markets",
        "/health",
    } <= set(spec["paths"])
    close = spec["paths"]["/api/closeposition"]["post"]
    content = close["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) == {"full_close", "partial_close", "modify_orders", "close_and_modify"}
    assert "positionId" in content["schema"]["properties"]
    assert {"200", "404", "409", "422"} <= set(close["responses"])
    assert client.get("/docs").status_code == 200
