"""Operator delegation: an approved operator closes and sets orders for the owner, until revoked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.chain.vault import VaultReader
from relayer.domain import calldata
from relayer.domain.positions import TriggerOrder
from relayer.errors import NotAuthorizedError
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, reverts

OWNER_ACTIONS: dict[str, Callable[[bytes], bytes]] = {
    "close": lambda pid: calldata.close_position(pid, units("0.25"), 0),
    "set-tp": lambda pid: calldata.set_take_profit(pid, usd("100000"), 5_000),
    "set-sl": lambda pid: calldata.set_stop_loss(pid, usd("90000"), 5_000),
    "multicall": lambda pid: calldata.multicall([calldata.close_position(pid, units("0.25"), 0)]),
}


def test_grant_and_revoke_emit_operator_rights_set(
    vault: VaultReader, contract: Contract, transact: Transact, trader: LocalAccount, stranger: LocalAccount
) -> None:
    """The boolean setter is kept: true grants every right without expiry, false revokes."""
    assert not vault.is_operator(trader.address, stranger.address)
    granted = event(
        contract, transact(trader, calldata.set_operator(stranger.address, True)), "OperatorRightsSet"
    )
    assert granted == {"owner": trader.address, "operator": stranger.address, "rights": 15, "expiresAt": 0}
    assert vault.is_operator(trader.address, stranger.address)
    assert contract.functions.operatorGrant(trader.address, stranger.address).call() == [15, 0]
    assert not vault.is_operator(stranger.address, trader.address)  # not symmetric
    revoked = event(
        contract, transact(trader, calldata.set_operator(stranger.address, False)), "OperatorRightsSet"
    )
    assert revoked == {"owner": trader.address, "operator": stranger.address, "rights": 0, "expiresAt": 0}
    assert not vault.is_operator(trader.address, stranger.address)


@pytest.mark.parametrize("action", OWNER_ACTIONS)
def test_operator_acts_for_the_owner_until_revoked(
    vault: VaultReader,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    action: str,
) -> None:
    position_id = open_position(size="1")
    call = OWNER_ACTIONS[action](position_id)
    with reverts(NotAuthorizedError, caller=stranger.address, revert="NotAuthorized"):
        transact(stranger, call)

    transact(trader, calldata.set_operator(stranger.address, True))
    receipt = transact(stranger, call)
    position = vault.position(position_id)
    if action in ("close", "multicall"):
        decreased = event(contract, receipt, "PositionDecreased")
        assert decreased["owner"] == trader.address  # PnL is the owner's, not the operator's
        assert position.size == units("0.75")
    elif action == "set-tp":
        assert position.take_profit == TriggerOrder(usd("100000"), 5_000)
        assert event(contract, receipt, "TriggerSet")["owner"] == trader.address
    else:
        assert position.stop_loss == TriggerOrder(usd("90000"), 5_000)

    transact(trader, calldata.set_operator(stranger.address, False))
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, call)


def test_an_operator_of_one_owner_has_no_rights_over_another(
    transact: Transact,
    trader: LocalAccount,
    other_trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
) -> None:
    transact(trader, calldata.set_operator(stranger.address, True))
    others = open_position(owner=other_trader)
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, calldata.close_position(others, units("0.1"), 0))
    # ...and the owner's operator grant does not make the owner an operator of the operator's positions.
    own = open_position(owner=stranger)
    with reverts(NotAuthorizedError, caller=trader.address):
        transact(trader, calldata.close_position(own, units("0.1"), 0))
