"""Write-ahead signing and broadcasting: journal first, then the node; every hash kept.

The order is the whole point: under the signer's nonce lock, one journal transaction allocates the nonce,
signs, and stores the signed bytes, nonce and hash; only after it commits are the bytes broadcast. A crash
before the broadcast leaves a `queued` record whose exact bytes `resume()` sends; a crash after it leaves a
record whose hash `resume()` finds mined or re-sends (the node answers "already known"). Nothing is signed
twice for one nonce except as a fee bump or a no-op of the same record, and every such attempt is journaled
before it is broadcast. Each handler re-reads the record and does nothing if it moved on.

Every error a record keeps is the `to_dict()` of a `RelayerError` (the node's own code and message in its
`details`), so `relayer.errors.restore_error` gives a client the same code and status a direct call would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from eth_utils.crypto import keccak

from relayer.chain.client import ChainClient, Receipt
from relayer.chain.events import decode_events, json_args
from relayer.chain.failure import why_reverted
from relayer.chain.node_errors import Kind, NodeError
from relayer.config import RelaySettings
from relayer.domain.fees import Fees
from relayer.domain.policy import RawTransaction, bump_fees, check_raw_pending
from relayer.domain.records import Attempt, CallPlan, Intent, Lease, Mined, RelayRecord
from relayer.domain.status import AttemptKind, RecordKind, TxStatus
from relayer.errors import (
    DuplicateRequestError,
    FeeCapReachedError,
    IdempotencyConflictError,
    NodeDeferredError,
    NonceUsedElsewhereError,
    QuotaExceededError,
    RawTransactionExpiredError,
    RelayerError,
    StoreUnavailableError,
)
from relayer.services.metrics import NO_METRICS, Metrics, Stage, since_first_broadcast
from relayer.services.relay.leases import Leases, signer_lease
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.signers import Signer, SignerPool
from relayer.services.relay.values import NOOP_GAS, SenderHooks, attempt_fees, build_tx
from relayer.stores.journal_port import Journal, JournalConflict, JournalWriter, LeaseLost

log = logging.getLogger("relayer.relay")


@dataclass(eq=False)
class RelayParts:
    """What the relay's working halves share (`Sender` sends, `Rounds` moves records on): the journal, the
    chain, the signers with their nonces and leases, the settings, the clock and the metrics."""

    journal: Journal
    chain: ChainClient
    pool: SignerPool
    nonces: NonceAllocator
    leases: Leases
    settings: RelaySettings
    clock: Callable[[], float] = time.time
    metrics: Metrics = NO_METRICS


@dataclass(eq=False)
class _Call:
    """A call waiting in a group (`Sender.journal_and_send`): what to journal, and the futures its caller
    waits on (`done`: its record or error; `lead`: it is to journal and send the next group)."""

    signer: Signer
    plan: CallPlan
    lease: Lease
    id: str
    record: RelayRecord | None = None
    done: asyncio.Future[RelayRecord] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    lead: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class Sender(RelayParts):
    """Signs, journals and broadcasts for `RelayService`; owns every status change after a record exists."""

    hooks: SenderHooks = field(default_factory=SenderHooks)

    def __post_init__(self) -> None:
        self._calls: list[_Call] = []
        """Calls waiting to be journaled and sent as the next group (`journal_and_send`)."""
        self._leading = False
        """Whether a call leads a group now (or was handed the lead)."""
        self.known_receipts: dict[str, Receipt | None] = {}
        """The receipts a relay round read for all its records in one batch, by hash (None: not mined);
        emptied when the round ends (`Rounds._read_receipts`)."""

    # --- new records --------------------------------------------------------------------------------------

    async def journal_and_send(
        self, signer: Signer, plan: CallPlan, lease: Lease, *, record_id: str | None = None
    ) -> RelayRecord:
        """Allocate a nonce, sign, journal (fenced by the signer's lease), then broadcast, under the signer's
        lock: as one of a group. The calls waiting when a group starts are journaled in ONE transaction (one
        commit, one fsync; each record in a savepoint of its own, so one refused leaves the others and takes
        no nonce) before any of them is broadcast, and the group's bytes go out in ONE JSON-RPC batch, in
        nonce order per signer. The first caller to find no group running leads it (`_lead`); when it is
        done, the first call that waited leads the next one, so groups follow each other without a task of
        their own, and a caller is answered as soon as its own group is sent.

        Raises:
            JournalConflict: the idempotency key or the signed request is already journaled (nothing kept).
            LeaseLost: this instance no longer holds the signer's lease (nothing kept).
            QuotaExceededError: the charge would pass a budget (nothing kept).
        """
        call = _Call(signer, plan, lease, record_id or uuid.uuid4().hex)
        # Its outcome is raised to this caller (or was, to the leader that met it): never "not retrieved".
        call.done.add_done_callback(_retrieved)
        self._calls.append(call)
        if not self._leading:
            self._leading = True
            call.lead.set_result(None)
        try:
            while not call.done.done():
                waits: list[asyncio.Future[Any]] = [call.done, call.lead]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if call.lead.done() and not call.done.done():
                    await self._lead()
        except asyncio.CancelledError:
            if call in self._calls:  # not journaled yet: it never will be
                self._calls.remove(call)
            if call.lead.done() and not call.done.done():
                self._hand_over()  # it was to lead: the next waiting call leads instead
            raise
        return call.done.result()

    async def _lead(self) -> None:
        """Journal and send every call waiting now (this one among them), then hand the lead to the next."""
        try:
            await asyncio.sleep(0)  # the calls that arrive in this turn of the loop join the group
            waiting, self._calls = self._calls, []
            # A signer another task holds (a bump, a refusal being handled, a slow node) does not hold up the
            # others: its calls wait for the next group, unless nothing else is ready (then this one waits).
            group = [call for call in waiting if not self.nonces.busy(call.signer.address)] or waiting
            self._calls[:0] = [call for call in waiting if call not in group]
            await self._send_group(group)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """The next waiting call leads the next group (none waiting: the next call to arrive will)."""
        while self._calls and self._calls[0].done.done():
            self._calls.pop(0)
        if self._calls:
            if not self._calls[0].lead.done():
                self._calls[0].lead.set_result(None)
        else:
            self._leading = False

    async def _send_group(self, group: list[_Call]) -> None:
        """Each call of `group` settled: its record journaled and broadcast, or its error."""
        committed = False
        try:
            async with contextlib.AsyncExitStack() as held:
                for address in sorted({call.signer.address for call in group}):
                    await held.enter_async_context(self.nonces.hold(address))
                with self.metrics.timed(Stage.JOURNAL), self.journal.write() as writer:
                    for call in group:
                        try:
                            with writer.savepoint():
                                writer.fence(call.lease)
                                call.record = self._sign_new(writer, call.signer, call.plan, call.id)
                        except (JournalConflict, LeaseLost, RelayerError) as refused:
                            call.done.set_exception(refused)
                committed = True
                records = [call.record for call in group if call.record is not None]
                for record in records:
                    self._journaled(record)
                await self._broadcast_group(records)
        except BaseException as error:
            # Nothing committed: every call gets the error. Committed: a cancelled leader's followers get
            # their records (queued; the loop broadcasts them); a crash (a test's hook) reaches every caller.
            cancelled = isinstance(error, asyncio.CancelledError)
            for call in group:
                if call.done.done():
                    continue
                if committed and cancelled and call.record is not None:
                    call.done.set_result(call.record)
                else:
                    call.done.set_exception(error)
            raise
        answers = self._committed_many(records)
        for call in group:
            if not call.done.done():
                assert call.record is not None
                call.done.set_result(answers.get(call.id, call.record))

    def _journaled(self, record: RelayRecord) -> None:
        """What follows a record's commit, grouped or alone: its log line and the `after_journal` hook."""
        log.info(
            "journaled record=%s nonce=%d signer=%s hash=%s",
            record.id,
            record.nonce,
            record.sender,
            record.latest.tx_hash,
        )
        if self.hooks.after_journal is not None:
            self.hooks.after_journal(record)

    async def _broadcast_group(self, records: list[RelayRecord]) -> None:
        """Broadcast just-journaled records (their signers' locks held) in one batch, in nonce order per
        signer; a node that did not answer gets them one by one (`broadcast`, retried with backoff), a
        refusal is handled per record as always. The accepted ones are noted in one journal transaction,
        and those a sync send brought back mined are settled."""
        if not records:
            return
        records = sorted(records, key=lambda r: (r.sender, r.nonce))
        try:
            # A call sent alone gets its receipt with the answer where the node mines on arrival (the sync
            # method; its caller, say a trading call waiting for the fill, is answered at once). A group does
            # not wait for the mining: the next group is journaled meanwhile and the round reads the receipts
            # (measured on anvil's automine: 20-30% more throughput under load).
            with self.metrics.timed(Stage.BROADCAST):
                outcomes = await self.chain.send_raw_many(
                    [r.latest.raw_tx for r in records], sync_allowed=len(records) == 1
                )
            accepted: list[RelayRecord] = []
            mined: list[tuple[RelayRecord, Receipt]] = []
            retry: list[RelayRecord] = []
            for record, sent in zip(records, outcomes, strict=True):
                if sent.refusal is None or sent.refusal.kind is Kind.ALREADY_KNOWN:
                    if self.hooks.after_broadcast is not None:
                        self.hooks.after_broadcast(record, record.latest)
                    accepted.append(record)
                    if sent.receipt is not None:
                        mined.append((record, sent.receipt))
                elif sent.refusal.kind is Kind.UNAVAILABLE:
                    retry.append(record)
                else:
                    await self._on_refusal(record, record.latest, sent.refusal)
            if accepted:
                moved = self.journal.mark_sent([(r.id, r.latest.tx_hash) for r in accepted], now=self.clock())
                for record, went in zip(accepted, moved, strict=True):
                    if went:
                        log.info(
                            "submitted record=%s nonce=%d hash=%s",
                            record.id,
                            record.nonce,
                            record.latest.tx_hash,
                        )
            if mined:
                await self.settle_receipts(
                    [(replace(r, status=TxStatus.SUBMITTED), receipt) for r, receipt in mined]
                )
            for record in retry:
                await self.broadcast(record, record.latest)
        except StoreUnavailableError as exc:
            # The records are committed and their bytes may be with the node: the calls must not be
            # answered as failed (a client would send them again). The loop re-broadcasts and notes them.
            log.warning(
                "%d records journaled; their broadcast bookkeeping waits for the database (%s)",
                len(records),
                exc.code,
            )

    async def send_next_intent(self, signer: Signer, lease: Lease) -> bool:
        """Number, sign and journal the oldest intent waiting for `signer` (journaled by an instance that does
        not hold its lease) as the record of the same id, in the transaction that claims it (`FOR UPDATE SKIP
        LOCKED`) and deletes it, then broadcast. False when none waits.

        Raises:
            LeaseLost: this instance no longer holds the signer's lease (nothing kept).
        """
        async with self.nonces.hold(signer.address):
            intent: Intent | None = None
            try:
                with self.journal.write() as writer:
                    writer.fence(lease)
                    intent = writer.next_intent(signer.address)
                    if intent is None:
                        return False
                    record = self._sign_new(writer, signer, intent.plan, intent.id)
                    writer.settle_intent(intent.id, None, self.clock())
            except JournalConflict as conflict:  # e.g. the same signed request is live: refuse the intent
                assert intent is not None  # only the insert conflicts
                await self._refuse_intent(intent, conflict, lease)
                return True
            except QuotaExceededError as spent:  # its budget was spent meanwhile: the caller gets the 429
                assert intent is not None  # only the reservation refuses
                await self._refuse_intent(intent, spent, lease)
                return True
            await self._after_journal(record)
        return True

    async def _refuse_intent(
        self, intent: Intent, conflict: JournalConflict | RelayerError, lease: Lease
    ) -> None:
        if isinstance(conflict, RelayerError):
            error: RelayerError = conflict
        elif conflict.constraint == "request_owner":
            error = DuplicateRequestError(
                "this signed request is already being relayed (same owner and nonce)"
            )
        elif conflict.constraint == "idempotency_key":
            error = IdempotencyConflictError("this Idempotency-Key was used with a different request")
        else:
            raise conflict  # a rule no intent can break (a bug): the loop logs it
        with self.journal.write() as writer:
            writer.fence(lease)
            writer.settle_intent(intent.id, error.to_dict(), self.clock())
        log.info("intent %s refused: %s", intent.id, error.code)

    async def refuse_intents(self, signer: Signer, lease: Lease, error: RelayerError) -> int:
        """Refuse every intent waiting for `signer` with `error` (it was stopped: nothing is sent from it);
        returns how many. Their callers get `error` instead of waiting out their time."""
        refused = 0
        while True:
            with self.journal.write() as writer:
                writer.fence(lease)
                intent = writer.next_intent(signer.address)
                if intent is None:
                    return refused
                writer.settle_intent(intent.id, error.to_dict(), self.clock())
            refused += 1

    def _sign_new(self, writer: JournalWriter, signer: Signer, plan: CallPlan, record_id: str) -> RelayRecord:
        """The next nonce of `signer`, the call's sponsorship charge reserved, the call signed at the nonce,
        and its record inserted, inside `writer` (one transaction: a refused charge leaves nothing).

        Raises:
            QuotaExceededError: the charge would pass a budget (`relayer.domain.sponsorship`).
        """
        nonce = self.nonces.allocate(signer.address, writer.max_nonce(signer.address))
        if plan.charge is not None:
            # Before it is signed, and as late as that allows: the windows' rows (the shared cap's among them)
            # stay locked until the commit.
            try:
                writer.reserve(self.chain.chain_id, plan.charge, int(self.clock()))
            except QuotaExceededError as spent:
                self.metrics.quota_rejected(str(spent.details["scope"]))
                raise
        tx = build_tx(
            chain_id=self.chain.chain_id,
            nonce=nonce,
            to=plan.to,
            data=plan.data,
            value_wei=0,
            gas=plan.gas_limit,
            fees=plan.fees,
        )
        raw, tx_hash = signer.sign_transaction(tx)
        now = self.clock()
        record = RelayRecord(
            id=record_id,
            kind=plan.kind,
            status=TxStatus.QUEUED,
            request_hash=plan.request_hash,
            sender=signer.address,
            nonce=nonce,
            chain_id=self.chain.chain_id,
            to=plan.to,
            data=plan.data,
            value_wei=0,
            gas_limit=plan.gas_limit,
            created_at=now,
            updated_at=now,
            idempotency_key=plan.idempotency_key,
            request=plan.request,
            account=plan.account,
            attempts=(
                Attempt(
                    tx_hash,
                    0,
                    AttemptKind.ORIGINAL,
                    raw,
                    plan.fees.price_cap_wei,
                    plan.fees.max_priority_fee_per_gas_wei if not plan.fees.is_legacy else 0,
                    now,
                ),
            ),
        )
        writer.insert(record, charge=plan.charge)
        return record

    async def _after_journal(self, record: RelayRecord) -> None:
        self._journaled(record)
        try:
            await self.broadcast(record, record.latest)
        except StoreUnavailableError as exc:
            # The record is committed and its bytes may be with the node: the call must not be answered
            # as failed (a client would send it again). The loop re-broadcasts and records it later.
            log.warning(
                "record=%s journaled; its broadcast bookkeeping waits for the database (%s)",
                record.id,
                exc.code,
            )

    async def journal_raw(
        self, tx: RawTransaction, *, request_hash: str, idempotency_key: str | None, max_pending: int
    ) -> RelayRecord:
        """Journal a user-signed transaction, unless its sender already has `max_pending` raw records not yet
        mined (counted under the sender's lock in the inserting transaction, so several instances together
        keep the cap too), then broadcast it.

        Raises:
            JournalConflict: the key or these exact bytes are already journaled.
            TooManyPendingError: the sender's cap is full (nothing kept).
        """
        now = self.clock()
        tx_hash = "0x" + keccak(tx.raw).hex()
        record = RelayRecord(
            id=uuid.uuid4().hex,
            kind=RecordKind.RAW,
            status=TxStatus.QUEUED,
            request_hash=request_hash,
            sender=tx.sender,
            nonce=tx.nonce,
            chain_id=tx.chain_id,
            to=tx.to or "",
            data=tx.data,
            value_wei=tx.value_wei,
            gas_limit=tx.gas_limit,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            account=tx.sender,
            attempts=(
                Attempt(
                    tx_hash,
                    0,
                    AttemptKind.ORIGINAL,
                    tx.raw,
                    tx.max_fee_per_gas_wei,
                    tx.max_priority_fee_per_gas_wei,
                    now,
                ),
            ),
        )
        with self.metrics.timed(Stage.JOURNAL), self.journal.write() as writer:
            unmined = writer.unmined_raw_locked(record.chain_id, tx.sender)
            check_raw_pending(tx.sender, unmined, max_pending=max_pending)
            writer.insert(record)
        await self._after_journal(record)
        return self._committed(record)

    # --- broadcasting -------------------------------------------------------------------------------------

    async def broadcast(self, record: RelayRecord, attempt: Attempt) -> None:
        """Send `attempt`'s bytes and act on the node's answer (retrying an unreachable node with backoff).

        Holding the signer's nonce lock keeps a signer's broadcasts in nonce order; repeating a broadcast is
        harmless (the node answers "already known", which counts as sent). A caller whose copy of a `queued`
        record (or of a not yet broadcast attempt) went stale while it waited for the lock sends nothing: the
        send path broadcast those bytes meanwhile, and sending them again only earns a refusal (a mined
        transaction's nonce is too low).
        """
        lock = self.nonces.hold(record.sender) if record.kind.is_ours else contextlib.nullcontext()
        async with lock:
            if self._overtaken(record, attempt):
                return
            delay = self.settings.retry_backoff_s
            for round_ in range(self.settings.broadcast_retries):
                with self.metrics.timed(Stage.BROADCAST):
                    error = await self.chain.send_raw(attempt.raw_tx)
                if error is None:
                    await self._accepted(record, attempt)
                    return
                if error.kind is Kind.UNAVAILABLE and round_ < self.settings.broadcast_retries - 1:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                await self._on_refusal(record, attempt, error)
                return

    def _overtaken(self, record: RelayRecord, attempt: Attempt) -> bool:
        """Whether the record moved on since the caller read it: it was `queued` and is no longer, or the
        attempt had not been broadcast and now has. A deliberate re-send (a `submitted` record whose attempt
        the caller knows was broadcast: the loop's resend after a node lost it) is not read again."""
        if record.status is not TxStatus.QUEUED and attempt.broadcast_at is not None:
            return False
        fresh = self._reload(record)
        if record.status is TxStatus.QUEUED and fresh.status is not TxStatus.QUEUED:
            return True
        sent = [a for a in fresh.attempts if a.tx_hash == attempt.tx_hash and a.broadcast_at is not None]
        return attempt.broadcast_at is None and bool(sent)

    async def _accepted(self, record: RelayRecord, attempt: Attempt) -> None:
        if self.hooks.after_broadcast is not None:
            self.hooks.after_broadcast(record, attempt)
        now = self.clock()
        self.journal.mark_broadcast(attempt.tx_hash, now=now)
        if self.journal.transition(record.id, TxStatus.QUEUED, TxStatus.SUBMITTED, now=now):
            log.info("submitted record=%s nonce=%d hash=%s", record.id, record.nonce, attempt.tx_hash)

    async def _on_refusal(self, record: RelayRecord, attempt: Attempt, error: NodeError) -> None:
        noted = error.as_error().to_dict()
        if not record.kind.is_ours and error.kind is Kind.INSUFFICIENT_FUNDS:  # its sender's funds, not ours
            noted = NodeDeferredError(
                "the transaction's sender cannot pay for it (yet)", **error.details()
            ).to_dict()
        # A refusal the record already notes (the same code and kind, re-sent round after round) is not news:
        # logged and written once per change of state, not once per round.
        stays = error.kind.is_transient or (record.kind.is_ours and attempt.kind is AttemptKind.NOOP)
        repeated = stays and _same_refusal(record.error, noted)
        refusal = ("node refused %s nonce=%d hash=%s: %s (%s)", record.id, record.nonce, attempt.tx_hash)
        if error.kind is Kind.NONCE_TOO_LOW:
            # Told once the receipt is looked for: our own transaction having used the nonce (mined while
            # this copy of the bytes waited) is no news; someone else's is.
            ours = await self.settle_used_nonce(self._reload(record))
            log.log(logging.INFO if ours else logging.WARNING, *refusal, error.kind, error.code)
            return
        log.log(
            logging.DEBUG if repeated or error.kind is Kind.ALREADY_KNOWN else logging.WARNING,
            *refusal,
            error.kind,
            error.code,
        )
        if error.kind is Kind.ALREADY_KNOWN:
            await self._accepted(record, attempt)
        elif repeated:
            pass  # still pending, still noted: nothing changed
        elif error.kind.is_transient:
            # Left pending: the background loop re-sends, bumps or fills it. Noted for operators.
            self.journal.set_error(record.id, record.status, noted, now=self.clock())
        elif record.kind.is_ours and attempt.kind is not AttemptKind.NOOP:
            # These bytes can never be sent, but the nonce must still be used or every later one waits.
            await self.fill_nonce(self._reload(record), TxStatus.FAILED, error.as_error().to_dict())
        elif record.kind.is_ours:
            # Even the no-op was refused. The record stays pending, noted, until its nonce is used: settling
            # it now would leave a gap every later transaction of this signer waits behind, for good. The
            # loop re-sends the no-op and bumps it.
            self.journal.set_error(record.id, record.status, noted, now=self.clock())
        else:
            self._finish(record, TxStatus.FAILED, error=error.as_error().to_dict())

    # --- receipts -----------------------------------------------------------------------------------------

    async def expire_raw(self, record: RelayRecord) -> bool:
        """Drop a raw record not mined within `raw_ttl_s`: `expired`, never broadcast again. Its hashes'
        receipts are read first, so one that was mined after all (the round's nonce read is a block behind,
        say) ends `mined`, not `expired`. False when it was not expired (mined, or it moved on).
        """
        record = self._reload(record)
        if record.status.is_settled:
            return False
        receipt = await self.find_receipt(record)
        if receipt is not None:
            await self.settle_receipt(record, receipt)
            return False
        error = RawTransactionExpiredError(
            f"not mined within {self.settings.raw_ttl_s} s of being accepted: dropped, never broadcast again",
            ttlS=self.settings.raw_ttl_s,
            acceptedAt=int(record.created_at),
        )
        return self._finish(record, TxStatus.EXPIRED, error=error.to_dict(), expected_seq=record.latest.seq)

    async def find_receipt(self, record: RelayRecord) -> Receipt | None:
        """The receipt of whichever of the record's hashes mined (newest first), if any: as the round read
        them (`known_receipts`) when it read every one, else asked."""
        hashes = [a.tx_hash for a in reversed(record.attempts)]
        if all(h in self.known_receipts for h in hashes):
            return next((r for h in hashes if (r := self.known_receipts[h]) is not None), None)
        receipts = await self.chain.receipts(hashes)
        return next((receipt for receipt in receipts if receipt is not None), None)

    async def settle_used_nonce(self, record: RelayRecord) -> bool:
        """The record's nonce is used on chain: find which of our hashes mined, else someone else's did.
        True when one of ours did (or the record was already settled).

        Read afresh first (the caller's copy may predate a bump another task just sent), and `replaced` is a
        compare-and-set on the attempts too: a record that gained a hash since it was read is left for the
        next round, which looks for that hash's receipt, rather than settled against a stale list."""
        record = self._reload(record)
        if record.status.is_settled:
            return True  # settled meanwhile, and told then
        receipt = await self.find_receipt(record)
        if receipt is not None:
            await self.settle_receipt(record, receipt)
            return True
        if record.kind.is_ours:
            self.nonces.reconcile(record.sender, await self.chain.nonce(record.sender, "pending"))
        if await self.chain.nonce(record.sender, "latest") > record.nonce:
            error = NonceUsedElsewhereError(
                "a transaction that is not one of this record's used its nonce", nonce=record.nonce
            )
            replaced = self._finish(
                record, TxStatus.REPLACED, error=error.to_dict(), expected_seq=record.latest.seq
            )
            if replaced and record.kind.is_ours:  # only another holder of the key signs at our nonces
                reason = (
                    f"nonce {record.nonce} of {record.sender} was used by a transaction this journal never"
                    " signed: another journal (another relayer, or a wallet) sends with this key. Nothing"
                    " more is sent from it here; give each relayer its own signer, or several instances one"
                    " database"
                )
                log.error("signer stopped: %s", reason)
                self.nonces.stop(record.sender, reason)
        return False

    async def settle_receipts(self, found: list[tuple[RelayRecord, Receipt]]) -> None:
        """`settle_receipt` for many: the records whose call succeeded (the common case) moved to `mined`
        in ONE journal transaction; the others (reverted, no-ops) one by one."""
        moves: list[tuple[str, TxStatus, TxStatus, Mined | None]] = []
        settled: list[RelayRecord] = []
        for record, receipt in found:
            attempt = next(a for a in record.attempts if a.tx_hash == receipt.mined.tx_hash)
            if attempt.kind is AttemptKind.NOOP or not receipt.mined.success:
                await self.settle_receipt(record, receipt)
                continue
            events = decode_events(receipt.logs, self.chain.vault_address)
            mined = replace(
                receipt.mined, events=[{"event": e.name, "args": json_args(e.args)} for e in events]
            )
            moves.append((record.id, record.status, TxStatus.MINED, mined))
            settled.append(record)
        if not moves:
            return
        now = self.clock()
        for record, done in zip(settled, self.journal.transitions(moves, now=now), strict=True):
            if done:
                log.info(
                    "status record=%s from=%s to=%s nonce=%d",
                    record.id,
                    record.status,
                    TxStatus.MINED,
                    record.nonce,
                )
                self.metrics.observe_stage(Stage.MINED, since_first_broadcast(record, now))

    async def settle_receipt(self, record: RelayRecord, receipt: Receipt) -> None:
        """Record where a hash of `record` was mined and what it did."""
        mined = receipt.mined
        attempt = next(a for a in record.attempts if a.tx_hash == mined.tx_hash)
        if attempt.kind is AttemptKind.NOOP:
            if self._finish(record, record.noop_outcome or TxStatus.EXPIRED, mined=mined, error=record.error):
                self.metrics.nonce_gap_filled(record.sender)
        elif mined.success:
            events = decode_events(receipt.logs, self.chain.vault_address)
            mined = replace(mined, events=[{"event": e.name, "args": json_args(e.args)} for e in events])
            self._finish(record, TxStatus.MINED, mined=mined)
        else:
            reason = await why_reverted(self.chain, receipt, record)
            self._finish(record, TxStatus.FAILED, mined=mined, error=reason.to_dict())

    def _finish(
        self,
        record: RelayRecord,
        status: TxStatus,
        *,
        mined: Mined | None = None,
        error: dict[str, Any] | None = None,
        expected_seq: int | None = None,
    ) -> bool:
        done = self.journal.transition(
            record.id,
            record.status,
            status,
            now=self.clock(),
            mined=mined,
            error=error,
            expected_seq=expected_seq,
        )
        if done:
            log.info(
                "status record=%s from=%s to=%s nonce=%d", record.id, record.status, status, record.nonce
            )
            if status is TxStatus.MINED:
                self.metrics.observe_stage(Stage.MINED, since_first_broadcast(record, self.clock()))
            elif status.is_final:
                self.metrics.transaction_final(record.kind.value, status.value)
        return done

    # --- replacement and nonce filling --------------------------------------------------------------------

    async def replace(self, record: RelayRecord) -> bool:
        """Re-sign the record's call (or its no-op) at the same nonce with fees bumped by at least
        `fee_bump_bps` on both fees; the call is capped by the max fee, a no-op is not.

        Returns False (and notes it) when the cap leaves no room for a valid bump.
        """
        latest = record.latest
        is_noop = latest.kind is AttemptKind.NOOP
        current = (await self.chain.head_and_fees())[1]
        fees = bump_fees(
            attempt_fees(latest, legacy=current.is_legacy),
            current,
            self.settings.fee_bump_bps,
            cap_wei=None if is_noop else self.settings.max_fee_per_gas_wei,
        )
        if fees is None:
            error = FeeCapReachedError(
                "a further bump would exceed the max fee per gas; the transaction waits at its current fees",
                maxFeePerGasWei=str(self.settings.max_fee_per_gas_wei),
            )
            self.journal.set_error(record.id, record.status, error.to_dict(), now=self.clock())
            return False
        kind = AttemptKind.NOOP if is_noop else AttemptKind.BUMP
        bumped = await self._add_attempt(record, kind, fees)
        if bumped:
            self.metrics.fee_bump(record.sender)
        return bumped

    async def fill_nonce(self, record: RelayRecord, outcome: TxStatus, error: dict[str, Any]) -> bool:
        """Use the record's nonce with a zero-value self-transfer (fees bumped over every earlier attempt and
        allowed above the cap), so the nonce never stays a gap; the record ends `outcome` once it mines."""
        current = (await self.chain.head_and_fees())[1]
        previous = attempt_fees(record.latest, legacy=current.is_legacy)
        fees = bump_fees(previous, current, self.settings.fee_bump_bps, cap_wei=None)
        assert fees is not None  # no cap, so always a bump
        filling = await self._add_attempt(record, AttemptKind.NOOP, fees, outcome=outcome, error=error)
        if filling:
            self.metrics.nonce_gap_found(record.sender)
        return filling

    async def _add_attempt(
        self,
        record: RelayRecord,
        kind: AttemptKind,
        fees: Fees,
        *,
        outcome: TxStatus | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        signer = self.pool.get(record.sender)
        if signer is None:
            log.error(
                "record %s belongs to signer %s, which is no longer configured", record.id, record.sender
            )
            return False
        noop = kind is AttemptKind.NOOP
        gas = NOOP_GAS if noop else record.gas_limit
        async with self.nonces.hold(record.sender):
            tx = build_tx(
                chain_id=record.chain_id,
                nonce=record.nonce,
                to=record.sender if noop else record.to,
                data=b"" if noop else record.data,
                value_wei=0,
                gas=gas,
                fees=fees,
            )
            raw, tx_hash = signer.sign_transaction(tx)
            now = self.clock()
            attempt = Attempt(
                tx_hash,
                record.latest.seq + 1,
                kind,
                raw,
                fees.price_cap_wei,
                0 if fees.is_legacy else fees.max_priority_fee_per_gas_wei,
                now,
            )
            lease = self.leases.token(signer_lease(record.sender))
            if lease is None:
                return False  # another instance acts for this signer now
            try:
                with self.journal.write() as writer:
                    writer.fence(lease)
                    if writer.record_of(record.id) != (record.status, record.latest.seq):
                        return False  # the record moved on (another handler got there first): do nothing
                    writer.add_attempts(record.id, [attempt])
                    writer.raise_charge(record.id, record.chain_id, gas * fees.price_cap_wei)
                    if outcome is not None and error is not None:
                        writer.set_noop_outcome(record.id, outcome, error, now)
            except LeaseLost:
                return False
            log.info(
                "%s %s nonce=%d hash=%s maxFee=%d", record.id, kind, record.nonce, tx_hash, fees.price_cap_wei
            )
            await self.broadcast(self._reload(record), attempt)
        return True

    def _committed(self, record: RelayRecord) -> RelayRecord:
        """A just-committed record as the journal has it now, or as committed when the database does not
        answer: past the commit, a request is answered with its record, never with an error."""
        try:
            return self._reload(record)
        except StoreUnavailableError:
            return record

    def _committed_many(self, records: list[RelayRecord]) -> dict[str, RelayRecord]:
        """Just-committed records as the journal has them now (one read), by id; as committed when the
        database does not answer."""
        try:
            return {record.id: record for record in self.journal.get_many([r.id for r in records])}
        except StoreUnavailableError:
            return {record.id: record for record in records}

    def _reload(self, record: RelayRecord) -> RelayRecord:
        fresh = self.journal.get(record.id)
        assert fresh is not None  # records are never deleted
        return fresh


def _retrieved(future: asyncio.Future[RelayRecord]) -> None:
    if not future.cancelled():
        future.exception()


def _same_refusal(noted: dict[str, Any] | None, refusal: dict[str, Any]) -> bool:
    """Whether a record already notes this refusal: the same code and node kind (the node's message may
    differ in a detail, such as the nonce it expected, and is not a change of state)."""
    if noted is None:
        return False
    kind = (noted.get("details") or {}).get("nodeKind")
    return bool(noted.get("code") == refusal["code"] and kind == refusal["details"].get("nodeKind"))
