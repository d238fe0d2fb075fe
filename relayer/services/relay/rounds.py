"""`Rounds`: moves every unfinished relay record forward, after a restart and then every poll interval.

`resume()` reconciles nonces with the chain and re-sends journaled bytes; `tick()` reads receipts, confirms,
replaces, expires. Both re-read each record and leave every status change to the `Sender`'s compare-and-set
(or the journal's), so a round run twice, concurrently with a request, or after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from relayer.domain import sponsorship
from relayer.domain.blocks import ChainHead
from relayer.domain.records import RelayRecord
from relayer.domain.status import AttemptKind, TxStatus
from relayer.errors import (
    ChainUnavailableError,
    RelayerError,
    RequestExpiredBeforeSendError,
    SignerUnavailableError,
)
from relayer.services.metrics import Stage, since_first_broadcast
from relayer.services.periodic import Periodic
from relayer.services.relay.leases import RAW_LEASE, signer_lease
from relayer.services.relay.sender import RelayParts, Sender
from relayer.stores.journal_port import LeaseLost

log = logging.getLogger("relayer.relay")


@dataclass(eq=False)
class Rounds(RelayParts):
    """The relay's record-advancing half and its background loop; owned by `RelayService`, which resumes
    through it before taking a new nonce."""

    sender: Sender = field(kw_only=True)

    def __post_init__(self) -> None:
        self._loop = Periodic("relay-loop", self._round, self.settings.poll_interval_s)
        self._lease_loop = Periodic("relay-leases", self.leases.maintain, self.settings.lease_ttl_s / 3)
        self._intent_loop = Periodic("relay-intents", self._intents_round, self.settings.poll_interval_s)
        self._tick_lock = asyncio.Lock()
        self._resume_lock = asyncio.Lock()
        self._resumed = False
        self._resend: set[str] = set()
        """Senders (and `RAW_LEASE`) whose lease was just taken: their records are re-sent next round."""
        self._failing: dict[str, str] = {}
        """Record id -> the code its last round failed with (logged when it changes, not every round)."""
        self._stop_listening: Callable[[], None] | None = None

    async def resume(self) -> int:
        """After a (re)start: take the leases this instance can (each one's recovery reconciles the signer's
        nonces with the chain), then finish or re-send every unfinished record it now holds.

        Returns the number of unfinished records found.
        """
        await self.leases.maintain()
        unfinished = await self._advance_all(resending=True)
        self._resumed = True
        return unfinished

    async def recover(self, name: str) -> None:
        """Recovery for a lease just taken, before it is used (`Leases.on_acquired`): a signer's nonce floor
        from the chain, the check that no other journal uses it, and its records re-sent next round."""
        if name == RAW_LEASE:
            self._resend.add(RAW_LEASE)
            return
        if not name.startswith("signer:"):
            return
        address = name.removeprefix("signer:")
        latest = await self.chain.nonce(address, "latest")
        self.nonces.reconcile(address, await self.chain.nonce(address, "pending"))
        top = self.journal.nonce_summary().get(address, (None, 0))[0]
        if top is not None and latest > top + 1:
            reason = (
                f"the chain has mined nonce {latest - 1} of {address}, this journal knows up to {top}:"
                " another journal (another relayer, or a wallet) sends with this key. Nothing more is sent"
                " from it here; give each relayer its own signer, or several instances one database"
            )
            log.error("signer stopped: %s", reason)
            self.nonces.stop(address, reason)
        self._resend.add(address)

    async def send_intents(self) -> None:
        """Send the intents waiting for signers this instance holds, now (a call handed over as an intent
        found that this instance holds the lease after all)."""
        await self._intents_round()

    async def _intents_round(self) -> None:
        """Send every intent waiting for a signer this instance holds (journaled by another instance)."""
        waiting = self.journal.waiting_signers()
        for address in sorted(waiting):
            signer = self.pool.get(address)
            stopped = self.nonces.stopped(address)
            if signer is not None and stopped is not None:
                lease = self.leases.token(signer_lease(address))
                if lease is not None:
                    error = SignerUnavailableError(
                        "the signer this call was handed to is in use by another journal and was stopped",
                        signer=address,
                        reason=stopped,
                    )
                    await self.sender.refuse_intents(signer, lease, error)
                continue
            while signer is not None:
                lease = self.leases.token(signer_lease(address))
                if lease is None:
                    break
                try:
                    if not await self.sender.send_next_intent(signer, lease):
                        break
                except LeaseLost:
                    break

    def wake_intents(self) -> None:
        """Run the intents round now (a notification said one was journaled)."""
        self._intent_loop.wake()

    async def ensure_resumed(self) -> None:
        """Resume once before the first new nonce is taken, whoever gets there first (a request or the loop).

        Without this a request arriving before the loop's first round would allocate from a counter that has
        not seen the chain's nonces yet, and lose its transaction to an already used nonce.
        """
        if self._resumed:
            return
        async with self._resume_lock:
            if not self._resumed:
                await self.resume()

    async def tick(self) -> int:
        """One round of the background loop; returns how many records are still unfinished."""
        unfinished = await self._advance_all(resending=False)
        self.settle_charges()
        return unfinished

    def settle_charges(self) -> int:
        """Settle the sponsorship charge of every record that became final (what the chain took replaces the
        worst case reserved at signing; `relayer.domain.sponsorship.settlement`); returns how many. Any
        instance may do it: the journal settles each record once."""
        settlements = []
        for record, charge in self.journal.unsettled_charges():
            actual_wei, noop = sponsorship.final_cost(record)
            amounts = sponsorship.settlement(charge, actual_wei=actual_wei, noop=noop)
            settlements.append(sponsorship.Settlement(record.id, record.chain_id, charge, amounts))
        return self.journal.settle_charges(settlements)

    def _mine(self, record: RelayRecord) -> bool:
        """Whether this instance acts on `record` now: it holds the lease of its signer (or of raw ones)."""
        name = signer_lease(record.sender) if record.kind.is_ours else RAW_LEASE
        return self.leases.holds(name)

    async def _advance_all(self, *, resending: bool) -> int:
        await self.leases.maintain()  # renews what is due (cheap otherwise): a round acts on leases held now
        async with self._tick_lock:
            pending = [record for record in self.journal.pending() if self._mine(record)]
            self.metrics.relay_round(pending, self.pool.addresses)  # the gauges, from what the round read
            resend, self._resend = self._resend, set()
            if not pending:
                return 0
            senders = sorted({r.sender for r in pending if r.status is not TxStatus.MINED})
            try:  # the head and every sender's mined nonce, in one batch
                head, mined_nonce = await self.chain.head_and_nonces(senders)
            except ChainUnavailableError:
                log.warning("node unreachable; %d unfinished records wait for it", len(pending))
                return len(pending)
            for record in pending:
                again = resending or (record.sender if record.kind.is_ours else RAW_LEASE) in resend
                try:
                    await self._advance(record, head, mined_nonce, resending=again)
                except ChainUnavailableError:
                    log.warning("node unreachable; relay loop will retry")
                    break
                except RelayerError as exc:  # logged once per record and code, not once per round
                    if self._failing.get(record.id) != exc.code:
                        log.warning("record=%s code=%s reason=%s", record.id, exc.code, exc.message)
                    self._failing[record.id] = exc.code
                else:
                    self._failing.pop(record.id, None)
            live = {record.id for record in pending}
            self._failing = {rid: code for rid, code in self._failing.items() if rid in live}
            return sum(1 for record in self.journal.pending() if self._mine(record))

    async def _advance(
        self, record: RelayRecord, head: ChainHead, mined_nonce: dict[str, int], *, resending: bool
    ) -> None:
        if record.status is TxStatus.MINED:
            await self._confirm(record, head)
            return
        if record.sender not in mined_nonce:
            mined_nonce[record.sender] = await self.chain.nonce(record.sender, "latest")
        if mined_nonce[record.sender] > record.nonce:
            await self.sender.settle_used_nonce(
                record
            )  # one of our hashes mined, or a stranger's transaction
            fresh = self.journal.get(record.id)
            if fresh is not None and fresh.status is TxStatus.MINED:
                await self._confirm(fresh, head, just_seen=True)
            return
        if not record.kind.is_ours and self.clock() - record.created_at >= self.settings.raw_ttl_s:
            await self.sender.expire_raw(record)  # dropped, unless one of its hashes mined after all
            return
        if record.kind.is_ours:
            has_noop = any(a.kind is AttemptKind.NOOP for a in record.attempts)
            deadline = None if record.request is None else record.request.deadline
            if deadline is not None and head.timestamp >= deadline and not has_noop:
                error = RequestExpiredBeforeSendError(
                    "the signed request's deadline passed before it was mined; its nonce was freed (no-op)",
                    deadline=deadline,
                    timestamp=head.timestamp,
                ).to_dict()
                await self.sender.fill_nonce(record, TxStatus.EXPIRED, error)
                return
            if self.clock() - record.latest.created_at >= self.settings.replace_after_s:
                await self.sender.replace(record)
                return
        if resending or record.status is TxStatus.QUEUED or record.latest.broadcast_at is None:
            await self.sender.broadcast(record, record.latest)

    async def _confirm(self, record: RelayRecord, head: ChainHead, *, just_seen: bool = False) -> None:
        """Confirm once buried deep enough, re-reading the receipt to catch a reorg (unless it was read this
        very round, against the same head)."""
        assert record.mined is not None
        if head.number - record.mined.block_number + 1 < self.settings.confirmations:
            return
        if just_seen:
            self._confirmed(record)
            return
        receipt = await self.chain.receipt(record.mined.tx_hash)
        if receipt is None or receipt.mined.block_hash != record.mined.block_hash:
            log.warning("record %s: block %d was reorganized away", record.id, record.mined.block_number)
            self.journal.transition(
                record.id, TxStatus.MINED, TxStatus.SUBMITTED, now=self.clock(), clear_mined=True
            )
            return
        self._confirmed(record)

    def _confirmed(self, record: RelayRecord) -> None:
        now = self.clock()
        if self.journal.transition(record.id, TxStatus.MINED, TxStatus.CONFIRMED, now=now):
            self.metrics.transaction_final(record.kind.value, TxStatus.CONFIRMED.value)
            self.metrics.observe_stage(Stage.CONFIRMED, since_first_broadcast(record, now))

    # --- background loop ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background loops (tasks on the running event loop): the leases every third of their TTL;
        `resume()` once (unless a request already did), then `tick()` every poll interval; intents as they
        are journaled (woken by the database's notification, else every poll interval)."""
        self._lease_loop.start()
        self._loop.start()
        self._intent_loop.start()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # from the listener's thread
            loop.call_soon_threadsafe(self.wake_intents)

        self._stop_listening = self.journal.listen_intents(wake)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loops after their current round, and let the leases go for another instance to take."""
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        await self._intent_loop.stop(timeout_s)
        await self._loop.stop(timeout_s)
        await self._lease_loop.stop(timeout_s)
        await self.leases.release_all()

    async def _round(self) -> None:
        if self._resumed:
            await self.tick()
        else:
            await self.ensure_resumed()
