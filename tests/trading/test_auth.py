"""API keys on the trading routes: 401 / 403 rules, both headers, last use, revocation, only hashes stored;
and the operator approval the relayer needs before it can act for an account."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.domain import apikeys
from relayer.faces.api.app import create_app
from tests.conftest import units
from tests.trading.conftest import Trading, trading_settings

CLOSE_33 = {"symbol": "BTCUSDT", "exit_pct": 33}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer vrk_" + "A" * 32},
        {"X-API-Key": "vrk_unknown"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
    ids=["no-key", "unknown-bearer", "unknown-x-api-key", "basic-auth", "empty-bearer"],
)
def test_missing_or_unknown_key_is_401(
    trading: Trading,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    headers: dict[str, str],
) -> None:
    open_position(owner=accounts[1])
    trading.key(accounts[1])  # a real key exists; it is just not the one presented

    for response in (
        trading.client.post("/api/partialclose", json=CLOSE_33, headers=headers),
        trading.client.get("/api/trade/positions", headers=headers),
        # authentication comes before the body is looked at: a stranger learns nothing about the API
        trading.client.post("/api/trade/close", json={"bogus": 1}, headers=headers),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthenticated"
    assert trading.relay.journal.all() == []


def test_read_key_cannot_trade_and_trade_key_cannot_read(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])
    read_only = trading.key(accounts[1], "read")
    trade_only = trading.key(accounts[1], "trade")

    refused = trading.post("/api/partialclose", CLOSE_33, read_only)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert refused.json()["error"]["details"] == {"required": "trade", "scopes": ["read"]}
    for path in ("/api/trade/close", "/api/trade/takeprofit", "/api/trade/stoploss", "/api/trade/breakeven"):
        response = trading.post(path, {"positionId": "0x" + position_id.hex(), "price": "99000"}, read_only)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "insufficient_scope"), path
    assert trading.get("/api/trade/positions", read_only).status_code == 200

    no_read = trading.get("/api/trade/positions", trade_only)
    assert no_read.status_code == 403
    assert no_read.json()["error"]["details"]["required"] == "read"
    assert trading.relay.journal.all() == []
    assert vault.position(position_id).size == units("1")


def test_a_key_cannot_touch_another_accounts_position(
    trading: Trading, vault: VaultReader, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    theirs = open_position(owner=accounts[2])
    open_position(owner=accounts[1])  # the key's own account has a BTC position too
    mine = trading.key(accounts[1])

    for path, body in (
        ("/api/partialclose", {**CLOSE_33, "positionId": "0x" + theirs.hex()}),
        ("/api/trade/close", {"positionId": "0x" + theirs.hex()}),
        ("/api/trade/takeprofit", {"positionId": "0x" + theirs.hex(), "price": "99000"}),
        ("/api/trade/stoploss", {"positionId": "0x" + theirs.hex(), "price": "90000"}),
        ("/api/trade/breakeven", {"positionId": "0x" + theirs.hex()}),
    ):
        response = trading.post(path, body, mine)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "not_authorized"
    assert trading.relay.journal.all() == []
    assert vault.position(theirs).size == units("1")


def test_revoked_key_is_401(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    open_position(owner=accounts[1])
    key = trading.key(accounts[1])
    assert trading.get("/api/trade/positions", key).status_code == 200
    (record,) = trading.runtime.keys.api_keys()

    assert trading.runtime.keys.revoke_api_key(record.key_id, int(time.time())) is True

    response = trading.post("/api/partialclose", CLOSE_33, key)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert trading.get("/api/trade/positions", key).status_code == 401
    assert trading.relay.journal.all() == []
    assert trading.runtime.keys.revoke_api_key(record.key_id, int(time.time())) is False


def test_bearer_and_x_api_key_both_work_and_last_use_is_recorded(
    trading: Trading, open_position: Callable[..., bytes], accounts: list[LocalAccount]
) -> None:
    position_id = open_position(owner=accounts[1])
    key = trading.key(accounts[1], "read", label="agent")
    (before,) = trading.runtime.keys.api_keys()
    assert before.last_used_at is None
    started = int(time.time())

    by_bearer = trading.client.get("/api/trade/positions", headers={"Authorization": f"bearer {key}"})
    by_header = trading.client.get("/api/trade/positions", headers={"X-API-Key": key})

    assert by_bearer.status_code == by_header.status_code == 200
    assert by_bearer.json() == by_header.json()
    assert by_bearer.json()["account"] == accounts[1].address
    assert [p["positionId"] for p in by_bearer.json()["positions"]] == ["0x" + position_id.hex()]
    (after,) = trading.runtime.keys.api_keys()
    assert after.last_used_at is not None
    assert after.last_used_at >= started
    assert (after.label, after.prefix) == ("agent", key[:12])


@pytest.mark.only_store("sqlite")  # reads the journal file
def test_only_hashes_are_stored(trading: Trading, accounts: list[LocalAccount]) -> None:
    keys = [trading.key(accounts[1]), trading.key(accounts[2], "read")]
    journal = Path(trading.relay.journal.path)

    stored = b"".join(p.read_bytes() for p in journal.parent.glob(journal.name + "*"))  # db, -wal, -shm

    for key in keys:
        assert key.encode() not in stored
        assert key.split("_", 1)[1].encode() not in stored
        assert apikeys.hash_key(key).encode() in stored
        assert trading.runtime.keys.api_key_by_hash(apikeys.hash_key(key)) is not None


def test_operator_not_approved_is_409_listing_the_signers(
    trading: Trading,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    approve_operators: Callable[..., None],
) -> None:
    """Trader 3 has approved nobody, then only one of the two signers: the answer lists what is missing."""
    position_id = open_position(owner=accounts[3])
    key = trading.key(accounts[3])
    signers = [s.address for s in trading.signers]

    response = trading.post("/api/partialclose", CLOSE_33, key)

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "operator_not_approved"
    assert error["details"]["signers"] == signers
    assert error["details"]["account"] == accounts[3].address
    assert len(error["details"]["calldata"]) == 2

    approve_operators(accounts[3], signers=[accounts[5]])
    partly = trading.post(
        "/api/trade/takeprofit", {"positionId": "0x" + position_id.hex(), "price": "99000"}, key
    )
    assert partly.status_code == 409
    assert partly.json()["error"]["details"]["signers"] == [accounts[6].address]
    assert trading.relay.journal.all() == []
    assert vault.position(position_id).size == units("1")

    approve_operators(accounts[3], signers=[accounts[6]])
    assert trading.post("/api/partialclose", CLOSE_33, key).status_code == 200


def test_without_relayer_signers_trading_is_503(chain: Chain, deployment: Deployment, tmp_path: Path) -> None:
    app = create_app(trading_settings(chain, deployment, tmp_path / "journal.sqlite3"), chain=chain)

    with TestClient(app) as client:
        response = client.post("/api/partialclose", json=CLOSE_33, headers={"X-API-Key": "vrk_x"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "relay_not_configured"
