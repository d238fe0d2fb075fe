"""The vault's EIP-712 requests: the exact payloads a wallet signs, and the off-chain checks of a signature.

`typed_data(request, ...)` returns a full EIP-712 message that `eth_account.Account.sign_typed_data(key,
full_message=...)` (or a wallet's `eth_signTypedData_v4`) signs as is; uint256 values are decimal strings
so no JSON client loses precision. The checks mirror `Vault._useSignedRequest` and `_recover` exactly
(deadline, nonce, 65-byte low-s signature, v 27/28, signer = position owner), so a request the relayer
accepts is one the vault accepts, and a bad one is refused before any gas is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from relayer import calldata
from relayer.constants import BPS_DENOMINATOR, EIP712_NAME, EIP712_VERSION, UINT256_MAX
from relayer.errors import (
    ExpiredRequestError,
    InvalidCloseBpsError,
    InvalidFieldError,
    InvalidNonceError,
    InvalidSignatureError,
)
from relayer.relay.status import RecordKind
from relayer.units import parse_int

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
"""Largest canonical (low-s) signature `s` (EIP-2); the vault rejects anything above it."""

SIGNATURE_LENGTH = 65
"""`r || s || v`, as the vault's `_recover` requires."""

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_CLOSE_TYPE = [
    {"name": "positionId", "type": "bytes32"},
    {"name": "sizeDelta", "type": "uint256"},
    {"name": "allowedPrice", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_TRIGGER_TYPE = [
    {"name": "positionId", "type": "bytes32"},
    {"name": "isTakeProfit", "type": "bool"},
    {"name": "price", "type": "uint256"},
    {"name": "closeBps", "type": "uint16"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class CloseRequest:
    """`ClosePositionRequest` in chain units (size 18 decimals, USD 8 decimals, deadline unix seconds)."""

    position_id: bytes
    size_delta: int
    allowed_price_e8: int
    nonce: int
    deadline: int

    kind = RecordKind.CLOSE
    primary_type = "ClosePositionRequest"

    def message(self) -> dict[str, Any]:
        return {
            "positionId": "0x" + self.position_id.hex(),
            "sizeDelta": str(self.size_delta),
            "allowedPrice": str(self.allowed_price_e8),
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.close_position_with_sig(
            self.position_id, self.size_delta, self.allowed_price_e8, self.nonce, self.deadline, signature
        )


@dataclass(frozen=True)
class TriggerRequest:
    """`SetTriggerRequest` in chain units (price USD 8 decimals, 0 cancels; closeBps 1..10000)."""

    position_id: bytes
    is_take_profit: bool
    price_e8: int
    close_bps: int
    nonce: int
    deadline: int

    kind = RecordKind.TRIGGER
    primary_type = "SetTriggerRequest"

    def message(self) -> dict[str, Any]:
        return {
            "positionId": "0x" + self.position_id.hex(),
            "isTakeProfit": self.is_take_profit,
            "price": str(self.price_e8),
            "closeBps": self.close_bps,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.set_trigger_with_sig(
            self.position_id,
            self.is_take_profit,
            self.price_e8,
            self.close_bps,
            self.nonce,
            self.deadline,
            signature,
        )


SignedRequest = CloseRequest | TriggerRequest


def typed_data(request: SignedRequest, *, chain_id: int, vault: str) -> dict[str, Any]:
    """The full EIP-712 payload of `request` for this chain and vault, ready for `sign_typed_data`."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN_TYPE,
            request.primary_type: _CLOSE_TYPE if isinstance(request, CloseRequest) else _TRIGGER_TYPE,
        },
        "primaryType": request.primary_type,
        "domain": {
            "name": EIP712_NAME,
            "version": EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(vault),
        },
        "message": request.message(),
    }


def parse_kind(value: object) -> RecordKind:
    """`close` or `trigger` (the relayable signed request kinds)."""
    if value in ("close", "trigger"):
        return RecordKind(value)
    raise InvalidFieldError("kind", "must be 'close' or 'trigger'")


def parse_position_id(value: object, field: str = "positionId") -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise InvalidFieldError(field, "must be a 0x-prefixed 32-byte hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidFieldError(field, "must be a 0x-prefixed 32-byte hex string") from None


def _uint(fields: dict[str, Any], name: str, prefix: str, maximum: int = UINT256_MAX) -> int:
    if name not in fields:
        raise InvalidFieldError(f"{prefix}{name}", "is required")
    return parse_int(fields[name], f"{prefix}{name}", minimum=0, maximum=maximum)


def parse_request(kind: RecordKind, fields: object) -> SignedRequest:
    """A request from its EIP-712 `message` (chain units, integers or decimal strings, as `typed_data` gives).

    Raises:
        InvalidFieldError: naming the first missing or malformed field (`request.<name>`).
    """
    if not isinstance(fields, dict):
        raise InvalidFieldError("request", "must be an object (the EIP-712 message that was signed)")
    prefix = "request."
    position_id = parse_position_id(fields.get("positionId"), prefix + "positionId")
    if kind is RecordKind.CLOSE:
        return CloseRequest(
            position_id,
            _uint(fields, "sizeDelta", prefix),
            _uint(fields, "allowedPrice", prefix),
            _uint(fields, "nonce", prefix),
            _uint(fields, "deadline", prefix),
        )
    is_take_profit = fields.get("isTakeProfit")
    if not isinstance(is_take_profit, bool):
        raise InvalidFieldError(prefix + "isTakeProfit", "must be true or false")
    return TriggerRequest(
        position_id,
        is_take_profit,
        _uint(fields, "price", prefix),
        _uint(fields, "closeBps", prefix, maximum=2**16 - 1),
        _uint(fields, "nonce", prefix),
        _uint(fields, "deadline", prefix),
    )


def parse_signature(value: object) -> bytes:
    """65 bytes from 0x-hex; refuses malleable (high-s) and non-27/28 `v` like the vault does.

    Raises:
        InvalidSignatureError: for anything the vault's `_recover` would reject by shape.
    """
    if not isinstance(value, str) or not value.startswith("0x"):
        raise InvalidSignatureError("signature must be 0x-prefixed hex", field="signature")
    try:
        signature = bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidSignatureError("signature is not valid hex", field="signature") from None
    if len(signature) != SIGNATURE_LENGTH:
        raise InvalidSignatureError("signature must be 65 bytes (r || s || v)", field="signature")
    if int.from_bytes(signature[32:64], "big") > SECP256K1_HALF_N or signature[64] not in (27, 28):
        raise InvalidSignatureError(
            "signature is malleable (high s) or has a v other than 27/28", field="signature"
        )
    return signature


def recover_signer(request: SignedRequest, signature: bytes, *, chain_id: int, vault: str) -> str:
    """The address that signed `request` for this chain and vault."""
    message = encode_typed_data(full_message=typed_data(request, chain_id=chain_id, vault=vault))
    try:
        return to_checksum_address(Account.recover_message(message, signature=signature))
    except Exception:  # unrecoverable point: the vault's ecrecover returns 0 and reverts
        raise InvalidSignatureError("the signature does not recover to an address") from None


def check_request(
    request: SignedRequest,
    signature: bytes,
    *,
    owner: str,
    expected_nonce: int,
    now_s: int,
    chain_id: int,
    vault: str,
) -> None:
    """The vault's checks, off-chain: deadline against the latest block time, nonce, signer = owner.

    Raises:
        ExpiredRequestError, InvalidNonceError, InvalidSignatureError, InvalidCloseBpsError.
    """
    if now_s > request.deadline:
        raise ExpiredRequestError(
            "the signed request's deadline has passed", deadline=request.deadline, timestamp=now_s
        )
    if request.nonce != expected_nonce:
        raise InvalidNonceError(
            f"nonce {request.nonce} is not the owner's next nonce {expected_nonce} (replayed or reordered)",
            owner=owner,
            expected=expected_nonce,
            got=request.nonce,
        )
    signer = recover_signer(request, signature, chain_id=chain_id, vault=vault)
    if signer != to_checksum_address(owner):
        raise InvalidSignatureError(
            "the request was not signed by the position's owner for this chain and vault"
        )
    if (
        isinstance(request, TriggerRequest)
        and request.price_e8 != 0
        and not 1 <= request.close_bps <= BPS_DENOMINATOR
    ):
        raise InvalidCloseBpsError(
            "close percentage must be 1..10000 basis points", closeBps=request.close_bps
        )
