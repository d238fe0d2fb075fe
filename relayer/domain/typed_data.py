"""The vault's EIP-712 requests: the exact payloads a wallet signs, and the off-chain checks of a signature.

`typed_data(request, ...)` returns a full EIP-712 message that `eth_account.Account.sign_typed_data(key,
full_message=...)` (or a wallet's `eth_signTypedData_v4`) signs as is; uint256 values are decimal strings
so no JSON client loses precision. The checks mirror `Vault._useSignedRequest` and `_recover` exactly
(deadline, nonce, 65-byte low-s signature, v 27/28, signer = the position's owner, or the `owner` an
operator grant or an emergency exit names), so a request the relayer accepts is one the vault accepts, and a
bad one is refused before any gas is spent.

Six kinds are relayed (`RequestKind`): `close`, `trigger` (about a position: signed by its owner),
`exit_plan`, `cancel_order` (about a position too), `operator_rights` and `emergency_exit` (naming their
`owner`, who signs them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from relayer.chain.revert import vault_error
from relayer.constants import (
    ALL_RIGHTS,
    CLOSE_ALL_SIZE,
    EIP712_NAME,
    EIP712_VERSION,
    FIRST_STOP_ID,
    MAX_TRAIL_BPS,
    ORDER_COUNT,
    PRICE_DECIMALS,
    RIGHT_NAMES,
    SIZE_DECIMALS,
    UINT256_MAX,
)
from relayer.domain import calldata
from relayer.domain.exit_plans import OrderChange
from relayer.domain.jsonio import loads_exact, reject_unknown_fields
from relayer.domain.markets import bytes32_to_symbol, normalize_symbol, symbol_to_bytes32
from relayer.domain.requests import (
    check_trigger_price_e8,
    parse_close_bps,
    parse_owner,
    parse_position_id,
    parse_trigger_price,
)
from relayer.domain.status import RecordKind
from relayer.domain.units import parse_bool, parse_fixed, parse_int
from relayer.errors import (
    DeadlineTooSoonError,
    ExpiredRequestError,
    InvalidFieldError,
    InvalidMarketError,
    InvalidNonceError,
    InvalidSignatureError,
)

MAX_REQUEST_NONCE = 2**64
"""Bound on a `nonce` or `deadline` asked for in `GET /api/relay/typed-data` (the vault's are far below)."""

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
"""Largest canonical (low-s) signature `s` (EIP-2); the vault rejects anything above it."""

SIGNATURE_LENGTH = 65
"""`r || s || v`, as the vault's `_recover` requires."""

MAX_ORDERS_TEXT = 4_096
"""Longest `orders` parameter of `GET /api/relay/typed-data` (JSON text; six orders take under 600)."""

UINT8_MAX = 2**8 - 1
UINT16_MAX = 2**16 - 1
UINT64_MAX = 2**64 - 1


class RequestKind(StrEnum):
    """The signed requests `POST /api/relay/signed` relays (its `kind`), one per vault `...WithSig` function.

    The journal records each by what it does (`RecordKind`): `close` and `emergency_exit` as `close`,
    `trigger`, `exit_plan` and `cancel_order` as `trigger`, `operator_rights` as `operator`.
    """

    CLOSE = "close"
    TRIGGER = "trigger"
    EXIT_PLAN = "exit_plan"
    CANCEL_ORDER = "cancel_order"
    OPERATOR_RIGHTS = "operator_rights"
    EMERGENCY_EXIT = "emergency_exit"

    @property
    def names_owner(self) -> bool:
        """Whether the request names its signer (`owner`) instead of a position whose owner signs it."""
        return self in (RequestKind.OPERATOR_RIGHTS, RequestKind.EMERGENCY_EXIT)


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
    request_kind = RequestKind.CLOSE
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

    def order_change(self) -> None:
        """A close changes no order (see `TriggerRequest.order_change`)."""


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
    request_kind = RequestKind.TRIGGER
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

    def order_change(self) -> OrderChange:
        """The change the vault makes of the position's orders (`_setOrCancel`): the primary take-profit (0)
        or stop (4) set without a trail, or cancelled by price 0."""
        order_id = 0 if self.is_take_profit else FIRST_STOP_ID
        if self.price_e8 == 0:
            return OrderChange(self.position_id, cancel=(order_id,))
        return OrderChange(self.position_id, set=((order_id, self.price_e8, self.close_bps, 0),))


@dataclass(frozen=True)
class ExitPlanRequest:
    """`SetExitPlanRequest`: replaces a position's whole exit plan; `orders` are the vault's `ExitOrder`
    tuples (orderId, price e8, shareBps, trailBps)."""

    position_id: bytes
    orders: tuple[calldata.ExitOrder, ...]
    nonce: int
    deadline: int

    kind = RecordKind.TRIGGER
    request_kind = RequestKind.EXIT_PLAN
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

    def order_change(self) -> OrderChange:
        """The whole plan replaced (`setExitPlan`)."""
        return OrderChange(self.position_id, set=self.orders, whole_plan=True)


@dataclass(frozen=True)
class CancelOrderRequest:
    """`CancelOrderRequest`: cancels order `order_id` (0..3 take-profits, 4..5 stops) of a position."""

    position_id: bytes
    order_id: int
    nonce: int
    deadline: int

    kind = RecordKind.TRIGGER
    request_kind = RequestKind.CANCEL_ORDER
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

    def order_change(self) -> OrderChange:
        return OrderChange(self.position_id, cancel=(self.order_id,))


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

    kind = RecordKind.OPERATOR
    request_kind = RequestKind.OPERATOR_RIGHTS
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
    request_kind = RequestKind.EMERGENCY_EXIT
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


PositionRequest = CloseRequest | TriggerRequest | ExitPlanRequest | CancelOrderRequest
"""The signed requests about one position: its owner (read from the vault) signs them."""

OwnerRequest = OperatorRequest | EmergencyExitRequest
"""The signed requests naming their signer (`owner`): no position is read to check them."""

SignedRequest = PositionRequest | OwnerRequest
"""Every request `POST /api/relay/signed` relays."""

PlanRequest = ExitPlanRequest | CancelOrderRequest | OperatorRequest | EmergencyExitRequest
"""Issue 12's signed requests (exit plans, order cancels, operator rights, emergency exits)."""


def typed_data(request: SignedRequest, *, chain_id: int, vault: str) -> dict[str, Any]:
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


_KINDS_TEXT = ", ".join(kind.value for kind in RequestKind)


def parse_kind(value: object) -> RequestKind:
    """One of the relayable signed request kinds (`RequestKind`).

    >>> parse_kind("exit_plan")
    <RequestKind.EXIT_PLAN: 'exit_plan'>
    """
    if isinstance(value, str) and value in RequestKind._value2member_map_:
        return RequestKind(value)
    raise InvalidFieldError("kind", f"must be one of {_KINDS_TEXT}")


TYPED_DATA_PARAMS: dict[RequestKind, tuple[str, ...]] = {
    RequestKind.CLOSE: ("positionId", "sizeDelta", "allowedPrice"),
    RequestKind.TRIGGER: ("positionId", "isTakeProfit", "price", "closeBps"),
    RequestKind.EXIT_PLAN: ("positionId", "orders"),
    RequestKind.CANCEL_ORDER: ("positionId", "orderId"),
    RequestKind.OPERATOR_RIGHTS: ("owner", "operator", "rights", "expiresAt"),
    RequestKind.EMERGENCY_EXIT: ("owner", "market"),
}
"""The parameters of `GET /api/relay/typed-data` (and `POST`'s body) each kind takes, besides `kind`,
`deadline` and `nonce`; another kind's parameter is refused, never ignored."""

TYPED_DATA_FIELDS: tuple[str, ...] = (
    "kind",
    *dict.fromkeys(name for names in TYPED_DATA_PARAMS.values() for name in names),
    "deadline",
    "nonce",
)
"""Every parameter of `GET /api/relay/typed-data`, the fields of `POST /api/relay/typed-data`'s body."""

EXIT_ORDER_FIELDS = ("orderId", "price", "shareBps", "trailBps")
"""The fields of one order of an exit plan, in the typed-data parameters (price in USD) and in a signed
`SetExitPlanRequest` message (price in 8-decimal units)."""

_RIGHT_BITS = {name: bit for bit, name in RIGHT_NAMES.items()}
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def _required(given: Mapping[str, Any], name: str, hint: str = "") -> Any:
    if name not in given:
        raise InvalidFieldError(name, "is required" + hint)
    return given[name]


def request_from_params(params: Mapping[str, Any]) -> SignedRequest:
    """An unsigned request from `GET /api/relay/typed-data`'s parameters (or `POST`'s body), in human units.

    `kind` (`RequestKind`); every kind: `deadline`, `nonce` (absent: 0 here, for the caller to fill from the
    chain). By kind:

    - `close`: `positionId`, `sizeDelta` (base units; absent: close all), `allowedPrice` (USD; "0": no
      bound; absent: 0 here, for the caller to fill with the default slippage bound);
    - `trigger`: `positionId`, `isTakeProfit` (true|false), `price` (USD, 0 cancels), `closeBps` (1..10000
      when setting, absent when cancelling);
    - `exit_plan`: `positionId`, `orders`: a JSON list (JSON text in a query string) of at most 6
      `{"orderId": 0..5, "price": USD, "shareBps": 1..10000, "trailBps": 0..9999 (stops only; absent 0)}`;
      an empty list cancels every order;
    - `cancel_order`: `positionId`, `orderId` (0..3 take-profits, 4..5 stops);
    - `operator_rights`: `owner`, `operator` (addresses), `rights` (bit sum 0..15, or names separated by
      commas: `close`, `set_take_profit`, `tighten_stop`, `loosen_or_cancel_stop`; 0 or `none` revokes),
      `expiresAt` (unix seconds, required; 0 = never);
    - `emergency_exit`: `owner`, `market` (a symbol; absent: every market).

    Absent means missing or None; an empty string is a (malformed) value, never "all".

    Raises:
        InvalidFieldError: a missing, malformed or out-of-range parameter, or one the kind does not take.
        InvalidPriceError, InvalidCloseBpsError, InvalidTrailBpsError, InvalidOperatorRightsError,
            InvalidMarketError: by `relayer.domain.requests`'s and the vault's rules, so a payload this
            returns is one `check_request` accepts once signed.
    """
    given = {name: value for name, value in params.items() if value is not None}
    kind = parse_kind(given.get("kind"))
    allowed = ("kind", *TYPED_DATA_PARAMS[kind], "deadline", "nonce")
    for name in given:
        if name not in allowed:
            raise InvalidFieldError(
                str(name)[:80], f"is not a parameter of kind {kind.value} (parameters: {', '.join(allowed)})"
            )
    nonce = parse_int(given.get("nonce", 0), "nonce", minimum=0, maximum=MAX_REQUEST_NONCE)
    deadline = parse_int(given.get("deadline", 0), "deadline", minimum=0, maximum=MAX_REQUEST_NONCE)
    if kind is RequestKind.OPERATOR_RIGHTS:
        return OperatorRequest(
            parse_owner(_required(given, "owner"), "owner"),
            parse_owner(_required(given, "operator"), "operator"),
            parse_rights(_required(given, "rights", " (a bit sum 0..15 or right names)"), "rights"),
            parse_int(
                _required(given, "expiresAt", " (unix seconds; 0 = never)"),
                "expiresAt",
                minimum=0,
                maximum=UINT64_MAX,
            ),
            nonce,
            deadline,
        )
    if kind is RequestKind.EMERGENCY_EXIT:
        market = normalize_symbol(given["market"], "market") if "market" in given else None
        return EmergencyExitRequest(parse_owner(_required(given, "owner"), "owner"), market, nonce, deadline)
    position_id = parse_position_id(_required(given, "positionId"))
    if kind is RequestKind.CLOSE:
        size_delta = (
            parse_fixed(given["sizeDelta"], SIZE_DECIMALS, "sizeDelta")
            if "sizeDelta" in given
            else CLOSE_ALL_SIZE
        )
        allowed_price_e8 = parse_fixed(
            given.get("allowedPrice", 0), PRICE_DECIMALS, "allowedPrice", allow_zero=True
        )
        return CloseRequest(position_id, size_delta, allowed_price_e8, nonce, deadline)
    if kind is RequestKind.EXIT_PLAN:
        return ExitPlanRequest(
            position_id, parse_orders(_required(given, "orders"), "orders"), nonce, deadline
        )
    if kind is RequestKind.CANCEL_ORDER:
        order_id = parse_int(_required(given, "orderId"), "orderId", minimum=0, maximum=ORDER_COUNT - 1)
        return CancelOrderRequest(position_id, order_id, nonce, deadline)
    flag = given.get("isTakeProfit")
    if not isinstance(flag, str | bool) or str(flag).lower() not in ("true", "false"):
        raise InvalidFieldError("isTakeProfit", "must be true or false")
    if "price" not in given:
        raise InvalidFieldError("price", "is required (USD; 0 cancels the order)")
    price_e8 = parse_trigger_price(given["price"], "price")
    close_bps = parse_close_bps(given.get("closeBps"), "closeBps", cancelling=price_e8 == 0)
    return TriggerRequest(position_id, str(flag).lower() == "true", price_e8, close_bps, nonce, deadline)


def parse_rights(value: object, field: str) -> int:
    """Operator rights as the vault's bit flags: a whole number 0..15, or right names separated by commas
    (`none` for 0).

    >>> parse_rights("close,tighten_stop", "rights"), parse_rights(3, "rights")
    (5, 3)
    >>> parse_rights("none", "rights")
    0

    Raises:
        InvalidFieldError: neither a number nor known names.
        InvalidOperatorRightsError: a number above 15 (as the vault would revert).
    """
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        if value == "none":
            return 0
        rights = 0
        for name in value.split(","):
            if name not in _RIGHT_BITS:
                raise InvalidFieldError(
                    field,
                    f"{name[:40]!r} is not a right (rights: {', '.join(_RIGHT_BITS)}, none; or their bit sum"
                    f" 0..{ALL_RIGHTS})",
                )
            rights |= _RIGHT_BITS[name]
        return rights
    rights = parse_int(value, field, minimum=0, maximum=UINT8_MAX)
    if rights > ALL_RIGHTS:
        raise vault_error("OperatorRightsInvalid", rights=rights)
    return rights


def parse_orders(value: object, field: str) -> tuple[calldata.ExitOrder, ...]:
    """An exit plan's orders in human units: a JSON list (or its text) of at most `ORDER_COUNT` objects
    `{"orderId", "price" (USD), "shareBps", "trailBps" (optional, stops only)}`, as the vault's tuples.

    The checks that need the position (the side of its price, the ladder's order, the shares' total) are
    `relayer.domain.exit_plans.check_exit_plan`'s, made where the price is read.

    Raises:
        InvalidFieldError: malformed JSON, not a list, too many orders, an unknown, missing or malformed
            field of an order (`orders[i].<name>`).
        InvalidPriceError, InvalidCloseBpsError, InvalidTrailBpsError: a value the vault refuses anywhere.
    """
    if isinstance(value, str):
        if len(value) > MAX_ORDERS_TEXT:
            raise InvalidFieldError(field, f"is longer than {MAX_ORDERS_TEXT} characters")
        try:
            value = loads_exact(value)
        except InvalidFieldError as error:
            raise error.renamed(field) from None
    orders = _order_list(value, field)
    parsed: list[calldata.ExitOrder] = []
    for index, order in enumerate(orders):
        name = f"{field}[{index}]"
        _reject_unknown(order, EXIT_ORDER_FIELDS, name + ".")
        order_id = parse_int(
            _required_in(order, "orderId", name), f"{name}.orderId", minimum=0, maximum=ORDER_COUNT - 1
        )
        price_e8 = parse_trigger_price(_required_in(order, "price", name), f"{name}.price")
        if price_e8 == 0:
            raise InvalidFieldError(f"{name}.price", "must be above 0 (leave an order out to have none)")
        share = parse_close_bps(_required_in(order, "shareBps", name), f"{name}.shareBps", cancelling=False)
        trail = parse_int(order.get("trailBps", 0), f"{name}.trailBps", minimum=0, maximum=MAX_TRAIL_BPS)
        if trail != 0 and order_id < FIRST_STOP_ID:
            raise vault_error("OrderTrailInvalid", orderId=order_id, trailBps=trail)
        parsed.append((order_id, price_e8, share, trail))
    return tuple(parsed)


def _order_list(value: object, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(order, dict) for order in value):
        raise InvalidFieldError(field, "must be a list of orders (JSON objects)")
    if len(value) > ORDER_COUNT:
        raise InvalidFieldError(field, f"holds at most {ORDER_COUNT} orders (ids 0..{ORDER_COUNT - 1})")
    return value


def _required_in(fields: Mapping[str, Any], name: str, prefix: str) -> Any:
    if fields.get(name) is None:
        raise InvalidFieldError(f"{prefix}.{name}", "is required")
    return fields[name]


def _reject_unknown(fields: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(str(key) for key in fields if key not in allowed)
    if unknown:
        raise InvalidFieldError(
            prefix + unknown[0][:80], f"is not a field of this request (fields: {', '.join(allowed)})"
        )


def _uint(fields: Mapping[str, Any], name: str, prefix: str, maximum: int = UINT256_MAX) -> int:
    if name not in fields:
        raise InvalidFieldError(f"{prefix}{name}", "is required")
    return parse_int(fields[name], f"{prefix}{name}", minimum=0, maximum=maximum)


_REQUEST_CLASSES: dict[RequestKind, str] = {
    RequestKind.CLOSE: "ClosePositionRequest",
    RequestKind.TRIGGER: "SetTriggerRequest",
    RequestKind.EXIT_PLAN: "SetExitPlanRequest",
    RequestKind.CANCEL_ORDER: "CancelOrderRequest",
    RequestKind.OPERATOR_RIGHTS: "SetOperatorRequest",
    RequestKind.EMERGENCY_EXIT: "EmergencyExitRequest",
}


def primary_type_of(kind: RequestKind) -> str:
    """The EIP-712 struct a request of `kind` is signed as.

    >>> primary_type_of(RequestKind.OPERATOR_RIGHTS)
    'SetOperatorRequest'
    """
    return _REQUEST_CLASSES[kind]


def parse_request(kind: RequestKind, fields: object) -> SignedRequest:
    """A request from its EIP-712 `message` (chain units, integers or decimal strings, as `typed_data` gives);
    a field the struct does not have is refused.

    Raises:
        InvalidFieldError: naming the first unknown, missing or malformed field (`request.<name>`).
        InvalidMarketError: an emergency exit's `market` that is neither zero nor a symbol's bytes32.
    """
    if not isinstance(fields, dict):
        raise InvalidFieldError("request", "must be an object (the EIP-712 message that was signed)")
    prefix = "request."
    _reject_unknown(fields, tuple(f["name"] for f in REQUEST_TYPES[primary_type_of(kind)]), prefix)
    nonce, deadline = _uint(fields, "nonce", prefix), _uint(fields, "deadline", prefix)
    if kind is RequestKind.OPERATOR_RIGHTS:
        return OperatorRequest(
            parse_owner(fields.get("owner"), prefix + "owner"),
            parse_owner(fields.get("operator"), prefix + "operator"),
            _uint(fields, "rights", prefix, maximum=UINT8_MAX),
            _uint(fields, "expiresAt", prefix, maximum=UINT64_MAX),
            nonce,
            deadline,
        )
    if kind is RequestKind.EMERGENCY_EXIT:
        return EmergencyExitRequest(
            parse_owner(fields.get("owner"), prefix + "owner"),
            _market_of(fields.get("market"), prefix + "market"),
            nonce,
            deadline,
        )
    position_id = parse_position_id(fields.get("positionId"), prefix + "positionId")
    if kind is RequestKind.CLOSE:
        return CloseRequest(
            position_id,
            _uint(fields, "sizeDelta", prefix),
            _uint(fields, "allowedPrice", prefix),
            nonce,
            deadline,
        )
    if kind is RequestKind.EXIT_PLAN:
        return ExitPlanRequest(
            position_id, _signed_orders(fields.get("orders"), prefix + "orders"), nonce, deadline
        )
    if kind is RequestKind.CANCEL_ORDER:
        return CancelOrderRequest(
            position_id, _uint(fields, "orderId", prefix, maximum=UINT8_MAX), nonce, deadline
        )
    return TriggerRequest(
        position_id,
        parse_bool(fields.get("isTakeProfit"), prefix + "isTakeProfit"),
        _uint(fields, "price", prefix),
        _uint(fields, "closeBps", prefix, maximum=UINT16_MAX),
        nonce,
        deadline,
    )


def _signed_orders(value: object, field: str) -> tuple[calldata.ExitOrder, ...]:
    """A signed plan's `ExitOrder[]` in chain units, bounded by the struct's types (the vault's own checks
    are `check_exit_plan`'s and the simulation's)."""
    parsed: list[calldata.ExitOrder] = []
    for index, order in enumerate(_order_list(value, field)):
        name = f"{field}[{index}]."
        _reject_unknown(order, EXIT_ORDER_FIELDS, name)
        parsed.append(
            (
                _uint(order, "orderId", name, maximum=UINT8_MAX),
                _uint(order, "price", name),
                _uint(order, "shareBps", name, maximum=UINT16_MAX),
                _uint(order, "trailBps", name, maximum=UINT16_MAX),
            )
        )
    return tuple(parsed)


def _market_of(value: object, field: str) -> str | None:
    """An `EmergencyExitRequest`'s `market` word: None for zero (every market), else the symbol it spells,
    which must be spelt back to the very same word (so the relayed calldata is what was signed)."""
    word = parse_position_id(value, field)
    if word == bytes(32):
        return None
    symbol = bytes32_to_symbol(word)
    try:
        if symbol_to_bytes32(symbol) == word:
            return symbol
    except InvalidMarketError:
        pass
    raise InvalidMarketError(
        field, "must be zero (every market) or a market symbol's bytes32 (upper-case ASCII, right-padded)"
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
    """A signed relay request, parsed: which kind, the request as signed, and its signer's signature."""

    kind: RequestKind
    request: SignedRequest
    signature: bytes

    @property
    def calldata(self) -> bytes:
        """The vault call that carries the request and its signature."""
        return self.request.calldata(self.signature)


def parse_signed_relay(body: Mapping[str, Any]) -> SignedRelay:
    """`{"kind": <RequestKind>, "request": <the signed EIP-712 message>, "signature": "0x..."}`.

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
    the signer's next nonce, the oracle price less the default slippage)."""

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
    min_margin_s: int,
) -> None:
    """The vault's checks, off-chain: deadline against the latest block time, nonce, signer = `owner` (the
    position's owner, or the owner an operator grant or emergency exit names), then the values the vault
    would refuse whatever the position (`check_request_values`); and the relayer's own: a deadline at least
    `min_margin_s` after the latest block (`check_deadline_margin`).

    Raises:
        ExpiredRequestError, InvalidNonceError, InvalidSignatureError: as the vault would revert.
        DeadlineTooSoonError: it could expire before it is mined (the relayer would pay for a no-op).
        InvalidPriceError, InvalidCloseBpsError, InvalidOrderIdError, InvalidOperatorRightsError: per
            `check_request_values`.
    """
    check_deadline_margin(request.deadline, now_s=now_s, min_margin_s=min_margin_s)
    if request.nonce != expected_nonce:
        raise InvalidNonceError.not_next(owner, expected_nonce, request.nonce)
    signer = recover_signer(request, signature, chain_id=chain_id, vault=vault)
    if signer != to_checksum_address(owner):
        whose = "the owner it names" if request.request_kind.names_owner else "the position's owner"
        raise InvalidSignatureError(f"the request was not signed by {whose} for this chain and vault")
    check_request_values(request)


def check_request_values(request: SignedRequest) -> None:
    """What the vault refuses in a signed request whatever the position's state: a set-trigger's price and
    close share (`relayer.domain.requests`'s rules; the vault ignores the share of a cancel, so it is not
    checked then), a cancel's order id, an operator grant's rights. An exit plan is checked against the
    position's price (`relayer.domain.exit_plans.check_exit_plan`) by whoever reads it.

    Raises:
        InvalidPriceError, InvalidCloseBpsError, InvalidOrderIdError, InvalidOperatorRightsError: as the vault
            would revert.
    """
    if isinstance(request, TriggerRequest):
        check_trigger_price_e8(request.price_e8, "request.price")
        if request.price_e8 != 0:
            parse_close_bps(request.close_bps, "request.closeBps", cancelling=False)
    elif isinstance(request, CancelOrderRequest) and request.order_id >= ORDER_COUNT:
        raise vault_error("OrderIdInvalid", orderId=request.order_id)
    elif isinstance(request, OperatorRequest) and request.rights > ALL_RIGHTS:
        raise vault_error("OperatorRightsInvalid", rights=request.rights)


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
