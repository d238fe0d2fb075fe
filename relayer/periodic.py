"""A background thread that calls a function every few seconds until stopped (keeper, price feed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("relayer.periodic")


class Periodic:
    """Run `step()` every `interval_s` on a daemon thread; an exception is logged and the loop goes on.

    A failing step must not kill the loop (the node may be down for a while), and it must never take the
    process down with it.
    """

    def __init__(self, name: str, step: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.step()
            except Exception:
                log.exception("%s step failed; retrying in %.1fs", self.name, self.interval_s)
