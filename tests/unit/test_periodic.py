"""The background loop (an asyncio task): when the first step runs, that a failing step never ends the loop,
and that `stop()` ends it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from anyio.from_thread import BlockingPortal

from relayer.errors import ChainUnavailableError
from relayer.services.periodic import Periodic
from tests.blocking import Blocking


def test_run_first_steps_at_once_and_a_failing_step_does_not_end_the_loop(
    caplog: pytest.LogCaptureFixture, portal: BlockingPortal
) -> None:
    calls: list[int] = []
    third = threading.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ChainUnavailableError("node down")  # expected failure: a warning, the loop goes on
        if len(calls) == 2:
            raise RuntimeError("bug")  # unexpected: logged with its traceback, the loop goes on
        third.set()

    loop = Blocking(Periodic("test-loop", step, interval_s=0.001), portal)
    loop.run(loop.inner.start)
    assert loop.running
    assert third.wait(10), "the loop stopped after a failing step"
    loop.stop()

    assert not loop.running
    assert any("code=chain_unavailable" in r.message for r in caplog.records)
    assert any(r.exc_info for r in caplog.records if "round failed" in r.message)
    stopped_at = len(calls)
    portal.call(asyncio.sleep, 0.05)  # many intervals: a loop still running would have stepped again
    assert len(calls) == stopped_at


def test_without_run_first_nothing_runs_before_the_first_interval(portal: BlockingPortal) -> None:
    ran = threading.Event()

    async def step() -> None:
        ran.set()

    loop = Blocking(Periodic("test-loop", step, interval_s=3_600, run_first=False), portal)
    loop.run(loop.inner.start)
    portal.call(asyncio.sleep, 0.05)  # the task is waiting out its first interval
    assert not ran.is_set()
    loop.stop()  # stops while waiting out the first interval
    assert not loop.running
    assert not ran.is_set()


def test_start_needs_a_running_loop_and_stop_is_idempotent(portal: BlockingPortal) -> None:
    async def step() -> None:
        return None

    periodic = Periodic("test-loop", step, interval_s=3_600)
    with pytest.raises(RuntimeError):
        periodic.start()  # no running loop in the test's own thread
    assert not periodic.running
    loop = Blocking(periodic, portal)
    loop.stop()  # never started: nothing to stop
    loop.run(periodic.start)
    loop.stop()
    loop.stop()
    assert not loop.running
