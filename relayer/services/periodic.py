"""A background thread that calls a function every few seconds until stopped (relay loop, keeper, feed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from relayer.errors import RelayerError

log = logging.getLogger("relayer.periodic")


class Periodic:
    """Run `step()` every `interval_s` on a daemon thread until `stop()`: at once when started, or after the
    first interval with `run_first=False`.

    A failing step must not kill the loop (the node may be down for a while) nor take the process with it: an
    expected failure (`RelayerError`, e.g. `chain_unavailable`) is logged as a warning with its code, anything
    else (a bug) with its traceback, and the next round runs on time.
    """

    def __init__(
        self, name: str, step: Callable[[], object], interval_s: float, *, run_first: bool = True
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.run_first = run_first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        if not self.run_first and self._stop.wait(self.interval_s):
            return
        while not self._stop.is_set():
            try:
                self.step()
            except RelayerError as exc:
                log.warning("loop=%s code=%s reason=%s", self.name, exc.code, exc.message)
            except Exception:
                log.exception("loop=%s round failed; retrying in %.2fs", self.name, self.interval_s)
            self._stop.wait(self.interval_s)
