"""`POST /api/closeposition` on the fast path (`relayer.faces.api.hot_path`) answers byte for byte what the
FastAPI route answers, on the same chain state: builds, every kind of refusal, the same headers. The fast
path is shown to answer them all itself (nothing reaches FastAPI), and to leave what it does not serve to
FastAPI. Runs on eth-tester and on anvil."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.faces.api.app import create_app
from relayer.faces.api.hot_path import CLOSE_PATH, HotRoutes
from relayer.faces.api.middleware import MAX_BODY_BYTES
from tests.api.conftest import settings_for

JSON = "application/json"


class Reached:
    """Innermost middleware: records in `seen` the requests that went past `HotRoutes` on to FastAPI."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


class Served:
    """A test client, and the requests of its app that reached FastAPI."""

    def __init__(self, client: TestClient, reached: list[tuple[str, str]]) -> None:
        self.client = client
        self.reached = reached


def _app(chain: Chain, deployment: Deployment, journal: Path, reached: list[tuple[str, str]]) -> FastAPI:
    settings = settings_for(chain, deployment)
    relay = settings.relay.model_copy(update={"journal_path": journal})
    app = create_app(settings.model_copy(update={"relay": relay}), chain=chain)
    app.user_middleware.append(Middleware(Reached, seen=reached))  # innermost
    return app


@pytest.fixture
def clients(chain: Chain, deployment: Deployment, tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    """(the app as served, the same app without its fast path: the FastAPI route answers)."""
    hot_reached: list[tuple[str, str]] = []
    plain_reached: list[tuple[str, str]] = []
    hot = _app(chain, deployment, tmp_path / "hot.sqlite3", hot_reached)
    plain = _app(chain, deployment, tmp_path / "plain.sqlite3", plain_reached)
    hot_path: object = HotRoutes
    assert any(m.cls is hot_path for m in plain.user_middleware)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not hot_path]
    with TestClient(hot) as hot_client, TestClient(plain) as plain_client:
        yield Served(hot_client, hot_reached), Served(plain_client, plain_reached)


def _oversized() -> Iterator[bytes]:  # no content-length: the limit is enforced while the body is read
    yield b'{"positionId": "'
    for _ in range(MAX_BODY_BYTES // 1024 + 1):
        yield b"a" * 1024
    yield b'"}'


def test_the_fast_path_answers_exactly_what_the_route_answers(
    clients: tuple[Served, Served],
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    hot, plain = clients
    long_id = "0x" + open_position(is_long=True, size="0.42").hex()
    short_id = "0x" + open_position(is_long=False, size="1.5", market="ETHUSDT").hex()
    set_market_price("BTCUSDT", "97250.5")
    requests: list[tuple[str, bytes | Callable[[], Iterator[bytes]]]] = [
        (JSON, f'{{"positionId": "{long_id}"}}'.encode()),
        (JSON, f'{{"positionId": "{long_id}", "sizeDelta": 0.1, "allowedPrice": "90000"}}'.encode()),
        ("application/json; charset=utf-8", f'{{"positionId": "{short_id}", "sizeDelta": "0.5"}}'.encode()),
        (JSON, f'{{"positionId": "{long_id}", "allowedPrice": "99000"}}'.encode()),  # slippage: 409
        (JSON, f'{{"positionId": "{long_id}", "sizeDelta": "7"}}'.encode()),  # above the size: 422
        (JSON, b'{"positionId": "0x' + b"11" * 32 + b'"}'),  # no such position: 404
        (JSON, f'{{"positionId": "{long_id}", "sizedelta": "0.1"}}'.encode()),  # unknown field
        (JSON, f'{{"positionId": "{long_id}", "sizeDelta": "0.1", "sizeDelta": null}}'.encode()),
        (JSON, f'{{"positionId": "{long_id}", "sizeDelta": NaN}}'.encode()),
        (JSON, b"[" * 100 + b"]" * 100),
        (JSON, b'["not", "an", "object"]'),
        (JSON, b'{"positionId": "\xff"}'),
        (JSON, b""),
        ("text/plain", f'{{"positionId": "{long_id}"}}'.encode()),
        ("", f'{{"positionId": "{long_id}"}}'.encode()),
        (JSON, b"{" + b" " * MAX_BODY_BYTES + b"}"),  # declared above the limit: 413
        (JSON, _oversized),  # streamed above the limit: 413
    ]
    answers = []
    for content_type, body in requests:
        headers = {"x-request-id": "same-id"}
        if content_type:
            headers["content-type"] = content_type
        pair = []
        for served in (hot, plain):
            content = body() if callable(body) else body
            response = served.client.post(CLOSE_PATH, content=content, headers=headers)
            pair.append((response.status_code, response.headers.multi_items(), response.content))
        answers.append(pair)

    for (hot_answer, plain_answer), (content_type, body) in zip(answers, requests, strict=True):
        assert hot_answer == plain_answer, (content_type, body)
    statuses = [hot_answer[0] for hot_answer, _ in answers]
    assert statuses == [200, 200, 200, 409, 422, 404, 422, 422, 422, 422, 422, 422, 422, 415, 415, 413, 413]
    assert hot.reached == []  # the fast path answered every one itself
    # without it, all but the declared oversized body (refused by the guard outside) reached FastAPI
    assert plain.reached == [("POST", CLOSE_PATH)] * (len(requests) - 1)


def test_what_the_fast_path_does_not_serve_goes_on_to_fastapi(clients: tuple[Served, Served]) -> None:
    hot, _ = clients
    body = b'{"positionId": "0x' + b"11" * 32 + b'"}'
    with_query = hot.client.post(CLOSE_PATH + "?dryRun=true", content=body, headers={"content-type": JSON})
    wrong_method = hot.client.get(CLOSE_PATH)

    assert with_query.status_code == 422
    assert with_query.json()["error"]["details"]["field"] == "dryRun"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert hot.reached == [("POST", CLOSE_PATH), ("GET", CLOSE_PATH)]
