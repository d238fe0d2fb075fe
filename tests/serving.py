"""A real uvicorn server in a thread of the test process, for tests that need real sockets (slow bodies,
connection caps, MCP over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

START_TIMEOUT_S = 30.0


@contextmanager
def serving(config: uvicorn.Config) -> Iterator[uvicorn.Server]:
    """Serve `config` until the block ends; fails the test if the server does not start in time."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=15)
