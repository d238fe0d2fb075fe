"""`RelayService`: the one relay core the REST routes, the CLI and the background loop adapt.

Requests in (a signed EIP-712 request, a user-signed raw transaction, or a vault call the relayer makes as an
operator), checked off-chain and simulated, then handed to the write-ahead `Sender`. `tick()` moves every
unfinished record forward (receipts, confirmations, replacement, expiry); `resume()` does the same after a
restart, re-sending journaled bytes first (both done by `Rounds`, rounds.py). Every step re-reads the record
and compare-and-sets its status, so running any of them twice, or after a crash, is harmless.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from eth_utils.crypto import keccak

from relayer.chain.client import ChainClient
from relayer.chain.quotes import PositionQuote
from relayer.config import RelaySettings
from relayer.constants import DEFAULT_SLIPPAGE_BPS, OPERATOR_CHECK_GAS
from relayer.domain import calldata, policy, sponsorship
from relayer.domain.apikeys import ApiKey, Scope
from relayer.domain.blocks import ChainHead
from relayer.domain.exit_plans import OrderChange, checked_change
from relayer.domain.exits import allowed_price_for_slippage
from relayer.domain.fees import Fees
from relayer.domain.policy import RawTransaction
from relayer.domain.positions import ExitPlan
from relayer.domain.records import CallPlan, Intent, RecordPage, RelayRecord, RequestRef
from relayer.domain.sponsorship import Charge, Policy, Sponsored
from relayer.domain.status import RecordKind
from relayer.domain.typed_data import (
    CloseRequest,
    EmergencyExitRequest,
    ExitPlanRequest,
    OperatorRequest,
    OwnerRequest,
    SignedRelay,
    TypedDataQuery,
    check_request,
    typed_data,
)
from relayer.domain.units import usd_text
from relayer.errors import (
    DisallowedTransactionError,
    LeaseHolderUnavailableError,
    PositionNotFoundError,
    PriceNotSetError,
    RelayerError,
    RelayerOutOfFundsError,
    SignerUnavailableError,
    TransactionNotFoundError,
    restore_error,
)
from relayer.services.metrics import NO_METRICS, Metrics, Stage
from relayer.services.relay import funding, idempotency
from relayer.services.relay.leases import RAW_LEASE, Leases, signer_lease
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.rounds import Rounds
from relayer.services.relay.sender import Sender
from relayer.services.relay.signers import Signer, SignerPool, SignersFull, SignerSlots
from relayer.services.relay.values import (
    PUBLIC_SCOPE,
    CheckedCall,
    SenderHooks,
    SignerStatus,
    Submission,
    request_hash,
    scoped_key,
)
from relayer.services.relay.watch import RecordWatch
from relayer.stores.journal import SqliteJournal
from relayer.stores.journal_port import Journal, JournalConflict, LeaseLost

_ZERO_ADDRESS = "0x" + "00" * 20
INTENT_POLL_S = 0.01
"""How often the record watch reads the records callers wait for (one query for all of them)."""
INTENT_CHECK_S = 0.5
"""How often a call handed to another instance also checks whether its intent was refused."""


_Picked = TypeVar("_Picked")


def _exists(record: RelayRecord | None) -> bool:
    return record is not None


def _check_plan(quote: PositionQuote, plan: ExitPlan, change: OrderChange) -> None:
    """A signed order change (an exit plan, a cancel, a trigger set or cancelled by price 0) against its
    position's pending orders `plan` and price, read in the request's batch: the vault's own rules
    (`plan_after`), and no paid no-op (the vault accepts a cancel of an empty id or a change that changes
    nothing, and the relayer would pay for it). A closed position, or an order set on a market with no price,
    is left to the simulation (its revert decoded into the same errors).

    Raises:
        InvalidTriggerPriceError, OrderOutOfSequenceError, PlanSharesExceededError, InvalidOrderIdError, ...:
            a change the vault would refuse (`plan_after`).
        OrderNotFoundError: a cancelled id holds no pending order.
        NothingToChangeError: the plan after the change is the plan now (the same orders and `D`).
    """
    position, price = quote.position, quote.price_e8
    if not position.is_open or (change.set and price == 0):
        return
    checked_change(position.is_long, position.size, price, plan, change)


log = logging.getLogger("relayer.relay")


class RelayService:
    """The relayer. Build once per process; call `resume()` before serving, then `start()` the loop."""

    def __init__(
        self,
        *,
        chain: ChainClient,
        signers: Sequence[Signer] | SignerPool,
        settings: RelaySettings,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.time,
        hooks: SenderHooks | None = None,
        instance: str = "local",
        policy: Policy | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """`chain` is started (`await chain.start()`) before the first request. `instance` names this
        process in the leases (`relayer.services.relay.leases`) and `/health`. `policy` is the gas
        sponsorship policy (None: the defaults of `SponsorshipSettings`). `metrics` counts and times what
        the relay does (`relayer.services.metrics`; the null object: nothing)."""
        self.settings = settings
        self.policy = policy or Policy()
        self.default_slippage_bps = DEFAULT_SLIPPAGE_BPS
        """The bound a signed close built by `typed_data_for` gets when it names none: the trading default
        (`RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS`, set by the runtime)."""
        self.chain = chain
        self.vault = chain.vault_address
        self.pool = signers if isinstance(signers, SignerPool) else SignerPool(signers)
        self.journal = journal or SqliteJournal(settings.journal_path)
        self.slots = SignerSlots(settings.max_in_flight_per_signer, settings.queue_limit)
        """Transactions in flight per signer, and the calls waiting for a slot (`SignerSlots`)."""
        self.nonces = NonceAllocator(on_allocate=self.slots.numbered)
        self.clock = clock
        self.instance = instance
        self.metrics = metrics
        names = [signer_lease(address) for address in self.pool.addresses] + [RAW_LEASE]
        self.leases = Leases(self.journal, instance, settings.lease_ttl_s, names, self._recover)
        # `RelayParts`
        parts = (self.journal, chain, self.pool, self.nonces, self.leases, settings, clock, metrics)
        self.sender = Sender(*parts, hooks=hooks or SenderHooks())
        self.rounds = Rounds(*parts, sender=self.sender, slots=self.slots)
        self.watch = RecordWatch(self.journal, INTENT_POLL_S)
        """One poll of the journal for everyone waiting on records (trading calls, handed-over calls)."""

    async def _recover(self, name: str) -> None:
        await self.rounds.recover(name)

    def _held(self, address: str) -> bool:
        return self.leases.holds(signer_lease(address))

    # --- requests -----------------------------------------------------------------------------------------

    async def submit_signed(
        self, relay: SignedRelay, *, idempotency_key: str | None = None, key_scope: str = PUBLIC_SCOPE
    ) -> Submission:
        """Relay an EIP-712 request (`RequestKind`) signed by the position's owner, or by the owner an
        operator grant or emergency exit names (gasless for them), charged to that owner's sponsorship.

        Raises:
            PositionNotFoundError: a request about a position that never existed.
            InvalidSignatureError, ExpiredRequestError, InvalidNonceError: per `check_request`.
            InvalidTriggerPriceError, OrderOutOfSequenceError, PlanSharesExceededError, ...: an order
                change (exit plan, trigger) the vault would refuse at the position's price and orders
                (`_check_plan`), or a value it refuses anyway.
            OrderNotFoundError: a cancel (`cancel_order`, or `trigger` at price 0) of an order not pending.
            NothingToChangeError: an exit plan or trigger that would leave the plan as it is.
            DeadlineTooSoonError: the deadline is less than `min_deadline_margin_s` after the latest block.
            DuplicateRequestError: the same request is already being relayed.
            IdempotencyConflictError: the key was used with another request.
            RelayerError: the vault error the simulation reverted with; out of funds; node unreachable.
        """
        data = relay.calldata
        fingerprint = request_hash("signed", {"calldata": "0x" + data.hex()})
        async with self.claimed(key_scope, idempotency_key, fingerprint) as (key, existing):
            if existing is not None:
                return existing
            return await self._signed(relay, data, fingerprint, key)

    async def _signed(
        self, relay: SignedRelay, data: bytes, fingerprint: str, idempotency_key: str | None
    ) -> Submission:
        try:
            request = relay.request
            closes: int | None = None
            quote: PositionQuote | None = None
            plan: ExitPlan | None = None
            change: OrderChange | None = None
            if isinstance(request, OperatorRequest | EmergencyExitRequest):  # names its signer
                owner = request.owner
                probe = None
                if isinstance(request, EmergencyExitRequest):  # how many it would close, same batch
                    probe = calldata.emergency_exit(owner, request.market)
                head, fees, expected_nonce, closes = await self.chain.owner_request_state_and(owner, probe)
            else:
                pid = request.position_id
                change = request.order_change()  # its orders read in the same batch, to check it
                head, fees, quote, plan, expected_nonce = await self.chain.position_request_state(
                    pid, orders=change is not None
                )
                owner = quote.position.owner
                if owner == _ZERO_ADDRESS:
                    raise PositionNotFoundError.unknown(request.position_id)
            check_request(
                request,
                relay.signature,
                owner=owner,
                expected_nonce=expected_nonce,
                now_s=head.timestamp,
                chain_id=self.chain.chain_id,
                vault=self.vault,
                min_margin_s=self.settings.min_deadline_margin_s,
            )
            if quote is not None and plan is not None and change is not None:
                _check_plan(quote, plan, change)
            sponsored = Sponsored(owner)
            self._check_sponsored(sponsored)
            if closes == 0:  # an emergency exit the vault would run closing nothing: a paid no-op, never sent
                market = request.market if isinstance(request, EmergencyExitRequest) else None
                raise PositionNotFoundError(
                    "the account has no open position to close" + (f" in {market}" if market else ""),
                    account=owner,
                    market=market,
                )
            ref = RequestRef(owner, request.nonce, request.deadline)
            key = idempotency_key
            return await self._relay_call(
                request.kind, data, head, fees, fingerprint, key, sponsored=sponsored, request=ref
            )
        except RelayerError as error:  # a copy raced us to the same key: its answer
            return idempotency.answer_of_key(self.journal, idempotency_key, fingerprint, error)

    async def submit_call(
        self,
        data: bytes,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        key_scope: str = PUBLIC_SCOPE,
        account: str | None = None,
        sponsored: Sponsored | None = None,
    ) -> Submission:
        """Relay a vault call signed and paid by a relayer signer (e.g. acting as an approved operator) for
        `account`, charged to `sponsored` (None: `account` as an owner; the keeper passes
        `Sponsored(owner, keeper=True)`: counted, never refused).

        Raises:
            DisallowedTransactionError: the call is not an allowed vault function.
            RelayerError: as `submit_signed`.
        """
        fingerprint = fingerprint or request_hash("call", {"data": "0x" + data.hex()})
        async with self.claimed(key_scope, idempotency_key, fingerprint) as (key, existing):
            if existing is not None:
                return existing
            try:
                policy.check_call(self.vault, data, vault=self.vault)
                charged = sponsored or Sponsored(account)
                self._check_sponsored(charged)
                head, fees = await self.chain.head_and_fees()
                return await self._relay_call(
                    policy.call_kind(data), data, head, fees, fingerprint, key, sponsored=charged
                )
            except RelayerError as error:  # a copy raced us to the same key: its answer
                return idempotency.answer_of_key(self.journal, key, fingerprint, error)

    async def submit_checked(self, call: CheckedCall) -> Submission:
        """Journal and send a call the builder already checked and simulated (see `CheckedCall`).

        Raises:
            RelayerOutOfFundsError: no signer can pay for it.
            IdempotencyConflictError: the key was taken meanwhile by another request.
        """
        await self.rounds.ensure_resumed()
        key = scoped_key(call.key_scope, call.idempotency_key)
        sponsored = call.sponsored or Sponsored(call.account)
        self._check_sponsored(sponsored)
        fees = policy.cap_fees(
            call.fees, self.settings.max_fee_per_gas_wei, base_fee_wei=call.head.base_fee_wei
        )
        gas_limit = call.gas_limit + OPERATOR_CHECK_GAS  # simulated from the owner; sent by an operator
        signer = await self._with_slot(
            lambda: funding.funded_signer(
                self.chain, self.pool, self.nonces, self._held, gas_limit, fees.price_cap_wei, self.slots
            )
        )
        plan = CallPlan(
            kind=call.kind,
            to=self.vault,
            data=call.data,
            gas_limit=gas_limit,
            fees=fees,
            request_hash=call.fingerprint,
            idempotency_key=key,
            account=call.account,
            charge=self._charge(sponsored, gas_limit * fees.price_cap_wei),
        )
        try:
            record = await self._send(signer, plan)
        except JournalConflict as conflict:
            return idempotency.after_conflict(self.journal, conflict, key, call.fingerprint)
        return Submission(record, True)

    async def submit_raw(
        self, tx: RawTransaction, *, idempotency_key: str | None = None, key_scope: str = PUBLIC_SCOPE
    ) -> Submission:
        """Relay a transaction the user signed (e.g. the one `/api/closeposition` returned), as decoded by
        `policy.parse_raw_relay`.

        Raises:
            DisallowedTransactionError: wrong target, function, chain id, type, a gas limit too low, or a
                sender that cannot pay for it.
            InvalidNonceError: its nonce is already used on chain (replayed).
            NonceTooFarError: its nonce is more than `raw_nonce_window` ahead of the sender's next nonce.
            FeeBelowBaseFeeError: its max fee per gas is below the latest block's base fee.
            TooManyPendingError: its sender has `raw_max_pending_per_sender` raw records not mined yet.
            RelayerError: the vault error the simulation reverted with; node unreachable.
        """
        fingerprint = request_hash("raw", {"transaction": "0x" + tx.raw.hex()})
        async with self.claimed(key_scope, idempotency_key, fingerprint) as (key, existing):
            if existing is not None:
                return existing
            return await self._raw(tx, fingerprint, key)

    async def _raw(self, tx: RawTransaction, fingerprint: str, idempotency_key: str | None) -> Submission:
        raw = tx.raw
        try:
            policy.check_raw(tx, vault=self.vault, chain_id=self.chain.chain_id)
            raw_hash = "0x" + keccak(raw).hex()
            known = self.journal.by_hash(raw_hash)
            if known is not None:
                return Submission(known, False)  # the same bytes: one record, never a second transaction
            self._check_raw_cap(tx.sender)  # before any chain read: a flood costs the node nothing
            with self.metrics.timed(Stage.SIMULATE):  # one batch
                state = await self.chain.sender_state(tx.sender, self.vault, tx.data, tx.value_wei)
            policy.check_raw_sendable(
                tx,
                next_nonce=state.latest_nonce,
                base_fee_wei=state.head.base_fee_wei,
                balance_wei=state.balance_wei,
                nonce_window=self.settings.raw_nonce_window,
            )
            try:
                gas = state.gas_estimate()
            except RelayerOutOfFundsError as unfunded:  # the sender's funds, not the relayer's
                raise DisallowedTransactionError(
                    "the transaction's sender cannot pay for its gas and value",
                    sender=tx.sender,
                    balanceWei=str(state.balance_wei),
                    **unfunded.details,  # the node's own words (`nodeKind`, `nodeCode`, `nodeMessage`)
                ) from None
            if tx.gas_limit < gas:
                raise DisallowedTransactionError(
                    "the transaction's gas limit is below what the call needs",
                    gasLimit=tx.gas_limit,
                    estimate=gas,
                )
            try:  # the cap again, exactly: counted under the sender's lock in the inserting transaction
                record = await self.sender.journal_raw(
                    tx,
                    request_hash=fingerprint,
                    idempotency_key=idempotency_key,
                    max_pending=self.settings.raw_max_pending_per_sender,
                )
            except JournalConflict as conflict:
                return idempotency.after_conflict(
                    self.journal, conflict, idempotency_key, fingerprint, raw_hash=raw_hash
                )
            return Submission(record, True)
        except RelayerError as error:  # a copy raced us to the same key: its answer
            return idempotency.answer_of_key(self.journal, idempotency_key, fingerprint, error)

    def _check_raw_cap(self, sender: str) -> None:
        """Raises: TooManyPendingError when `sender` already has `raw_max_pending_per_sender` raw records
        here that are not mined yet."""
        policy.check_raw_pending(
            sender, self.journal.unmined_raw(sender), max_pending=self.settings.raw_max_pending_per_sender
        )

    async def typed_data_for(
        self, query: TypedDataQuery, *, default_slippage_bps: int | None = None
    ) -> dict[str, Any]:
        """The EIP-712 payload to sign for a signed request of any kind (`parse_typed_data_query`), with
        the deadline (latest block + request TTL) and nonce (the signer's next vault nonce) filled in when
        not given; a close without `allowedPrice` gets the trading default bound, `default_slippage_bps`
        from the oracle price (`allowed_price_for_slippage`, as API-key trading does), never none. The answer
        says which bound the close carries (`priceBound`). An exit plan is checked against the position's
        price and pending orders (`_check_plan`, one batch), so none is handed out that the vault would refuse
        now or that would change nothing. A request naming its owner (operator rights, emergency exit) reads
        no position.

        Raises:
            PositionNotFoundError: no position has this id.
            PriceNotSetError: a close without `allowedPrice` on a market with no oracle price.
            InvalidTriggerPriceError, OrderOutOfSequenceError, PlanSharesExceededError, NothingToChangeError,
                ...: per `_check_plan`.
        """
        request = query.request
        if isinstance(request, OperatorRequest | EmergencyExitRequest):
            return await self._owner_typed_data(request, query)
        bound: dict[str, Any] | None = None
        if default_slippage_bps is None:
            default_slippage_bps = self.default_slippage_bps
        if isinstance(request, CloseRequest) and not query.allowed_price_given:
            quote = await self.chain.position(request.position_id)  # its owner and price in one read
            position = quote.position
            if not position.exists:
                raise PositionNotFoundError.unknown(request.position_id)
            if quote.price_e8 == 0:
                raise PriceNotSetError.of_market(position.market)
            owner = position.owner
            allowed = allowed_price_for_slippage(
                is_long=position.is_long, price_e8=quote.price_e8, slippage_bps=default_slippage_bps
            )
            request = replace(request, allowed_price_e8=allowed)
            bound = {
                "source": "defaultSlippage",
                "allowedPrice": usd_text(allowed),
                "oraclePrice": usd_text(quote.price_e8),
                "slippageBps": default_slippage_bps,
            }
        elif isinstance(request, ExitPlanRequest):
            quote, plan = await self.chain.position_and_orders(request.position_id)  # one batch
            if not quote.position.exists:
                raise PositionNotFoundError.unknown(request.position_id)
            owner = quote.position.owner
            _check_plan(quote, plan, request.order_change())
        else:
            owner = await self._owner_of(request.position_id)
            if isinstance(request, CloseRequest):
                bound = {"source": "given", "allowedPrice": usd_text(request.allowed_price_e8)}
        if not query.deadline_given:
            request = replace(
                request, deadline=(await self.chain.head()).timestamp + self.settings.request_ttl_s
            )
        if not query.nonce_given:
            request = replace(request, nonce=await self.chain.request_nonce(owner))
        answer = {
            "kind": request.request_kind.value,
            "owner": owner,
            "typedData": typed_data(request, chain_id=self.chain.chain_id, vault=self.vault),
        }
        if bound is not None:
            answer["priceBound"] = bound
        return answer

    async def _owner_typed_data(self, request: OwnerRequest, query: TypedDataQuery) -> dict[str, Any]:
        """`typed_data_for` of a request naming its owner: the head and the owner's nonce in one batch, when
        either is to be filled in."""
        if not (query.deadline_given and query.nonce_given):
            head, _, nonce = await self.chain.owner_request_state(request.owner)
            if not query.deadline_given:
                request = replace(request, deadline=head.timestamp + self.settings.request_ttl_s)
            if not query.nonce_given:
                request = replace(request, nonce=nonce)
        return {
            "kind": request.request_kind.value,
            "owner": request.owner,
            "typedData": typed_data(request, chain_id=self.chain.chain_id, vault=self.vault),
        }

    def get(self, record_id: str) -> RelayRecord:
        """Raises: TransactionNotFoundError."""
        record = self.journal.get(record_id)
        if record is None:
            raise TransactionNotFoundError("no relayed transaction has this id", id=record_id)
        return record

    def list(
        self, status: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[RelayRecord]:
        """Every account's records, newest first: the operator's view (tests, tools). What a client may list
        is `list_for`.

        Raises:
            InvalidFieldError: per `RecordPage.parse`.
        """
        page = RecordPage.parse(status, limit, offset)
        return self.journal.records(page.status, limit=page.limit, offset=page.offset)

    def list_for(
        self, reader: ApiKey, status: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[RelayRecord]:
        """The records `reader` (an authenticated API key) may list, newest first: those acting for its
        account, or with the `admin` scope every account's. A record by its id (`get`) is not scoped: whoever
        holds the id may read it.

        Raises:
            InvalidFieldError: per `RecordPage.parse`.
        """
        page = RecordPage.parse(status, limit, offset)
        account = None if Scope.ADMIN in reader.scopes else reader.account
        return self.journal.records(page.status, limit=page.limit, offset=page.offset, account=account)

    # --- the relay pipeline -------------------------------------------------------------------------------

    def find_idempotent(
        self, idempotency_key: str | None, fingerprint: str, *, key_scope: str = PUBLIC_SCOPE
    ) -> Submission | None:
        """The record an earlier request with this key made, before any chain work (None: a new key).

        Raises:
            IdempotencyConflictError: the key was used with a different request.
        """
        return idempotency.earlier(self.journal, scoped_key(key_scope, idempotency_key), fingerprint)

    @asynccontextmanager
    async def claimed(
        self, key_scope: str, idempotency_key: str | None, fingerprint: str
    ) -> AsyncIterator[tuple[str | None, Submission | None]]:
        """Every submission's first steps: the relay resumed, the key scoped, and either the earlier answer
        of this key or the key's claim held for this request until its record is journaled (`idempotency.
        claimed`: copies sent at once, to any instance, wait for this one's answer).

        Yields the scoped key, and the earlier submission with this key and request (None: work on it).

        Raises:
            InvalidFieldError: a malformed key.
            IdempotencyConflictError: the key was used with another request.
            RequestInProgressError: a copy of this request is still being worked on after a wait.
        """
        await self.rounds.ensure_resumed()
        key = scoped_key(key_scope, idempotency_key)
        async with idempotency.claimed(self.journal, key, fingerprint, wait_s=self._intent_wait_s) as earlier:
            yield key, earlier

    @property
    def _intent_wait_s(self) -> float:
        """How long a call journaled as an intent waits for its signer's lease holder: a takeover's bound
        (2 x the lease TTL) and a few seconds more."""
        return 2 * self.settings.lease_ttl_s + 5.0

    async def _with_slot(self, pick: Callable[[], Awaitable[_Picked]]) -> _Picked:
        """`pick()` a signer and take one of its slots (`SignerSlots`); while every signer has its limit in
        flight, wait in the queue (first in, first out; the slots are recounted from the journal and the
        chain every poll interval meanwhile) and pick again. A call arriving while others wait joins the
        queue behind them.

        Raises:
            RelayQueueFullError: the queue is full, or no slot freed within `queue_wait_s`.
            RelayerError: per `pick`.
        """
        deadline = time.monotonic() + self.settings.queue_wait_s
        poll_s = self.settings.poll_interval_s
        ticket: int | None = None
        woken = not self.slots.waiting
        while True:
            if woken:
                try:
                    return await pick()
                except SignersFull:
                    pass
            self.rounds.recount_slots()
            again = ticket is not None
            ticket = ticket if ticket is not None else self.slots.ticket()
            woken = await self.slots.wait(deadline, ticket, poll_s=poll_s, again=again)

    async def _send(self, signer: Signer, plan: CallPlan) -> RelayRecord:
        """Number, sign, journal and send `plan` from `signer` here when this instance holds the signer's
        lease; else journal it as an intent and wait for the holder to send it (`_via_intent`). The caller
        took a slot of `signer` (`_with_slot`): it stays taken by the record's nonce until that is mined, or
        is given back when nothing was journaled.

        Raises:
            JournalConflict: the idempotency key or the signed request is already journaled.
            LeaseHolderUnavailableError, RelayerError: per `_via_intent`.
        """
        nonce: int | None = None
        try:
            record = await self._number_and_send(signer, plan)
            nonce = record.nonce
            return record
        finally:
            self.slots.settle(signer.address, nonce)

    async def _number_and_send(self, signer: Signer, plan: CallPlan) -> RelayRecord:
        stopped = self.nonces.stopped(signer.address)
        if stopped is not None:  # stopped after it was picked
            raise SignerUnavailableError(
                "the relayer signer is in use by another journal and was stopped",
                signer=signer.address,
                reason=stopped,
            )
        name = signer_lease(signer.address)
        lease = self.leases.token(name)
        if lease is None and self.leases.lapsed(name):  # its renewal is overdue (a slow or stopped loop)
            await self.leases.maintain()
            lease = self.leases.token(name)
        if lease is not None:
            try:
                return await self.sender.journal_and_send(signer, plan, lease)
            except LeaseLost:
                log.info("lease of %s lost while sending: handing the call over as an intent", signer.address)
        return await self._via_intent(signer, plan)

    async def _via_intent(self, signer: Signer, plan: CallPlan) -> RelayRecord:
        """Journal `plan` as an intent for the holder of `signer`'s lease (another instance), and wait for the
        record it becomes.

        Raises:
            JournalConflict: the idempotency key or the signed request is already journaled.
            LeaseHolderUnavailableError: no holder took it in time; it was withdrawn, nothing is kept.
            RelayerError: the error the holder refused it with.
        """
        intent = Intent(uuid.uuid4().hex, self.chain.chain_id, signer.address, plan, self.clock())
        self.journal.add_intent(intent)
        self.rounds.wake_intents()  # this instance may hold the lease after all (a takeover just now)
        deadline = time.monotonic() + self._intent_wait_s
        while True:
            if self.leases.holds(signer_lease(signer.address)):  # this instance holds it after all: send
                with self.slots.lent(signer.address):  # it here, in the slot this call took (`_send`)
                    await self.rounds.send_intents()
            record = await self.watch.wait(intent.id, _exists, INTENT_CHECK_S)
            if record is not None:
                return record
            waiting = self.journal.intent(intent.id)
            if waiting is not None and waiting.error is not None:
                raise restore_error(waiting.error)
            # Out of time: withdraw it, unless a holder claimed it meanwhile (then its record is committed,
            # and the next pass returns it). A withdrawn call was never signed: sending it again is safe.
            if time.monotonic() >= deadline and self.journal.cancel_intent(intent.id):
                raise LeaseHolderUnavailableError(
                    "no instance holding the signer's lease took the call in time (a failover in progress);"
                    " it was withdrawn, nothing was signed or kept: send it again",
                    signer=signer.address,
                )

    async def _relay_call(
        self,
        kind: RecordKind,
        data: bytes,
        head: ChainHead,
        fees: Fees,
        fingerprint: str,
        idempotency_key: str | None,
        *,
        sponsored: Sponsored,
        request: RequestRef | None = None,
    ) -> Submission:
        """Simulate from a signer that can pay, then journal and send, charged to `sponsored`. Never sends
        what did not simulate."""
        fees = policy.cap_fees(fees, self.settings.max_fee_per_gas_wei, base_fee_wei=head.base_fee_wei)

        async def pick() -> tuple[Signer, int]:
            with self.metrics.timed(Stage.SIMULATE):
                chain, vault, cap_wei = self.chain, self.vault, fees.price_cap_wei
                return await funding.pick_signer(
                    chain, self.pool, self.nonces, self._held, vault, data, cap_wei, self.slots
                )

        signer, gas_limit = await self._with_slot(pick)
        plan = CallPlan(
            kind=kind,
            to=self.vault,
            data=data,
            gas_limit=gas_limit,
            fees=fees,
            request_hash=fingerprint,
            idempotency_key=idempotency_key,
            account=sponsored.account,
            request=request,
            charge=self._charge(sponsored, gas_limit * fees.price_cap_wei),
        )
        try:
            record = await self._send(signer, plan)
        except JournalConflict as conflict:
            return idempotency.after_conflict(self.journal, conflict, idempotency_key, fingerprint)
        return Submission(record, True)

    # --- the sponsorship policy (`relayer.domain.sponsorship`) ---------------------------------------------

    def _check_sponsored(self, sponsored: Sponsored) -> None:
        """Refuse, before any simulation, a caller the policy does not pay for or whose budget is spent.

        Raises:
            SponsorshipRefusedError: not sponsored at all.
            QuotaExceededError: a budget already spent (requests, or wei: the exact check, with this call's
                worst case, is made when it is signed).
        """
        sponsorship.check_sponsored(self.policy, sponsored)
        now_s = int(self.clock())
        probe = Charge(0, sponsorship.windows_for(self.policy, sponsored, now_s))
        usage = self.journal.spend_usage(self.chain.chain_id, probe.windows)
        refused = sponsorship.first_refusal(probe, usage, now_s)
        if refused is not None:
            self.metrics.quota_rejected(str(refused.details["scope"]))
            raise refused

    def _charge(self, sponsored: Sponsored, worst_wei: int) -> Charge:
        """What signing a call for `sponsored` that may cost up to `worst_wei` reserves."""
        return Charge(worst_wei, sponsorship.windows_for(self.policy, sponsored, int(self.clock())))

    def spend(self) -> dict[str, Any]:
        """The relayer's spend today against its daily cap (for `/health` and `relayer policy show`)."""
        return sponsorship.spend_today(
            self.policy, self.journal.spend_usage, self.chain.chain_id, int(self.clock())
        )

    async def _owner_of(self, position_id: bytes) -> str:
        """The owner a signed request about `position_id` must come from.

        Raises:
            PositionNotFoundError: no position ever had this id.
        """
        owner = await self.chain.position_owner(position_id)
        if owner == _ZERO_ADDRESS:
            raise PositionNotFoundError.unknown(position_id)
        return owner

    # --- moving records forward (`Rounds`) ----------------------------------------------------------------

    async def resume(self) -> int:
        """After a (re)start: reconcile nonces, then finish or re-send every unfinished record (`Rounds`).

        Returns the number of unfinished records found.
        """
        return await self.rounds.resume()

    async def tick(self) -> int:
        """One round of the background loop; returns how many records are still unfinished."""
        return await self.rounds.tick()

    def start(self) -> None:
        """Start the background loop: `resume()` once (unless a request already did), then `tick()` every poll
        interval."""
        self.rounds.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop after its current round."""
        await self.rounds.stop(timeout_s)

    # --- operators ----------------------------------------------------------------------------------------

    async def signers_status(self) -> builtins.list[SignerStatus]:
        """Balances and nonces (chain latest / pending vs the journal's next) of every signer."""
        return await funding.signers_status(
            self.chain, self.pool, self.journal, self.nonces, self.settings.min_signer_balance_wei
        )

    async def report_balances(self) -> None:
        """Read every signer's balance into the metrics (a scrape asks, at most every few seconds).

        Raises:
            ChainUnavailableError: the node does not answer.
        """
        for address in self.pool.addresses:
            balance = await self.chain.balance(address)
            low = policy.is_low_balance(balance, self.settings.min_signer_balance_wei)
            self.metrics.signer_balance(address, balance, low=low)

    async def health(self) -> dict[str, Any]:
        """For the app's `/health`: signer balances with a low-balance alert, and the unfinished count."""
        signers = await self.signers_status()
        for signer in signers:
            self.metrics.signer_balance(signer.address, signer.balance_wei, low=signer.low_balance)
        return {
            "instance": self.instance,
            "leases": self.leases.describe(),
            "signers": [s.to_dict() for s in signers],
            "lowBalance": any(s.low_balance for s in signers),
            "unfinished": len(self.journal.pending()),
            "sponsorship": {"policy": self.policy.to_dict(with_allowlist=False), "today": self.spend()},
        }
