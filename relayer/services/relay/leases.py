"""Leases: which instance may act for a signer, on raw transactions, or as the keeper, right now.

Several instances share one database; exactly one of them sends for each signer at a time. A lease is a row
(`relayer.stores.journal_port.Journal.acquire_lease`) with a holder, an expiry on the database's clock and an
epoch that grows at every takeover. We chose a lease row over a session advisory lock because it fences: every
write that numbers or signs for a signer checks the lease's (holder, epoch) inside its own transaction
(`JournalWriter.fence`), so an instance that stalled past its expiry (a pause, a cut connection) cannot write
after another took over, whatever its connection's state; its takeover time is bounded by the TTL, not by
how long the database takes to notice a dead TCP peer; and `/health` can show who holds what.

`Leases.maintain()` runs every third of the TTL: it renews what this instance holds and takes what is free
or expired, running recovery for it (`on_acquired`) before anything may use it. When its holder dies another
instance takes a lease within TTL + TTL/3 (at most 2 x TTL). This process stops using a lease on its own
clock a tenth of the TTL before the database would let it go, so it never acts on a lease it may have lost.
On SQLite only one process relays through the file (its relay lock), so leases are taken at once (`force`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relayer.domain.records import Lease
from relayer.errors import RelayerError
from relayer.stores.journal_port import Journal

log = logging.getLogger("relayer.leases")

RAW_LEASE = "raw"
"""Who tracks user-signed raw transactions (their receipts, re-broadcasts)."""
KEEPER_LEASE = "keeper"
"""Who runs the keeper's passes."""


SIGNER_PREFIX = "signer:"
PRESENCE_PREFIX = "instance:"
"""Each process holds `instance:<holder>` while it runs: the live instances, which share the signers."""


def signer_lease(address: str) -> str:
    return f"{SIGNER_PREFIX}{address}"


@dataclass(eq=False)
class Leases:
    """This instance's leases on the journal's bound chain; `holds(name)` says whether it may act now."""

    journal: Journal
    instance: str
    ttl_s: float
    names: list[str]
    on_acquired: Callable[[str], Awaitable[None]]
    """Recovery for a lease just taken (the signer's nonces reconciled, its records resent), run before the
    lease is used."""
    clock: Callable[[], float] = time.monotonic
    holder: str = field(init=False)
    _held: dict[str, Lease] = field(default_factory=dict, init=False)
    _valid_until: dict[str, float] = field(default_factory=dict, init=False)
    _renewed_at: dict[str, float] = field(default_factory=dict, init=False)
    _ran: bool = field(default=False, init=False)
    _round: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        # Unique per process: a restarted instance with the same name is another holder, which must wait
        # for the dead one's lease to expire (it cannot know that process is gone).
        self.holder = f"{self.instance}/{secrets.token_hex(3)}"
        # Its presence, held like any lease: live instances count these to share the signers out.
        self.names.insert(0, PRESENCE_PREFIX + self.holder)

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def token(self, name: str) -> Lease | None:
        """The lease to fence a write with, while this instance may still act on it (None: not held)."""
        lease = self._held.get(name)
        if lease is None or self.clock() >= self._valid_until[name]:
            return None
        return lease

    def holds(self, name: str) -> bool:
        return self.token(name) is not None

    def lapsed(self, name: str) -> bool:
        """Held by this instance, but past its validity on this clock (its renewal is overdue)."""
        return name in self._held and self.token(name) is None

    @property
    def ran(self) -> bool:
        """`maintain()` ran at least once (a fresh process has taken what it could)."""
        return self._ran

    async def maintain(self) -> list[str]:
        """Renew the held leases that are due, take the free ones (running their recovery first); returns the
        names taken this round. A database that does not answer leaves every lease to expire locally."""
        async with self._round:  # the lease loop and a keeper pass may both ask
            return await self._maintain()

    async def _maintain(self) -> list[str]:
        taken: list[str] = []
        force = not self.journal.shared
        share, shed = self._fair_share() if self.journal.shared else (len(self.names), False)
        for name in list(self.names):
            started = self.clock()
            try:
                held = self._held.get(name)
                mine = sum(1 for other in self._held if other.startswith(SIGNER_PREFIX))
                if name.startswith(SIGNER_PREFIX) and held is None and mine >= share:
                    continue  # its share is held: leave this one to an instance with fewer
                if name.startswith(SIGNER_PREFIX) and held is not None and (mine > share or shed):
                    log.info("lease %s handed back: %d signers held, a fair share is %d", name, mine, share)
                    self._drop(name)
                    self.journal.release_lease(held)
                    shed = False  # one a round: the others take it, and the next round looks again
                    continue
                if held is not None and started < self._valid_until[name]:
                    if started - self._renewed_at[name] < self.ttl_s / 3:
                        continue
                    renewed = self.journal.renew_lease(held, self.ttl_s)
                    if renewed is not None:
                        self._keep(name, renewed, started)
                        continue
                    log.warning("lease %s lost (epoch %d): another instance took it", name, held.epoch)
                self._drop(name)
                lease = self.journal.acquire_lease(name, self.holder, self.ttl_s, force=force)
            except RelayerError as exc:  # the database is away: what was held lapses on this clock
                log.warning("lease %s: %s (%s)", name, exc.code, exc.message)
                continue
            if lease is None:
                continue
            log.info("lease %s taken (epoch %d) by %s", name, lease.epoch, self.holder)
            try:
                await self.on_acquired(name)
            except RelayerError as exc:  # recovery could not run (node or database away): not ours to use
                log.warning("lease %s: recovery failed (%s: %s); letting it go", name, exc.code, exc.message)
                with contextlib.suppress(RelayerError):
                    self.journal.release_lease(lease)
                continue
            self._keep(name, lease, started)
            taken.append(name)
        self._ran = True
        return taken

    def _fair_share(self) -> tuple[int, bool]:
        """How many signer leases this instance may hold, and whether it holds more than its floor while a
        live instance (one holding a presence lease) holds fewer: the signers spread over the live
        instances, each taking at most the rounded-up share, so that together they always take them all,
        and none left with fewer than the rounded-down one while another has more."""
        signers = sum(1 for name in self.names if name.startswith(SIGNER_PREFIX))
        try:
            now = self.journal.database_time()
            leases = [lease for lease in self.journal.leases() if lease.expires_at > now]
        except RelayerError:
            return signers, False
        live = {lease.holder for lease in leases if lease.name.startswith(PRESENCE_PREFIX)} | {self.holder}
        counts = dict.fromkeys(live, 0)
        for lease in leases:
            if lease.name.startswith(SIGNER_PREFIX) and lease.holder in counts:
                counts[lease.holder] += 1
        floor = signers // len(live)
        below = any(count < floor for holder, count in counts.items() if holder != self.holder)
        return -(-signers // len(live)), below and counts[self.holder] > floor

    async def release_all(self) -> None:
        """Let every held lease go (a clean stop): another instance takes over without waiting for expiry."""
        for name in list(self._held):
            lease = self._held[name]
            self._drop(name)
            try:
                self.journal.release_lease(lease)
            except RelayerError as exc:
                log.warning("lease %s not released: %s", name, exc.code)

    def describe(self) -> list[dict[str, object]]:
        """Every lease of the chain as `/health` shows it."""
        now = self.journal.database_time()
        return [
            {
                "name": lease.name,
                "holder": lease.holder.split("/")[0],
                "epoch": lease.epoch,
                "expiresInS": round(lease.expires_at - now, 3),
                "mine": lease.holder == self.holder and self.holds(lease.name),
            }
            for lease in self.journal.leases()
            if not lease.name.startswith(PRESENCE_PREFIX) or lease.expires_at > now  # the live instances
        ]

    def _keep(self, name: str, lease: Lease, started: float) -> None:
        self._held[name] = lease
        self._renewed_at[name] = started
        self._valid_until[name] = started + self.ttl_s * 0.9

    def _drop(self, name: str) -> None:
        self._held.pop(name, None)
        self._valid_until.pop(name, None)
        self._renewed_at.pop(name, None)
