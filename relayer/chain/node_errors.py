"""What a node's refusal of a transaction means: classified once, here, and nowhere else.

Nodes report transaction-pool refusals with generic JSON-RPC codes (-32000, -32003, ...) and a message that is
the only thing telling "nonce too low" from "insufficient funds"; eth-tester raises a `ValidationError`
with its own wording. This module reads both and returns a `NodeError` with a `Kind` the sender acts on,
keeping the node's code and message for the journal. Reverts are not read here (see `relayer.chain.revert`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relayer.chain.revert import is_rpc_revert, revert_data, translate
from relayer.errors import (
    ChainUnavailableError,
    NodeDeferredError,
    NodeRejectedError,
    RelayerError,
    RelayerOutOfFundsError,
)


class Kind(StrEnum):
    """How the sender must react to a refusal."""

    ALREADY_KNOWN = "already_known"
    """The node already has these exact bytes: counts as sent."""
    NONCE_TOO_LOW = "nonce_too_low"
    """The nonce was used: look up which of our hashes mined (or whether a stranger's transaction did)."""
    NONCE_GAP = "nonce_gap"
    """An earlier nonce is not in the node yet (eth-tester refuses future nonces): retry after it."""
    UNDERPRICED = "underpriced"
    """A transaction with this nonce is pending at higher fees, or fees are below the node's floor: bump."""
    INSUFFICIENT_FUNDS = "insufficient_funds"
    """The signer cannot pay: an operator must fund it; transient for the record, alert-worthy."""
    UNAVAILABLE = "unavailable"
    """The node did not answer: retry with backoff."""
    REVERTED = "reverted"
    """The call reverts (estimation or simulation): never broadcast."""
    PERMANENT = "permanent"
    """Anything else the node refuses (bad chain id, gas too low...): these bytes can never be sent."""

    @property
    def is_transient(self) -> bool:
        return self in {Kind.NONCE_GAP, Kind.UNDERPRICED, Kind.INSUFFICIENT_FUNDS, Kind.UNAVAILABLE}


@dataclass(frozen=True)
class NodeError:
    """A classified node refusal: kind, the node's JSON-RPC code when it has one, and its message."""

    kind: Kind
    message: str
    code: int | None = None

    def details(self) -> dict[str, Any]:
        return {"nodeKind": self.kind.value, "nodeCode": self.code, "nodeMessage": self.message}

    def as_error(self) -> RelayerError:
        """The refusal as the `RelayerError` a record keeps (its `to_dict()`), so `restore_error` rebuilds it.

        >>> NodeError(Kind.UNDERPRICED, "replacement transaction underpriced", -32000).as_error().code
        'node_deferred'
        """
        details = self.details()
        if self.kind is Kind.UNAVAILABLE:
            return ChainUnavailableError(
                "the node did not answer; the relayer re-sends the transaction", **details
            )
        if self.kind is Kind.INSUFFICIENT_FUNDS:
            return RelayerOutOfFundsError("the sender cannot pay for the transaction", **details)
        if self.kind.is_transient:
            return NodeDeferredError(
                f"the node refused the transaction for now ({self.kind.value})", **details
            )
        return NodeRejectedError("the node refused the transaction for good", **details)


# Ordered: the first matching pattern wins. Messages are lower-cased; wording from geth, anvil, reth, erigon,
# nethermind and eth-tester.
_PATTERNS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.ALREADY_KNOWN, re.compile(r"already known|already imported|known transaction|alreadyknown")),
    (
        Kind.UNDERPRICED,
        re.compile(
            r"underpriced|fee too low|feetoolow"
            r"|max fee per gas less than block base fee|lower than block.s base fee"
        ),
    ),
    (Kind.NONCE_TOO_LOW, re.compile(r"nonce too low|oldnonce|nonce has already been used")),
    (Kind.NONCE_GAP, re.compile(r"nonce too high|nonce gap|futurenonce")),
    (
        Kind.INSUFFICIENT_FUNDS,
        re.compile(r"insufficient funds|not have enough balance|insufficientfunds|cannot afford txn"),
    ),
)

_ETH_TESTER_NONCE = re.compile(r"invalid transaction nonce: expected (\d+), but got (\d+)")


def _rpc_error(exc: BaseException) -> tuple[int | None, str] | None:
    """The JSON-RPC error (code, message) a web3 exception carries, if any."""
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        error = response["error"]
        code = error.get("code")
        return (code if isinstance(code, int) else None), str(error.get("message", ""))
    if type(exc).__name__ in {"Web3RPCError", "Web3ValueError", "ValueError"} and exc.args:
        first = exc.args[0]
        if isinstance(first, str) and first.startswith("{"):
            try:
                first = ast.literal_eval(first)
            except (ValueError, SyntaxError):
                return None
        if isinstance(first, dict) and "message" in first:
            code = first.get("code")
            return (code if isinstance(code, int) else None), str(first["message"])
    return None


def classify(exc: BaseException) -> NodeError:
    """Classify any exception raised by a node call (send, estimate, receipt).

    >>> classify(ValueError({"code": -32003, "message": "nonce too low"})).kind
    <Kind.NONCE_TOO_LOW: 'nonce_too_low'>
    >>> classify(ConnectionError("refused")).kind
    <Kind.UNAVAILABLE: 'unavailable'>
    """
    if revert_data(exc) is not None:
        return NodeError(Kind.REVERTED, str(exc)[:200])
    rpc = _rpc_error(exc)
    if rpc is not None:
        code, message = rpc
        return NodeError(_kind_of(message), message, code)
    if type(exc).__name__ == "ValidationError":  # eth-tester's pool refusals
        message = str(exc)
        nonce = _ETH_TESTER_NONCE.search(message.lower())
        if nonce is not None:
            expected, got = int(nonce.group(1)), int(nonce.group(2))
            return NodeError(Kind.NONCE_TOO_LOW if got < expected else Kind.NONCE_GAP, message)
        return NodeError(_kind_of(message), message)
    translated = translate(exc)
    if translated is not None and translated.retryable:
        return NodeError(Kind.UNAVAILABLE, translated.message)
    return NodeError(Kind.PERMANENT, f"{type(exc).__name__}: {str(exc)[:200]}")


def classify_rpc_error(error: Mapping[str, Any]) -> NodeError:
    """Classify a JSON-RPC error object (`{"code", "message", "data"}`): the transaction pool's words first
    (as `classify` reads an exception), then a revert (`relayer.chain.revert.is_rpc_revert`), then a node
    that could not serve the call now (`UNAVAILABLE`: retried, never settled as a refusal); anything else is
    `PERMANENT`.

    >>> classify_rpc_error({"code": -32000, "message": "nonce too low: next nonce 3, tx nonce 2"}).kind
    <Kind.NONCE_TOO_LOW: 'nonce_too_low'>
    >>> classify_rpc_error({"code": 3, "message": "execution reverted", "data": "0x2c5211c6"}).kind
    <Kind.REVERTED: 'reverted'>
    >>> classify_rpc_error({"message": "insufficient funds for gas * price + value"}).kind
    <Kind.INSUFFICIENT_FUNDS: 'insufficient_funds'>
    >>> classify_rpc_error({"code": -32000, "message": "already known", "data": "0x00"}).kind
    <Kind.ALREADY_KNOWN: 'already_known'>
    >>> classify_rpc_error({"code": -32005, "message": "limit exceeded"}).kind
    <Kind.UNAVAILABLE: 'unavailable'>
    >>> classify_rpc_error({"code": -32000, "message": "invalid chain id"}).kind
    <Kind.PERMANENT: 'permanent'>
    """
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = str(error.get("message", ""))
    kind = _kind_of(message)  # the pool's own words first: "already known" with stray `data` is sent
    if kind is not Kind.PERMANENT:
        return NodeError(kind, message, code)
    if is_rpc_revert(error):
        return NodeError(Kind.REVERTED, message[:200], code)
    if code in _NODE_BUSY_CODES or _NODE_BUSY.search(message.lower()):
        return NodeError(Kind.UNAVAILABLE, message, code)
    return NodeError(Kind.PERMANENT, message, code)


def node_message(exc: BaseException) -> tuple[int | None, str]:
    """The JSON-RPC error (code, message) a node would answer for `exc`, an exception of web3 or eth-tester
    that is not a revert: `classify_rpc_error` reads the message as the same kind as `classify(exc)`.

    eth-tester words a used nonce and a future one alike ("invalid transaction nonce"), so the message
    gets the node's words for the case in front of it.

    >>> ValidationError = type("ValidationError", (Exception,), {})
    >>> node_message(ValidationError("Invalid transaction nonce: Expected 1, but got 0"))
    (None, 'nonce too low: Invalid transaction nonce: Expected 1, but got 0')
    >>> node_message(ValueError({"code": -32000, "message": "already known"}))
    (-32000, 'already known')
    """
    rpc = _rpc_error(exc)
    if rpc is not None:
        return rpc
    message = str(exc)
    if type(exc).__name__ == "ValidationError":
        nonce = _ETH_TESTER_NONCE.search(message.lower())
        if nonce is not None:
            expected, got = int(nonce.group(1)), int(nonce.group(2))
            return None, f"nonce too {'low' if got < expected else 'high'}: {message}"
        return None, message
    return None, f"{type(exc).__name__}: {message[:200]}"


_NODE_BUSY_CODES = frozenset({-32005, -32603, 429})
"""Codes of a node that could not serve the call now: limit exceeded (EIP-1474), internal error, HTTP 429."""

_NODE_BUSY = re.compile(
    r"limit exceeded|rate limit|too many requests|timeout|timed out|header not found|internal error"
    r"|sent no reply|try again|busy|batch"
)
"""Words of a node (or provider) that could not serve the call now, not a refusal of the transaction; a
whole refused batch and a call the node left unanswered (`relayer.chain.jsonrpc`) read the same way."""


def _kind_of(message: str) -> Kind:
    lowered = message.lower()
    for kind, pattern in _PATTERNS:
        if pattern.search(lowered):
            return kind
    return Kind.PERMANENT
