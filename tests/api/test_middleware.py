"""Every answer carries a request id; a body above the limit is refused with 413 before it is parsed."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from relayer.faces.api.middleware import MAX_BODY_BYTES
from tests.mcp.messages import INITIALIZE, INITIALIZED


def test_a_request_id_is_made_or_echoed(client: TestClient) -> None:
    made = client.get("/api/markets")
    echoed = client.get("/api/markets", headers={"X-Request-ID": "trace-42"})
    refused = client.get("/api/markets", headers={"X-Request-ID": "no spaces or\nnewlines please"})

    assert len(made.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "trace-42"
    assert refused.headers["x-request-id"] != "no spaces or\nnewlines please"  # never echoed into logs


def test_a_declared_oversized_body_is_413(client: TestClient) -> None:
    answer = client.post("/api/closeposition", content=b"{" + b" " * MAX_BODY_BYTES + b"}")

    assert answer.status_code == 413
    assert answer.json()["error"] == {
        "code": "body_too_large",
        "message": f"request body above {MAX_BODY_BYTES} bytes",
        "details": {"maxBytes": MAX_BODY_BYTES},
    }


def test_a_streamed_oversized_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit is enforced while reading
        yield b'{"positionId": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    answer = client.post("/api/closeposition", content=chunks(), headers={"content-type": "application/json"})

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"
    assert answer.headers["x-request-id"]


MCP_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "host": "127.0.0.1:8000",  # the SDK checks the Host header against the served host (DNS rebinding)
}


def _mcp_session(client: TestClient) -> dict[str, str]:
    """Headers of an initialized MCP client (the server is stateless: no session id, each call alone)."""
    answer = client.post("/mcp/", json=INITIALIZE, headers=MCP_HEADERS)
    assert answer.status_code == 200, answer.text
    assert "vault-relayer" in answer.text
    assert "mcp-session-id" not in answer.headers
    headers = {**MCP_HEADERS, "mcp-protocol-version": INITIALIZE["params"]["protocolVersion"]}
    assert client.post("/mcp/", json=INITIALIZED, headers=headers).status_code == 202
    return headers


def test_the_mcp_endpoint_refuses_a_key_given_twice_before_the_sdk_reads_it(client: TestClient) -> None:
    # The SDK's parser would keep the last `dry_run` and run the call as a real trade.
    headers = _mcp_session(client)
    body = (
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "partial_close", '
        '"arguments": {"symbol": "BTCUSDT", "api_key": "vrk_x", "dry_run": true, "dry_run": false}}}'
    )

    answer = client.post("/mcp/", content=body, headers=headers)

    assert answer.status_code == 400, answer.text
    refusal = answer.json()
    assert (refusal["jsonrpc"], refusal["id"], refusal["error"]["code"]) == ("2.0", 7, -32700)
    assert refusal["error"]["data"]["error"]["code"] == "invalid_field"
    assert refusal["error"]["data"]["error"]["details"]["field"] == "dry_run"
