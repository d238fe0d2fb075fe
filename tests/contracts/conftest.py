"""Fixtures of the vault contract suite (on top of tests/conftest.py): named roles, raw-unit price setting,
the EIP-712 domain, and reads of the chain's clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from tests.contracts.helpers import eip712_domain

Transact = Callable[[LocalAccount, bytes], TxReceipt]


@pytest.fixture
def trader(accounts: list[LocalAccount]) -> LocalAccount:
    """The default position owner (`open_position` opens for it)."""
    return accounts[1]


@pytest.fixture
def other_trader(accounts: list[LocalAccount]) -> LocalAccount:
    return accounts[2]


@pytest.fixture
def stranger(accounts: list[LocalAccount]) -> LocalAccount:
    """Neither owner, operator, admin nor price keeper: a keeper bot or a relayer submitting requests."""
    return accounts[3]


@pytest.fixture
def contract(vault: VaultReader) -> Contract:
    return vault.contract


@pytest.fixture
def set_price_e8(deployer: LocalAccount, transact: Transact) -> Callable[[str, int], TxReceipt]:
    """Set a market's oracle price in raw 8-decimal units as the price keeper (bounds, property tests)."""

    def _set(market: str, price_e8: int) -> TxReceipt:
        return transact(deployer, calldata.encode_call("setPrice", symbol_to_bytes32(market), price_e8))

    return _set


@pytest.fixture
def domain(chain: Chain, deployment: Deployment) -> dict[str, Any]:
    """The vault's real EIP-712 domain on this chain."""
    return eip712_domain(chain.w3.eth.chain_id, deployment.address)


@pytest.fixture
def now(chain: Chain) -> Callable[[], int]:
    """The latest block's timestamp (the chain's clock, which tests move with `chain.advance_time`)."""

    def _now() -> int:
        return int(chain.w3.eth.get_block("latest")["timestamp"])

    return _now
