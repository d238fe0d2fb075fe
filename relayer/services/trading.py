"""Trading by API key: the one service behind the REST trading routes and the MCP tools.

An API key belongs to one account, which has approved the relayer's signers as vault operators. Every action
here resolves the account's position, validates and prices it through the `TransactionBuilder` (the same
checks and preview as `POST /api/closeposition`, simulated from the owner), then hands the relay that checked
call to send from its own signer through the journal (`RelayService.submit_checked`), waits (bounded) for the
receipt, and reports the fill read from the vault's `PositionDecreased` event, never a guess.

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
from typing import Any

import anyio.to_thread

from relayer.config import TradingSettings
from relayer.constants import (
    BPS_DENOMINATOR,
    CLOSE_ALL_SIZE,
    PERCENT,
    RELAYER_RIGHTS,
    RIGHT_CLOSE,
    RIGHT_SET_TAKE_PROFIT,
    RIGHT_TIGHTEN_STOP,
    SIZE_DECIMALS,
)
from relayer.domain import apikeys, calldata, policy
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.blocks import ChainHead
from relayer.domain.bps import parse_percent, percent_to_bps
from relayer.domain.exits import size_for_exit_pct
from relayer.domain.jsonio import reject_unknown_fields
from relayer.domain.markets import normalize_symbol
from relayer.domain.notices import START, Cursor
from relayer.domain.operators import OperatorGrant, grant_expiry, right_names
from relayer.domain.positions import TriggerOrder, side_name, trigger_on_valid_side
from relayer.domain.records import RelayRecord
from relayer.domain.requests import CloseRequest, parse_position_id, parse_trigger_price
from relayer.domain.sponsorship import Sponsored
from relayer.domain.units import parse_fixed, size_text, usd_text
from relayer.errors import (
    AmbiguousPositionError,
    InvalidFieldError,
    InvalidTriggerPriceError,
    NotAuthorizedError,
    OperatorNotApprovedError,
    PositionNotFoundError,
    RelayerError,
    TransactionNotFoundError,
)
from relayer.services.builder import TransactionBuilder
from relayer.services.builder_answers import BuiltTransaction, PositionSummary
from relayer.services.metrics import Stage
from relayer.services.notice_feed import FILL_TYPES
from relayer.services.relay.service import RelayService
from relayer.services.relay.values import CheckedCall
from relayer.services.trading_answers import (
    TradeOutcome,
    fill_from_preview,
    fill_from_record,
    orders_answer,
    positions_of_call,
    unfinished,
)
from relayer.services.trading_requests import (
    DEFAULT_EXIT_PCT,
    ENDPOINT_FIELDS,
    TradeIntent,
    allowed_price,
    parse_side,
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
        """Set (or with price 0 cancel) a take-profit or stop-loss: `price` in USD, `close_pct` 1..100."""
        endpoint = "takeprofit" if is_take_profit else "stoploss"
        relay, intent = await self._begin(endpoint, api_key, body, idempotency_key)

        async def act() -> TradeOutcome:
            summary = await self._owned(intent.key, body.get("positionId"))
            price_e8 = parse_trigger_price(body.get("price"), "price")
            close_bps = 0
            if price_e8 == 0:  # cancelling: a close share would mean nothing, so it is refused, not ignored
                if body.get("close_pct") is not None:
                    raise InvalidFieldError("close_pct", "must be absent when cancelling the order (price 0)")
            else:
                close_bps = percent_to_bps(parse_percent(body.get("close_pct", PERCENT), "close_pct"))
            update = TriggerOrder(price_e8, close_bps)
            return await self._set_order(relay, intent, summary, update, is_take_profit)

        return await self._once(relay, intent, act)

    async def move_to_breakeven(
        self, api_key: str | None, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TradeOutcome:
        """Put the stop-loss at the entry price for the full size (only once the trade is in profit)."""
        relay, intent = await self._begin("breakeven", api_key, body, idempotency_key)

        async def act() -> TradeOutcome:
            summary = await self._owned(intent.key, body.get("positionId"))
            position, price = summary.quote.position, summary.quote.price_e8
            # A stop at entry is valid exactly when entry is on the losing side of the price (in profit).
            if not trigger_on_valid_side(position.is_long, False, position.entry_price_e8, price):
                raise InvalidTriggerPriceError(
                    f"cannot move the stop to breakeven: the price {usd_text(price)} is not beyond the entry"
                    f" {usd_text(position.entry_price_e8)} in the {side_name(position.is_long)}'s favour,"
                    " so a stop at entry would not be on the losing side of the price",
                    entryPrice=usd_text(position.entry_price_e8),
                    currentPrice=usd_text(price),
                )
            update = TriggerOrder(position.entry_price_e8, BPS_DENOMINATOR)
            return await self._set_order(relay, intent, summary, update, False)

        return await self._once(relay, intent, act)

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
        self, key: ApiKey, symbol: str, is_long: bool | None, position_id: object
    ) -> PositionSummary:
        """The account's one open position in `symbol` (narrowed by side or id); 409 when it is ambiguous,
        403 `market_not_allowed` before any chain read when the key may not trade `symbol`."""
        apikeys.require_market(key, symbol)
        if position_id is not None:
            summary = await self._owned(key, position_id)
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

    async def _owned(self, key: ApiKey, position_id: object) -> PositionSummary:
        """The open position `position_id`, which must belong to the key's account and be in a market the key
        may trade (403 otherwise)."""
        if position_id is None:
            raise InvalidFieldError("positionId", "is required")
        pid = parse_position_id(position_id, "positionId")
        summary = await self.builder.position("0x" + pid.hex())
        position = summary.quote.position
        if position.owner.lower() != key.account.lower():
            raise NotAuthorizedError("this position belongs to another account", positionId="0x" + pid.hex())
        apikeys.require_market(key, position.market)
        if not position.is_open:
            raise PositionNotFoundError.closed(pid)
        return summary

    async def _check_operator(self, relay: RelayService, account: str, head: ChainHead, right: int) -> None:
        """Every relayer signer must hold `right` over the account, unexpired after `head` (the block the
        builder read; any signer may be picked to send). The answer names each one that does not, why, and
        the calldata that grants the relayer's rights (`RELAYER_RIGHTS`, until the end of the UTC day a year
        ahead) for the account to send itself."""
        signers = relay.pool.addresses
        grants = await self.operator_grants(account, signers)
        now_s = head.timestamp + 1  # the vault judges expiry at the next block, at least a second later
        missing = {
            signer: reason
            for signer, grant in zip(signers, grants, strict=True)
            if (reason := grant.lacking(right, now_s)) is not None
        }
        if missing:
            expires_at = grant_expiry(now_s)
            raise OperatorNotApprovedError(
                f"grant the relayer's signers the {right_names(right)} right first: call setOperatorRights("
                f"signer, {RELAYER_RIGHTS}, {expires_at}) from the account for each of them"
                f" ({right_names(RELAYER_RIGHTS)}, until {expires_at}; never loosen_or_cancel_stop)",
                account=account,
                signers=list(missing),
                reasons=missing,
                right=right_names(right),
                rights=RELAYER_RIGHTS,
                expiresAt=expires_at,
                calldata=[
                    "0x" + calldata.set_operator_rights(s, RELAYER_RIGHTS, expires_at).hex() for s in missing
                ],
            )

    async def _close(
        self, relay: RelayService, intent: TradeIntent, request: CloseRequest, progress: Progress | None
    ) -> TradeOutcome:
        with relay.metrics.timed(Stage.SIMULATE):  # the builder's one batch, its simulation included
            built = await self.builder.build(request)
        await self._check_operator(relay, intent.key.account, built.head, RIGHT_CLOSE)
        if intent.dry_run:
            return TradeOutcome(fill_from_preview(built))
        tell = progress or _untold
        closing = f"{size_text(built.preview.size_delta)} {built.preview.position.market}"
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
        return TradeOutcome(fill_from_record(record, built.preview.position))

    async def _set_order(
        self,
        relay: RelayService,
        intent: TradeIntent,
        summary: PositionSummary,
        update: TriggerOrder,
        is_take_profit: bool,
    ) -> TradeOutcome:
        pid = summary.quote.position.position_id
        request = (
            CloseRequest(pid, take_profit=update) if is_take_profit else CloseRequest(pid, stop_loss=update)
        )
        with relay.metrics.timed(Stage.SIMULATE):
            built = await self.builder.build(request)
        right = RIGHT_SET_TAKE_PROFIT if is_take_profit else RIGHT_TIGHTEN_STOP
        await self._check_operator(relay, intent.key.account, built.head, right)
        if intent.dry_run:
            return TradeOutcome(orders_answer(built.preview.to_dict()))
        record = await self._wait(relay, await self._submit(relay, intent, built))
        if not record.status.is_succeeded:
            return unfinished(record)
        return TradeOutcome(orders_answer(built.preview.to_dict(), record))

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
        the first request did)."""
        record = await self._wait(relay, earlier)
        if not record.status.is_succeeded:
            return unfinished(record)
        (position_id, *_) = positions_of_call(record.data)
        summary = await self.builder.position("0x" + position_id.hex())
        if intent.endpoint in {"partialclose", "close"}:
            return TradeOutcome(fill_from_record(record, summary.quote.position))
        return TradeOutcome(orders_answer(summary.to_dict(), record))

    async def _submit(self, relay: RelayService, intent: TradeIntent, built: BuiltTransaction) -> RelayRecord:
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
