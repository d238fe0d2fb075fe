"""The vault's EIP-712 requests: the exact payloads a wallet signs, and the off-chain checks of a signature.

`typed_data(request, ...)` returns a full EIP-712 message that `eth_account.Account.sign_typed_data(key,
full_message=...)` (or a wallet's `eth_signTypedData_v4`) signs as is; uint256 values are decimal strings
so no JSON client loses precision. The checks mirror `Vault._useSignedRequest` and `_recover` exactly
(deadline, nonce, 65-byte low-s signature, v 27/28, signer = position owner), so a request the relayer
accepts is one the vault accepts, and a bad one is refused before any gas is spent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from relayer.constants import (
    CLOSE_ALL_SIZE,
    EIP712_NAME,
    EIP712_VERSION,
    PRICE_DECIMALS,
    SIZE_DECIMALS,
    UINT256_MAX,
)
from relayer.domain import calldata
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.requests import (
    check_trigger_price_e8,
    parse_close_bps,
    parse_position_id,
    parse_trigger_price,
)
from relayer.domain.status import RecordKind
from relayer.domain.units import parse_bool, parse_fixed, parse_int
from relayer.errors import (
    DeadlineTooSoonError,
    ExpiredRequestError,
    InvalidFieldError,
    InvalidNonceError,
    InvalidSignatureError,
)

MAX_REQUEST_NONCE = 2**64
"""Bound on a `nonce` or `deadline` asked for in `GET /api/relay/typed-data` (the vault's are far below)."""

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
"""Largest canonical (low-s) signature `s` (EIP-2); the vault rejects anything above it."""

SIGNATURE_LENGTH = 65
"""`r || s || v`, as the vault's `_recover` requires."""

_SIGNATURE_HEX = re.compile(rf"0x[0-9a-fA-F]{{{2 * SIGNATURE_LENGTH}}}", re.ASCII)

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
_EXIT_ORDER_TYPE = [
    {"name": "orderId", "type": "uint8"},
    {"name": "price", "type": "uint256"},
    {"name": "shareBps", "type": "uint16"},
    {"name": "trailBps", "type": "uint16"},
]
_EXIT_PLAN_TYPE = [
    {"name": "positionId", "type": "bytes32"},
    {"name": "orders", "type": "ExitOrder[]"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_CANCEL_ORDER_TYPE = [
    {"name": "positionId", "type": "bytes32"},
    {"name": "orderId", "type": "uint8"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_OPERATOR_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "operator", "type": "address"},
    {"name": "rights", "type": "uint8"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
_EMERGENCY_EXIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "market", "type": "bytes32"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
REQUEST_TYPES = {
    "ClosePositionRequest": _CLOSE_TYPE,
    "SetTriggerRequest": _TRIGGER_TYPE,
    "SetExitPlanRequest": _EXIT_PLAN_TYPE,
    "ExitOrder": _EXIT_ORDER_TYPE,
    "CancelOrderRequest": _CANCEL_ORDER_TYPE,
    "SetOperatorRequest": _OPERATOR_TYPE,
    "EmergencyExitRequest": _EMERGENCY_EXIT_TYPE,
}
"""The signed requests' EIP-712 struct types by name (and `ExitOrder`, a member of `SetExitPlanRequest`);
the contract tests check them against the vault's own `*_TYPEHASH` constants, so the relayer and the vault
cannot drift apart."""


def request_types(primary_type: str) -> dict[str, list[dict[str, str]]]:
    """The EIP-712 `types` (without the domain) a request of `primary_type` needs: its struct and every
    struct it refers to (`SetExitPlanRequest` -> `ExitOrder`).

    >>> sorted(request_types("SetExitPlanRequest"))
    ['ExitOrder', 'SetExitPlanRequest']
    """
    types = {primary_type: REQUEST_TYPES[primary_type]}
    for field in REQUEST_TYPES[primary_type]:
        member = field["type"].removesuffix("[]")
        if member in REQUEST_TYPES:
            types[member] = REQUEST_TYPES[member]
    return types


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


@dataclass(frozen=True)
class ExitPlanRequest:
    """`SetExitPlanRequest`: replaces a position's whole exit plan; `orders` are the vault's `ExitOrder`
    tuples (orderId, price e8, shareBps, trailBps)."""

    position_id: bytes
    orders: tuple[calldata.ExitOrder, ...]
    nonce: int
    deadline: int

    kind = RecordKind.TRIGGER
    primary_type = "SetExitPlanRequest"

    def message(self) -> dict[str, Any]:
        return {
            "positionId": "0x" + self.position_id.hex(),
            "orders": [
                {"orderId": order_id, "price": str(price_e8), "shareBps": share, "trailBps": trail}
                for order_id, price_e8, share, trail in self.orders
            ],
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.set_exit_plan_with_sig(
            self.position_id, list(self.orders), self.nonce, self.deadline, signature
        )


@dataclass(frozen=True)
class CancelOrderRequest:
    """`CancelOrderRequest`: cancels order `order_id` (0..3 take-profits, 4..5 stops) of a position."""

    position_id: bytes
    order_id: int
    nonce: int
    deadline: int

    kind = RecordKind.TRIGGER
    primary_type = "CancelOrderRequest"

    def message(self) -> dict[str, Any]:
        return {
            "positionId": "0x" + self.position_id.hex(),
            "orderId": self.order_id,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.cancel_order_with_sig(
            self.position_id, self.order_id, self.nonce, self.deadline, signature
        )


@dataclass(frozen=True)
class OperatorRequest:
    """`SetOperatorRequest`: `owner` grants `operator` exactly `rights` (bit flags, 0 revokes) until
    `expires_at` (unix seconds, 0 = never). Signed by `owner`, not about one position."""

    owner: str
    operator: str
    rights: int
    expires_at: int
    nonce: int
    deadline: int

    primary_type = "SetOperatorRequest"

    def message(self) -> dict[str, Any]:
        return {
            "owner": to_checksum_address(self.owner),
            "operator": to_checksum_address(self.operator),
            "rights": self.rights,
            "expiresAt": str(self.expires_at),
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.set_operator_with_sig(
            self.owner, self.operator, self.rights, self.expires_at, self.nonce, self.deadline, signature
        )


@dataclass(frozen=True)
class EmergencyExitRequest:
    """`EmergencyExitRequest`: closes every open position of `owner` (only `market`'s when it is not None).
    Signed by `owner`."""

    owner: str
    market: str | None
    nonce: int
    deadline: int

    kind = RecordKind.CLOSE
    primary_type = "EmergencyExitRequest"

    def message(self) -> dict[str, Any]:
        market_word = symbol_to_bytes32(self.market) if self.market else bytes(32)
        return {
            "owner": to_checksum_address(self.owner),
            "market": "0x" + market_word.hex(),
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
        }

    def calldata(self, signature: bytes) -> bytes:
        return calldata.emergency_exit_with_sig(self.owner, self.market, self.nonce, self.deadline, signature)


PlanRequest = ExitPlanRequest | CancelOrderRequest | OperatorRequest | EmergencyExitRequest
"""Issue 12's signed requests. Not relayable through `POST /api/relay/signed` yet (`parse_kind` knows close
and trigger only); `typed_data` and `recover_signer` already serve them."""


def typed_data(request: SignedRequest | PlanRequest, *, chain_id: int, vault: str) -> dict[str, Any]:
    """The full EIP-712 payload of `request` for this chain and vault, ready for `sign_typed_data`."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, **request_types(request.primary_type)},
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


def request_from_params(params: Mapping[str, Any]) -> SignedRequest:
    """An unsigned request from `GET /api/relay/typed-data`'s parameters, in human units.

    `kind` (close|trigger), `positionId`; close: `sizeDelta` (base units; absent: close all), `allowedPrice`
    (USD; "0": no bound; absent: 0 here, for the caller to fill with the default slippage bound); trigger:
    `isTakeProfit` (true|false), `price` (USD, 0 cancels), `closeBps` (1..10000 when setting, absent when
    cancelling); both: `deadline`, `nonce` (absent: 0 here, for the caller to fill from the chain). Absent
    means missing or None; an empty string is a (malformed) value, never "all".

    Raises:
        InvalidFieldError, InvalidPriceError, InvalidCloseBpsError: by `relayer.domain.requests`'s rules, so a
            payload this returns is one `check_request` accepts once signed.
    """
    given = {name: value for name, value in params.items() if value is not None}
    kind = parse_kind(given.get("kind"))
    position_id = parse_position_id(given.get("positionId"))
    nonce = parse_int(given.get("nonce", 0), "nonce", minimum=0, maximum=MAX_REQUEST_NONCE)
    deadline = parse_int(given.get("deadline", 0), "deadline", minimum=0, maximum=MAX_REQUEST_NONCE)
    if kind is RecordKind.CLOSE:
        size_delta = (
            parse_fixed(given["sizeDelta"], SIZE_DECIMALS, "sizeDelta")
            if "sizeDelta" in given
            else CLOSE_ALL_SIZE
        )
        allowed_price_e8 = parse_fixed(
            given.get("allowedPrice", 0), PRICE_DECIMALS, "allowedPrice", allow_zero=True
        )
        return CloseRequest(position_id, size_delta, allowed_price_e8, nonce, deadline)
    flag = given.get("isTakeProfit")
    if not isinstance(flag, str | bool) or str(flag).lower() not in ("true", "false"):
        raise InvalidFieldError("isTakeProfit", "must be true or false")
    if "price" not in given:
        raise InvalidFieldError("price", "is required (USD; 0 cancels the order)")
    price_e8 = parse_trigger_price(given["price"], "price")
    close_bps = parse_close_bps(given.get("closeBps"), "closeBps", cancelling=price_e8 == 0)
    return TriggerRequest(position_id, str(flag).lower() == "true", price_e8, close_bps, nonce, deadline)


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
    return TriggerRequest(
        position_id,
        parse_bool(fields.get("isTakeProfit"), prefix + "isTakeProfit"),
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
    if not isinstance(value, str) or not _SIGNATURE_HEX.fullmatch(value):
        raise InvalidSignatureError(
            "signature must be 65 bytes (r || s || v) as 0x followed by 130 hex digits", field="signature"
        )
    signature = bytes.fromhex(value[2:])
    if int.from_bytes(signature[32:64], "big") > SECP256K1_HALF_N or signature[64] not in (27, 28):
        raise InvalidSignatureError(
            "signature is malleable (high s) or has a v other than 27/28", field="signature"
        )
    return signature


SIGNED_RELAY_FIELDS = ("kind", "request", "signature")
"""The fields of a `POST /api/relay/signed` body."""


@dataclass(frozen=True)
class SignedRelay:
    """A signed relay request, parsed: which kind, the request as signed, and the owner's signature."""

    kind: RecordKind
    request: SignedRequest
    signature: bytes

    @property
    def calldata(self) -> bytes:
        """The vault call that carries the request and its signature."""
        return self.request.calldata(self.signature)


def parse_signed_relay(body: Mapping[str, Any]) -> SignedRelay:
    """`{"kind": "close"|"trigger", "request": <the signed EIP-712 message>, "signature": "0x..."}`.

    Raises:
        InvalidFieldError: an unknown field, or a missing or malformed one (per `parse_kind`, `parse_request`,
            `parse_signature`).
    """
    reject_unknown_fields(body, SIGNED_RELAY_FIELDS)
    kind = parse_kind(body.get("kind"))
    return SignedRelay(kind, parse_request(kind, body.get("request")), parse_signature(body.get("signature")))


@dataclass(frozen=True)
class TypedDataQuery:
    """What `GET /api/relay/typed-data` asks for: a request to sign, and whether its deadline, nonce and (for
    a close) its `allowedPrice` were given (when not, the relay fills them from the chain: latest block + TTL,
    the owner's next nonce, the oracle price less the default slippage)."""

    request: SignedRequest
    deadline_given: bool
    nonce_given: bool
    allowed_price_given: bool = True


def parse_typed_data_query(params: Mapping[str, Any]) -> TypedDataQuery:
    """Per `request_from_params`; absent means missing or None.

    Raises:
        InvalidFieldError, InvalidPriceError, InvalidCloseBpsError: as `request_from_params`.
    """
    return TypedDataQuery(
        request_from_params(params),
        params.get("deadline") is not None,
        params.get("nonce") is not None,
        params.get("allowedPrice") is not None,
    )


def recover_signer(
    request: SignedRequest | PlanRequest, signature: bytes, *, chain_id: int, vault: str
) -> str:
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
    min_margin_s: int,
) -> None:
    """The vault's checks, off-chain: deadline against the latest block time, nonce, signer = owner, and a
    set-trigger's price and close share (`relayer.domain.requests`'s rules; the vault ignores the share of a
    cancel, so it is not checked then); and the relayer's own: a deadline at least `min_margin_s` after the
    latest block (`check_deadline_margin`).

    Raises:
        ExpiredRequestError, InvalidNonceError, InvalidSignatureError: as the vault would revert.
        DeadlineTooSoonError: it could expire before it is mined (the relayer would pay for a no-op).
        InvalidPriceError, InvalidCloseBpsError: a set-trigger the vault would refuse.
    """
    check_deadline_margin(request.deadline, now_s=now_s, min_margin_s=min_margin_s)
    if request.nonce != expected_nonce:
        raise InvalidNonceError.not_next(owner, expected_nonce, request.nonce)
    signer = recover_signer(request, signature, chain_id=chain_id, vault=vault)
    if signer != to_checksum_address(owner):
        raise InvalidSignatureError(
            "the request was not signed by the position's owner for this chain and vault"
        )
    if isinstance(request, TriggerRequest):
        check_trigger_price_e8(request.price_e8, "request.price")
        if request.price_e8 != 0:
            parse_close_bps(request.close_bps, "request.closeBps", cancelling=False)


def check_deadline_margin(deadline: int, *, now_s: int, min_margin_s: int) -> None:
    """A signed request's `deadline` against the latest block's time `now_s`: past it, the vault would revert
    (`request_expired`); closer than `min_margin_s` seconds, it could expire before a block takes it, and the
    relayer would pay a no-op for its nonce (`deadline_too_soon`). The vault reverts once `block.timestamp >
    deadline`, and the next block is always later than the latest one, so a deadline equal to the latest
    block's time can never be met.

    >>> check_deadline_margin(1_000, now_s=900, min_margin_s=30)
    >>> check_deadline_margin(1_000, now_s=1_000, min_margin_s=30)
    Traceback (most recent call last):
    ...
    relayer.errors.DeadlineTooSoonError: the signed request's deadline is too close to the latest block...

    Raises:
        ExpiredRequestError: `now_s` is past `deadline`.
        DeadlineTooSoonError: `deadline` is less than `min_margin_s` after `now_s`.
    """
    if now_s > deadline:
        raise ExpiredRequestError.past_deadline(deadline, now_s)
    if deadline - now_s < min_margin_s:
        raise DeadlineTooSoonError(
            "the signed request's deadline is too close to the latest block: it could expire before it is"
            f" mined; sign it again with a deadline at least {min_margin_s} s after the latest block",
            deadline=deadline,
            timestamp=now_s,
            minMarginS=min_margin_s,
            earliestDeadline=now_s + min_margin_s,
        )
