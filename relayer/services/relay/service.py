"""`RelayService`: the one relay core the REST routes, the CLI and the background loop adapt.

Requests in (a signed EIP-712 request, a user-signed raw transaction, or a vault call the relayer makes as an
operator), checked off-chain and simulated, then handed to the write-ahead `Sender`. `tick()` moves every
unfinished record forward (receipts, confirmations, replacement, expiry); `resume()` does the same after a
restart, re-sending journaled bytes first. Every step re-reads the record and compare-and-sets its status, so
running any of them twice, or after a crash, is harmless.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eth_utils.crypto import keccak

from relayer.chain.client import ChainClient
from relayer.config import RelaySettings
from relayer.domain import policy
from relayer.domain.blocks import ChainHead
from relayer.domain.fees import Fees, gas_limit_with_margin
from relayer.domain.policy import RawTransaction
from relayer.domain.records import RecordPage, RelayRecord, RequestRef
from relayer.domain.status import AttemptKind, RecordKind, TxStatus
from relayer.domain.typed_data import SignedRelay, TypedDataQuery, check_request, typed_data
from relayer.errors import (
    ChainUnavailableError,
    DisallowedTransactionError,
    DuplicateRequestError,
    IdempotencyConflictError,
    InvalidFieldError,
    InvalidNonceError,
    PositionNotFoundError,
    RelayerError,
    RelayerOutOfFundsError,
    RequestExpiredBeforeSendError,
    TransactionNotFoundError,
)
from relayer.services.periodic import Periodic
from relayer.services.relay.nonces import NonceAllocator
from relayer.services.relay.sender import CallPlan, Sender, SenderHooks
from relayer.services.relay.signers import Signer, SignerPool
from relayer.stores.journal import Journal, JournalConflict

log = logging.getLogger("relayer.relay")

_ZERO_ADDRESS = "0x" + "00" * 20
_HEX_BYTES = re.compile(r"0x(?:[0-9a-fA-F]{2})+", re.ASCII)  # exact: `bytes.fromhex` alone skips whitespace


PUBLIC_SCOPE = "public"
"""The idempotency-key namespace of anonymous callers (signed and raw relays)."""
KEEPER_SCOPE = "keeper"
"""The keeper's namespace: no client can name it, so no client can squat an order's key."""
MAX_IDEMPOTENCY_KEY_CHARS = 200


def scoped_key(scope: str, key: str | None) -> str | None:
    """`scope:key`: callers share one journal but never one key space (a client must not be able to take
    the key the keeper, or another account, will use).

    Raises:
        InvalidFieldError: a key that is empty or longer than 200 characters.
    """
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidFieldError("Idempotency-Key", f"must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return f"{scope}:{key}"


@dataclass(frozen=True)
class Submission:
    """A relay answer: the record, and whether this call created it (False: an idempotent repeat)."""

    record: RelayRecord
    created: bool


@dataclass(frozen=True)
class SignerStatus:
    """What an operator needs to see of one relayer signer."""

    address: str
    balance_wei: int
    low_balance: bool
    chain_latest_nonce: int
    chain_pending_nonce: int
    journal_next_nonce: int
    in_flight: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "balanceWei": str(self.balance_wei),
            "lowBalance": self.low_balance,
            "chainLatestNonce": self.chain_latest_nonce,
            "chainPendingNonce": self.chain_pending_nonce,
            "journalNextNonce": self.journal_next_nonce,
            "inFlight": self.in_flight,
        }


def request_hash(endpoint: str, body: Mapping[str, Any]) -> str:
    """A stable fingerprint of a request body for the idempotency rule (key order and spacing ignored)."""
    canonical = json.dumps(
        {"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CheckedCall:
    """A vault call the builder built, checked and simulated for `account`: the relay journals and sends it
    without checking, simulating or looking up its idempotency key again (the caller did all three)."""

    data: bytes
    kind: RecordKind
    gas_estimate: int
    """The builder's simulation (from the position's owner); the signer's gas limit adds the usual margin."""
    head: ChainHead
    fees: Fees
    """The block the builder read and the fees suggested for the next one (capped here by the relay's max)."""
    account: str
    fingerprint: str
    idempotency_key: str | None
    key_scope: str


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
    ) -> None:
        """`chain` is started (`await chain.start()`) before the first request."""
        self.settings = settings
        self.chain = chain
        self.vault = chain.vault_address
        self.pool = signers if isinstance(signers, SignerPool) else SignerPool(signers)
        self.journal = journal or Journal(settings.journal_path)
        self.nonces = NonceAllocator()
        self.clock = clock
        self.sender = Sender(self.journal, chain, self.pool, self.nonces, settings, clock=clock, hooks=hooks)
        self._loop = Periodic("relay-loop", self._round, settings.poll_interval_s)
        self._tick_lock = asyncio.Lock()
        self._resume_lock = asyncio.Lock()
        self._resumed = False

    # --- requests -----------------------------------------------------------------------------------------

    async def submit_signed(
        self, relay: SignedRelay, *, idempotency_key: str | None = None, key_scope: str = PUBLIC_SCOPE
    ) -> Submission:
        """Relay an EIP-712 close or set-trigger request signed by the position's owner (gasless for them).

        Raises:
            InvalidSignatureError, ExpiredRequestError, InvalidNonceError: per `check_request`.
            DuplicateRequestError: the same request is already being relayed.
            IdempotencyConflictError: the key was used with another request.
            RelayerError: the vault error the simulation reverted with; out of funds; node unreachable.
        """
        data = relay.calldata
        fingerprint = request_hash("signed", {"calldata": "0x" + data.hex()})
        idempotency_key, existing = await self._begin(key_scope, idempotency_key, fingerprint)
        if existing is not None:
            return existing
        request = relay.request
        owner = await self._owner_of(request.position_id)
        head, fees, expected_nonce = await self.chain.head_fees_and_request_nonce(owner)
        check_request(
            request,
            relay.signature,
            owner=owner,
            expected_nonce=expected_nonce,
            now_s=head.timestamp,
            chain_id=self.chain.chain_id,
            vault=self.vault,
        )
        signed = RequestRef(owner, request.nonce, request.deadline)
        return await self._relay_call(
            relay.kind, data, head, fees, fingerprint, idempotency_key, account=owner, request=signed
        )

    async def submit_call(
        self,
        data: bytes,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        key_scope: str = PUBLIC_SCOPE,
        account: str | None = None,
    ) -> Submission:
        """Relay a vault call signed and paid by a relayer signer (e.g. acting as an approved operator) for
        `account`.

        Raises:
            DisallowedTransactionError: the call is not an allowed vault function.
            RelayerError: as `submit_signed`.
        """
        fingerprint = fingerprint or request_hash("call", {"data": "0x" + data.hex()})
        idempotency_key, existing = await self._begin(key_scope, idempotency_key, fingerprint)
        if existing is not None:
            return existing
        policy.check_call(self.vault, data, vault=self.vault)
        head, fees = await self.chain.head_and_fees()
        return await self._relay_call(
            policy.call_kind(data), data, head, fees, fingerprint, idempotency_key, account=account
        )

    async def submit_checked(self, call: CheckedCall) -> Submission:
        """Journal and send a call the builder already checked and simulated (see `CheckedCall`).

        Raises:
            RelayerOutOfFundsError: no signer can pay for it.
            IdempotencyConflictError: the key was taken meanwhile by another request.
        """
        await self._ensure_resumed()
        key = scoped_key(call.key_scope, call.idempotency_key)
        fees = policy.cap_fees(
            call.fees, self.settings.max_fee_per_gas_wei, base_fee_wei=call.head.base_fee_wei
        )
        gas_limit = gas_limit_with_margin(call.gas_estimate)
        signer = await self._funded_signer(gas_limit, fees.price_cap_wei)
        plan = CallPlan(
            kind=call.kind,
            to=self.vault,
            data=call.data,
            gas_limit=gas_limit,
            fees=fees,
            request_hash=call.fingerprint,
            idempotency_key=key,
            account=call.account,
        )
        try:
            record = await self.sender.journal_and_send(signer, plan)
        except JournalConflict as conflict:
            return self._after_conflict(conflict, key, call.fingerprint)
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
            RelayerError: the vault error the simulation reverted with; node unreachable.
        """
        raw = tx.raw
        fingerprint = request_hash("raw", {"transaction": "0x" + raw.hex()})
        idempotency_key, existing = await self._begin(key_scope, idempotency_key, fingerprint)
        if existing is not None:
            return existing
        policy.check_raw(tx, vault=self.vault, chain_id=self.chain.chain_id)
        raw_hash = "0x" + keccak(raw).hex()
        known = self.journal.by_hash(raw_hash)
        if known is not None:
            return Submission(known, False)  # the same bytes: one record, never a second transaction
        used = await self.chain.nonce(tx.sender, "latest")
        if tx.nonce < used:
            raise InvalidNonceError(
                f"nonce {tx.nonce} of {tx.sender} is already used (replayed)",
                owner=tx.sender,
                expected=used,
                got=tx.nonce,
            )
        worst_cost_wei = tx.gas_limit * tx.max_fee_per_gas_wei + tx.value_wei
        balance = await self.chain.balance(tx.sender)
        if balance < worst_cost_wei:  # the node would refuse it; say so now, not as the relayer's problem
            raise DisallowedTransactionError(
                "the transaction's sender cannot pay for its gas and value",
                sender=tx.sender,
                balanceWei=str(balance),
                maxCostWei=str(worst_cost_wei),
            )
        gas = await self.chain.estimate_gas(tx.sender, self.vault, tx.data, tx.value_wei)
        if tx.gas_limit < gas:
            raise DisallowedTransactionError(
                "the transaction's gas limit is below what the call needs",
                gasLimit=tx.gas_limit,
                estimate=gas,
            )
        try:
            record = await self.sender.journal_raw(
                tx, request_hash=fingerprint, idempotency_key=idempotency_key
            )
        except JournalConflict as conflict:
            return self._after_conflict(conflict, idempotency_key, fingerprint, raw_hash=raw_hash)
        return Submission(record, True)

    async def typed_data_for(self, query: TypedDataQuery) -> dict[str, Any]:
        """The EIP-712 payload to sign for a close or set-trigger request (`parse_typed_data_query`), with
        the deadline (latest block + request TTL) and nonce (the owner's next vault nonce) filled in when
        not given.

        Raises:
            PositionNotFoundError: no position has this id.
        """
        request = query.request
        owner = await self._owner_of(request.position_id)
        if not query.deadline_given:
            request = replace(
                request, deadline=(await self.chain.head()).timestamp + self.settings.request_ttl_s
            )
        if not query.nonce_given:
            request = replace(request, nonce=await self.chain.request_nonce(owner))
        return {
            "kind": request.kind.value,
            "owner": owner,
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
        """Records, newest first. Raises: InvalidFieldError per `RecordPage.parse`."""
        page = RecordPage.parse(status, limit, offset)
        return self.journal.records(page.status, limit=page.limit, offset=page.offset)

    # --- the relay pipeline -------------------------------------------------------------------------------

    def find_idempotent(
        self, idempotency_key: str | None, fingerprint: str, *, key_scope: str = PUBLIC_SCOPE
    ) -> Submission | None:
        """The record an earlier request with this key made, before any chain work (None: a new key).

        Raises:
            IdempotencyConflictError: the key was used with a different request.
        """
        return self._idempotent(scoped_key(key_scope, idempotency_key), fingerprint)

    async def _begin(
        self, key_scope: str, idempotency_key: str | None, fingerprint: str
    ) -> tuple[str | None, Submission | None]:
        """Every submission's first steps: the relay resumed, the key scoped, an earlier answer looked up.

        Returns the scoped key, and the earlier submission with this key and request (None: a new one).

        Raises:
            InvalidFieldError: a malformed key.
            IdempotencyConflictError: the key was used with another request.
        """
        await self._ensure_resumed()
        key = scoped_key(key_scope, idempotency_key)
        return key, self._idempotent(key, fingerprint)

    def _idempotent(self, key: str | None, fingerprint: str) -> Submission | None:
        if key is None:
            return None
        existing = self.journal.by_idempotency_key(key)
        if existing is None:
            return None
        if existing.request_hash != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was used with a different request", idempotencyKey=key, id=existing.id
            )
        return Submission(existing, False)

    def _after_conflict(
        self, conflict: JournalConflict, key: str | None, fingerprint: str, *, raw_hash: str | None = None
    ) -> Submission:
        if conflict.constraint == "idempotency_key" and key is not None:
            again = self._idempotent(key, fingerprint)
            if again is not None:
                return again
        if conflict.constraint == "request_owner":
            raise DuplicateRequestError("this signed request is already being relayed (same owner and nonce)")
        if conflict.constraint == "tx_hash" and raw_hash is not None:
            known = self.journal.by_hash(raw_hash)
            if known is not None:
                return Submission(known, False)
        raise conflict

    async def _relay_call(
        self,
        kind: RecordKind,
        data: bytes,
        head: ChainHead,
        fees: Fees,
        fingerprint: str,
        idempotency_key: str | None,
        *,
        account: str | None,
        request: RequestRef | None = None,
    ) -> Submission:
        """Simulate from a signer that can pay, then journal and send. Never sends what did not simulate."""
        fees = policy.cap_fees(fees, self.settings.max_fee_per_gas_wei, base_fee_wei=head.base_fee_wei)
        signer, gas_limit = await self._pick_signer(data, fees.price_cap_wei)
        plan = CallPlan(
            kind=kind,
            to=self.vault,
            data=data,
            gas_limit=gas_limit,
            fees=fees,
            request_hash=fingerprint,
            idempotency_key=idempotency_key,
            account=account,
            request=request,
        )
        try:
            record = await self.sender.journal_and_send(signer, plan)
        except JournalConflict as conflict:
            return self._after_conflict(conflict, idempotency_key, fingerprint)
        return Submission(record, True)

    async def _funded_signer(self, gas_limit: int, price_cap_wei: int) -> Signer:
        """The next signer (round-robin) whose balance covers `gas_limit` gas at the cap."""
        shortfall: dict[str, str] = {}
        for signer in self.pool.rotation():
            balance = await self.chain.balance(signer.address)
            if balance >= gas_limit * price_cap_wei:
                return signer
            shortfall[signer.address] = str(balance)
        raise RelayerOutOfFundsError("no relayer signer can pay for this transaction", balancesWei=shortfall)

    async def _pick_signer(self, data: bytes, price_cap_wei: int) -> tuple[Signer, int]:
        """The next signer (round-robin) whose balance covers the worst-case cost, and the gas limit: each
        signer's balance and simulation (`eth_estimateGas` from it) asked in one batch."""
        shortfall: dict[str, str] = {}
        for signer in self.pool.rotation():
            try:
                # Estimation is the simulation: a revert raises the decoded vault error, nothing is signed.
                balance, estimate = await self.chain.balance_and_estimate(signer.address, self.vault, data)
            except RelayerOutOfFundsError as error:
                shortfall[signer.address] = str(error.details.get("balanceWei", "0"))
                continue
            gas_limit = gas_limit_with_margin(estimate)
            if balance >= gas_limit * price_cap_wei:  # the worst case: every unit of gas at the cap
                return signer, gas_limit
            shortfall[signer.address] = str(balance)
        raise RelayerOutOfFundsError("no relayer signer can pay for this transaction", balancesWei=shortfall)

    async def _owner_of(self, position_id: bytes) -> str:
        """The owner a signed request about `position_id` must come from.

        Raises:
            PositionNotFoundError: no position ever had this id.
        """
        owner = await self.chain.position_owner(position_id)
        if owner == _ZERO_ADDRESS:
            raise PositionNotFoundError.unknown(position_id)
        return owner

    # --- moving records forward ---------------------------------------------------------------------------

    async def resume(self) -> int:
        """After a (re)start: reconcile nonces with the chain, then finish or re-send every unfinished record.

        Returns the number of unfinished records found.
        """
        for address in self.pool.addresses:
            self.nonces.reconcile(address, await self.chain.nonce(address, "pending"))
        unfinished = await self._advance_all(resending=True)
        self._resumed = True
        return unfinished

    async def _ensure_resumed(self) -> None:
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
            await self._ensure_resumed()

    # --- operators ----------------------------------------------------------------------------------------

    async def signers_status(self) -> builtins.list[SignerStatus]:
        """Balances and nonces (chain latest / pending vs the journal's next) of every signer."""
        summary = self.journal.nonce_summary()
        statuses = []
        for address in self.pool.addresses:
            balance = await self.chain.balance(address)
            top, live = summary.get(address, (-1, 0))
            pending_nonce = await self.chain.nonce(address, "pending")
            statuses.append(
                SignerStatus(
                    address=address,
                    balance_wei=balance,
                    low_balance=policy.is_low_balance(balance, self.settings.min_signer_balance_wei),
                    chain_latest_nonce=await self.chain.nonce(address, "latest"),
                    chain_pending_nonce=pending_nonce,
                    journal_next_nonce=max(top + 1, self.nonces.floor(address)),
                    in_flight=live,
                )
            )
        return statuses

    async def health(self) -> dict[str, Any]:
        """For the app's `/health`: signer balances with a low-balance alert, and the unfinished count."""
        signers = await self.signers_status()
        return {
            "signers": [s.to_dict() for s in signers],
            "lowBalance": any(s.low_balance for s in signers),
            "unfinished": len(self.journal.pending()),
        }
