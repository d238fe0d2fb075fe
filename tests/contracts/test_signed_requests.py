"""EIP-712 signed requests: closePositionWithSig / setTriggerWithSig, signed by the owner, sent by anyone.

Signatures are real eth-account `sign_typed_data` signatures over the vault's real domain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import Signature
from eth_utils.crypto import keccak
from web3.contract import Contract
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.vault import VaultReader
from relayer.constants import CLOSE_ALL_SIZE
from relayer.domain import calldata
from relayer.domain.positions import TriggerOrder
from relayer.domain.typed_data import REQUEST_TYPES
from relayer.errors import (
    ExpiredRequestError,
    InvalidNonceError,
    InvalidSignatureError,
    PositionNotFoundError,
    PriceSlippageError,
)
from tests.conftest import units, usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import (
    SECP256K1_N,
    as_struct,
    close_request,
    eip712_domain,
    event,
    event_names,
    flip_s,
    reverts,
    sign_request,
    trigger_request,
    type_string,
    typed_data_digest,
    with_sig_call,
)

HOUR_S = 3_600


@pytest.fixture
def submit(transact: Transact, stranger: LocalAccount) -> Callable[[dict[str, Any], bytes], TxReceipt]:
    """A relayer (the stranger, neither owner nor operator) submits a signed request."""

    def _submit(message: dict[str, Any], signature: bytes) -> TxReceipt:
        return transact(stranger, calldata.encode_call(with_sig_call(message), as_struct(message), signature))

    return _submit


@pytest.fixture
def position_id(open_position: Callable[..., bytes]) -> bytes:
    return open_position(size="1")


@pytest.fixture
def deadline(now: Callable[[], int]) -> int:
    return now() + HOUR_S


def test_domain_and_typehashes_match_eth_account(contract: Contract, domain: dict[str, Any]) -> None:
    """The vault's separator and type hashes are exactly what eth-account signs, field for field."""
    signable = encode_typed_data(
        domain,
        {"ClosePositionRequest": REQUEST_TYPES["ClosePositionRequest"]},
        close_request(b"\0" * 32, 0, 0, 0, 0),
    )
    assert contract.functions.DOMAIN_SEPARATOR().call() == signable.header
    assert contract.functions.CLOSE_POSITION_TYPEHASH().call() == keccak(
        text=type_string("ClosePositionRequest")
    )
    assert contract.functions.SET_TRIGGER_TYPEHASH().call() == keccak(text=type_string("SetTriggerRequest"))


def test_signed_close_by_a_relayer(
    vault: VaultReader,
    contract: Contract,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
) -> None:
    message = close_request(position_id, units("0.4"), usd("95000"), 0, deadline)
    receipt = submit(message, sign_request(trader, domain, message))

    assert event_names(contract, receipt) == ["NonceUsed", "PositionDecreased"]
    assert event(contract, receipt, "NonceUsed") == {"owner": trader.address, "nonce": 0}
    decreased = event(contract, receipt, "PositionDecreased")
    assert (decreased["owner"], decreased["sizeDelta"], decreased["remainingSize"]) == (
        trader.address,
        units("0.4"),
        units("0.6"),
    )
    assert vault.nonce_of(trader.address) == 1

    # Nonces increment: the next request carries 1, and CLOSE_ALL works through a signature too.
    rest = close_request(position_id, CLOSE_ALL_SIZE, 0, 1, deadline)
    receipt = submit(rest, sign_request(trader, domain, rest))
    assert event(contract, receipt, "NonceUsed") == {"owner": trader.address, "nonce": 1}
    assert event(contract, receipt, "PositionDecreased")["remainingSize"] == 0
    assert vault.nonce_of(trader.address) == 2


@pytest.mark.parametrize("is_take_profit", [True, False], ids=["tp", "sl"])
def test_signed_set_and_cancel_trigger(
    vault: VaultReader,
    contract: Contract,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
    is_take_profit: bool,
) -> None:
    price = usd("100000") if is_take_profit else usd("90000")
    message = trigger_request(position_id, is_take_profit, price, 2_500, 0, deadline)
    receipt = submit(message, sign_request(trader, domain, message))
    assert event_names(contract, receipt) == ["NonceUsed", "TriggerSet"]
    assert event(contract, receipt, "TriggerSet") == {
        "positionId": position_id,
        "owner": trader.address,
        "orderId": 0 if is_take_profit else 4,
        "isTakeProfit": is_take_profit,
        "price": price,
        "shareBps": 2_500,
        "trailBps": 0,
    }
    position = vault.position(position_id)
    assert (position.take_profit if is_take_profit else position.stop_loss) == TriggerOrder(price, 2_500)

    cancel = trigger_request(position_id, is_take_profit, 0, 0, 1, deadline)
    submit(cancel, sign_request(trader, domain, cancel))
    position = vault.position(position_id)
    assert (position.take_profit if is_take_profit else position.stop_loss) == TriggerOrder(0, 0)


def _requests(position_id: bytes, deadline: int, nonce: int = 0) -> list[dict[str, Any]]:
    return [
        close_request(position_id, units("0.1"), 0, nonce, deadline),
        trigger_request(position_id, True, usd("100000"), 5_000, nonce, deadline),
    ]


REQUEST_KINDS = pytest.mark.parametrize("kind", [0, 1], ids=["close", "set-trigger"])


@REQUEST_KINDS
def test_replay_is_invalid_nonce(
    vault: VaultReader,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
    kind: int,
) -> None:
    message = _requests(position_id, deadline)[kind]
    signature = sign_request(trader, domain, message)
    submit(message, signature)
    with reverts(InvalidNonceError, owner=trader.address, expected=1, got=0, revert="InvalidNonce"):
        submit(message, signature)
    skipped = _requests(position_id, deadline, nonce=2)[kind]  # out of order
    with reverts(InvalidNonceError, expected=1, got=2):
        submit(skipped, sign_request(trader, domain, skipped))
    assert vault.nonce_of(trader.address) == 1


@REQUEST_KINDS
def test_expired_request(
    chain: Chain,
    vault: VaultReader,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    now: Callable[[], int],
    kind: int,
) -> None:
    deadline = now() + 60
    message = _requests(position_id, deadline)[kind]
    signature = sign_request(trader, domain, message)
    chain.advance_time(61)
    with reverts(ExpiredRequestError, deadline=deadline, revert="ExpiredRequest") as info:
        submit(message, signature)
    assert info.value.details["timestamp"] > deadline
    assert vault.nonce_of(trader.address) == 0


def _wrong_chain_id(domain: dict[str, Any], _: str) -> dict[str, Any]:
    return {**domain, "chainId": domain["chainId"] + 1}


def _wrong_contract(domain: dict[str, Any], other_address: str) -> dict[str, Any]:
    return eip712_domain(domain["chainId"], other_address)


def _wrong_name(domain: dict[str, Any], _: str) -> dict[str, Any]:
    return {**domain, "name": "PerpVault2"}


@REQUEST_KINDS
@pytest.mark.parametrize(
    "tamper",
    [_wrong_chain_id, _wrong_contract, _wrong_name],
    ids=["wrong-chain-id", "wrong-verifying-contract", "wrong-name"],
)
def test_signature_for_another_domain_is_invalid(
    vault: VaultReader,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    stranger: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
    kind: int,
    tamper: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    message = _requests(position_id, deadline)[kind]
    with reverts(InvalidSignatureError, revert="InvalidSignature"):
        submit(message, sign_request(trader, tamper(domain, stranger.address), message))
    assert vault.nonce_of(trader.address) == 0


def _by_other_signer(
    signature: bytes, other: LocalAccount, domain: dict[str, Any], message: dict[str, Any]
) -> bytes:
    return sign_request(other, domain, message)


SIGNATURE_TAMPERS: dict[str, Callable[[bytes, LocalAccount, dict[str, Any], dict[str, Any]], bytes]] = {
    "wrong-signer": _by_other_signer,
    "high-s-twin": lambda sig, *_: flip_s(sig),
    "too-short": lambda sig, *_: sig[:64],
    "too-long": lambda sig, *_: sig + b"\0",
    "empty": lambda sig, *_: b"",
    "v-not-27-or-28": lambda sig, *_: sig[:64] + bytes([sig[64] - 27]),
    "unrecoverable": lambda sig, *_: bytes(32) + sig[32:],
}


@REQUEST_KINDS
@pytest.mark.parametrize("tamper", SIGNATURE_TAMPERS)
def test_bad_signature_is_invalid(
    vault: VaultReader,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    other_trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
    kind: int,
    tamper: str,
) -> None:
    message = _requests(position_id, deadline)[kind]
    good = sign_request(trader, domain, message)
    bad = SIGNATURE_TAMPERS[tamper](good, other_trader, domain, message)
    assert bad != good
    with reverts(InvalidSignatureError, revert="InvalidSignature"):
        submit(message, bad)
    assert vault.nonce_of(trader.address) == 0
    submit(message, good)  # the untampered signature still works: the rejection was the tampering's doing
    assert vault.nonce_of(trader.address) == 1


def test_high_s_twin_recovers_the_owner_off_chain(
    trader: LocalAccount, domain: dict[str, Any], position_id: bytes, deadline: int
) -> None:
    """The malleable twin is a valid signature by the owner: the vault rejects it by rule (EIP-2)."""
    message = _requests(position_id, deadline)[0]
    twin = flip_s(sign_request(trader, domain, message))
    r, s, v = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big"), twin[64]
    assert s > SECP256K1_N // 2
    digest = typed_data_digest(domain, message)
    recovered = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    assert recovered.to_checksum_address() == trader.address


def test_signed_request_for_unknown_position(
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    deadline: int,
) -> None:
    unknown = b"\x11" * 32
    message = close_request(unknown, units("0.1"), 0, 0, deadline)
    with reverts(PositionNotFoundError, positionId="0x" + unknown.hex()):
        submit(message, sign_request(trader, domain, message))


def test_a_failing_action_does_not_consume_the_nonce(
    vault: VaultReader,
    submit: Callable[[dict[str, Any], bytes], TxReceipt],
    trader: LocalAccount,
    domain: dict[str, Any],
    position_id: bytes,
    deadline: int,
) -> None:
    """The nonce is consumed inside the same transaction as the action: a slippage revert leaves it unused."""
    message = close_request(position_id, units("0.1"), usd("96000.00000001"), 0, deadline)
    with reverts(PriceSlippageError):
        submit(message, sign_request(trader, domain, message))
    assert vault.nonce_of(trader.address) == 0
