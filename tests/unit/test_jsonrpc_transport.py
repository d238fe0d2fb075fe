"""`JsonRpcTransport`'s HTTP edge against real local HTTP servers: what is not a JSON-RPC answer is
`ChainUnavailableError`, a redirect is not followed, and the proxy variables are honoured (read once)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relayer.chain.jsonrpc import JsonRpcTransport, RpcCall
from relayer.errors import ChainUnavailableError

_REPLY = json.dumps([{"jsonrpc": "2.0", "id": 0, "result": "0x7a69"}]).encode()


class _Node(ThreadingHTTPServer):
    """Answers every POST with `status` and `body` (and `headers`); records each request line's target."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.targets: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: _Node

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.targets.append(self.path)
        self.send_response(self.server.status)
        for name, value in self.server.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(node: _Node) -> Iterator[_Node]:
    thread = threading.Thread(target=node.serve_forever, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        node.shutdown()
        node.server_close()


def _chain_id(url: str) -> Any:
    async def ask() -> Any:
        transport = JsonRpcTransport(url, timeout_s=5)
        try:
            (reply,) = await transport.batch([RpcCall("eth_chainId", [])])
            return reply.value()
        finally:
            await transport.aclose()

    return asyncio.run(ask())


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason"),
    [
        (500, b"oops", {}, "the node answered HTTP 500"),
        (307, b"", {"location": "http://127.0.0.1:1/"}, "the node answered HTTP 307"),  # not followed
        (200, b"<html>", {}, "the node's answer is not JSON"),
        (200, b'{"result": 1}', {}, "the node's answer is not a JSON-RPC batch reply"),
    ],
)
def test_what_is_not_a_json_rpc_answer_is_chain_unavailable(
    status: int, body: bytes, headers: dict[str, str], reason: str
) -> None:
    with _serving(_Node(status, body, headers)) as node:
        with pytest.raises(ChainUnavailableError) as info:
            _chain_id(node.url)
        assert info.value.message == reason
        assert len(node.targets) == 1


def test_a_node_that_is_not_there_did_not_answer() -> None:
    node = _Node(200, _REPLY)
    url = node.url
    node.server_close()  # the port is free again: nothing listens
    with pytest.raises(ChainUnavailableError) as info:
        _chain_id(url)
    assert info.value.message == "the node did not answer: ConnectError"  # the name clients have seen
    assert "127.0.0.1" not in info.value.message  # never the URL (hosted nodes put keys in it)


def test_the_proxy_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving(_Node(200, _REPLY)) as proxy:
        node_url = "http://node.invalid:8545/"  # resolvable only by the proxy
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert _chain_id(node_url) == "0x7a69"
        assert proxy.targets == [node_url]  # the absolute form: a request to the proxy for the node

        monkeypatch.setenv("NO_PROXY", "node.invalid")
        with pytest.raises(ChainUnavailableError):  # straight to the node, which does not exist
            _chain_id(node_url)
        assert proxy.targets == [node_url]
