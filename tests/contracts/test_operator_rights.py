"""Reduce-only operators: the owner grants rights (bit flags) until an expiry; every action an operator lacks
the right for reverts with an error naming that right.

The position under test is 1 BTC at 96,000 with a 25% take-profit 4,000 into profit and a 50% stop trailing 3%
3,000 away; "toward" and "away" are per side (a long's stop moves toward the price by going up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.domain import calldata
from relayer.errors import NotAuthorizedError
from tests.conftest import units
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, reverts, reverts_with

CLOSE, SET_TAKE_PROFIT, TIGHTEN_STOP, LOOSEN_OR_CANCEL_STOP = 1, 2, 4, 8
ALL_RIGHTS = 15
RELAYER_RIGHTS = CLOSE | SET_TAKE_PROFIT | TIGHTEN_STOP
"""What an API-key relayer asks for: a leaked key can close, but never remove or loosen a stop."""


def price(is_long: bool, offset_usd: int) -> int:
    """96,000 moved `offset_usd` in the trader's favour (negative: against)."""
    return (96_000 + (offset_usd if is_long else -offset_usd)) * 10**8


def set_order(pid: bytes, order_id: int, price_e8: int, share: int, trail: int = 0) -> bytes:
    return calldata.encode_call("setOrder", pid, order_id, price_e8, share, trail)


@dataclass(frozen=True)
class Action:
    rights: int  # every right the action needs
    call: Callable[[bytes, bool, str], bytes]  # (position id, is long, owner) -> calldata


ACTIONS: dict[str, Action] = {
    "close": Action(CLOSE, lambda pid, long, owner: calldata.close_position(pid, units("0.1"), 0)),
    "multicall-close": Action(
        CLOSE, lambda pid, long, owner: calldata.multicall([calldata.close_position(pid, units("0.1"), 0)])
    ),
    "emergency-exit": Action(
        CLOSE, lambda pid, long, owner: calldata.encode_call("emergencyExit", owner, b"\x00" * 32)
    ),
    "replace-primary-tp": Action(
        SET_TAKE_PROFIT, lambda pid, long, owner: calldata.set_take_profit(pid, price(long, 5_000), 2_500)
    ),
    "add-tp-tier": Action(
        SET_TAKE_PROFIT, lambda pid, long, owner: set_order(pid, 1, price(long, 6_000), 2_500)
    ),
    "cancel-tp": Action(
        SET_TAKE_PROFIT, lambda pid, long, owner: calldata.encode_call("cancelOrder", pid, 0)
    ),
    "new-stop": Action(TIGHTEN_STOP, lambda pid, long, owner: set_order(pid, 5, price(long, -4_000), 1_000)),
    "stop-toward-price": Action(
        TIGHTEN_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -2_000), 5_000, 300)
    ),
    "stop-share-grows": Action(
        TIGHTEN_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -3_000), 6_000, 300)
    ),
    "stop-trail-narrows": Action(
        TIGHTEN_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -3_000), 5_000, 200)
    ),
    "stop-away-from-price": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -4_000), 5_000, 300)
    ),
    "stop-share-shrinks": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -3_000), 4_000, 300)
    ),
    "stop-untrailed": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -3_000), 5_000, 0)
    ),
    "stop-trail-widens": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: set_order(pid, 4, price(long, -3_000), 5_000, 500)
    ),
    "cancel-stop": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: calldata.encode_call("cancelOrder", pid, 4)
    ),
    "legacy-cancel-stop": Action(
        LOOSEN_OR_CANCEL_STOP, lambda pid, long, owner: calldata.set_stop_loss(pid, 0, 0)
    ),
    "plan-drops-the-stop": Action(
        SET_TAKE_PROFIT | LOOSEN_OR_CANCEL_STOP,
        lambda pid, long, owner: calldata.encode_call(
            "setExitPlan", pid, [(0, price(long, 4_000), 2_500, 0)]
        ),
    ),
    "plan-tightens-the-stop": Action(
        SET_TAKE_PROFIT | TIGHTEN_STOP,
        lambda pid, long, owner: calldata.encode_call(
            "setExitPlan", pid, [(0, price(long, 4_000), 2_500, 0), (4, price(long, -1_000), 5_000, 300)]
        ),
    ),
}


@pytest.fixture
def guarded_position(
    transact: Transact, trader: LocalAccount, open_position: Callable[..., bytes]
) -> Callable[[bool], bytes]:
    def _open(is_long: bool) -> bytes:
        position_id = open_position(is_long=is_long, size="1")
        transact(trader, set_order(position_id, 0, price(is_long, 4_000), 2_500))
        transact(trader, set_order(position_id, 4, price(is_long, -3_000), 5_000, 300))
        return position_id

    return _open


def grant(operator: str, rights: int, expires_at: int = 0) -> bytes:
    return calldata.encode_call("setOperatorRights", operator, rights, expires_at)


@pytest.mark.parametrize("is_long", [True, False], ids=["long", "short"])
@pytest.mark.parametrize("name", ACTIONS)
def test_every_action_needs_its_right_and_only_it(
    chain: Chain,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    guarded_position: Callable[[bool], bytes],
    name: str,
    is_long: bool,
) -> None:
    action = ACTIONS[name]
    position_id = guarded_position(is_long)
    call = action.call(position_id, is_long, trader.address)
    for right in (CLOSE, SET_TAKE_PROFIT, TIGHTEN_STOP, LOOSEN_OR_CANCEL_STOP):
        if action.rights & right:
            transact(trader, grant(stranger.address, ALL_RIGHTS & ~right))
            with reverts_with("OperatorRightMissing", operator=stranger.address, right=right):
                transact(stranger, call)
    transact(trader, grant(stranger.address, action.rights))  # exactly what it needs is enough
    transact(stranger, call)


@pytest.mark.parametrize("name", [n for n, a in ACTIONS.items() if a.rights & LOOSEN_OR_CANCEL_STOP])
def test_a_relayer_key_can_close_and_tighten_but_never_loosen_or_remove_a_stop(
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    guarded_position: Callable[[bool], bytes],
    name: str,
) -> None:
    position_id = guarded_position(True)
    transact(trader, grant(stranger.address, RELAYER_RIGHTS))
    with reverts_with("OperatorRightMissing", operator=stranger.address, right=LOOSEN_OR_CANCEL_STOP):
        transact(stranger, ACTIONS[name].call(position_id, True, trader.address))
    transact(stranger, ACTIONS["stop-toward-price"].call(position_id, True, trader.address))
    transact(stranger, ACTIONS["close"].call(position_id, True, trader.address))


def test_rights_expire(
    chain: Chain,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    guarded_position: Callable[[bool], bytes],
    now: Callable[[], int],
    set_market_price: Callable[[str, str], None],
) -> None:
    position_id = guarded_position(True)
    expires_at = now() + 100
    receipt = transact(trader, grant(stranger.address, CLOSE, expires_at))
    assert event(contract, receipt, "OperatorRightsSet") == {
        "owner": trader.address,
        "operator": stranger.address,
        "rights": CLOSE,
        "expiresAt": expires_at,
    }
    transact(stranger, calldata.close_position(position_id, units("0.1"), 0))
    assert contract.functions.isOperator(trader.address, stranger.address).call()

    chain.advance_time(200)
    set_market_price("BTCUSDT", "96000")  # keep the price fresh: only the grant is stale
    assert not contract.functions.isOperator(trader.address, stranger.address).call()
    assert contract.functions.operatorGrant(trader.address, stranger.address).call() == [CLOSE, expires_at]
    with reverts_with("OperatorExpired", operator=stranger.address, expiresAt=expires_at):
        transact(stranger, calldata.close_position(position_id, units("0.1"), 0))


def test_no_grant_revoked_or_invalid_rights(
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    guarded_position: Callable[[bool], bytes],
) -> None:
    position_id = guarded_position(True)
    close = calldata.close_position(position_id, units("0.1"), 0)
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, close)
    transact(trader, grant(stranger.address, CLOSE))
    transact(trader, grant(stranger.address, 0))  # rights 0 revokes
    with reverts(NotAuthorizedError, caller=stranger.address):
        transact(stranger, close)
    with reverts_with("OperatorRightsInvalid", rights=16):
        transact(trader, grant(stranger.address, 16))
    # The owner needs no grant for anything, loosening included.
    transact(trader, ACTIONS["cancel-stop"].call(position_id, True, trader.address))
