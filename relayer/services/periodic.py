"""A background task that awaits a step every few seconds until stopped (relay loop, keeper, price feed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relayer.errors import RelayerError

log = logging.getLogger("relayer.periodic")


class Periodic:
    """Await `step()` every `interval_s` on an asyncio task until `stop()`: at once when started, or after
    the first interval with `run_first=False`.

    A failing step must not kill the loop (the node may be down for a while) nor take the process with it: an
    expected failure (`RelayerError`, e.g. `chain_unavailable`) is logged as a warning with its code, anything
    else (a bug) with its traceback, and the next round runs on time.
    """

    def __init__(
        self, name: str, step: Callable[[], Awaitable[object]], interval_s: float, *, run_first: bool = True
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.run_first = run_first
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._nudged = asyncio.Event()
        """Set by `stop()` or `wake()`: ends the current wait early."""

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start on the running event loop (call from async code)."""
        if self._task is None:
            self._stopping = asyncio.Event()
            self._nudged = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current round; past `timeout_s` the round is cancelled at its next await (safe:
        the relay journals before it sends and compare-and-sets every change, as after a crash)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._nudged.set()
        try:
            await asyncio.wait_for(task, timeout_s)
        except TimeoutError:
            pass  # `wait_for` cancelled the round at its next await
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled: let it be

    async def _run(self) -> None:
        if not self.run_first and await self._wait():
            return
        while not self._stopping.is_set():
            try:
                await self.step()
            except RelayerError as exc:
                log.warning("loop=%s code=%s reason=%s", self.name, exc.code, exc.message)
            except Exception:
                log.exception("loop=%s round failed; retrying in %.2fs", self.name, self.interval_s)
            if await self._wait():
                return

    def wake(self) -> None:
        """Run the next round now instead of at the end of the current wait (call on the loop's thread)."""
        self._nudged.set()

    async def _wait(self) -> bool:
        """Sleep one interval, or until woken; True when `stop()` was called meanwhile."""
        try:
            await asyncio.wait_for(self._nudged.wait(), self.interval_s)
        except TimeoutError:
            return False
        self._nudged.clear()
        return self._stopping.is_set()
