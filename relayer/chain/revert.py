"""Revert data in, `RelayerError` out: the one place that reads node errors and vault custom errors.

The vault reverts only with custom errors declared in its ABI, so every revert is decoded by selector, never
by message text. eth-tester reports the raw revert bytes inside its exception message; JSON-RPC nodes return
them as hex in the error's `data`. Both arrive here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from relayer import errors as e
from relayer.chain.artifact import load_artifact
from relayer.constants import RIGHT_NAMES
from relayer.domain.markets import bytes32_to_symbol
from relayer.domain.units import usd_text

# eth-tester raises TransactionFailed("execution reverted: b'...'") through web3, and the bare bytes literal
# when called directly.
_ETH_TESTER_REVERT = re.compile(r"(?:execution reverted: )?(b['\"].*['\"])\Z", re.DOTALL)
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*\Z")  # whole bytes only: bytes.fromhex rejects an odd length


@dataclass(frozen=True)
class DecodedRevert:
    """A vault custom error: its name and its arguments by name."""

    name: str
    args: dict[str, Any]


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for item in load_artifact().abi:
        if item["type"] != "error":
            continue
        types = [i["type"] for i in item["inputs"]]
        names = [i["name"] for i in item["inputs"]]
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[selector] = (item["name"], types, names)
    return table


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes carried by a web3 / eth-tester exception, or None when it is not a revert."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and _HEX.match(data):
        return bytes.fromhex(data[2:])
    if isinstance(data, dict) and isinstance(data.get("data"), str) and _HEX.match(data["data"]):
        return bytes.fromhex(data["data"][2:])
    if type(exc).__name__ == "TransactionFailed" and exc.args:
        message = str(exc.args[0])
        match = _ETH_TESTER_REVERT.match(message)
        if match:
            try:
                literal = ast.literal_eval(match.group(1))
            except (ValueError, SyntaxError):  # text that merely looks like a bytes literal
                literal = None
            if isinstance(literal, bytes):
                return literal
        if message.startswith("execution reverted"):
            return b""
    return None


def decode_revert(data: bytes) -> DecodedRevert | None:
    """The vault custom error `data` encodes, or None for an unknown selector or malformed arguments."""
    entry = _error_table().get(data[:4])
    if entry is None:
        return None
    name, types, names = entry
    try:
        values = decode(types, data[4:])
    except Exception:  # malformed argument bytes: report as an unknown revert, never crash
        return None
    args = {
        arg: to_checksum_address(value) if type_ == "address" else value
        for arg, type_, value in zip(names, types, values, strict=True)
    }
    return DecodedRevert(name, args)


_Builder = Callable[[dict[str, Any]], e.RelayerError]

_ERRORS: dict[str, _Builder] = {
    "NotAuthorized": lambda a: e.NotAuthorizedError(
        f"{a['caller']} may not act on this position (neither owner nor approved operator)",
        caller=a["caller"],
    ),
    "PositionNotFound": lambda a: e.PositionNotFoundError.not_open(a["positionId"]),
    "InvalidSize": lambda a: e.InvalidSizeError(
        "size must be above zero and below 2**128", size=str(a["size"])
    ),
    "SizeDeltaTooLarge": lambda a: e.SizeDeltaExceedsPositionError(
        "sizeDelta is larger than the position", sizeDelta=str(a["sizeDelta"]), size=str(a["size"])
    ),
    "PriceSlippage": lambda a: e.PriceSlippageError.worse_than_allowed(
        usd_text(a["price"]), usd_text(a["allowedPrice"])
    ),
    "PriceNotSet": lambda a: e.PriceNotSetError.of_market(bytes32_to_symbol(a["market"])),
    "StalePrice": lambda a: e.StalePriceError.of_market(
        bytes32_to_symbol(a["market"]), a["updatedAt"], a["maxPriceAge"]
    ),
    "InvalidPrice": lambda a: e.InvalidPriceError(
        "price must be above zero and below 2**112", price=str(a["price"])
    ),
    "InvalidTriggerPrice": lambda a: e.InvalidTriggerPriceError.wrong_side(
        a["isTakeProfit"], usd_text(a["triggerPrice"]), usd_text(a["currentPrice"])
    ),
    "InvalidCloseBps": lambda a: e.InvalidCloseBpsError(
        "close percentage must be 1..10000 basis points", closeBps=a["closeBps"]
    ),
    "TriggerNotCrossed": lambda a: e.TriggerNotCrossedError(
        f"no order of this position is crossed at {usd_text(a['currentPrice'])}",
        positionId="0x" + a["positionId"].hex(),
        currentPrice=usd_text(a["currentPrice"]),
    ),
    "ExpiredRequest": lambda a: e.ExpiredRequestError.past_deadline(a["deadline"], a["timestamp"]),
    "InvalidNonce": lambda a: e.InvalidNonceError.not_next(a["owner"], a["expected"], a["got"]),
    "InvalidSignature": lambda a: e.InvalidSignatureError(
        "the signature is malformed, malleable, for another chain or vault, or not by the position's owner"
    ),
    "InvalidMaxPriceAge": lambda a: e.InvalidFieldError("maxPriceAge", "must be above zero"),
    "OrderIdInvalid": lambda a: e.InvalidOrderIdError(
        f"order id {a['orderId']} is not valid here (0..3 take-profits, 4..5 stops)", orderId=a["orderId"]
    ),
    "OrderNotFound": lambda a: e.OrderNotFoundError(
        f"the position has no pending order {a['orderId']}",
        positionId=_hex(a["positionId"]),
        orderId=a["orderId"],
    ),
    "OrderNotNext": lambda a: e.OrderNotNextError(
        f"order {a['orderId']} is crossed but order {a['nextOrderId']} executes first",
        positionId=_hex(a["positionId"]),
        orderId=a["orderId"],
        nextOrderId=a["nextOrderId"],
    ),
    "OrderOutOfSequence": lambda a: e.OrderOutOfSequenceError(
        f"take-profit {a['orderId']} at {usd_text(a['price'])} is out of sequence with take-profit"
        f" {a['otherOrderId']} at {usd_text(a['otherPrice'])} (lower ids must be reached first)",
        orderId=a["orderId"],
        price=usd_text(a["price"]),
        otherOrderId=a["otherOrderId"],
        otherPrice=usd_text(a["otherPrice"]),
    ),
    "OrderTrailInvalid": lambda a: e.InvalidTrailBpsError(
        f"order {a['orderId']} cannot trail by {a['trailBps']} bps (stops only, 1..9999; take-profits 0)",
        orderId=a["orderId"],
        trailBps=a["trailBps"],
    ),
    "PlanSharesExceeded": lambda a: e.PlanSharesExceededError(
        f"the partial orders' shares would total {a['sharesBps']} bps, above the {a['remainingBps']} bps"
        " left of the plan",
        sharesBps=a["sharesBps"],
        remainingBps=a["remainingBps"],
    ),
    "PlanOrderDuplicated": lambda a: e.PlanOrderDuplicatedError(
        f"the exit plan names order {a['orderId']} twice", orderId=a["orderId"]
    ),
    "StopNotTrailing": lambda a: e.StopNotTrailingError(
        f"stop {a['orderId']} has no trail distance: only a trailing stop ratchets",
        positionId=_hex(a["positionId"]),
        orderId=a["orderId"],
    ),
    "StopRatchetAgainstTrader": lambda a: e.StopRatchetAgainstTraderError(
        f"ratcheting stop {a['orderId']} would move it from {usd_text(a['trigger'])} to"
        f" {usd_text(a['proposedTrigger'])}, against the trader",
        positionId=_hex(a["positionId"]),
        orderId=a["orderId"],
        trigger=usd_text(a["trigger"]),
        proposedTrigger=usd_text(a["proposedTrigger"]),
    ),
    "OperatorRightMissing": lambda a: e.OperatorRightMissingError(
        f"operator {a['operator']} lacks the {_right_name(a['right'])} right over this account",
        operator=a["operator"],
        right=a["right"],
        rightName=_right_name(a["right"]),
    ),
    "OperatorExpired": lambda a: e.OperatorExpiredError(
        f"operator {a['operator']}'s grant expired at {a['expiresAt']} (unix seconds)",
        operator=a["operator"],
        expiresAt=a["expiresAt"],
    ),
    "OperatorRightsInvalid": lambda a: e.InvalidOperatorRightsError(
        "operator rights are bit flags 0..15", rights=a["rights"]
    ),
}


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _right_name(right: int) -> str:
    """The name of one operator right bit (`relayer.constants.RIGHT_NAMES`), or its number if unknown."""
    return RIGHT_NAMES.get(right, str(right))


def error_from_revert(data: bytes) -> e.RelayerError:
    """Map revert bytes to the matching `RelayerError` (unknown data becomes `ExecutionRevertedError`)."""
    decoded = decode_revert(data)
    if decoded is None or decoded.name not in _ERRORS:
        return e.ExecutionRevertedError("the vault reverted", data="0x" + data.hex())
    return vault_error(decoded.name, **decoded.args)


def vault_error(name: str, **args: Any) -> e.RelayerError:
    """The `RelayerError` the vault's custom error `name` with these arguments (ABI names and values) maps to:
    what a revert of it would give, for a check the relayer makes before sending (same class, message and
    details, `details.revert` included).

    >>> vault_error("PlanSharesExceeded", sharesBps=12_500, remainingBps=10_000).to_dict()["code"]
    'plan_shares_exceeded'
    """
    error = _ERRORS[name](args)
    error.details.setdefault("revert", name)
    return error


def translate(exc: BaseException) -> e.RelayerError | None:
    """A `RelayerError` for a revert or an unreachable node.

    None when `exc` is neither: that is a bug, and the caller should let it raise.
    """
    if isinstance(exc, e.RelayerError):
        return exc
    data = revert_data(exc)
    if data is not None:
        return error_from_revert(data)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or type(exc).__name__ in {
        "ProviderConnectionError",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectError",
    }:
        return e.ChainUnavailableError(f"the node did not answer: {type(exc).__name__}")
    return None


_RPC_EXECUTION_REVERTED = 3
"""JSON-RPC error code geth and anvil use for a reverted call (EIP-1474 leaves it to clients)."""


def rpc_revert_data(error: Mapping[str, Any]) -> bytes | None:
    """The revert data a JSON-RPC error object carries (in `data`, or `data.data` with some providers), when
    it is whole-byte 0x-hex and not empty; else None.

    >>> rpc_revert_data({"code": 3, "data": "0x2c5211c6"}).hex(), rpc_revert_data({"data": "0xabc"})
    ('2c5211c6', None)
    """
    data = error.get("data")
    if isinstance(data, Mapping):
        data = data.get("data")
    if isinstance(data, str) and _HEX.match(data) and len(data) > 2:
        return bytes.fromhex(data[2:])
    return None


def is_rpc_revert(error: Mapping[str, Any]) -> bool:
    """Whether a JSON-RPC error object says the call reverted: code 3 (geth, anvil), revert data, or a message
    that starts "execution reverted" in any case (Besu, Nethermind). The one test both the call path
    (`error_from_rpc_error`) and the send path (`relayer.chain.node_errors.classify_rpc_error`) use."""
    message = str(error.get("message", "")).lower()
    return (
        error.get("code") == _RPC_EXECUTION_REVERTED
        or rpc_revert_data(error) is not None
        or message.startswith("execution reverted")
    )


def error_from_rpc_error(error: Mapping[str, Any]) -> e.RelayerError:
    """A JSON-RPC error object (`{"code", "message", "data"}`) as a `RelayerError`.

    Revert data arrives as hex in `data` (geth, anvil) or in `data.data` (some providers) and is decoded by
    selector like any revert; "execution reverted" without data is an `ExecutionRevertedError`. Anything
    else means the node could not serve the call (rate limit, unknown method, pruned state):
    `ChainUnavailableError`, with the node's code and message in `details`.
    """
    data = rpc_revert_data(error)
    if data is not None:
        return error_from_revert(data)
    message = str(error.get("message", ""))[:300]
    if is_rpc_revert(error):
        return e.ExecutionRevertedError("the vault reverted", nodeMessage=message)
    return e.ChainUnavailableError(
        "the node could not serve the call", nodeCode=error.get("code"), nodeMessage=message
    )
