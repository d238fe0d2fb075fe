"""The background loop: when the first step runs, and that a failing step never ends the loop."""

from __future__ import annotations

import threading

import pytest

from relayer.errors import ChainUnavailableError
from relayer.services.periodic import Periodic


def test_run_first_steps_at_once_and_a_failing_step_does_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    third = threading.Event()

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ChainUnavailableError("node down")  # expected failure: a warning, the loop goes on
        if len(calls) == 2:
            raise RuntimeError("bug")  # unexpected: logged with its traceback, the loop goes on
        third.set()

    loop = Periodic("test-loop", step, interval_s=0.001)
    loop.start()
    assert third.wait(10), "the loop stopped after a failing step"
    loop.stop()

    assert not loop.running
    assert any("code=chain_unavailable" in r.message for r in caplog.records)
    assert any(r.exc_info for r in caplog.records if "round failed" in r.message)


def test_without_run_first_nothing_runs_before_the_first_interval() -> None:
    ran = threading.Event()
    loop = Periodic("test-loop", ran.set, interval_s=3_600, run_first=False)
    loop.start()
    loop.stop()  # stops while waiting out the first interval
    assert not ran.is_set()
