"""One error tree for the whole relayer.

Every failure a caller can cause or meet is a `RelayerError` with a stable machine-readable `code`, an HTTP
status, a `retryable` flag and structured `details`. The REST, CLI and MCP faces map these once (see
`relayer.faces.api.errors`, `relayer.faces.cli.main`); nothing else decides how an error looks to a client.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RelayerError(Exception):
    """Root of every error the relayer reports to a client."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init_subclass__(
        cls, *, code: str | None = None, http_status: int | None = None, retryable: bool | None = None
    ) -> None:
        """A subclass names its `code`, HTTP status and `retryable` in its header; unnamed ones inherit."""
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status
        if retryable is not None:
            cls.retryable = retryable

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error itself: `{"code", "message", "details"}` (what a relay record keeps)."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def envelope(self) -> dict[str, Any]:
        """The one error body every face answers: `{"error": {"code", "message", "details"}}` (REST bodies,
        MCP tool error texts, JSON-RPC refusals' `data`)."""
        return {"error": self.to_dict()}


# --- bad input (4xx) ----------------------------------------------------------------------------------------


class InvalidFieldError(RelayerError, ValueError, code="invalid_field", http_status=422):
    """A request field is missing, malformed, out of range or more precise than the chain holds."""

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)
        self.field = field

    def renamed(self, field: str) -> InvalidFieldError:
        """The same error (class, code, reason, details) naming `field`: for a face that spells the field
        otherwise (MCP's `size_delta` for REST's `sizeDelta`). Made as `restore_error` makes one, since a
        subclass's own constructor may take other arguments."""
        reason = self.message.removeprefix(f"{self.field}: ")
        details = {key: value for key, value in self.details.items() if key != "field"}
        named = type(self).__new__(type(self))
        InvalidFieldError.__init__(named, field, reason, **details)
        return named


class InvalidMarketError(InvalidFieldError, code="invalid_market"):
    """A market symbol that is malformed or not one of the vault's markets."""


class InvalidSizeError(RelayerError, ValueError, code="invalid_size", http_status=422):
    """A size that is zero, negative, or finer than the vault's 18 decimals."""


class SizeDeltaExceedsPositionError(
    RelayerError, ValueError, code="size_delta_exceeds_position", http_status=422
):
    pass


class InvalidCloseBpsError(RelayerError, ValueError, code="invalid_close_bps", http_status=422):
    """A close share outside 1..10_000 basis points."""


class InvalidPriceError(RelayerError, ValueError, code="invalid_price", http_status=422):
    """A price that is negative, zero where one is required, or finer than 8 decimals."""


class InvalidTriggerPriceError(RelayerError, ValueError, code="invalid_trigger_price", http_status=422):
    @classmethod
    def wrong_side(
        cls,
        is_take_profit: bool,
        trigger_price: str,
        current_price: str,
        is_long: bool | None = None,
        **details: Any,
    ) -> InvalidTriggerPriceError:
        """A take-profit or stop-loss on the wrong side of the current price (both USD text); the message says
        which side is right when the position's side is known.

        >>> InvalidTriggerPriceError.wrong_side(True, "95000", "96000", is_long=True).message
        'take-profit 95000 must be above the current price 96000 for a long'
        >>> InvalidTriggerPriceError.wrong_side(False, "97000", "96000").message
        'stop-loss 97000 is on the wrong side of the current price 96000'
        """
        name = "take-profit" if is_take_profit else "stop-loss"
        if is_long is None:
            where = "is on the wrong side of"
        else:
            where = f"must be {'above' if is_long == is_take_profit else 'below'}"
        side = "" if is_long is None else f" for a {'long' if is_long else 'short'}"
        return cls(
            f"{name} {trigger_price} {where} the current price {current_price}{side}",
            isTakeProfit=is_take_profit,
            triggerPrice=trigger_price,
            currentPrice=current_price,
            **details,
        )


class PriceSlippageError(RelayerError, code="price_slippage", http_status=409, retryable=True):
    """The current price is already worse than the caller's `allowedPrice`."""

    @classmethod
    def worse_than_allowed(
        cls, price: str, allowed_price: str, side: str | None = None
    ) -> PriceSlippageError:
        """Both prices as USD text; `side` ("long" / "short") when known (the vault's revert does not say).

        >>> PriceSlippageError.worse_than_allowed("96000", "97000", "long").message
        'price 96000 is already worse than allowedPrice 97000 for a long'
        """
        for_side = f" for a {side}" if side else ""
        return cls(
            f"price {price} is already worse than allowedPrice {allowed_price}{for_side}",
            price=price,
            allowedPrice=allowed_price,
        )


class PositionNotFoundError(RelayerError, LookupError, code="position_not_found", http_status=404):
    @classmethod
    def unknown(cls, position_id: bytes) -> PositionNotFoundError:
        """No position ever had this id."""
        return cls("no position with this id", positionId=_hex(position_id))

    @classmethod
    def closed(cls, position_id: bytes) -> PositionNotFoundError:
        """The position existed and is fully closed (`details.status` says so)."""
        return cls("the position is closed", positionId=_hex(position_id), status="closed")

    @classmethod
    def not_open(cls, position_id: bytes) -> PositionNotFoundError:
        """The vault's `PositionNotFound`: no position with this id, or a closed one (it cannot tell)."""
        return cls("no open position with this id", positionId=_hex(position_id))


class MarketNotFoundError(RelayerError, LookupError, code="market_not_found", http_status=404):
    """The vault has no market of this symbol."""


class NotAuthorizedError(RelayerError, PermissionError, code="not_authorized", http_status=403):
    """The caller may not act on this position (another account owns it)."""


class StalePriceError(RelayerError, code="stale_price", http_status=409, retryable=True):
    @classmethod
    def of_market(cls, market: str, updated_at: int, max_price_age_s: int, **details: Any) -> StalePriceError:
        """`market`'s price, set at `updated_at`, is older than the vault's `maxPriceAge`."""
        return cls(
            "the market's oracle price is stale",
            market=market,
            updatedAt=updated_at,
            maxPriceAge=max_price_age_s,
            **details,
        )


class PriceNotSetError(RelayerError, code="price_not_set", http_status=409):
    @classmethod
    def of_market(cls, market: str) -> PriceNotSetError:
        return cls("the market has no oracle price", market=market)


class TriggerNotCrossedError(RelayerError, code="trigger_not_crossed", http_status=409, retryable=True):
    """The order's trigger price is not crossed (yet): nothing to execute."""


class ExpiredRequestError(RelayerError, code="request_expired", http_status=422):
    @classmethod
    def past_deadline(cls, deadline: int, timestamp: int) -> ExpiredRequestError:
        """The block time `timestamp` is past the signed request's `deadline` (both unix seconds)."""
        return cls("the signed request's deadline has passed", deadline=deadline, timestamp=timestamp)


class InvalidNonceError(RelayerError, code="invalid_nonce", http_status=409):
    @classmethod
    def not_next(cls, owner: str, expected: int, got: int) -> InvalidNonceError:
        """A signed request's nonce `got` is not `owner`'s next one at the vault, `expected`."""
        return cls(
            f"nonce {got} is not the owner's next nonce {expected} (replayed or out of order)",
            owner=owner,
            expected=expected,
            got=got,
        )


class InvalidSignatureError(RelayerError, code="invalid_signature", http_status=422):
    """A signed request's signature is malformed, malleable, or not the owner's for this chain and vault."""


class ExecutionRevertedError(RelayerError, code="execution_reverted", http_status=422):
    """The vault reverted with data we could not attribute to one of its custom errors."""


# --- exit plans and operator rights (issue 12) --------------------------------------------------------------


class InvalidOrderIdError(RelayerError, ValueError, code="invalid_order_id", http_status=422):
    """An order id outside 0..5 (0..3 take-profits, 4..5 stops), or a non-stop where a stop is needed."""


class OrderNotFoundError(RelayerError, LookupError, code="order_not_found", http_status=404):
    """The position has no pending order of this id (never set, cancelled, or already executed)."""


class OrderNotNextError(RelayerError, code="order_not_next", http_status=409, retryable=True):
    """The order is crossed, but another crossed order executes first (stops first, then take-profits in the
    order a price reaches them): execute `details.nextOrderId` first."""


class OrderOutOfSequenceError(RelayerError, ValueError, code="order_out_of_sequence", http_status=422):
    """Take-profit ids must follow the order a price reaches them (id 0 nearest the price), with distinct
    prices: this one would sit beyond, or at, another pending take-profit."""


class InvalidTrailBpsError(RelayerError, ValueError, code="invalid_trail_bps", http_status=422):
    """A trail distance on a take-profit, or a stop's trail of 10000 basis points or more."""


class PlanSharesExceededError(RelayerError, ValueError, code="plan_shares_exceeded", http_status=422):
    """The partial orders' shares (below 10000 bps each) would add up to more than what remains of the plan:
    some order would over-close."""


class PlanOrderDuplicatedError(RelayerError, ValueError, code="plan_order_duplicated", http_status=422):
    """An exit plan names the same order id twice."""


class ExitPlanFullError(RelayerError, code="exit_plan_full", http_status=409):
    """A take-profit tier cannot be added: the position already has four take-profits pending (ids 0..3);
    cancel or replace one first."""


class StopNotTrailingError(RelayerError, code="stop_not_trailing", http_status=409):
    """Only a trailing stop (one with a trail distance) can be ratcheted."""


class StopRatchetAgainstTraderError(
    RelayerError, code="stop_ratchet_against_trader", http_status=409, retryable=True
):
    """Ratcheting now would move the stop against the trader (the price has not moved far enough its way)."""


class OperatorRightMissingError(
    RelayerError, PermissionError, code="operator_right_missing", http_status=403
):
    """The operator holds rights over the owner's positions, but not the one this action needs
    (`details.rightName`: close, set_take_profit, tighten_stop, loosen_or_cancel_stop)."""


class OperatorExpiredError(RelayerError, PermissionError, code="operator_expired", http_status=403):
    """The operator's grant expired (`details.expiresAt`, unix seconds): the owner must grant it again."""


class InvalidOperatorRightsError(RelayerError, ValueError, code="invalid_operator_rights", http_status=422):
    """Operator rights are bit flags 0..15 (close 1, set take-profit 2, tighten stop 4, loosen or cancel
    8)."""


# --- environment (5xx) --------------------------------------------------------------------------------------


class ChainUnavailableError(RelayerError, code="chain_unavailable", http_status=503, retryable=True):
    """The node did not answer, or answered something that is not JSON-RPC."""


class VaultNotDeployedError(RelayerError, code="vault_not_deployed", http_status=503):
    """The configured address does not hold this build of the vault."""


class ConfigurationError(RelayerError, code="configuration_error", http_status=500):
    """Settings are missing or contradictory (e.g. no deployer key); raised at start-up, never per request."""


# --- authentication and trading by API key ------------------------------------------------------------------


class UnauthenticatedError(RelayerError, code="unauthenticated", http_status=401):
    """No API key, an unknown one or a revoked one."""


class InsufficientScopeError(RelayerError, PermissionError, code="insufficient_scope", http_status=403):
    """A valid API key without the scope the action needs."""


class AmbiguousPositionError(RelayerError, code="ambiguous_position", http_status=409):
    """The account has several open positions in the market: the caller must say which (side, positionId)."""


class OperatorNotApprovedError(RelayerError, code="operator_not_approved", http_status=409):
    """The account has not approved the relayer's signer as a vault operator, so it cannot act for it."""


# --- relay (issue 4) ----------------------------------------------------------------------------------------


class TransactionNotFoundError(RelayerError, LookupError, code="transaction_not_found", http_status=404):
    """No relay record has this id."""


class IdempotencyConflictError(RelayerError, code="idempotency_conflict", http_status=409):
    """The `Idempotency-Key` was already used with a different request body."""


class DuplicateRequestError(RelayerError, code="duplicate_request", http_status=409):
    """The same signed request (owner and nonce) is already being relayed; a second copy would only revert."""


class DisallowedTransactionError(RelayerError, ValueError, code="disallowed_transaction", http_status=422):
    """A raw transaction breaks the relay policy: wrong target, function, chain id or type."""


class RequestExpiredBeforeSendError(RelayerError, code="request_expired_before_send", http_status=422):
    """A signed request's deadline passed before its transaction could be mined; its nonce was freed."""


class RelayerOutOfFundsError(RelayerError, code="relayer_out_of_funds", http_status=503, retryable=True):
    """No relayer signer holds enough ether to pay for the transaction."""


class FeeCapExceededError(RelayerError, code="fee_cap_exceeded", http_status=503, retryable=True):
    """The network's current fees are above the configured max fee per gas; nothing was signed."""


class NodeRejectedError(RelayerError, code="node_rejected", http_status=502):
    """The node permanently refused a transaction (its code and message are in `details`)."""


class RouteNotFoundError(RelayerError, LookupError, code="not_found", http_status=404):
    """No API route has this path (the web framework's own 404)."""


class MethodNotAllowedError(RelayerError, code="method_not_allowed", http_status=405):
    """The route exists, not with this HTTP method (the answer's `Allow` header lists the ones it takes)."""


class HttpRefusedError(RelayerError, code="http_error", http_status=400):
    """A request the web framework refused for a reason of its own (a malformed body or header, say): answered
    with the framework's own 4xx status, never as a server error."""


class PriceFeedOffError(RelayerError, LookupError, code="price_feed_off", http_status=404):
    """The demo price-feed controls exist only while `relayer serve` runs the feed on the embedded chain."""


class RelayNotConfiguredError(RelayerError, code="relay_not_configured", http_status=503):
    """The server runs without a relayer signer, so it can build transactions but not relay or trade."""

    def __init__(
        self,
        message: str = "this server has no relayer signer: set RELAYER_SIGNER_KEY (or _KEYSTORE) to relay and"
        " trade",
        **details: Any,
    ) -> None:
        super().__init__(message, **details)


class NonceUsedElsewhereError(RelayerError, code="nonce_used_elsewhere", http_status=409, retryable=True):
    """A transaction that is not one of the record's used its nonce (e.g. the owner of a raw transaction sent
    another one at that nonce); the record ends `replaced` and the request may be sent again."""


class FeeCapReachedError(RelayerError, code="fee_cap_reached", http_status=503, retryable=True):
    """A pending transaction cannot be re-priced without exceeding the max fee per gas; it waits at its
    current fees (a note on the record, which stays pending)."""


class NodeDeferredError(RelayerError, code="node_deferred", http_status=503, retryable=True):
    """The node refused a transaction for now (underpriced, or an earlier nonce it has not seen yet); the
    relayer re-sends or bumps it. `details.nodeKind`, `nodeCode` and `nodeMessage` say what the node said."""


class StoreUnavailableError(RelayerError, code="store_unavailable", http_status=503, retryable=True):
    """The database (PostgreSQL) did not answer in time or dropped the connection before the request's record
    was committed (past the commit a request is answered with its record). Send it again with the same
    Idempotency-Key: a commit whose acknowledgement was lost is then found by its key."""


class RequestInProgressError(RelayerError, code="request_in_progress", http_status=409, retryable=True):
    """Another request with this Idempotency-Key and the same body is still being worked on (on this
    instance or another); send it again shortly to get that request's answer."""


class LeaseHolderUnavailableError(
    RelayerError, code="lease_holder_unavailable", http_status=503, retryable=True
):
    """A call reached an instance that does not hold its signer's lease, and no instance holding it took the
    call in time (a failover in progress). It was withdrawn before anything was signed: send it again."""


class SignerUnavailableError(RelayerError, code="signer_unavailable", http_status=503, retryable=True):
    """No relayer signer may send now: every one that could pay is in use by another journal (its nonces
    on chain are ahead of what this database knows) and was stopped, so nothing is sent twice."""


class RelayQueueFullError(RelayerError, code="relay_queue_full", http_status=503, retryable=True):
    """Every relayer signer has its in-flight limit of unmined transactions and this instance's queue of calls
    waiting for a slot is full, or the call waited its time in it (`RELAYER_RELAY_MAX_IN_FLIGHT_PER_SIGNER`,
    `_QUEUE_LIMIT`, `_QUEUE_WAIT_S`). Nothing was signed or kept: send it again after `Retry-After`. A 503,
    not a 429: the limit is the relayer's capacity, shared by every caller."""


class BodyTooLargeError(RelayerError, code="body_too_large", http_status=413):
    """A request body above the API's limit: refused before it is read, whatever it holds."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"request body above {max_bytes} bytes", maxBytes=max_bytes)


class UnsupportedMediaTypeError(RelayerError, code="unsupported_media_type", http_status=415):
    """A request body that does not say it is JSON (`Content-Type: application/json`): refused rather than
    guessed at, so a form post from any web page cannot act on the API."""

    def __init__(self, given: str) -> None:
        super().__init__(
            f"send the body as JSON with content-type application/json (got {given[:80] or 'none'!r})",
            contentType=given[:80],
        )


# --- sponsorship, quotas and refusals of what cannot succeed ---------------------------------------------


class QuotaExceededError(RelayerError, code="quota_exceeded", http_status=429, retryable=True):
    """A sponsorship budget is spent (requests per window, or gas in wei per day, of an owner, an API key or
    the relayer as a whole): nothing was signed. `details` say which budget (`scope`, `budget`), its `limit`,
    what is `used`, when it `resetsAt` (unix seconds) and `retryAfterS`; REST adds `Retry-After`."""

    def __init__(
        self, message: str, *, scope: str, budget: str, limit: int, used: int, resets_at: int, now: int
    ) -> None:
        super().__init__(
            message,
            scope=scope,
            budget=budget,
            limit=str(limit),
            used=str(used),
            resetsAt=resets_at,
            retryAfterS=max(1, resets_at - now),
        )

    @property
    def retry_after_s(self) -> int:
        return int(self.details["retryAfterS"])


class SponsorshipRefusedError(RelayerError, PermissionError, code="sponsorship_refused", http_status=403):
    """The sponsorship policy does not pay gas for this caller (an owner not on the allowlist, or signed
    requests when only API-key accounts are sponsored)."""


class DeadlineTooSoonError(RelayerError, code="deadline_too_soon", http_status=422):
    """A signed request whose deadline leaves less than the minimum margin after the latest block: it could
    expire before it is mined, and the relayer would pay for a no-op. Sign it again with a later deadline."""


class FeeBelowBaseFeeError(RelayerError, code="fee_below_base_fee", http_status=422):
    """A raw transaction whose `maxFeePerGas` is below the latest block's base fee: no block would take it."""


class NonceTooFarError(RelayerError, code="nonce_too_far", http_status=422):
    """A raw transaction whose nonce is further ahead of its sender's next nonce than the allowed window: it
    could not be mined until the sender fills the gap."""


class TooManyPendingError(RelayerError, code="too_many_pending", http_status=429, retryable=True):
    """The sender already has the maximum number of unfinished raw transactions here: wait for them."""


class ApiKeyExpiredError(RelayerError, code="api_key_expired", http_status=401):
    """The API key passed its `expiresAt`: ask the operator for a new one."""


class MarketNotAllowedError(RelayerError, PermissionError, code="market_not_allowed", http_status=403):
    """The API key is limited to other markets."""


class RequestTimeoutError(RelayerError, code="request_timeout", http_status=408):
    """The request's headers or body did not arrive in time."""


class ClientDisconnectedError(RelayerError, code="client_disconnected", http_status=400):
    """The client hung up before its request body arrived: nothing was done."""


class RawTransactionExpiredError(RelayerError, code="raw_transaction_expired", http_status=422):
    """(A record's error.) A raw transaction not mined within `raw_ttl_s` of being accepted: dropped, never
    broadcast again by the relayer (its sender may send it, or another at its nonce, again)."""


class TooManyStreamsError(RelayerError, code="too_many_streams", http_status=429, retryable=True):
    """The API key holds its cap of open streams on this instance (`RELAYER_STREAM_MAX_PER_KEY`): close one
    (or wait for one to end) and retry."""


class TooManyConnectionsError(RelayerError, code="too_many_connections", http_status=503, retryable=True):
    """The server holds its cap of open connections (`RELAYER_HTTP_MAX_CONNECTIONS`): retry shortly."""


class WebhookNotFoundError(RelayerError, LookupError, code="webhook_not_found", http_status=404):
    """No webhook subscription of that id that this API key may see (another account's is not shown)."""


class WebhookUrlRefusedError(RelayerError, ValueError, code="webhook_url_refused", http_status=422):
    """A webhook URL the relayer will not call: not http(s), credentials in it, too long, or a loopback,
    private or link-local address (unless `RELAYER_WEBHOOKS_ALLOW_PRIVATE_URLS`)."""


class TooManyWebhooksError(RelayerError, code="too_many_webhooks", http_status=409):
    """The account holds `RELAYER_WEBHOOKS_MAX_PER_ACCOUNT` subscriptions already: remove one first (409, not
    429: waiting does not help)."""


class WebhookTestBusyError(RelayerError, code="webhook_test_busy", http_status=429, retryable=True):
    """A test message of this subscription, or by this API key, is still in flight (or the process's few test
    slots are taken): retry after `retryAfterS` (REST adds `Retry-After`)."""


class NothingToChangeError(RelayerError, code="nothing_to_change", http_status=409):
    """The order change would leave the exit plan exactly as it is (the same orders and `D`): refused
    before anything is sent, so no gas is spent on a transaction that changes nothing."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _all_error_classes(root: type[RelayerError] = RelayerError) -> list[type[RelayerError]]:
    classes = [root]
    for sub in root.__subclasses__():
        classes.extend(_all_error_classes(sub))
    return classes


def restore_error(payload: dict[str, Any]) -> RelayerError:
    """Rebuild an error saved as `to_dict()` (e.g. in the relay journal) as the class its `code` names.

    Subclass constructors differ, so the instance is made directly and given the recorded message and
    details: a client sees exactly the code, status and message that were recorded.
    """
    code = payload.get("code")
    target = next((c for c in _all_error_classes() if c.code == code), RelayerError)
    error = target.__new__(target)  # not Exception.__new__: a PermissionError (OSError) subclass has its own
    RelayerError.__init__(error, str(payload.get("message", code)), **dict(payload.get("details") or {}))
    return error
