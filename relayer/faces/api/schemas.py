# ruff: noqa: N815 - field names are the wire format (camelCase JSON)
"""OpenAPI documentation of the REST API: request and response shapes with examples.

These models only describe the wire format for `/docs` and `/openapi.json`. Requests are NOT parsed with
them (FastAPI would turn `0.1` into a binary float): routes read the raw body with
`relayer.domain.jsonio.loads_object` and validate it in `relayer.domain.requests`; responses come from the
core's `to_dict()`.
"""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

from relayer import errors
from relayer.errors import RelayerError

_POSITION_ID = "0x3f6b2a1c9d0e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"
_OWNER = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
_VAULT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"

NumberOrDecimalString = Decimal
"""Shown in the schema as number or string; parsed exactly (`relayer.domain.jsonio`), never as a float."""


class CloseRequestDoc(BaseModel):
    """Body of `POST /api/closeposition`. Numbers may be JSON numbers or decimal strings; both are exact."""

    positionId: str = Field(
        description="The position's bytes32 id, 0x + 64 hex digits.", examples=[_POSITION_ID]
    )
    sizeDelta: NumberOrDecimalString | None = Field(
        None,
        description="Base-asset units to close (e.g. 0.14 BTC), > 0 and <= the size. Omitted: close all "
        "(or, with takeProfit/stopLoss, close nothing and only set the orders).",
    )
    allowedPrice: NumberOrDecimalString | None = Field(
        None,
        description="Worst acceptable exit price in USD: a long closes at no less, a short at no more. "
        "0 or omitted: no bound. Only with a close.",
    )
    takeProfit: NumberOrDecimalString | None = Field(
        None,
        description="New take-profit price in USD (long: above the price, short: below); 0 cancels.",
    )
    stopLoss: NumberOrDecimalString | None = Field(
        None,
        description="New stop-loss price in USD (long: below the price, short: above); 0 cancels.",
    )
    takeProfitClosePercent: int | None = Field(
        None,
        description="Basis points of the size at execution to close, 1..10000; required with takeProfit.",
    )
    stopLossClosePercent: int | None = Field(
        None, description="Basis points of the size at execution to close, 1..10000; required with stopLoss."
    )


CLOSE_REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "full_close": {"summary": "Close the whole position", "value": {"positionId": _POSITION_ID}},
    "partial_close": {
        "summary": "Close 0.14 BTC of a long, not below $96,000",
        "value": {"positionId": _POSITION_ID, "sizeDelta": "0.14", "allowedPrice": "96000"},
    },
    "modify_orders": {
        "summary": "Set take-profit and stop-loss, close nothing",
        "value": {
            "positionId": _POSITION_ID,
            "takeProfit": "105000",
            "takeProfitClosePercent": 5000,
            "stopLoss": "90000",
            "stopLossClosePercent": 10000,
        },
    },
    "close_and_modify": {
        "summary": "Close a third and move the stop-loss, in one transaction",
        "value": {
            "positionId": _POSITION_ID,
            "sizeDelta": "0.14",
            "stopLoss": "95500",
            "stopLossClosePercent": 10000,
        },
    },
}


class TransactionDoc(BaseModel):
    """The unsigned transaction as a JSON-RPC transaction object, what a wallet's `eth_sendTransaction` takes.

    Quantities are 0x-hex strings, never JSON numbers, so no JSON parser can round them (JavaScript's
    `JSON.parse` does above 2**53). `eth_account.Account.sign_transaction(tx, key)` signs it as is. viem and
    ethers read `serializedTransaction` instead.
    """

    type: str | None = Field(None, examples=["0x2"], description="0x2 (EIP-1559); absent on legacy chains.")
    chainId: str = Field(examples=["0x7a69"])
    from_: str = Field(alias="from", examples=[_OWNER], description="The position owner: who must sign.")
    to: str = Field(examples=[_VAULT])
    data: str = Field(examples=["0x4d2e..."])
    value: str = Field(examples=["0x0"])
    gas: str = Field(examples=["0xcb20"], description="Gas limit: the estimate plus the configured margin.")
    nonce: str = Field(examples=["0x7"], description="The owner's pending nonce.")
    maxFeePerGas: str | None = Field(None, examples=["0xab5d04c1"], description="Wei per gas, EIP-1559 only.")
    maxPriorityFeePerGas: str | None = Field(None, examples=["0x3b9aca00"], description="Wei per gas.")
    gasPrice: str | None = Field(None, description="Wei per gas; only on chains without a base fee.")


class OrderDoc(BaseModel):
    price: str = Field(examples=["105000"], description="Trigger price, USD.")
    closeBps: int = Field(
        examples=[5000], description="Basis points of the size at execution to close, 1..10000 (10000 = all)."
    )


class PreviewDoc(BaseModel):
    """What the transaction does at the current oracle price; decimal strings are exact."""

    positionId: str
    owner: str
    market: str = Field(examples=["BTCUSDT"])
    side: str = Field(examples=["long"])
    entryPrice: str = Field(examples=["96000"])
    currentPrice: str = Field(examples=["97250"])
    priceUpdatedAt: int
    allowedPrice: str | None
    sizeBefore: str = Field(examples=["0.42"])
    sizeDelta: str = Field(examples=["0.14"])
    sizeAfter: str = Field(examples=["0.28"])
    realizedPnl: str = Field(examples=["175"], description="USD booked by this close (vault rounding).")
    remainingUnrealizedPnl: str = Field(examples=["350"], description="USD of what stays open at this price.")
    takeProfit: OrderDoc | None = Field(description="The order after the transaction.")
    stopLoss: OrderDoc | None


class CloseResponseDoc(BaseModel):
    calldata: str = Field(examples=["0x4d2e7b1a..."])
    vaultAddress: str = Field(examples=[_VAULT])
    requiredGasFee: str = Field(examples=["0.000149500000624"], description="ETH: gas limit x maxFeePerGas.")
    action: str = Field(
        examples=["decrease"], description="close, decrease, set_triggers or decrease_and_set_triggers"
    )
    gasEstimate: int = Field(examples=[43_000])
    transaction: TransactionDoc
    serializedTransaction: str = Field(
        examples=["0x02f88f827a6901843b9aca00847a4ed1b283011cbd94..."],
        description="The same transaction, unsigned, as EIP-2718 hex: `0x02 || rlp([chainId, nonce, "
        "maxPriorityFeePerGas, maxFeePerGas, gas, to, value, data, accessList])`, or the EIP-155 legacy RLP "
        "on chains without a base fee. viem: `parseTransaction(it)`; ethers v6: `Transaction.from(it)`; then "
        "sign with the owner's key. Its keccak is the hash the owner signs.",
    )
    preview: PreviewDoc


class PositionDoc(BaseModel):
    positionId: str
    owner: str
    market: str
    side: str
    status: str = Field(examples=["open"], description="open or closed")
    size: str
    entryPrice: str
    currentPrice: str
    priceUpdatedAt: int
    unrealizedPnl: str
    takeProfit: OrderDoc | None
    stopLoss: OrderDoc | None


class PositionsDoc(BaseModel):
    owner: str
    positions: list[PositionDoc]


class MarketDoc(BaseModel):
    symbol: str = Field(examples=["BTCUSDT"])
    price: str = Field(examples=["97250"])
    updatedAt: int
    ageSeconds: int
    stale: bool


class MarketsDoc(BaseModel):
    blockNumber: int
    blockTimestamp: int
    maxPriceAge: int
    markets: list[MarketDoc]


class HealthDoc(BaseModel):
    status: str = Field(examples=["ok"])
    chainId: int
    blockNumber: int
    blockTimestamp: int
    vaultAddress: str


class ErrorBodyDoc(BaseModel):
    code: str = Field(
        examples=["size_delta_exceeds_position"],
        description="Stable and machine-readable; each status lists the codes the operation can answer.",
    )
    message: str
    details: dict[str, Any]


class ErrorDoc(BaseModel):
    """Every error answer: `{"error": {"code", "message", "details"}}` (one shape for every status)."""

    error: ErrorBodyDoc


# --- the error answers of each operation, named by error class (the status and code come from the class) ----

Errors = tuple[type[RelayerError], ...]

EVERY_REQUEST: Errors = (
    errors.InvalidFieldError,
    errors.BodyTooLargeError,
    errors.RequestTimeoutError,
    errors.TooManyConnectionsError,
)
"""Any operation: a query parameter it does not have or given twice (422), a body over the limit (413),
headers or body too slow (408), the server's connection cap reached (503)."""

BODY: Errors = (
    errors.UnsupportedMediaTypeError,
    errors.InvalidFieldError,
    errors.ClientDisconnectedError,
)
"""Reading a JSON body (`relayer.faces.api.inputs.json_object`; a client leaving mid-body)."""

API_KEY: Errors = (errors.UnauthenticatedError, errors.ApiKeyExpiredError, errors.InsufficientScopeError)
"""An operation that takes an API key (`Authorization: Bearer` or `X-API-Key`)."""

CHAIN: Errors = (errors.ChainUnavailableError,)
"""An operation that reads the node."""

RELAY: Errors = (errors.RelayNotConfiguredError, errors.StoreUnavailableError)
"""An operation that needs the relay (relayer signers) and its journal."""

POSITION_CHECKS: Errors = (
    errors.PositionNotFoundError,
    errors.MarketNotFoundError,
    errors.InvalidMarketError,
    errors.InvalidSizeError,
    errors.SizeDeltaExceedsPositionError,
    errors.InvalidCloseBpsError,
    errors.InvalidPriceError,
    errors.InvalidTriggerPriceError,
    errors.StalePriceError,
    errors.PriceNotSetError,
    errors.PriceSlippageError,
    errors.ExecutionRevertedError,
    *CHAIN,
)
"""Building and simulating a close or TP/SL against the chain (`TransactionBuilder`)."""

SENDING: Errors = (
    *RELAY,
    errors.IdempotencyConflictError,
    errors.RequestInProgressError,
    errors.QuotaExceededError,
    errors.SponsorshipRefusedError,
    errors.RelayerOutOfFundsError,
    errors.FeeCapExceededError,
    errors.LeaseHolderUnavailableError,
    errors.SignerUnavailableError,
    errors.RelayQueueFullError,
    errors.NodeRejectedError,
    *CHAIN,
)
"""Journaling and sending a transaction the relayer pays for (`RelayService`)."""

SIGNED_REQUEST_VALUES: Errors = (
    errors.InvalidFieldError,
    errors.InvalidMarketError,
    errors.InvalidPriceError,
    errors.InvalidCloseBpsError,
    errors.InvalidTriggerPriceError,
    errors.InvalidOrderIdError,
    errors.OrderOutOfSequenceError,
    errors.InvalidTrailBpsError,
    errors.PlanSharesExceededError,
    errors.PlanOrderDuplicatedError,
    errors.InvalidOperatorRightsError,
)
"""A signed request's values the vault would refuse, checked before it is signed or relayed
(`relayer.domain.typed_data`, `relayer.domain.exit_plans`)."""

SIGNED_RELAY: Errors = (
    *BODY,
    *SIGNED_REQUEST_VALUES,
    errors.InvalidSignatureError,
    errors.ExpiredRequestError,
    errors.DeadlineTooSoonError,
    errors.InvalidNonceError,
    errors.DuplicateRequestError,
    errors.NotAuthorizedError,
    errors.OrderNotFoundError,
    errors.NothingToChangeError,
    *POSITION_CHECKS,
    *SENDING,
)
RAW_RELAY: Errors = (
    *BODY,
    errors.DisallowedTransactionError,
    errors.FeeBelowBaseFeeError,
    errors.NonceTooFarError,
    errors.TooManyPendingError,
    *SENDING,
)
TRADE: Errors = (
    *BODY,
    *API_KEY,
    errors.NotAuthorizedError,
    errors.MarketNotAllowedError,
    errors.AmbiguousPositionError,
    errors.OperatorNotApprovedError,
    *POSITION_CHECKS,
    *SENDING,
)
"""An API-key trading action (`TradingService`): the key, the account's position, the checks, the relay."""
ORDER_CHECKS: Errors = (
    errors.InvalidOrderIdError,
    errors.OrderNotFoundError,
    errors.OrderOutOfSequenceError,
    errors.InvalidTrailBpsError,
    errors.PlanSharesExceededError,
    errors.PlanOrderDuplicatedError,
    errors.ExitPlanFullError,
    errors.NothingToChangeError,
    errors.OperatorRightMissingError,
)
"""An exit-order change by API key: the vault's plan rules (checked before sending), and a change the relayer
never makes (loosening or cancelling a stop: 403 `operator_right_missing`)."""
TRADE_ORDERS: Errors = (*TRADE, *ORDER_CHECKS)

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again (a quota's reset, or 1).",
        "schema": {"type": "integer"},
    }
}


def error_responses(*raised: type[RelayerError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of an operation that can raise `raised` (plus `EVERY_REQUEST`): per status,
    the one shared `ErrorDoc` body, the codes in the description, and `Retry-After` where the answer carries
    it (a 429, a retryable 5xx; see `relayer.faces.api.errors.error_response`)."""
    codes: dict[int, list[str]] = {}
    retry_after: set[int] = set()
    for error in (*EVERY_REQUEST, *raised):
        listed = codes.setdefault(error.http_status, [])
        if error.code not in listed:
            listed.append(error.code)
        if error.retryable and (
            error.http_status == HTTPStatus.TOO_MANY_REQUESTS or error.http_status >= 500
        ):
            retry_after.add(error.http_status)
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(codes):
        named = ", ".join(f"`{code}`" for code in codes[status])
        answer: dict[str, Any] = {"model": ErrorDoc, "description": f"{HTTPStatus(status).phrase}: {named}"}
        if status in retry_after:
            answer["headers"] = _RETRY_AFTER
        responses[status] = answer
    return responses


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Success statuses an operation answers besides its default one (e.g. 202 pending, 200 replayed)."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}
