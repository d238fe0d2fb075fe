"""Helpers shared by the vault contract tests: EIP-712 requests, event reading, revert assertions.

Kept here once so every test module signs, reads events and checks reverts the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from relayer.chain.revert import decode_revert, revert_data
from relayer.chain.transact import current_fees
from relayer.constants import EIP712_NAME, EIP712_VERSION
from relayer.domain.typed_data import REQUEST_TYPES, request_types
from relayer.errors import RelayerError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group: `s` and `n - s` both sign the same digest (signature malleability)."""


def type_string(primary_type: str) -> str:
    """The EIP-712 type string (what the contract's `*_TYPEHASH` constants hash)."""
    fields = ",".join(f"{f['type']} {f['name']}" for f in REQUEST_TYPES[primary_type])
    return f"{primary_type}({fields})"


def eip712_domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    """The vault's EIP-712 domain: {name "PerpVault", version "1", chainId, verifyingContract}."""
    return {
        "name": EIP712_NAME,
        "version": EIP712_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(verifying_contract),
    }


def close_request(
    position_id: bytes, size_delta: int, allowed_price: int, nonce: int, deadline: int
) -> dict[str, Any]:
    return {
        "positionId": position_id,
        "sizeDelta": size_delta,
        "allowedPrice": allowed_price,
        "nonce": nonce,
        "deadline": deadline,
    }


def trigger_request(
    position_id: bytes, is_take_profit: bool, price: int, close_bps: int, nonce: int, deadline: int
) -> dict[str, Any]:
    return {
        "positionId": position_id,
        "isTakeProfit": is_take_profit,
        "price": price,
        "closeBps": close_bps,
        "nonce": nonce,
        "deadline": deadline,
    }


def primary_type_of(message: dict[str, Any]) -> str:
    return "SetTriggerRequest" if "isTakeProfit" in message else "ClosePositionRequest"


def typed_data_digest(domain: dict[str, Any], message: dict[str, Any]) -> bytes:
    """The EIP-712 digest the owner signs: keccak(0x19 0x01 || domainSeparator || structHash)."""
    primary = primary_type_of(message)
    signable = encode_typed_data(domain, {primary: REQUEST_TYPES[primary]}, message)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_request(account: LocalAccount, domain: dict[str, Any], message: dict[str, Any]) -> bytes:
    """The owner's 65-byte `r || s || v` signature of `message` under `domain` (real eth-account)."""
    primary = primary_type_of(message)
    signed = account.sign_typed_data(
        domain_data=domain, message_types={primary: REQUEST_TYPES[primary]}, message_data=message
    )
    return bytes(signed.signature)


def as_struct(message: dict[str, Any]) -> tuple[Any, ...]:
    """The request as the ABI tuple the vault's `...WithSig` functions take (fields in declaration order)."""
    return tuple(message[f["name"]] for f in REQUEST_TYPES[primary_type_of(message)])


def with_sig_call(message: dict[str, Any]) -> str:
    """The vault function that executes `message`."""
    return "setTriggerWithSig" if primary_type_of(message) == "SetTriggerRequest" else "closePositionWithSig"


def flip_s(signature: bytes) -> bytes:
    """The malleable twin of a signature: `s -> n - s` and `v` flipped; recovers the same signer."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


def events(contract: Contract, receipt: TxReceipt, name: str) -> list[dict[str, Any]]:
    """The decoded arguments of every `name` event the vault emitted in `receipt`, in log order."""
    decoded = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [dict(item["args"]) for item in decoded]


def event(contract: Contract, receipt: TxReceipt, name: str) -> dict[str, Any]:
    """The arguments of the one `name` event in `receipt` (fails if there is not exactly one)."""
    found = events(contract, receipt, name)
    assert len(found) == 1, f"expected one {name} event, found {len(found)}"
    return found[0]


def event_names(contract: Contract, receipt: TxReceipt) -> list[str]:
    """The names of the vault's events in `receipt`, in log order (what was emitted, and in which order)."""
    by_topic = {
        keccak(text=f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"): item["name"]
        for item in contract.abi
        if item["type"] == "event"
    }
    return [
        by_topic[bytes(log["topics"][0])]
        for log in receipt["logs"]
        if log["address"] == contract.address and bytes(log["topics"][0]) in by_topic
    ]


def _normalized(value: Any) -> Any:
    # Hex strings (addresses, ids) compare case-insensitively: checksumming is presentation, not content.
    if isinstance(value, str) and value.startswith("0x"):
        return value.lower()
    return value


@contextmanager
def reverts(
    error_type: type[RelayerError], /, **details: Any
) -> Iterator[pytest.ExceptionInfo[RelayerError]]:
    """Expect exactly `error_type` (decoded from the vault's custom error) with these `details` entries."""
    with pytest.raises(error_type) as info:
        yield info
    error = info.value
    assert type(error) is error_type, f"expected {error_type.__name__}, got {type(error).__name__}: {error}"
    assert error.code == error_type.code
    for key, expected in details.items():
        assert key in error.details, f"{key!r} missing from {error.details}"
        assert _normalized(error.details[key]) == _normalized(expected), (key, error.details)


def send_unchecked(
    w3: Web3, account: LocalAccount, to: str, data: bytes, *, gas: int = 1_000_000
) -> TxReceipt:
    """Sign and mine a call WITHOUT simulating it first, so a reverting call lands on chain (status 0)."""
    fees = current_fees(w3)
    tx: dict[str, Any] = {
        "to": to_checksum_address(to),
        "data": HexBytes(data),
        "value": 0,
        "gas": gas,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": w3.eth.chain_id,
        "type": 2,
        "maxFeePerGas": fees.max_fee_per_gas_wei,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas_wei,
    }
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash)


@contextmanager
def reverts_with(name: str, /, **args: Any) -> Iterator[pytest.ExceptionInfo[RelayerError]]:
    """Expect the vault's custom error `name` with these arguments (ABI names, raw values), read from the
    revert data itself: the `ExecutionRevertedError`'s `details.data` of an unmapped error, or the node error
    a mapped one was translated from (its `__cause__`)."""
    with pytest.raises(RelayerError) as info:
        yield info
    error = info.value
    data = error.details.get("data")
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) else None
    cause = error.__cause__
    while raw is None and cause is not None:
        raw = revert_data(cause)
        cause = cause.__cause__
    assert raw is not None, f"no revert data behind {type(error).__name__}: {error.details}"
    decoded = decode_revert(raw)
    assert decoded is not None, f"undecodable revert 0x{raw.hex()}"
    assert decoded.name == name, f"expected {name}, got {decoded.name} {decoded.args}"
    if "revert" in error.details:
        assert error.details["revert"] == name
    for key, expected in args.items():
        assert _normalized(decoded.args[key]) == _normalized(expected), (key, decoded.args)


NEW_REQUEST_TYPES: dict[str, dict[str, list[dict[str, str]]]] = {
    primary: request_types(primary)
    for primary in ("SetExitPlanRequest", "CancelOrderRequest", "SetOperatorRequest", "EmergencyExitRequest")
}
"""Issue 12's signed requests as EIP-712 types: the relayer's own (`relayer.domain.typed_data`), which the
contract tests check against the vault's type hashes."""
EXIT_ORDER_FIELDS = REQUEST_TYPES["ExitOrder"]


def sign_new_request(
    account: LocalAccount, domain: dict[str, Any], primary_type: str, message: dict[str, Any]
) -> bytes:
    """The 65-byte signature of one of issue 12's requests (real eth-account `sign_typed_data`)."""
    signed = account.sign_typed_data(
        domain_data=domain, message_types=NEW_REQUEST_TYPES[primary_type], message_data=message
    )
    return bytes(signed.signature)


def new_request_struct(primary_type: str, message: dict[str, Any]) -> tuple[Any, ...]:
    """The request as the ABI tuple its `...WithSig` function takes."""
    fields = NEW_REQUEST_TYPES[primary_type][primary_type]
    values = []
    for field in fields:
        value = message[field["name"]]
        if field["type"] == "ExitOrder[]":
            value = [tuple(order[f["name"]] for f in EXIT_ORDER_FIELDS) for order in value]
        values.append(value)
    return tuple(values)
