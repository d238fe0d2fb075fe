"""Per-signer nonce allocation: the journal is the counter, the chain is the floor.

The next nonce of a signer is `max(chain floor, highest journaled nonce + 1)`, computed inside the journal's
write transaction that also inserts the record using it, under a per-signer lock held until the signed bytes
are handed to the node. So the nonce cannot advance without its record being saved (the bug that jammed the
OpenZeppelin relayer for good), two requests can never get the same nonce, and a signer's transactions reach
the node in nonce order. The floor is the chain's pending count, read at start and after "nonce too low".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


def next_nonce(chain_floor: int, journal_max: int | None) -> int:
    """The nonce the next record of a signer takes.

    >>> next_nonce(5, None)
    5
    >>> next_nonce(5, 9)
    10
    >>> next_nonce(12, 9)
    12
    """
    return chain_floor if journal_max is None else max(chain_floor, journal_max + 1)


class NonceAllocator:
    """Locks and chain floors per signer; the journal supplies the highest nonce already used."""

    def __init__(self, on_allocate: Callable[[str, int], None] | None = None) -> None:
        """`on_allocate(signer, nonce)` is told of every nonce handed out (`SignerSlots.numbered`)."""
        self._on_allocate = on_allocate
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, asyncio.Task[object] | None] = {}
        self._floors: dict[str, int] = {}
        self._stopped: dict[str, str] = {}
        self._guard = threading.Lock()

    @asynccontextmanager
    async def hold(self, signer: str) -> AsyncIterator[None]:
        """Exclusive use of `signer`'s nonce sequence: allocate, journal and broadcast inside. Reentrant
        within one task."""
        task = asyncio.current_task()
        if self._holders.get(signer) is task:  # reentrant: a refusal handled inside a send fills the nonce
            yield
            return
        with self._guard:
            lock = self._locks.setdefault(signer, asyncio.Lock())
        async with lock:
            self._holders[signer] = task
            try:
                yield
            finally:
                del self._holders[signer]

    def busy(self, signer: str) -> bool:
        """Whether some task holds `signer`'s sequence now (sending, or handling a refusal)."""
        return signer in self._holders

    def reconcile(self, signer: str, chain_pending_nonce: int) -> None:
        """Raise the floor to the chain's pending nonce (never lowers it: journaled nonces stay taken)."""
        with self._guard:
            self._floors[signer] = max(self._floors.get(signer, 0), chain_pending_nonce)

    def stop(self, signer: str, reason: str) -> None:
        """Never number another nonce of `signer` in this process: another journal uses it (its nonces on
        chain are ahead of what this one knows), and two numberings of one sequence send things twice."""
        with self._guard:
            self._stopped.setdefault(signer, reason)

    def stopped(self, signer: str) -> str | None:
        """Why `signer` was stopped (None: it was not)."""
        with self._guard:
            return self._stopped.get(signer)

    def floor(self, signer: str) -> int:
        with self._guard:
            return self._floors.get(signer, 0)

    def allocate(self, signer: str, journal_max: int | None) -> int:
        """The next nonce; call while holding `hold(signer)` inside the journal transaction that uses it."""
        nonce = next_nonce(self.floor(signer), journal_max)
        if self._on_allocate is not None:
            self._on_allocate(signer, nonce)
        return nonce
