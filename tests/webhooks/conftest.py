"""Fixtures of the webhook suite: a real HTTP receiver in threads, and the trading suite's app fixtures.

`Receiver` is a `ThreadingHTTPServer` on 127.0.0.1 that records every request it gets (path, headers, raw
body, when) and answers per path from a script (a status list, then 200; or hanging until released), so a
test sees exactly what went over the wire. Signatures are verified by the tests with the `standardwebhooks`
package (an independent implementation), never with the relayer's own code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.trading.conftest import approve_operators, make_trading, trading  # noqa: F401 - fixtures

HANG = -1
"""A scripted answer: hold the request until `Receiver.release()` (or the server stops)."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verified(self, secret: str) -> Any:
        """The body, verified with `standardwebhooks` (raises `WebhookVerificationError` otherwise)."""
        return Verifier(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def script(self, path: str, *statuses: int) -> None:
        """Answer the next requests to `path` with `statuses` in turn (then 200)."""
        with self.lock:
            self.scripts[path] = list(statuses)

    def release(self) -> None:
        self.released.set()

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [item for item in self.received if item.path == path]

    def wait_for(
        self, path: str, predicate: Callable[[list[Received]], bool], timeout_s: float = 20.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.at(path)
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                pytest.fail(f"the receiver did not get what was expected at {path}: {[r.json for r in got]}")
            time.sleep(0.02)

    def _answer(self, path: str) -> int:
        with self.lock:
            script = self.scripts.get(path)
            return script.pop(0) if script else 200


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            item = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
            with receiver.lock:
                receiver.received.append(item)
            status = receiver._answer(self.path)
            if status == HANG:
                receiver.released.wait(30)
                status = 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    found = Receiver(server)
    server.RequestHandlerClass = _handler(found)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
