"""`Rounds`: moves every unfinished relay record forward, after a restart and then every poll interval.

`resume()` reconciles nonces with the chain and re-sends journaled bytes; `tick()` reads receipts, confirms,
replaces, expires. Both re-read each record and leave every status change to the `Sender`'s compare-and-set
(or the journal's), so a round run twice, concurrently with a request, or after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from relayer.domain.blocks import ChainHead
from relayer.domain.records import RelayRecord
from relayer.domain.status import AttemptKind, TxStatus
from relayer.errors import ChainUnavailableError, RelayerError, RequestExpiredBeforeSendError
from relayer.services.periodic import Periodic
from relayer.services.relay.sender import RelayParts, Sender

log = logging.getLogger("relayer.relay")


@dataclass(eq=False)
class Rounds(RelayParts):
    """The relay's record-advancing half and its background loop; owned by `RelayService`, which resumes
    through it before taking a new nonce."""

    sender: Sender = field(kw_only=True)

    def __post_init__(self) -> None:
        self._loop = Periodic("relay-loop", self._round, self.settings.poll_interval_s)
        self._tick_lock = asyncio.Lock()
        self._resume_lock = asyncio.Lock()
        self._resumed = False

    async def resume(self) -> int:
        """After a (re)start: reconcile nonces with the chain, then finish or re-send every unfinished record.

        Returns the number of unfinished records found.
        """
        for address in self.pool.addresses:
            self.nonces.reconcile(address, await self.chain.nonce(address, "pending"))
        unfinished = await self._advance_all(resending=True)
        self._resumed = True
        return unfinished

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
        return await self._advance_all(resending=False)

    async def _advance_all(self, *, resending: bool) -> int:
        async with self._tick_lock:
            pending = self.journal.pending()
            if not pending:
                return 0
            senders = sorted({r.sender for r in pending if r.status is not TxStatus.MINED})
            try:  # the head and every sender's mined nonce, in one batch
                head, mined_nonce = await self.chain.head_and_nonces(senders)
            except ChainUnavailableError:
                log.warning("node unreachable; %d unfinished records wait for it", len(pending))
                return len(pending)
            for record in pending:
                try:
                    await self._advance(record, head, mined_nonce, resending=resending)
                except ChainUnavailableError:
                    log.warning("node unreachable; relay loop will retry")
                    break
                except RelayerError as exc:
                    log.warning("record=%s code=%s reason=%s", record.id, exc.code, exc.message)
            return len(self.journal.pending())

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
            self.journal.transition(record.id, TxStatus.MINED, TxStatus.CONFIRMED, now=self.clock())
            return
        receipt = await self.chain.receipt(record.mined.tx_hash)
        if receipt is None or receipt.mined.block_hash != record.mined.block_hash:
            log.warning("record %s: block %d was reorganized away", record.id, record.mined.block_number)
            self.journal.transition(
                record.id, TxStatus.MINED, TxStatus.SUBMITTED, now=self.clock(), clear_mined=True
            )
            return
        self.journal.transition(record.id, TxStatus.MINED, TxStatus.CONFIRMED, now=self.clock())

    # --- background loop ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background loop (a task on the running event loop): `resume()` once (unless a request
        already did), then `tick()` every poll interval."""
        self._loop.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop after its current round."""
        await self._loop.stop(timeout_s)

    async def _round(self) -> None:
        if self._resumed:
            await self.tick()
        else:
            await self.ensure_resumed()
