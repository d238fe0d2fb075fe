"""Which position `partialclose` acts on: the one in the market, or 409 until `side` or `positionId` says."""

from __future__ import annotations

from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from relayer.chain.vault import VaultReader
from tests.conftest import units
from tests.trading.conftest import Trading


def test_long_and_short_in_one_market_is_409_listing_both(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    long_id = open_position(market="BTCUSDT", is_long=True, size="0.5", owner=accounts[1])
    short_id = open_position(market="BTCUSDT", is_long=False, size="0.2", owner=accounts[1])
    open_position(market="ETHUSDT", is_long=True, size="1", owner=accounts[1])  # another market: irrelevant
    key = trading.key(accounts[1])

    response = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50}, key)

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "ambiguous_position"
    listed = {(p["positionId"], p["side"], p["size"]) for p in error["details"]["positions"]}
    assert listed == {("0x" + long_id.hex(), "long", "0.5"), ("0x" + short_id.hex(), "short", "0.2")}
    assert trading.relay.journal.all() == []

    by_side = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50, "side": "SHORT"}, key)
    assert by_side.status_code == 200, by_side.text
    assert by_side.json()["positionId"] == "0x" + short_id.hex()
    assert vault.position(short_id).size == units("0.1")

    by_id = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 50, "positionId": "0x" + long_id.hex()}, key
    )
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["positionId"] == "0x" + long_id.hex()
    assert vault.position(long_id).size == units("0.25")


def test_no_position_in_the_market_is_404(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(market="ETHUSDT", owner=accounts[1])
    open_position(market="BTCUSDT", owner=accounts[2])  # someone else's BTC position does not count
    key = trading.key(accounts[1])

    response = trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, key)
    wrong_side = trading.post("/api/partialclose", {"symbol": "ETHUSDT", "side": "short"}, key)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "position_not_found"
    assert response.json()["error"]["details"] == {"symbol": "BTCUSDT"}
    assert wrong_side.status_code == 404


def test_position_id_in_another_market_is_422(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    eth = open_position(market="ETHUSDT", owner=accounts[1])

    response = trading.post(
        "/api/partialclose", {"symbol": "BTCUSDT", "positionId": "0x" + eth.hex()}, trading.key(accounts[1])
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "positionId"


def test_a_closed_position_is_not_found(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])
    key = trading.key(accounts[1])
    assert trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 100}, key).status_code == 200

    again = trading.post("/api/partialclose", {"symbol": "BTCUSDT"}, key)
    by_id = trading.post("/api/trade/close", {"positionId": "0x" + position_id.hex()}, key)

    assert again.status_code == by_id.status_code == 404
