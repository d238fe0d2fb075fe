"""Trading by API key: the one service behind the REST trading routes and the MCP tools.

An API key belongs to one account, which has approved the relayer's signers as vault operators. Every action
here resolves the account's position, validates and prices it through the `TransactionBuilder` (the same
checks and preview as `POST /api/closeposition`, simulated from the owner), then hands the relay that checked
call to send from its own signer through the journal (`RelayService.submit_checked`), waits (bounded) for the
receipt, and reports the fill read from the vault's `PositionDecreased` event, never a guess.

Exit orders (take-profit tiers, stops, trailing stops, whole plans, cancellations) are `OrderChange`s built by
`TransactionBuilder.build_orders` and answered with the plan after them. The relayer only reduces risk:
a change is judged by the rights an operator would need for it (`exit_plans.rights_needed`), on the very
state the transaction is built and simulated on; one that loosens, cancels or drops a stop is refused (403
`operator_right_missing`) whatever the account granted, and every other one needs its rights held by every
relayer signer (409 `operator_not_approved` otherwise). A change that would change nothing is refused (409
`nothing_to_change`), so no gas is paid for it.

The relayer never acts under a grant that holds `RIGHT_LOOSEN_OR_CANCEL_STOP` (e.g. the legacy
`setOperator(true)`, every right): every action, closes included, is refused (409 `operator_not_approved`)
with the calldata that narrows the grant to `RELAYER_RIGHTS`. Two stop changes sent at once can both be
judged "tighter" against the same stale stop; only the vault can hold a stop reduce-only atomically, and it
does so only for an operator that lacks that right.

Authentication and reads need only the key store and the builder, so they work on a server without relayer
signers; the actions that send, and `get_transaction` (a relay record), ask for the relay first and answer
503 `relay_not_configured` there.

What lives where: this module holds `TradingService` (authentication, reads, the actions and their steps);
`relayer.services.trading_requests` holds each action's body fields and reads a request's body (its
idempotency identity, side, allowed price); `relayer.services.trading_answers` formats the answers
(`TradeOutcome`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import anyio.to_thread

from relayer.config import TradingSettings
from relayer.constants import (
    BPS_DENOMINATOR,
    CLOSE_ALL_SIZE,
    FIRST_STOP_ID,
    ORDER_COUNT,
    PERCENT,
    RELAYER_RIGHTS,
    RIGHT_CLOSE,
    RIGHT_LOOSEN_OR_CANCEL_STOP,
    SIZE_DECIMALS,
)
from relayer.domain import apikeys, calldata, policy
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.blocks import ChainHead
from relayer.domain.bps import parse_percent, percent_to_bps
from relayer.domain.exit_plans import OrderChange, add_take_profit
from relayer.domain.exits import size_for_exit_pct
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.markets import normalize_symbol
from relayer.domain.notices import START, Cursor
from relayer.domain.operators import OperatorGrant, grant_expiry, right_names
from relayer.domain.positions import Position, side_name, trigger_on_valid_side
from relayer.domain.records import RelayRecord
from relayer.domain.requests import CloseRequest, parse_position_id, parse_trigger_price
from relayer.domain.sponsorship import Sponsored
from relayer.domain.units import parse_fixed, parse_int, size_text, usd_text
from relayer.errors import (
    AmbiguousPositionError,
    InvalidFieldError,
    InvalidTriggerPriceError,
    MarketNotAllowedError,
    NotAuthorizedError,
    OperatorNotApprovedError,
    OperatorRightMissingError,
    PositionNotFoundError,
    RelayerError,
    TransactionNotFoundError,
)
from relayer.services.builder import TransactionBuilder
from relayer.services.builder_answers import (
    BuiltTransaction,
    ClosePreview,
    PlanPreview,
    PositionSummary,
    Preview,
)
from relayer.services.metrics import Stage
from relayer.services.notice_feed import FILL_TYPES
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import CheckedCall
from relayer.services.trading_answers import (
    TAKE_PROFIT_ID,
    TradeOutcome,
    exit_answer,
    fill_from_preview,
    fill_from_record,
    orders_answer,
    owner_of_call,
    plan_view,
    positions_of_call,
    unfinished,
)
from relayer.services.trading_requests import (
    DEFAULT_EXIT_PCT,
    ENDPOINT_FIELDS,
    ORDER_ENDPOINTS,
    ORDERS_FIELDS,
    StopRequest,
    TradeIntent,
    allowed_price,
    parse_exit_plan,
    parse_order_price,
    parse_share_pct,
    parse_side,
    parse_trail_bps,
)
from relayer.stores.keys import KeyStore

LAST_USED_RESOLUTION_S = 60
"""`last_used_at` of an API key is written at most once a minute: not a database write on every request."""

MAX_FILLS_PAGE = 100
"""Fills one `recent_fills` answer holds at most."""
DEFAULT_FILLS_PAGE = 20

PROGRESS_STEPS = 3
"""A close that sends reports these steps to `Progress`: 1 simulated, 2 journaled and sent, 3 mined (or how
it ended, or still pending when the wait ran out)."""

Progress = Callable[[int, str], Awaitable[None]]
"""Told each step of a close as it is passed (`PROGRESS_STEPS`): its number and a sentence for a person."""


class TradeAction(Protocol):
    """A trading action as every face calls it: the presented key, the request body (REST's field names) and
    its `Idempotency-Key` (`TradingService.partial_close`, `set_exit_plan`, ...)."""

    def __call__(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Awaitable[TradeOutcome]: ...


class TradingService:
    """API-key trading over the key store (who may act), the builder (checks, preview) and the relay
    (sending, journal)."""

    def __init__(
        self,
        *,
        builder: TransactionBuilder,
        keys: KeyStore,
        relay: Callable[[], RelayService],
        operator_grants: Callable[[str, Sequence[str]], Awaitable[list[OperatorGrant]]],
        settings: TradingSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The service over its ports; the relay is asked for only when something is sent or a record read.

        Args:
            relay: gives the relay to send through; called first by every action that sends and by
                `get_transaction`, never by authentication or `get_positions`. The runtime passes its
                `require_relay`, which raises `RelayNotConfiguredError` (503) on a server without signers.
            operator_grants: what an account (first argument) granted each relayer signer (second): the
                vault's `operatorGrant`, read in one batch.
        """
        self.builder = builder
        self.keys = keys
        self.relay = relay
        self.operator_grants = operator_grants
        self.settings = settings or TradingSettings()
        self.clock = clock

    # --- authentication -------------------------------------------------------------------------------------

    def authenticate(self, presented: str | None, scope: Scope) -> ApiKey:
        """The key behind `presented`, checked for `scope` and its expiry at this service's clock (401 / 403
        per `apikeys.require`)."""
        key = None
        if presented:
            presented = presented.strip()
            key = self.keys.api_key_by_hash(apikeys.hash_key(presented))
            if key is not None and not apikeys.verify(presented, key.key_hash):
                key = None  # the index found it; the constant-time comparison is what accepts it
        now = int(self.clock())
        checked = apikeys.require(key, scope, now_s=now)
        if checked.last_used_at is None or now - checked.last_used_at >= LAST_USED_RESOLUTION_S:
            self.keys.touch_api_key(checked.key_id, now)
        return checked

    async def _authenticate(self, presented: str | None, scope: Scope) -> ApiKey:
        """`authenticate` off the event loop: it reads (and now and then writes) the key store."""
        return await anyio.to_thread.run_sync(self.authenticate, presented, scope)

    # --- reads ----------------------------------------------------------------------------------------------

    async def get_positions(self, api_key: str | None, symbol: object = None) -> dict[str, Any]:
        """The account's open positions (optionally one market) with unrealized PnL and orders."""
        key = await self._authenticate(api_key, Scope.READ)
        market = None if symbol is None else normalize_symbol(symbol)
        owned = await self.builder.positions_of(key.account)
        shown = [p.to_dict() for p in owned.positions if market is None or p.quote.position.market == market]
        return {"account": key.account, "positions": shown}

    async def get_transaction(self, api_key: str | None, transaction_id: object) -> dict[str, Any]:
        """A relay record of this account's positions, by id."""
        relay = self.relay()
        key = await self._authenticate(api_key, Scope.READ)
        if not isinstance(transaction_id, str) or not transaction_id:
            raise InvalidFieldError("transactionId", "must be a transaction id string")
        record = relay.get(transaction_id)
        not_yours = TransactionNotFoundError(
            "no transaction with this id for this account", id=transaction_id
        )
        owner = owner_of_call(record.data)
        if owner is not None:  # an emergency exit names the account, not its positions
            if owner.lower() != key.account.lower():
                raise not_yours
            return record.to_dict()
        position_ids = positions_of_call(record.data)
        if not position_ids:  # nothing ties it to this account (e.g. an undecodable raw transaction)
            raise not_yours
        for position_id in position_ids:
            try:
                summary = await self.builder.position("0x" + position_id.hex())
            except PositionNotFoundError:
                raise not_yours from None
            if summary.quote.position.owner.lower() != key.account.lower():
                raise not_yours
        return record.to_dict()

    async def recent_fills(
        self, api_key: str | None, after: object = None, limit: object = DEFAULT_FILLS_PAGE
    ) -> dict[str, Any]:
        """The account's fills (`position.decreased`, `order.executed` notices; `read` scope) after the cursor
        `after` in order, or without it its newest `limit`; `cursor` is where to continue from.

        Raises:
            InvalidFieldError: `after` is not a cursor, or `limit` is not 1..MAX_FILLS_PAGE.
        """
        key = await self._authenticate(api_key, Scope.READ)
        journal = self.relay().journal
        cursor = Cursor.parse(after) if isinstance(after, str) else None
        if after is not None and cursor is None:
            raise InvalidFieldError("after", 'must be a cursor from an earlier answer, e.g. "0-42"')
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_FILLS_PAGE:
            raise InvalidFieldError("limit", f"must be an integer from 1 to {MAX_FILLS_PAGE}")
        read = partial(
            journal.notices_after,
            cursor or START,
            account=key.account,
            types=sorted(FILL_TYPES),
            limit=limit,
            newest=cursor is None,
        )
        fills = await anyio.to_thread.run_sync(read)
        if fills:
            last = fills[-1].cursor
        elif cursor is not None:
            last = cursor
        else:
            last = await anyio.to_thread.run_sync(journal.latest_notice_cursor)
        return {"account": key.account, "fills": [fill.envelope() for fill in fills], "cursor": last.text}

    # --- trading --------------------------------------------------------------------------------------------

    async def partial_close(
        self,
        api_key: str | None,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> TradeOutcome:
        """Close `exit_pct`% (1..100, default 50) of the account's position in `symbol`."""
        relay, intent = await self._begin("partialclose", api_key, body, idempotency_key)
        symbol = normalize_symbol(body.get("symbol"))
        exit_pct = parse_percent(body.get("exit_pct", DEFAULT_EXIT_PCT), "exit_pct")

        async def act() -> TradeOutcome:
            summary = await self._resolve(
                intent.key, symbol, parse_side(body.get("side")), body.get("positionId")
            )
            position = summary.quote.position
            size_delta = size_for_exit_pct(position.size, exit_pct)
            allowed = allowed_price(
                body,
                position,
                summary.quote.price_e8,
                default_slippage_bps=self.settings.default_slippage_bps,
            )
            request = CloseRequest(
                position.position_id, None if size_delta == CLOSE_ALL_SIZE else size_delta, allowed
            )
            return await self._close(relay, intent, request, progress)

        return await self._once(relay, intent, act)

    async def close_position(
        self,
        api_key: str | None,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> TradeOutcome:
        """Close a position fully, or by `sizeDelta` (base units), with an optional `allowedPrice`."""
        relay, intent = await self._begin("close", api_key, body, idempotency_key)

        async def act() -> TradeOutcome:
            summary = await self._owned(intent.key, body.get("positionId"))
            position = summary.quote.position
            size_delta = None
            if body.get("sizeDelta") is not None:
                size_delta = parse_fixed(body["sizeDelta"], SIZE_DECIMALS, "sizeDelta")
            allowed = allowed_price(
                body,
                position,
                summary.quote.price_e8,
                default_slippage_bps=self.settings.default_slippage_bps,
            )
            request = CloseRequest(position.position_id, size_delta, allowed)
            return await self._close(relay, intent, request, progress)

        return await self._once(relay, intent, act)

    async def set_trigger(
        self,
        api_key: str | None,
        body: Mapping[str, Any],
        *,
        is_take_profit: bool,
        idempotency_key: str | None = None,
    ) -> TradeOutcome:
        """Set, replace or (price 0) cancel the primary take-profit (order 0) or stop (order 4): `price` in
        USD, `close_pct` its share of the plan (1..100, default 100). A take-profit with `exit_pct` instead
        ADDS a tier to the plan (`add_take_profit` picks the id); a stop with `trail_bps` trails (its trigger
        starts `trail_bps` from the current price unless `price` is given)."""
        endpoint = "takeprofit" if is_take_profit else "stoploss"
        relay, intent = await self._begin(endpoint, api_key, body, idempotency_key)
        change_of = _take_profit_change(body) if is_take_profit else _stop_change(body)

        async def act() -> TradeOutcome:
            current = await self._plan_of(intent.key, body.get("positionId"))
            return await self._change_orders(relay, intent, change_of(current))

        return await self._once(relay, intent, act)

    async def move_to_breakeven(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TradeOutcome:
        """Put the primary stop (order 4) at the entry price for whatever remains (only once the trade is in
        profit); a trailing stop keeps its trail. A stop already beyond entry would be loosened: refused
        (`operator_right_missing`)."""
        relay, intent = await self._begin("breakeven", api_key, body, idempotency_key)

        async def act() -> TradeOutcome:
            current = await self._plan_of(intent.key, body.get("positionId"))
            position, price = current.position, current.price_e8
            # A stop at entry is valid exactly when entry is on the losing side of the price (in profit).
            if not trigger_on_valid_side(position.is_long, False, position.entry_price_e8, price):
                raise InvalidTriggerPriceError(
                    f"cannot move the stop to breakeven: the price {usd_text(price)} is not beyond the entry"
                    f" {usd_text(position.entry_price_e8)} in the {side_name(position.is_long)}'s favour,"
                    " so a stop at entry would not be on the losing side of the price",
                    entryPrice=usd_text(position.entry_price_e8),
                    currentPrice=usd_text(price),
                )
            stop = current.plan.order(FIRST_STOP_ID)
            trail_bps = 0 if stop is None else stop.trail_bps
            order = (FIRST_STOP_ID, position.entry_price_e8, BPS_DENOMINATOR, trail_bps)
            change = OrderChange(position.position_id, set=(order,))
            return await self._change_orders(relay, intent, change)

        return await self._once(relay, intent, act)

    async def set_exit_plan(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TradeOutcome:
        """Replace the position's whole exit plan in one transaction (`setExitPlan`): `take_profits` tiers
        (`{price, exit_pct}`, up to four, ids in the order a price reaches them), a `stop_loss`
        (`{price, exit_pct?}`) and / or a `trailing_stop` (`{trail_bps, price?, exit_pct?}`); percents are of
        the size the plan is set on. The position by `positionId`, or `symbol` (+ `side`)."""
        relay, intent = await self._begin("exitplan", api_key, body, idempotency_key)
        asked = parse_exit_plan(body)

        async def act() -> TradeOutcome:
            current = await self._target(intent.key, body, trade=True)
            position = current.position
            orders = asked.orders(position.is_long, current.price_e8)
            change = OrderChange(position.position_id, set=orders, whole_plan=True)
            return await self._change_orders(relay, intent, change)

        return await self._once(relay, intent, act)

    async def cancel_order(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TradeOutcome:
        """Cancel one pending order (`orderId` 0..3 a take-profit, 4..5 a stop); 404 `order_not_found` when
        none is pending there (judged on the build's state). Cancelling a stop needs the
        loosen_or_cancel_stop right, which the relayer never holds: refused 403, for the account to sign."""
        relay, intent = await self._begin("cancelorder", api_key, body, idempotency_key)
        if body.get("orderId") is None:
            raise InvalidFieldError("orderId", "is required (0-3 take-profits, 4-5 stops; see get_orders)")
        order_id = parse_int(body["orderId"], "orderId", minimum=0, maximum=ORDER_COUNT - 1)

        async def act() -> TradeOutcome:
            current = await self._plan_of(intent.key, body.get("positionId"))
            pid = current.position.position_id
            return await self._change_orders(relay, intent, OrderChange(pid, cancel=(order_id,)))

        return await self._once(relay, intent, act)

    async def emergency_exit(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TradeOutcome:
        """Close every open position of the account (or only those in `symbol`) in one transaction at the
        oracle prices, without a slippage bound (`emergencyExit`); answers one fill per position closed.

        Raises:
            MarketNotAllowedError: the key may trade only some markets and `symbol` is not one of them, or is
                absent (every market).
        """
        relay, intent = await self._begin("emergencyexit", api_key, body, idempotency_key)
        market = None if body.get("symbol") is None else normalize_symbol(body["symbol"])
        if market is not None:
            apikeys.require_market(intent.key, market)
        elif intent.key.markets is not None:
            allowed = sorted(intent.key.markets)
            raise MarketNotAllowedError(
                f"this API key may trade only {', '.join(allowed)}: give symbol to exit one of them",
                market=None,
                allowed=allowed,
            )

        async def act() -> TradeOutcome:
            with relay.metrics.timed(Stage.SIMULATE):
                built = await self.builder.build_emergency_exit(intent.key.account, market)
            await self._check_operator(relay, intent.key.account, built.head, RIGHT_CLOSE)
            if intent.dry_run:
                return TradeOutcome(exit_answer(intent.key.account, built.preview.to_dict()))
            record = await self._wait(relay, await self._submit(relay, intent, built))
            if not record.status.is_succeeded:
                return unfinished(record)
            return TradeOutcome(exit_answer(intent.key.account, built.preview.to_dict(), record))

        return await self._once(relay, intent, act)

    async def get_orders(self, api_key: str | None, query: Mapping[str, Any]) -> dict[str, Any]:
        """The exit plan of one of the account's positions (`read` scope): by `positionId`, or `symbol`
        (+ `side`); every order with its share, trail and the size it closes now and along the plan."""
        key = await self._authenticate(api_key, Scope.READ)
        reject_unknown_fields(query, ORDERS_FIELDS)
        current = await self._target(key, query, trade=False)
        return plan_view(current.to_dict())

    # --- internals ------------------------------------------------------------------------------------------

    async def _begin(
        self,
        endpoint: str,
        api_key: str | None,
        body: Mapping[str, Any],
        idempotency_key: str | None,
    ) -> tuple[RelayService, TradeIntent]:
        """Every trading action's first steps, in this order: the relay (503 on a server without signers),
        the key with the `trade` scope (401 / 403), the body's fields (422 on an unknown one).

        Returns the relay and the request as the idempotency rule sees it.
        """
        relay = self.relay()
        key = await self._authenticate(api_key, Scope.TRADE)
        reject_unknown_fields(body, ENDPOINT_FIELDS[endpoint])
        return relay, TradeIntent(endpoint, key, body, idempotency_key)

    async def _resolve(
        self, key: ApiKey, symbol: str, is_long: bool | None, position_id: object, *, trade: bool = True
    ) -> PositionSummary:
        """The account's one open position in `symbol` (narrowed by side or id); 409 when it is ambiguous,
        403 `market_not_allowed` before any chain read when the key may not trade `symbol` (`trade`; a read
        is not limited to the key's markets, as `get_positions` is not)."""
        if trade:
            apikeys.require_market(key, symbol)
        if position_id is not None:
            summary = await self._owned(key, position_id, trade=trade)
            if summary.quote.position.market != symbol:
                raise InvalidFieldError("positionId", f"this position is in {summary.quote.position.market}")
            return summary
        owned = await self.builder.positions_of(key.account)
        matches = [
            p
            for p in owned.positions
            if p.quote.position.market == symbol and (is_long is None or p.quote.position.is_long == is_long)
        ]
        if not matches:
            raise PositionNotFoundError(f"the account has no open {symbol} position", symbol=symbol)
        if len(matches) > 1:
            raise AmbiguousPositionError(
                f"the account has {len(matches)} open {symbol} positions: give `side` or `positionId`",
                positions=[p.to_dict() for p in matches],
            )
        return matches[0]

    async def _owned(self, key: ApiKey, position_id: object, *, trade: bool = True) -> PositionSummary:
        """The open position `position_id`, which must belong to the key's account and (`trade`) be in a
        market the key may trade (403 otherwise)."""
        pid = _position_id(position_id)
        summary = await self.builder.position("0x" + pid.hex())
        _check_owned(key, summary.quote.position, trade=trade)
        return summary

    async def _plan_of(self, key: ApiKey, position_id: object, *, trade: bool = True) -> PlanPreview:
        """`_owned`, read with the position's exit plan and price (`TransactionBuilder.plan`, one batch)."""
        pid = _position_id(position_id)
        current = await self.builder.plan("0x" + pid.hex())
        _check_owned(key, current.position, trade=trade)
        return current

    async def _target(self, key: ApiKey, fields: Mapping[str, Any], *, trade: bool) -> PlanPreview:
        """The position a request names, with its plan: `positionId`, or the one in `symbol` (narrowed by
        `side`, or `positionId`) as `partial_close` finds it."""
        if fields.get("symbol") is None:
            if fields.get("side") is not None:
                raise InvalidFieldError("side", "narrows symbol: give symbol too, or positionId alone")
            if fields.get("positionId") is None:
                raise InvalidFieldError("positionId", "is required (or symbol, with side if needed)")
            return await self._plan_of(key, fields["positionId"], trade=trade)
        symbol = normalize_symbol(fields["symbol"])
        is_long = parse_side(fields.get("side"))
        summary = await self._resolve(key, symbol, is_long, fields.get("positionId"), trade=trade)
        return await self._plan_of(key, "0x" + summary.quote.position.position_id.hex(), trade=trade)

    async def _change_orders(
        self, relay: RelayService, intent: TradeIntent, change: OrderChange
    ) -> TradeOutcome:
        """Build and simulate `change` (409 `nothing_to_change` when it changes nothing, 404
        `order_not_found` when it cancels an empty id), check the rights it needs ON THE STATE IT WAS BUILT ON
        against the relayer's policy (never loosen or cancel a stop) and the signers' grants, send it; answer
        the plan after it. The earlier read that shaped `change` judges nothing: the position may have
        moved on since."""
        with relay.metrics.timed(Stage.SIMULATE):
            built = await self.builder.build_orders(change)
        after = built.preview
        assert isinstance(after, PlanPreview)
        if after.rights_needed & RIGHT_LOOSEN_OR_CANCEL_STOP:
            raise _loosening_refused(intent.key.account, change)
        await self._check_operator(relay, intent.key.account, built.head, after.rights_needed)
        if intent.dry_run:
            return TradeOutcome(orders_answer(after.to_dict()))
        record = await self._wait(relay, await self._submit(relay, intent, built))
        if not record.status.is_succeeded:
            return unfinished(record)
        return TradeOutcome(orders_answer(after.to_dict(), record))

    async def _check_operator(self, relay: RelayService, account: str, head: ChainHead, rights: int) -> None:
        """Every relayer signer must hold each of `rights` (bit flags; 0: any grant) over the account,
        unexpired after `head` (the block the builder read; any signer may be picked to send), and none may
        hold `RIGHT_LOOSEN_OR_CANCEL_STOP`: under such a grant (the legacy `setOperator(true)` holds every
        right) the vault would let the relayer loosen a stop, and two stop changes judged "tighter" against
        the same stale stop could do so; without it the vault itself refuses any loosening, atomically. The
        answer names each signer refused, why, and the calldata that grants the relayer's rights
        (`RELAYER_RIGHTS`, until the end of the UTC day a year ahead) for the account to send itself."""
        signers = relay.pool.addresses
        grants = await self.operator_grants(account, signers)
        now_s = head.timestamp + 1  # the vault judges expiry at the next block, at least a second later
        missing = {
            signer: reason
            for signer, grant in zip(signers, grants, strict=True)
            if (reason := _lacking(grant, rights, now_s)) is not None
        }
        expires_at = grant_expiry(now_s)
        narrowing = [
            "0x" + calldata.set_operator_rights(s, RELAYER_RIGHTS, expires_at).hex() for s in missing
        ]
        if _TOO_BROAD in missing.values():
            raise OperatorNotApprovedError(
                f"the relayer's signers hold {right_names(RIGHT_LOOSEN_OR_CANCEL_STOP)}: narrow the grant"
                f" to {RELAYER_RIGHTS} ({right_names(RELAYER_RIGHTS)}) so the vault itself refuses any"
                " loosening",
                account=account,
                signers=list(missing),
                reasons=missing,
                right=right_names(rights or RELAYER_RIGHTS),
                rights=RELAYER_RIGHTS,
                expiresAt=expires_at,
                calldata=narrowing,
            )
        if missing:
            raise OperatorNotApprovedError(
                f"grant the relayer's signers the {right_names(rights or RELAYER_RIGHTS)} right first: call "
                f"setOperatorRights(signer, {RELAYER_RIGHTS}, {expires_at}) from the account for each of them"
                f" ({right_names(RELAYER_RIGHTS)}, until {expires_at}; never loosen_or_cancel_stop)",
                account=account,
                signers=list(missing),
                reasons=missing,
                right=right_names(rights or RELAYER_RIGHTS),
                rights=RELAYER_RIGHTS,
                expiresAt=expires_at,
                calldata=narrowing,
            )

    async def _close(
        self, relay: RelayService, intent: TradeIntent, request: CloseRequest, progress: Progress | None
    ) -> TradeOutcome:
        with relay.metrics.timed(Stage.SIMULATE):  # the builder's one batch, its simulation included
            built = await self.builder.build(request)
        await self._check_operator(relay, intent.key.account, built.head, RIGHT_CLOSE)
        preview = built.preview
        assert isinstance(preview, ClosePreview)
        if intent.dry_run:
            return TradeOutcome(fill_from_preview(preview))
        tell = progress or _untold
        closing = f"{size_text(preview.size_delta)} {preview.position.market}"
        await tell(1, f"simulated: closing {closing} passes the checks")
        record = await self._submit(relay, intent, built)
        await tell(2, f"{record.status.value}: journaled as transaction {record.id}")
        record = await self._wait(relay, record)
        if record.mined is not None and record.status.is_succeeded:
            await tell(3, f"mined in block {record.mined.block_number}")
        else:
            await tell(3, f"{record.status.value}: transaction {record.id}")
        if not record.status.is_succeeded:
            return unfinished(record)
        return TradeOutcome(fill_from_record(record, preview.position))

    async def _once(
        self, relay: RelayService, intent: TradeIntent, act: Callable[[], Awaitable[TradeOutcome]]
    ) -> TradeOutcome:
        """`act`, unless this key already has an answer. The key is claimed in the database before any chain
        read (`RelayService.claimed`), so copies of the request sent at once, to this instance or another,
        wait for the first one's record and answer its fill, rather than meet its effects (the position it
        closed). When `act` fails, the answer a copy made meanwhile, if one did.

        Raises:
            IdempotencyConflictError: the key was used with a different body.
            RequestInProgressError: the first copy is still being worked on after a wait.
            RelayerError: what `act` raised, when no copy answered.
        """
        if intent.idempotency_key is None or intent.dry_run:
            return await act()
        async with relay.claimed(intent.scope, intent.idempotency_key, intent.fingerprint) as (_, earlier):
            if earlier is not None:
                return await self._answer_of(relay, intent, earlier.record)
            try:
                return await act()
            except RelayerError:
                replayed = await self._replay(relay, intent)
                if replayed is None:
                    raise
                return replayed

    async def _replay(self, relay: RelayService, intent: TradeIntent) -> TradeOutcome | None:
        """The answer to a request already made with this `Idempotency-Key` (None: a new request).

        Looked up before any chain read, so a retry gets its original fill back even after the position moved
        on (e.g. a 100% close retried: the position is gone, the answer is not).

        Raises:
            IdempotencyConflictError: the key was used with a different body.
        """
        if intent.idempotency_key is None or intent.dry_run:
            return None
        found = relay.find_idempotent(intent.idempotency_key, intent.fingerprint, key_scope=intent.scope)
        if found is None:
            return None
        return await self._answer_of(relay, intent, found.record)

    async def _answer_of(
        self, relay: RelayService, intent: TradeIntent, earlier: RelayRecord
    ) -> TradeOutcome:
        """The answer of the request that made `earlier` under this key: its fill once mined (waited for, as
        the first request did). An order change's answer keeps the first request's `transactionId` and
        `transactionHash`, but shows the plan as it is NOW (later changes and executions included, not the
        plan right after that transaction), marked `"replayed": true`."""
        record = await self._wait(relay, earlier)
        if not record.status.is_succeeded:
            return unfinished(record)
        if intent.endpoint == "emergencyexit":
            return TradeOutcome(await self._exit_answer_of(intent, record))
        (position_id, *_) = positions_of_call(record.data)
        if intent.endpoint in ORDER_ENDPOINTS:  # the plan as it is NOW (later changes included)
            current = await self.builder.plan("0x" + position_id.hex())
            return TradeOutcome({**orders_answer(current.to_dict(), record), "replayed": True})
        summary = await self.builder.position("0x" + position_id.hex())
        return TradeOutcome(fill_from_record(record, summary.quote.position))

    async def _exit_answer_of(self, intent: TradeIntent, record: RelayRecord) -> dict[str, Any]:
        """An emergency exit's answer from its mined record: its fills, each position's market and side read
        back (the positions are closed; their market and side stay)."""
        assert record.mined is not None
        closed = [
            str(event["args"]["positionId"])
            for event in record.mined.events
            if event["event"] == "PositionDecreased"
        ]
        summaries = [await self.builder.position(pid) for pid in closed]
        symbol = intent.body.get("symbol")
        preview = {
            "market": None if symbol is None else normalize_symbol(symbol),
            "positions": [
                {
                    "positionId": "0x" + s.quote.position.position_id.hex(),
                    "symbol": s.quote.position.market,
                    "side": side_name(s.quote.position.is_long),
                }
                for s in summaries
            ],
        }
        return exit_answer(intent.key.account, preview, record)

    async def _submit(
        self, relay: RelayService, intent: TradeIntent, built: BuiltTransaction[Preview]
    ) -> RelayRecord:
        """Hand the relay the call the builder checked and simulated: it is not checked, simulated or looked
        up by its key a second time (`_replay` did that, before any chain read)."""
        call = CheckedCall(
            data=built.calldata,
            kind=policy.call_kind(built.calldata),
            gas_limit=built.gas_limit,
            head=built.head,
            fees=built.fees,
            account=intent.key.account,
            fingerprint=intent.fingerprint,
            idempotency_key=intent.idempotency_key,
            key_scope=intent.scope,
            sponsored=Sponsored(intent.key.account, intent.key.key_id, intent.key.daily_spend_wei),
        )
        return (await relay.submit_checked(call)).record

    async def _wait(self, relay: RelayService, record: RelayRecord) -> RelayRecord:
        """The record once mined or ended, or as it is when the configured time runs out (one poll of the
        journal shared by every waiting call: `RecordWatch`)."""
        if record.status.is_settled:
            return record
        found = await relay.watch.wait(record.id, _settled, self.settings.receipt_timeout_s)
        return found or record


async def _untold(step: int, message: str) -> None:
    """No one asked for progress."""


def _settled(record: RelayRecord | None) -> bool:
    return record is not None and record.status.is_settled


def _position_id(value: object) -> bytes:
    if value is None:
        raise InvalidFieldError("positionId", "is required")
    return parse_position_id(value, "positionId")


def _check_owned(key: ApiKey, position: Position, *, trade: bool) -> None:
    """The position must be the key's account's (403), open (404) and, to trade it, in a market the key may
    trade (403)."""
    if position.owner.lower() != key.account.lower():
        raise NotAuthorizedError(
            "this position belongs to another account", positionId="0x" + position.position_id.hex()
        )
    if trade:
        apikeys.require_market(key, position.market)
    if not position.is_open:
        raise PositionNotFoundError.closed(position.position_id)


_TOO_BROAD = f"holds {right_names(RIGHT_LOOSEN_OR_CANCEL_STOP)}"
"""Why a signer's grant is refused although it allows the action: it also allows loosening a stop."""


def _lacking(grant: OperatorGrant, rights: int, now_s: int) -> str | None:
    """Why the relayer may not act under `grant` for an action needing `rights` (`none`, `expired`,
    `holds loosen_or_cancel_stop`, `lacks <rights>`), or None."""
    if grant.rights == 0:
        return "none"
    if grant.expired(now_s):
        return "expired"
    if grant.rights & RIGHT_LOOSEN_OR_CANCEL_STOP:
        return _TOO_BROAD
    if rights & ~grant.rights:
        return f"lacks {right_names(rights & ~grant.rights)}"
    return None


def _loosening_refused(account: str, change: OrderChange) -> OperatorRightMissingError:
    """The refusal of a change that loosens, cancels or drops a stop: by design the relayer's signers are
    never granted `RIGHT_LOOSEN_OR_CANCEL_STOP` (a leaked API or relayer key may close positions and tighten
    stops, never remove one), so the account signs it itself; `calldata` is the change to send or sign."""
    name = right_names(RIGHT_LOOSEN_OR_CANCEL_STOP)
    return OperatorRightMissingError(
        f"this change loosens, cancels or drops a stop, which needs the {name} right: the relayer is never"
        " granted that right, by design, so the account must make this change itself: send `calldata` to"
        " the vault from the account, or sign it as an EIP-712 request (SetExitPlanRequest,"
        " CancelOrderRequest) and submit it with POST /api/relay/signed",
        account=account,
        right=RIGHT_LOOSEN_OR_CANCEL_STOP,
        rightName=name,
        calldata="0x" + change.calldata().hex(),
    )


ChangeOf = Callable[[PlanPreview], OrderChange]
"""An order change as a request asks for it, read and checked before any chain read, made once the
position's current plan and price are known."""


def _take_profit_change(body: Mapping[str, Any]) -> ChangeOf:
    """`set_take_profit`'s change: with `exit_pct` a new tier (`add_take_profit` picks its id), else the
    primary take-profit (order 0) set with `close_pct` (default 100) or, price 0, cancelled.

    Raises:
        InvalidFieldError: both `exit_pct` and `close_pct`, a percent outside 1..100, price 0 with a percent;
            neither of them while a take-profit other than order 0 is pending (a ladder: the default 100%
            would replace its first tier with a close of everything).
    """
    price_e8 = parse_trigger_price(body.get("price"), "price")
    close_pct, exit_pct = body.get("close_pct"), body.get("exit_pct")
    if exit_pct is not None:
        if close_pct is not None:
            raise InvalidFieldError(
                "exit_pct",
                "give exit_pct (adds a take-profit tier) or close_pct (the primary take-profit), not both",
            )
        if price_e8 == 0:
            raise InvalidFieldError("price", "must be above 0 to add a tier; cancel one with cancel_order")
        share_bps = percent_to_bps(parse_percent(exit_pct, "exit_pct"))
        return lambda current: add_take_profit(
            current.position.is_long, current.plan, price_e8, share_bps, current.position.position_id
        )
    if price_e8 == 0:  # cancelling: a close share would mean nothing, so it is refused, not ignored
        if close_pct is not None:
            raise InvalidFieldError("close_pct", "must be absent when cancelling the order (price 0)")
        return lambda current: OrderChange(current.position.position_id, cancel=(TAKE_PROFIT_ID,))
    share_bps = parse_share_pct(close_pct, "close_pct", default=PERCENT)
    order = (TAKE_PROFIT_ID, price_e8, share_bps, 0)

    def primary(current: PlanPreview) -> OrderChange:
        take_profits = sorted(o.order_id for o in current.plan.orders if o.is_take_profit)
        if close_pct is None and any(i != TAKE_PROFIT_ID for i in take_profits):
            # the default 100% would turn the ladder's first tier into a close of everything
            raise InvalidFieldError(
                "close_pct",
                "the position has a take-profit ladder: give exit_pct to add a tier, or close_pct to replace"
                " order 0",
                takeProfits=take_profits,
            )
        return OrderChange(current.position.position_id, set=(order,))

    return primary


def _stop_change(body: Mapping[str, Any]) -> ChangeOf:
    """`set_stop_loss`'s change of the primary stop (order 4): at `price` (0 cancels), or with `trail_bps` a
    trailing stop starting at `price` or, without one, `trail_bps` from the current price; `close_pct` its
    share of the plan (default 100: whatever remains).

    Raises:
        InvalidFieldError: no price and no trail, a trail outside 1..9999, a percent outside 1..100, price 0
            with a percent or a trail.
    """
    close_pct = body.get("close_pct")
    if body.get("trail_bps") is None:
        price_e8 = parse_trigger_price(body.get("price"), "price")
        if price_e8 == 0:
            if close_pct is not None:
                raise InvalidFieldError("close_pct", "must be absent when cancelling the order (price 0)")
            return lambda current: OrderChange(current.position.position_id, cancel=(FIRST_STOP_ID,))
        stop = StopRequest(price_e8, parse_share_pct(close_pct, "close_pct", default=PERCENT))
    else:
        raw_price = body.get("price")
        stop = StopRequest(
            None if raw_price is None else parse_order_price(raw_price, "price"),
            parse_share_pct(close_pct, "close_pct", default=PERCENT),
            parse_trail_bps(body["trail_bps"]),
        )
    return lambda current: OrderChange(
        current.position.position_id,
        set=(stop.order(FIRST_STOP_ID, current.position.is_long, current.price_e8),),
    )
