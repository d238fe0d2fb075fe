"""Every answer carries a request id; a body above the limit is refused with 413 before it is parsed."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from relayer.api.middleware import MAX_BODY_BYTES


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

    answer = client.post("/api/closeposition", content=chunks())

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"
    assert answer.headers["x-request-id"]
