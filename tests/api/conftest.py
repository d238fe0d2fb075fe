"""Fixtures of the REST API suite: the app built over the session's chain and vault, one per test (its caches
must not outlive the test's snapshot), without relayer signers and with its journal file (API keys) in
`tmp_path`, plus sign-and-send of a returned transaction with the owner's key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.config import Settings
from relayer.faces.api.app import create_app


def settings_for(chain: Chain, deployment: Deployment) -> Settings:
    """Embedded chain: the in-process chain port; anvil: its node over JSON-RPC, as `relayer serve` picks."""
    if chain.is_embedded:
        return Settings(vault_address=deployment.address)
    return Settings.load({}, rpc_url=chain.name, vault_address=deployment.address)


@pytest.fixture
def client(chain: Chain, deployment: Deployment, tmp_path: Path) -> Iterator[TestClient]:
    settings = settings_for(chain, deployment)
    relay = settings.relay.model_copy(update={"journal_path": tmp_path / "journal.sqlite3"})
    app = create_app(settings.model_copy(update={"relay": relay}), chain=chain)
    with TestClient(app) as test_client:
        yield test_client


SignAndSend = Callable[[LocalAccount, dict[str, Any]], TxReceipt]


@pytest.fixture
def sign_and_send(chain: Chain) -> SignAndSend:
    """Sign the API's `transaction` exactly as returned (after a JSON round trip) and wait for it to mine."""

    def _send(owner: LocalAccount, transaction: dict[str, Any]) -> TxReceipt:
        signed = owner.sign_transaction(transaction)
        tx_hash = chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        return receipt

    return _send
