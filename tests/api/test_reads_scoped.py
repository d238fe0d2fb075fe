"""Reads of relay records are scoped (issue 11): `GET /api/transactions` lists only the API key's account's
records, every account's with the `admin` scope, nothing without a key; a record by its id stays readable
to whoever holds the id.

Each test runs the real app (relay, trading) on both chains and both stores; two traders each have a relay
record made by an API-key partial close (the record acts for the key's account).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.faces.api.app import create_app
from relayer.services.relay.signers import Signer
from relayer.stores.location import StoreLocation
from tests.trading.conftest import Trading, trading_settings


@dataclass
class Records:
    """The app and, per trader, a `read` key and the id of the record its partial close made."""

    app: Trading
    keys: list[str]
    ids: list[str]

    def listed(self, key: str | None, **params: Any) -> list[str]:
        response = self.app.get("/api/transactions", key, **params)
        assert response.status_code == 200, response.text
        return [record["id"] for record in response.json()["transactions"]]


@pytest.fixture
def records(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    store: StoreLocation,
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    open_position: Callable[..., bytes],
) -> Iterator[Records]:
    traders, relayers = accounts[1:3], accounts[5:7]
    for trader in traders:
        for relayer in relayers:
            transact(trader, calldata.set_operator_rights(relayer.address, RELAYER_RIGHTS, 0))
        open_position(owner=trader, size="1")
    settings = trading_settings(chain, deployment, store.journal_path, database_url=store.database_url)
    app = create_app(settings, chain=chain, signers=[Signer(a) for a in relayers])
    with TestClient(app) as client:
        trading = Trading(app, client, chain, [Signer(a) for a in relayers], accounts[1:4])
        keys = [trading.key(trader, "read,trade") for trader in traders]
        ids = []
        for key in keys:
            answer = trading.post("/api/partialclose", {"symbol": "BTCUSDT", "exit_pct": 33}, key)
            assert answer.status_code in {200, 202}, answer.text
            ids.append(answer.json()["transactionId"])
        trading.settle()
        yield Records(trading, keys, ids)


def test_listing_without_a_key_is_401(records: Records) -> None:
    """The issue's leak: every account's records (calldata, signatures, fills) listed to anyone."""
    for headers in ({}, {"Authorization": "Bearer vrk_not-a-key"}, {"X-API-Key": "nope"}):
        response = records.app.client.get("/api/transactions", headers=headers)

        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthenticated"


def test_a_key_lists_only_its_own_accounts_records(records: Records) -> None:
    first, second = records.ids

    assert records.listed(records.keys[0]) == [first]
    assert records.listed(records.keys[1]) == [second]
    assert records.listed(records.keys[0], status="confirmed") == [first]
    assert records.listed(records.keys[0], status="queued") == []
    assert records.listed(records.keys[0], offset=1) == []


def test_a_read_only_key_of_the_account_lists_the_same(records: Records) -> None:
    read_only = records.app.key(records.app.traders[0], "read")

    assert records.listed(read_only) == [records.ids[0]]


def test_an_admin_key_lists_every_accounts_records(records: Records) -> None:
    admin = records.app.key(records.app.traders[2], "read,admin")  # an account with no record of its own

    assert set(records.listed(admin)) == set(records.ids)
    assert records.listed(records.app.key(records.app.traders[2], "read")) == []


def test_admin_alone_is_not_read(records: Records) -> None:
    response = records.app.get("/api/transactions", records.app.key(records.app.traders[0], "admin"))

    assert response.status_code == 403, response.text
    assert response.json()["error"]["details"]["required"] == "read"


def test_a_record_by_its_id_stays_readable_to_whoever_holds_it(records: Records) -> None:
    for record_id in records.ids:
        response = records.app.client.get(f"/api/transactions/{record_id}")

        assert response.status_code == 200, response.text
        assert response.json()["id"] == record_id
