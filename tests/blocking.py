"""The synchronous face of the async core, for tests: one event loop per test, in a thread of its own.

Every service of the relayer is async (one concurrency model). Tests drive them from plain synchronous test
functions through `Blocking`, which runs each coroutine method on the test's `portal` (an anyio blocking
portal: one asyncio loop in a background thread) and wraps the collaborators a test reaches into (the
relay's `sender`, its `chain` client, the keeper) the same way. The HTTP test client is pointed at the same
portal (`TestClient.portal`), so a request and a direct call share one loop, as they do in a server.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi.testclient import TestClient

T = TypeVar("T")

_WRAPPED = ("sender", "chain", "keeper", "relay", "trading", "builder", "client", "price_feed")
"""Attributes whose values are async services too: reached through a `Blocking` of their own."""


class Blocking(Generic[T]):
    """`target` with every coroutine method made blocking on `portal`; other attributes pass through."""

    def __init__(self, target: T, portal: BlockingPortal) -> None:
        object.__setattr__(self, "inner", target)
        object.__setattr__(self, "portal", portal)

    inner: T
    portal: BlockingPortal

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if inspect.iscoroutinefunction(value):

            @functools.wraps(value)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self.portal.call(functools.partial(value, *args, **kwargs))

            return call
        if name in _WRAPPED and value is not None and not isinstance(value, Blocking):
            return Blocking(value, self.portal)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def run(self, function: Any, *args: Any) -> Any:
        """Call a sync function on the portal's loop (e.g. `Periodic.start`, which needs a running loop)."""

        async def call() -> Any:
            return function(*args)

        return self.portal.call(call)


@contextmanager
def running_portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal(backend="asyncio") as portal:
        yield portal


def client_on(portal: BlockingPortal, app: Any, **kwargs: Any) -> TestClient:
    """A `TestClient` whose requests (and lifespan) run on `portal`'s loop."""
    client = TestClient(app, **kwargs)
    client.portal = portal
    return client
