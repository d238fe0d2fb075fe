"""Issue 12's EIP-712 requests (set an exit plan, cancel an order, set operator rights, emergency exit),
signed with eth-account's `sign_typed_data` and submitted by a relayer that is neither owner nor operator.
They share the existing requests' replay rules: the owner's nonce, a deadline, this chain and vault only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.contract import Contract
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.domain import calldata
from relayer.domain import typed_data as typed
from relayer.errors import ExpiredRequestError, InvalidNonceError, InvalidSignatureError
from tests.conftest import usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import (
    NEW_REQUEST_TYPES,
    eip712_domain,
    event,
    event_names,
    new_request_struct,
    reverts,
    sign_new_request,
)

HOUR_S = 3_600
WITH_SIG = {
    "SetExitPlanRequest": "setExitPlanWithSig",
    "CancelOrderRequest": "cancelOrderWithSig",
    "SetOperatorRequest": "setOperatorWithSig",
    "EmergencyExitRequest": "emergencyExitWithSig",
}
TYPEHASH = {
    "SetExitPlanRequest": "SET_EXIT_PLAN_TYPEHASH",
    "CancelOrderRequest": "CANCEL_ORDER_TYPEHASH",
    "SetOperatorRequest": "SET_OPERATOR_TYPEHASH",
    "EmergencyExitRequest": "EMERGENCY_EXIT_TYPEHASH",
}


def _type_string(primary: str) -> str:
    """EIP-712 `encodeType`: the primary type, then referenced types sorted by name."""
    types = NEW_REQUEST_TYPES[primary]

    def one(name: str) -> str:
        return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in types[name])})"

    return one(primary) + "".join(one(name) for name in sorted(types) if name != primary)


@pytest.fixture
def submit(transact: Transact, stranger: LocalAccount) -> Callable[[str, dict[str, Any], bytes], TxReceipt]:
    def _submit(primary: str, message: dict[str, Any], signature: bytes) -> TxReceipt:
        struct = new_request_struct(primary, message)
        return transact(stranger, calldata.encode_call(WITH_SIG[primary], struct, signature))

    return _submit


@pytest.fixture
def deadline(now: Callable[[], int]) -> int:
    return now() + HOUR_S


def _messages(position_id: bytes, owner: str, operator: str, deadline: int) -> dict[str, dict[str, Any]]:
    return {
        "SetExitPlanRequest": {
            "positionId": position_id,
            "orders": [
                {"orderId": 0, "price": usd("97000"), "shareBps": 2_500, "trailBps": 0},
                {"orderId": 1, "price": usd("98000"), "shareBps": 2_500, "trailBps": 0},
                {"orderId": 4, "price": usd("94000"), "shareBps": 10_000, "trailBps": 200},
            ],
            "nonce": 0,
            "deadline": deadline,
        },
        "CancelOrderRequest": {"positionId": position_id, "orderId": 4, "nonce": 0, "deadline": deadline},
        "SetOperatorRequest": {
            "owner": owner,
            "operator": operator,
            "rights": 1 | 2 | 4,
            "expiresAt": deadline + HOUR_S,
            "nonce": 0,
            "deadline": deadline,
        },
        "EmergencyExitRequest": {"owner": owner, "market": b"\x00" * 32, "nonce": 0, "deadline": deadline},
    }


@pytest.mark.parametrize("primary", list(NEW_REQUEST_TYPES))
def test_typehashes_are_what_eth_account_signs(
    contract: Contract, domain: dict[str, Any], primary: str
) -> None:
    assert getattr(contract.functions, TYPEHASH[primary])().call() == keccak(text=_type_string(primary))
    # The digest eth-account signs is built from the same type string (checked on a zero message).
    message: dict[str, Any] = {
        f["name"]: ([] if f["type"].endswith("[]") else 0) for f in NEW_REQUEST_TYPES[primary][primary]
    }
    for name in ("owner", "operator"):
        if name in message:
            message[name] = "0x" + "00" * 20
    for name in ("positionId", "market"):
        if name in message:
            message[name] = b"\x00" * 32
    signable = encode_typed_data(domain, NEW_REQUEST_TYPES[primary], message)
    assert signable.header == contract.functions.DOMAIN_SEPARATOR().call()


@pytest.mark.parametrize("primary", list(NEW_REQUEST_TYPES))
def test_each_signed_request_executes_once_and_its_replay_is_refused(
    contract: Contract,
    transact: Transact,
    submit: Callable[[str, dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    stranger: LocalAccount,
    accounts: list[LocalAccount],
    domain: dict[str, Any],
    open_position: Callable[..., bytes],
    deadline: int,
    primary: str,
) -> None:
    position_id = open_position(size="0.42")
    transact(trader, calldata.encode_call("setOrder", position_id, 4, usd("93000"), 10_000, 0))
    operator = accounts[4].address
    message = _messages(position_id, trader.address, operator, deadline)[primary]
    signature = sign_new_request(trader, domain, primary, message)

    receipt = submit(primary, message, signature)
    assert event_names(contract, receipt)[0] == "NonceUsed"
    assert event(contract, receipt, "NonceUsed") == {"owner": trader.address, "nonce": 0}
    orders, _ = contract.functions.ordersOf(position_id).call()
    if primary == "SetExitPlanRequest":
        assert [(o[0], o[2], o[3], o[4]) for o in orders] == [
            (4, usd("94000"), 10_000, 200),
            (0, usd("97000"), 2_500, 0),
            (1, usd("98000"), 2_500, 0),
        ]
    elif primary == "CancelOrderRequest":
        assert orders == []
    elif primary == "SetOperatorRequest":
        assert contract.functions.operatorGrant(trader.address, operator).call() == [7, deadline + HOUR_S]
    else:
        assert event(contract, receipt, "EmergencyExited")["positionsClosed"] == 1
        assert contract.functions.getPosition(position_id).call()[3] == 0

    with reverts(InvalidNonceError, owner=trader.address, expected=1, got=0):
        submit(primary, message, signature)  # the same request again: replay refused


@pytest.mark.parametrize("primary", list(NEW_REQUEST_TYPES))
def test_expired_foreign_or_tampered_requests_are_refused(
    chain: Chain,
    contract: Contract,
    submit: Callable[[str, dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    stranger: LocalAccount,
    accounts: list[LocalAccount],
    domain: dict[str, Any],
    open_position: Callable[..., bytes],
    deadline: int,
    now: Callable[[], int],
    primary: str,
) -> None:
    position_id = open_position(size="0.42")
    operator = accounts[4].address
    message = _messages(position_id, trader.address, operator, deadline)[primary]

    # Signed by someone else (for an owner-named request, the stranger signs as if they were the trader).
    with reverts(InvalidSignatureError):
        submit(primary, message, sign_new_request(stranger, domain, primary, message))
    # Signed for another chain: the domain separator differs.
    foreign = eip712_domain(int(domain["chainId"]) + 1, domain["verifyingContract"])
    with reverts(InvalidSignatureError):
        submit(primary, message, sign_new_request(trader, foreign, primary, message))
    # A field changed after signing.
    signature = sign_new_request(trader, domain, primary, message)
    tampered = dict(message, deadline=deadline + 1)
    with reverts(InvalidSignatureError):
        submit(primary, tampered, signature)
    # Past its deadline.
    stale = dict(message, deadline=now())
    stale_signature = sign_new_request(trader, domain, primary, stale)
    chain.advance_time(10)
    with reverts(ExpiredRequestError):
        submit(primary, stale, stale_signature)
    assert contract.functions.nonces(trader.address).call() == 0  # nothing consumed


def _relayer_requests(
    position_id: bytes, owner: str, operator: str, deadline: int
) -> dict[str, typed.PlanRequest]:
    return {
        "SetExitPlanRequest": typed.ExitPlanRequest(
            position_id,
            ((0, usd("97000"), 2_500, 0), (1, usd("98000"), 2_500, 0), (4, usd("94000"), 10_000, 200)),
            0,
            deadline,
        ),
        "CancelOrderRequest": typed.CancelOrderRequest(position_id, 4, 0, deadline),
        "SetOperatorRequest": typed.OperatorRequest(
            owner, operator, 1 | 2 | 4, deadline + HOUR_S, 0, deadline
        ),
        "EmergencyExitRequest": typed.EmergencyExitRequest(owner, "BTCUSDT", 0, deadline),
    }


@pytest.mark.parametrize("primary", list(NEW_REQUEST_TYPES))
def test_the_relayers_typed_data_is_what_the_vault_accepts(
    chain: Chain,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    deadline: int,
    primary: str,
) -> None:
    """`relayer.domain.typed_data`'s payload (decimal strings, hex ids), signed as a wallet would with
    eth-account's `full_message`, recovers to the owner and executes through the request's own calldata."""
    position_id = open_position(size="0.42")
    transact(trader, calldata.set_order(position_id, 4, usd("93000"), 10_000))
    request = _relayer_requests(position_id, trader.address, accounts[4].address, deadline)[primary]
    payload = typed.typed_data(request, chain_id=chain.w3.eth.chain_id, vault=contract.address)
    assert payload["primaryType"] == primary
    signature = bytes(Account.sign_typed_data(trader.key, full_message=payload).signature)
    assert (
        typed.recover_signer(request, signature, chain_id=chain.w3.eth.chain_id, vault=contract.address)
        == trader.address
    )

    receipt = transact(stranger, request.calldata(signature))
    assert event(contract, receipt, "NonceUsed") == {"owner": trader.address, "nonce": 0}
    orders, _ = contract.functions.ordersOf(position_id).call()
    if primary == "SetExitPlanRequest":
        assert [o[0] for o in orders] == [4, 0, 1]
    elif primary == "CancelOrderRequest":
        assert orders == []
    elif primary == "SetOperatorRequest":
        assert contract.functions.operatorGrant(trader.address, accounts[4].address).call() == [
            7,
            deadline + HOUR_S,
        ]
    else:
        assert event(contract, receipt, "EmergencyExited")["positionsClosed"] == 1
