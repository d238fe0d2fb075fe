"""The embedded chain's demo price-feed controls over HTTP (with the random walk on or off), and their absence
everywhere else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.config import RelaySettings, Settings
from relayer.faces.api.app import create_app
from relayer.services.demo_world import issue_demo_keys
from relayer.stores.keys import SqliteKeyStore
from tests.conftest import usd


def demo_settings(deployment: Deployment, journal: Path, **extra: Any) -> tuple[Settings, dict[str, str]]:
    """Settings of an embedded demo with a journal holding the demo keys, and the headers that carry the
    demo's read,trade key (the price-feed controls need it)."""
    with closing(SqliteKeyStore(journal)) as store:
        keys = issue_demo_keys(store, deployment.deployer)
    settings = Settings(vault_address=deployment.address, relay=RelaySettings(journal_path=journal), **extra)
    return settings, {"authorization": f"Bearer {keys.trade}"}


@pytest.fixture
def demo_client(
    chain: Chain, deployment: Deployment, deployer: LocalAccount, tmp_path: Path
) -> Iterator[TestClient]:
    assert chain.is_embedded, "the demo price feed exists only on the embedded chain (mark the test)"
    settings, headers = demo_settings(
        deployment, tmp_path / "journal.sqlite3", price_feed_interval_s=3_600, price_feed_seed=3
    )
    with TestClient(create_app(settings, chain=chain, price_keeper=deployer), headers=headers) as client:
        yield client


@pytest.mark.only_backend("eth-tester")
def test_set_a_price_by_hand_and_pause(demo_client: TestClient, vault: VaultReader) -> None:
    answer = demo_client.post(
        "/api/demo/pricefeed", json={"symbol": "BTCUSDT", "price": "99000", "paused": True}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["paused"] is True
    assert answer.json()["seed"] == 3
    assert answer.json()["prices"]["BTCUSDT"] == "99000"
    assert vault.price("BTCUSDT").price_e8 == usd("99000")  # a real setPrice transaction
    assert demo_client.get("/api/demo/pricefeed").json() == answer.json()


@pytest.mark.only_backend("eth-tester")
def test_a_bad_control_request_is_422_and_changes_nothing(
    demo_client: TestClient, vault: VaultReader
) -> None:
    before = vault.price("BTCUSDT")

    answer = demo_client.post("/api/demo/pricefeed", json={"symbol": "BTCUSDT", "price": "0.000000001"})

    assert answer.status_code == 422
    assert answer.json()["error"]["details"]["field"] == "price"
    assert vault.price("BTCUSDT") == before


@pytest.mark.only_backend("eth-tester")
def test_with_the_walk_off_a_price_is_still_set_by_hand(
    chain: Chain, deployment: Deployment, deployer: LocalAccount, vault: VaultReader, tmp_path: Path
) -> None:
    """`relayer serve --price-feed-interval 0`: no random walk, but the manual controls exist (they matter
    most when nothing else moves the price); the state says the walk is off, and resuming it is refused."""
    settings, headers = demo_settings(
        deployment, tmp_path / "journal.sqlite3", price_feed_interval_s=0, price_feed_seed=3
    )
    with TestClient(create_app(settings, chain=chain, price_keeper=deployer), headers=headers) as client:
        state = client.get("/api/demo/pricefeed")
        answer = client.post("/api/demo/pricefeed", json={"symbol": "BTCUSDT", "price": "91234.5"})
        resume = client.post("/api/demo/pricefeed", json={"paused": False})

    assert state.status_code == 200, state.text
    assert state.json()["paused"] is True
    assert state.json()["walk"] == "off"
    assert answer.status_code == 200, answer.text
    assert answer.json()["prices"]["BTCUSDT"] == "91234.5"
    assert answer.json()["walk"] == "off"
    assert vault.price("BTCUSDT").price_e8 == usd("91234.5")  # a real setPrice transaction
    assert resume.status_code == 422
    assert resume.json()["error"]["details"]["field"] == "paused"


def test_no_feed_no_controls(chain: Chain, deployment: Deployment) -> None:
    """Without a demo price keeper (any node, or an embedded chain served without the demo world) the
    controls are a 404."""
    settings = (
        Settings(vault_address=deployment.address)
        if chain.is_embedded
        else Settings.load({}, rpc_url=chain.name, vault_address=deployment.address)
    )
    with TestClient(create_app(settings, chain=chain)) as client:
        answer = client.post("/api/demo/pricefeed", json={"paused": True})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "price_feed_off"
