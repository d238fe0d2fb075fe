"""The HTTP error mapping: every failure is `{"error": {"code", "message", "details"}}`, never a traceback."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from relayer import errors as e
from relayer.faces.api.errors import install_error_handlers

SECRET = "db-password-hunter2"


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/missing-position")
    def missing_position() -> None:
        raise e.PositionNotFoundError("no open position with this id", positionId="0x01")

    @app.get("/bad-field")
    def bad_field() -> None:
        raise e.InvalidFieldError("sizeDelta", "has more than 18 decimal places", max_decimals=18)

    @app.get("/chain-down")
    def chain_down() -> None:
        raise e.ChainUnavailableError("the node did not answer: ConnectionError")

    @app.get("/slippage")
    def slippage() -> None:
        raise e.PriceSlippageError("price 96000 is worse than allowedPrice 97000", price="96000")

    @app.get("/bug")
    def bug() -> None:
        raise RuntimeError(f"cannot connect with {SECRET}")

    @app.get("/typed")
    def typed(count: int) -> dict[str, int]:
        return {"count": count}

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    # raise_server_exceptions=False: the client sees what a real client would, not the server's exception.
    return TestClient(_app(), raise_server_exceptions=False)


def test_relayer_error_maps_to_its_status_and_code(client: TestClient) -> None:
    response = client.get("/missing-position")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "position_not_found",
            "message": "no open position with this id",
            "details": {"positionId": "0x01"},
        }
    }
    assert "retry-after" not in response.headers


def test_invalid_field_carries_the_field(client: TestClient) -> None:
    response = client.get("/bad-field")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    assert error["message"] == "sizeDelta: has more than 18 decimal places"
    assert error["details"] == {"field": "sizeDelta", "max_decimals": 18}


def test_retryable_server_error_says_when_to_retry(client: TestClient) -> None:
    response = client.get("/chain-down")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "chain_unavailable"
    assert response.headers["retry-after"] == "1"


def test_retryable_conflict_has_no_retry_after(client: TestClient) -> None:
    response = client.get("/slippage")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "price_slippage"
    assert "retry-after" not in response.headers


def test_unexpected_exception_is_a_bare_500(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="relayer.api"):
        response = client.get("/bug")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal error; see the server log", "details": {}}
    }
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    # ... but the server log has what an operator needs.
    assert any(record.exc_info and SECRET in str(record.exc_info[1]) for record in caplog.records)


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found", "details": {}}}


def test_wrong_method_is_a_json_405(client: TestClient) -> None:
    response = client.post("/missing-position")
    assert response.status_code == 405
    assert response.json() == {
        "error": {"code": "method_not_allowed", "message": "Method Not Allowed", "details": {}}
    }
    assert response.headers["allow"] == "GET"  # what the client needs to recover


def test_request_validation_is_an_invalid_field(client: TestClient) -> None:
    response = client.get("/typed", params={"count": "many"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    assert error["details"] == {"field": "count"}
    assert error["message"].startswith("count: ")
    assert client.get("/typed", params={"count": "3"}).json() == {"count": 3}


def test_a_framework_refusal_stays_a_client_error(caplog: pytest.LogCaptureFixture) -> None:
    """A 4xx the framework raises on its own (not a route, not a validation error) is answered with its
    status and `http_error`, never as a logged 500."""
    from starlette.exceptions import HTTPException

    app = _app()

    @app.get("/framework-refusal")
    def refusal() -> None:
        raise HTTPException(status_code=400, detail="There was an error parsing the body")

    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="relayer.api"):
        answer = client.get("/framework-refusal")

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "http_error"
    assert caplog.records == []
