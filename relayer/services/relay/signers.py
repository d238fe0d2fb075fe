"""The relayer's own accounts: loaded once from env vars or encrypted keystores, never shown.

`RELAYER_SIGNER_KEY` (or `RELAYER_SIGNER_KEYSTORE` + `RELAYER_SIGNER_KEYSTORE_PASSWORD`) gives one signer;
`RELAYER_SIGNER_1_KEY`, `RELAYER_SIGNER_2_KEYSTORE`, ... add more (numbered from 1, stopping at the first
missing number). A call goes to the signer with the fewest transactions in flight (round-robin among equals),
skipping any that cannot pay or has its limit in flight (`SignerSlots`). A `Signer`'s repr and str are its
address only, so no key can leak into a log line, an error or the journal by accident.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from relayer.chain.accounts import load_account
from relayer.chain.signing import TxSigner
from relayer.errors import ConfigurationError, RelayQueueFullError

ENV_PREFIX = "RELAYER_SIGNER"
MAX_NUMBERED_SIGNERS = 64
"""`RELAYER_SIGNER_1_*` .. `RELAYER_SIGNER_64_*`."""


class Signer:
    """One relayer account: its address, and signing; the key stays inside the `LocalAccount`."""

    __slots__ = ("_account", "_signer", "address")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._signer = TxSigner(account)
        self.address: str = to_checksum_address(account.address)

    def sign_transaction(self, tx: dict[str, Any]) -> tuple[bytes, str]:
        """(raw signed bytes, 0x transaction hash) of `tx` (`relayer.chain.signing`: eth-account's bytes)."""
        return self._signer.sign(tx)

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__


def load_signers(env: Mapping[str, str] | None = None) -> list[Signer]:
    """Every signer configured in the environment (possibly none: the caller decides on a fallback).

    Raises:
        ConfigurationError: for a malformed key, an undecryptable keystore or the same account twice.
    """
    source = dict(os.environ if env is None else env)
    accounts: list[LocalAccount] = []
    first = load_account(ENV_PREFIX, env=source)
    if first is not None:
        accounts.append(first)
    for number in range(1, MAX_NUMBERED_SIGNERS + 1):
        account = load_account(f"{ENV_PREFIX}_{number}", env=source)
        if account is None:
            break
        accounts.append(account)
    signers = [Signer(account) for account in accounts]
    if len({signer.address for signer in signers}) != len(signers):
        raise ConfigurationError("the same relayer signer is configured twice")
    return signers


class SignerPool:
    """The configured signers, handed out round-robin so work spreads across them."""

    def __init__(self, signers: Sequence[Signer]) -> None:
        if not signers:
            raise ConfigurationError(
                "no relayer signer: set RELAYER_SIGNER_KEY or RELAYER_SIGNER_KEYSTORE (+ _PASSWORD)"
            )
        self._signers = {signer.address: signer for signer in signers}
        self._order = list(self._signers)
        self._next = itertools.count()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return list(self._order)

    def get(self, address: str) -> Signer | None:
        return self._signers.get(to_checksum_address(address))

    def rotation(self) -> list[Signer]:
        """All signers, starting with the next one in turn (the caller takes the first that can pay)."""
        with self._lock:
            start = next(self._next) % len(self._order)
        return [self._signers[self._order[(start + i) % len(self._order)]] for i in range(len(self._order))]


class SignersFull(Exception):  # noqa: N818 - a signal between the signer choice and its caller, not an error
    """Every signer that could take the call has its in-flight limit reached: the call waits for a slot."""


class SignerSlots:
    """How many transactions each signer has in flight, and the bounded queue of calls waiting for a slot.

    In flight means journaled and not yet mined: the nonces this instance knows are taken (numbered here, or
    unmined records each relay round reads) above the chain's mined nonce, plus the calls holding a slot
    that are not numbered yet. Nonces, not records, because that is what a node's pool holds per account (a
    fee bump or a no-op filler reuses its nonce). The lease holder's count is exact: only it numbers a
    signer's nonces, and a call handed over to it as an intent takes one of its slots before it is numbered
    (`Rounds`). A signer another instance holds is counted from the journal as the last round read it (for
    choosing).

    Calls that find every signer full wait here, first in first out, at most `queue_limit` of them and each
    until its deadline; beyond either they get `RelayQueueFullError`. Everything runs on the event loop.
    """

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self._open: dict[str, set[int]] = {}
        """Taken nonces not known to be mined, per signer."""
        self._taken: dict[str, int] = {}
        """Slots held by calls not numbered yet."""
        self._numbered: dict[str, int] = {}
        """Slots whose call was numbered (its nonce is in `_open`) and has not settled yet."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        """Calls waiting for a slot, by ticket."""
        self._tickets = 0

    def in_flight(self, address: str) -> int:
        return len(self._open.get(address, ())) + self._taken.get(address, 0)

    def counts(self, addresses: Sequence[str]) -> dict[str, int]:
        return {address: self.in_flight(address) for address in addresses}

    def has_room(self, address: str) -> bool:
        return self.in_flight(address) < self.limit

    def take(self, address: str) -> bool:
        """Take a slot of `address` (False: it is full); `settle` gives it back, or leaves its nonce."""
        if not self.has_room(address):
            return False
        self._taken[address] = self._taken.get(address, 0) + 1
        return True

    def numbered(self, address: str, nonce: int) -> None:
        """`nonce` of `address` was handed out (`NonceAllocator.allocate`, inside the journal transaction):
        one slot held by a call becomes that nonce, at once, so a round reading the record meanwhile does not
        count it twice. A transaction that rolls back leaves the nonce here until a round reads it absent."""
        if self._taken.get(address, 0) > 0:
            self._taken[address] -= 1
            self._numbered[address] = self._numbered.get(address, 0) + 1
        self._open.setdefault(address, set()).add(nonce)

    def settle(self, address: str, nonce: int | None = None) -> None:
        """A call that held a slot of `address` is done: journaled at `nonce`, or not at all (None: its slot
        is free again, unless it was numbered and rolled back; the next round drops that nonce)."""
        if self._numbered.get(address, 0) > 0:
            self._numbered[address] -= 1
            return
        self._taken[address] -= 1
        if nonce is not None:
            self._open.setdefault(address, set()).add(nonce)
        else:
            self._wake()

    @contextmanager
    def lent(self, address: str) -> Iterator[None]:
        """A slot of `address` a call holds, lent while its own intent is sent here (this instance holds the
        lease after all): the intents round takes it instead of waiting behind the call for another."""
        self._taken[address] -= 1
        try:
            yield
        finally:
            self._taken[address] += 1

    def mark(self) -> dict[str, set[int]]:
        """Before a round reads the journal: the nonces known open now (`recount`)."""
        return {address: set(nonces) for address, nonces in self._open.items()}

    def recount(
        self, address: str, unmined: set[int], mined_nonce: int | None, before: dict[str, set[int]]
    ) -> None:
        """What a round read of `address`: the nonces of its unmined records, and the chain's mined nonce
        (None: not read). Nonces known before the read that it no longer shows unmined are done (mined,
        settled, or rolled back); those numbered since are kept. Waiters are woken by `wake_for_room` once
        the round has recounted every signer."""
        current = self._open.get(address, set())
        current = (current - (before.get(address, set()) - unmined)) | unmined
        if mined_nonce is not None:
            current = {nonce for nonce in current if nonce >= mined_nonce}
        self._open[address] = current

    def wake_for_room(self, addresses: Sequence[str]) -> None:
        """Wake as many waiting calls as `addresses` have free slots (after a round recounted them)."""
        self._wake(sum(max(0, self.limit - self.in_flight(address)) for address in addresses))

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    def ticket(self) -> int:
        """A call's place in the queue, kept when it is woken and finds no slot (it waits again there)."""
        self._tickets += 1
        return self._tickets

    async def wait(self, deadline: float, ticket: int, *, poll_s: float, again: bool = False) -> bool:
        """Wait (until `deadline`, on `time.monotonic()`) for a slot to free up, in `ticket`'s place; `again`:
        a call already in the queue (its limit was checked when it joined). True when woken for a slot; False
        after `poll_s` without one (the caller has the slots recounted, and waits again).

        Raises:
            RelayQueueFullError: the queue is full, or the deadline passed.
        """
        if not again and len(self._waiters) >= self.queue_limit:
            raise RelayQueueFullError(
                "every relayer signer has its limit of transactions in flight and the queue is full: retry"
                " shortly",
                maxInFlightPerSigner=self.limit,
                queueLimit=self.queue_limit,
            )
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise self._timed_out()
        waiter = (ticket, asyncio.get_running_loop().create_future())
        bisect.insort(self._waiters, waiter, key=lambda entry: entry[0])
        try:
            await asyncio.wait_for(waiter[1], min(remaining_s, poll_s))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise self._timed_out() from None
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def _timed_out(self) -> RelayQueueFullError:
        return RelayQueueFullError(
            "no relayer signer freed a slot in time (every one has its limit of transactions in flight):"
            " retry shortly",
            maxInFlightPerSigner=self.limit,
            queueLimit=self.queue_limit,
        )

    def _wake(self, count: int = 1) -> None:
        """`count` slots freed: the first `count` waiters try again (one finding none waits in its place)."""
        while count > 0 and self._waiters:
            _, future = self._waiters.pop(0)
            if not future.done():
                future.set_result(None)
                count -= 1
