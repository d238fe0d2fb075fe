"""Loopback proxies in front of a real node, for tests that need to see or cut the wire.

- `TcpProxy` forwards bytes and can be switched off and on: "the node went down, then came back".
- `RecordingProxy` forwards HTTP and records every JSON-RPC request that passes, as the node receives it:
  one `RoundTrip` per HTTP request, holding its calls and whether they came as a JSON-RPC batch. Whatever
  HTTP stack the relayer talks through (httpx, web3's `HTTPProvider`), the proxy sees it; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>; `stop()` drops every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


# --- recording ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RpcRequest:
    """One JSON-RPC call as the node received it."""

    method: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class RoundTrip:
    """One HTTP request to the node: its calls, in order, and who sent it.

    `batch` is True when the body was a JSON-RPC batch (a JSON array), even an array of one call; `client`
    is the request's User-Agent (`python-httpx/...` for the builder's gateway, `web3.py/...` for the relay's
    `HTTPProvider`).
    """

    seq: int
    client: str
    batch: bool
    calls: tuple[RpcRequest, ...]


def parse_round_trip(seq: int, client: str, body: bytes) -> RoundTrip:
    """A request body as a `RoundTrip`; a body that is not JSON-RPC is one call named `<unparsed>`."""
    try:
        payload = json.loads(body)
    except ValueError:
        return RoundTrip(seq, client, False, (RpcRequest("<unparsed>", ()),))
    items = payload if isinstance(payload, list) else [payload]
    calls = tuple(
        RpcRequest(str(item.get("method")), tuple(item.get("params") or ()))
        if isinstance(item, dict)
        else RpcRequest("<unparsed>", ())
        for item in items
    )
    return RoundTrip(seq, client, isinstance(payload, list), calls)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: RecordingProxy


class _Forwarder(BaseHTTPRequestHandler):
    """One client connection (kept alive, as the relayer's pools keep it) over one upstream connection."""

    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:  # neither httpx nor requests sends a JSON-RPC body chunked
            self.send_error(411)
            return
        body = self.rfile.read(int(length))
        proxy = self.server.proxy
        proxy.note(self.headers.get("User-Agent", ""), body)
        status, content_type, reply = self._forward(body, proxy.target_port)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def _forward(self, body: bytes, port: int) -> tuple[int, str, bytes]:
        """The node's answer to `body`. A kept-alive upstream connection the node has closed meanwhile is
        replaced once (as HTTP clients do); any other failure reaches the client as a dropped connection."""
        reused = self._upstream is not None
        try:
            return self._exchange(body, port)
        except (OSError, http.client.HTTPException):
            self._close_upstream()
            if not reused:
                raise
            return self._exchange(body, port)

    def _exchange(self, body: bytes, port: int) -> tuple[int, str, bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._upstream.request("POST", "/", body, {"Content-Type": "application/json"})
        response = self._upstream.getresponse()
        return response.status, response.getheader("Content-Type", "application/json"), response.read()

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def finish(self) -> None:
        super().finish()
        self._close_upstream()

    def log_message(self, format: str, *args: Any) -> None:  # silence: one line per request otherwise
        return None


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 in front of a JSON-RPC node that records every request it forwards.

    Point the relayer at `url`; `mark()` before the work to measure and `since(mark)` after gives exactly the
    round trips that arrived in between, in arrival order (the node sees them in this order too).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = _Server(("127.0.0.1", 0), _Forwarder)
        self._server.proxy = self
        self.port = int(self._server.server_address[1])
        self._lock = threading.Lock()
        self._seen: list[RoundTrip] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def note(self, client: str, body: bytes) -> None:
        """Record a request on arrival, before it is forwarded (so the order is the order of arrival)."""
        with self._lock:
            self._seen.append(parse_round_trip(len(self._seen), client, body))

    def mark(self) -> int:
        """A position in the record: `since(mark)` gives what arrived after it."""
        with self._lock:
            return len(self._seen)

    def since(self, mark: int, until: int | None = None) -> list[RoundTrip]:
        with self._lock:
            return list(self._seen[mark:until])
