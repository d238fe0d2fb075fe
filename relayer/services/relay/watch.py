"""`RecordWatch`: callers waiting on records (a trading call for its receipt, a call handed to another
instance for the record it becomes) share one poll of the journal.

Each waiter polling the journal on its own costs one query per waiter per interval: with 64 concurrent trading
calls on PostgreSQL that is thousands of round trips a second, on the event loop. Here one task reads every
watched record in one query per interval (`Journal.get_many`) and wakes the waiters whose condition holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from relayer.domain.records import RelayRecord
from relayer.errors import RelayerError
from relayer.stores.journal_port import Journal


@dataclass
class _Waiter:
    done: Callable[[RelayRecord | None], bool]
    future: asyncio.Future[RelayRecord | None]


@dataclass(eq=False)
class RecordWatch:
    journal: Journal
    interval_s: float
    _waiters: dict[str, list[_Waiter]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def wait(
        self, record_id: str, done: Callable[[RelayRecord | None], bool], timeout_s: float
    ) -> RelayRecord | None:
        """The record (None: not journaled) once `done(record)` holds, or as it is after `timeout_s`."""
        current = self.journal.get(record_id)
        if done(current) or timeout_s <= 0:
            return current
        future: asyncio.Future[RelayRecord | None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(done, future)
        self._waiters.setdefault(record_id, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="relay-record-watch")
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return self.journal.get(record_id)
        finally:
            waiting = self._waiters.get(record_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._waiters.pop(record_id, None)

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.interval_s)
            ids = list(self._waiters)
            try:
                found = {record.id: record for record in self.journal.get_many(ids)}
            except RelayerError:  # the database is away: the waiters time out, or the next poll reads
                continue
            for record_id in ids:
                record = found.get(record_id)
                for waiter in list(self._waiters.get(record_id, [])):
                    if not waiter.future.done() and waiter.done(record):
                        waiter.future.set_result(record)
