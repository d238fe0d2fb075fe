"""The oracle and the admin: price bounds, listing, staleness, missing prices, keeper and admin roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3.contract import Contract
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment, deploy_vault
from relayer.chain.vault import VaultReader
from relayer.constants import DEFAULT_MAX_PRICE_AGE_S, MAX_TRIGGER_PRICE_E8
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.errors import (
    InvalidFieldError,
    InvalidPriceError,
    NotAuthorizedError,
    PriceNotSetError,
    StalePriceError,
)
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, events, reverts

BTC = symbol_to_bytes32("BTCUSDT")


@pytest.mark.parametrize(
    ("price", "accepted"),
    [
        (0, False),
        (1, True),
        (MAX_TRIGGER_PRICE_E8, True),
        (MAX_TRIGGER_PRICE_E8 + 1, False),
        (2**256 - 1, False),
    ],
    ids=["zero", "one", "uint112-max", "uint112-max-plus-one", "uint256-max"],
)
def test_set_price_bounds(
    vault: VaultReader,
    contract: Contract,
    set_price_e8: Callable[[str, int], TxReceipt],
    chain: Chain,
    price: int,
    accepted: bool,
) -> None:
    if not accepted:
        with reverts(InvalidPriceError, price=str(price), revert="InvalidPrice"):
            set_price_e8("BTCUSDT", price)
        assert vault.price("BTCUSDT").price_e8 == usd("96000")
        return
    receipt = set_price_e8("BTCUSDT", price)
    timestamp = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert event(contract, receipt, "PriceUpdated") == {"market": BTC, "price": price, "updatedAt": timestamp}
    assert (vault.price("BTCUSDT").price_e8, vault.price("BTCUSDT").updated_at) == (price, timestamp)


def test_a_first_price_lists_the_market(
    vault: VaultReader,
    set_price_e8: Callable[[str, int], TxReceipt],
    transact: Transact,
    trader: LocalAccount,
) -> None:
    assert vault.markets() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert vault.price("DOGEUSDT").price_e8 == 0
    with reverts(PriceNotSetError, market="DOGEUSDT", revert="PriceNotSet"):
        transact(
            trader, calldata.encode_call("openPosition", symbol_to_bytes32("DOGEUSDT"), True, units("1"), 0)
        )

    set_price_e8("DOGEUSDT", usd("0.25"))
    set_price_e8("DOGEUSDT", usd("0.26"))  # a second price does not list it twice
    assert vault.markets() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    transact(trader, calldata.encode_call("openPosition", symbol_to_bytes32("DOGEUSDT"), True, units("1"), 0))
    (position_id,) = vault.position_ids_of(trader.address)
    position = vault.position(position_id)
    assert (position.market, position.entry_price_e8) == ("DOGEUSDT", usd("0.26"))


STALE_ACTIONS: dict[str, Callable[[bytes], bytes]] = {
    "open": lambda _: calldata.encode_call("openPosition", BTC, True, units("1"), 0),
    "close": lambda pid: calldata.close_position(pid, units("0.5"), 0),
    "set-tp": lambda pid: calldata.set_take_profit(pid, usd("110000"), 5_000),
    "set-sl": lambda pid: calldata.set_stop_loss(pid, usd("80000"), 5_000),
    "execute-trigger": lambda pid: calldata.execute_trigger(pid),
}


@pytest.mark.parametrize("action", STALE_ACTIONS)
def test_stale_price_blocks_trading_until_a_fresh_price(
    chain: Chain,
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    action: str,
) -> None:
    position_id = open_position(size="1")
    transact(trader, calldata.set_take_profit(position_id, usd("100000"), 5_000))
    set_market_price("BTCUSDT", "100000")  # the take-profit is crossed: only staleness can stop its execution
    updated_at = vault.price("BTCUSDT").updated_at
    call = STALE_ACTIONS[action](position_id)

    chain.advance_time(DEFAULT_MAX_PRICE_AGE_S + 1)
    with reverts(
        StalePriceError,
        market="BTCUSDT",
        updatedAt=updated_at,
        maxPriceAge=DEFAULT_MAX_PRICE_AGE_S,
        revert="StalePrice",
    ):
        transact(trader, call)

    set_market_price("BTCUSDT", "100000")
    transact(trader, call)


def test_cancelling_an_order_needs_no_fresh_price(
    chain: Chain,
    vault: VaultReader,
    transact: Transact,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    """Cancelling only reduces risk, so a stale oracle must not trap an order in place."""
    position_id = open_position()
    transact(trader, calldata.set_stop_loss(position_id, usd("90000"), 5_000))
    chain.advance_time(DEFAULT_MAX_PRICE_AGE_S + 1)
    transact(trader, calldata.set_stop_loss(position_id, 0, 0))
    assert not vault.position(position_id).stop_loss.active


def test_only_price_keepers_set_prices_and_only_the_admin_appoints_them(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    deployer: LocalAccount,
    stranger: LocalAccount,
) -> None:
    set_btc = calldata.encode_call("setPrice", BTC, usd("97000"))
    assert contract.functions.isPriceKeeper(deployer.address).call()
    assert not contract.functions.isPriceKeeper(stranger.address).call()
    with reverts(NotAuthorizedError, caller=stranger.address, revert="NotAuthorized"):
        transact(stranger, set_btc)
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, calldata.encode_call("setPriceKeeper", stranger.address, True))

    granted = transact(deployer, calldata.encode_call("setPriceKeeper", stranger.address, True))
    assert event(contract, granted, "PriceKeeperSet") == {"keeper": stranger.address, "approved": True}
    transact(stranger, set_btc)
    assert vault.price("BTCUSDT").price_e8 == usd("97000")
    # A keeper is not an admin: it cannot appoint others.
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, calldata.encode_call("setPriceKeeper", stranger.address, True))

    revoked = transact(deployer, calldata.encode_call("setPriceKeeper", stranger.address, False))
    assert event(contract, revoked, "PriceKeeperSet") == {"keeper": stranger.address, "approved": False}
    assert not contract.functions.isPriceKeeper(stranger.address).call()
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, set_btc)


def test_max_price_age_is_admin_only_and_positive(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    deployer: LocalAccount,
    stranger: LocalAccount,
    chain: Chain,
    trader: LocalAccount,
) -> None:
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, calldata.encode_call("setMaxPriceAge", 60))
    with reverts(InvalidFieldError, field="maxPriceAge", revert="InvalidMaxPriceAge"):
        transact(deployer, calldata.encode_call("setMaxPriceAge", 0))

    receipt = transact(deployer, calldata.encode_call("setMaxPriceAge", 60))
    assert event(contract, receipt, "MaxPriceAgeSet") == {"maxPriceAge": 60}
    assert vault.max_price_age_s() == 60
    chain.advance_time(61)
    with reverts(StalePriceError, maxPriceAge=60):
        transact(trader, calldata.encode_call("openPosition", BTC, True, units("1"), 0))


def test_constructor_set_admin_keeper_and_max_age(
    chain: Chain, contract: Contract, deployment: Deployment, deployer: LocalAccount
) -> None:
    assert contract.functions.admin().call() == deployer.address
    assert contract.functions.maxPriceAge().call() == DEFAULT_MAX_PRICE_AGE_S
    block = deployment.block_number
    (age,) = [e["args"] for e in contract.events.MaxPriceAgeSet().get_logs(from_block=block, to_block=block)]
    (keeper,) = [
        e["args"] for e in contract.events.PriceKeeperSet().get_logs(from_block=block, to_block=block)
    ]
    assert dict(age) == {"maxPriceAge": DEFAULT_MAX_PRICE_AGE_S}
    assert dict(keeper) == {"keeper": deployer.address, "approved": True}
    receipt = chain.w3.eth.get_transaction_receipt(HexStr(deployment.transaction_hash))
    assert [e["maxPriceAge"] for e in events(contract, receipt, "MaxPriceAgeSet")] == [
        DEFAULT_MAX_PRICE_AGE_S
    ]


@pytest.mark.parametrize("max_price_age", [2**64, 2**256 - 1], ids=["2^64", "uint256-max"])
def test_a_huge_max_price_age_means_never_stale(
    chain: Chain,
    vault: VaultReader,
    transact: Transact,
    deployer: LocalAccount,
    trader: LocalAccount,
    open_position: Callable[..., bytes],
    max_price_age: int,
) -> None:
    """Regression: `updatedAt + maxPriceAge` overflowed: a "never stale" age bricked trading with a Panic."""
    position_id = open_position()
    transact(deployer, calldata.encode_call("setMaxPriceAge", max_price_age))
    chain.advance_time(10 * DEFAULT_MAX_PRICE_AGE_S)
    transact(trader, calldata.close_position(position_id, units("0.5"), 0))
    transact(trader, calldata.encode_call("openPosition", BTC, False, units("1"), 0))
    assert len(vault.position_ids_of(trader.address)) == 2


def test_constructor_rejects_a_zero_max_price_age(chain: Chain, deployer: LocalAccount) -> None:
    """Simulated only (the estimate reverts), so nothing is deployed."""
    with reverts(InvalidFieldError, field="maxPriceAge", revert="InvalidMaxPriceAge"):
        deploy_vault(chain.w3, deployer, max_price_age_s=0)
