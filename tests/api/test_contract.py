"""The documented API contract, checked by Schemathesis against the app itself, in process.

Every operation of `/openapi.json` is called with generated requests (valid and invalid ones, and the methods
a path does not take) on the embedded chain, with the relay, the trading service, the demo price feed and an
API key of a trader who approved the relayer's signers. Each answer must not be a server error, must have a
status code the document lists for the operation, and a 405 must carry `Allow`. The app runs its own
lifespan under Starlette's `TestClient` (so the test's chain snapshot is restored after it); Schemathesis only
generates the cases and checks the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import status_code_conformance, unsupported_method
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.config import RelaySettings, Settings, TradingSettings
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.errors import (
    ChainUnavailableError,
    InvalidFieldError,
    QuotaExceededError,
    RelayerError,
    TooManyPendingError,
)
from relayer.faces.api.app import create_app
from relayer.faces.api.errors import error_response
from relayer.faces.cli import keys as keys_cli
from relayer.services.relay.signers import Signer

MAX_EXAMPLES = 12
"""Generated requests per operation and phase: enough to reach every documented answer, under a minute."""

CHECKS = [not_a_server_error, status_code_conformance, unsupported_method]
"""No 5xx; every status documented for its operation; a method the path lacks is a 405 with `Allow`."""

_ANY_VAULT = "0x" + "11" * 20


@pytest.fixture
def api(
    chain: Chain,
    deployment: Deployment,
    deployer: LocalAccount,
    accounts: list[LocalAccount],
    transact: Callable[[LocalAccount, bytes], TxReceipt],
    tmp_path: Path,
) -> Iterator[tuple[TestClient, str]]:
    """The app with everything on (relay, trading, demo feed) and a `read,trade` key of trader 1."""
    assert chain.is_embedded, "the contract is checked on the embedded chain (mark the test)"
    for signer in accounts[5:7]:
        transact(accounts[1], calldata.set_operator_rights(signer.address, RELAYER_RIGHTS, 0))
    settings = Settings(
        vault_address=deployment.address,
        relay=RelaySettings(journal_path=tmp_path / "journal.sqlite3", poll_interval_s=0.02),
        trading=TradingSettings(receipt_timeout_s=2.0, poll_interval_s=0.02),
        keeper_interval_s=0,
        price_feed_interval_s=3_600,
        price_feed_seed=3,
    )
    app = create_app(
        settings, chain=chain, signers=[Signer(accounts[5]), Signer(accounts[6])], price_keeper=deployer
    )
    with TestClient(app) as client:
        key, _ = keys_cli.create_key(app.state.runtime.keys, account=accounts[1].address, scopes="read,trade")
        yield client, key


schema = schemathesis.openapi.from_dict(create_app(Settings(vault_address=_ANY_VAULT)).openapi()).exclude(
    path="/api/stream"
)
"""What the app serves at `/openapi.json`, read when the tests are collected (one test per operation): it
depends only on the routes, so an app that never starts gives the same document. `GET /api/stream` answers
a stream that never ends, which a request-answer checker cannot read: its statuses are checked over a real
server in `tests/trading/test_stream.py`."""


@pytest.mark.only_backend("eth-tester")
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_documented(case: Case[Any], api: tuple[TestClient, str]) -> None:
    client, key = api
    headers = {"Authorization": f"Bearer {key}"}
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    response = client.request(**_for_httpx(kwargs))
    case.validate_response(response, checks=CHECKS, headers=headers)


def _for_httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis's `requests`-style arguments as the `TestClient` (httpx) takes them."""
    kwargs = dict(kwargs)
    for dropped in ("allow_redirects", "verify", "timeout"):
        kwargs.pop(dropped, None)
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    if "data" in kwargs and not isinstance(kwargs["data"], dict):
        kwargs["content"] = kwargs.pop("data")
    return kwargs


# --- what the contract rests on, each on its own -------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        QuotaExceededError(
            "spent", scope="owner", budget="requests", limit=5, used=5, resets_at=1_060, now=1_000
        ),
        TooManyPendingError("wait", retryAfterS=30),
    ],
)
def test_a_429_says_when_to_retry(error: RelayerError) -> None:
    response = error_response(error)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(error.details["retryAfterS"])


def test_a_retryable_5xx_or_a_429_without_a_reset_says_one_second() -> None:
    assert error_response(ChainUnavailableError("down")).headers["Retry-After"] == "1"
    assert error_response(TooManyPendingError("wait", pending=4, limit=4)).headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(InvalidFieldError("size", "bad")).headers


def test_a_405_allows_every_method_of_the_path() -> None:
    """Two routes on one path (GET and POST /api/demo/pricefeed): the router tried only the first."""
    client = TestClient(create_app(Settings(vault_address=_ANY_VAULT)))  # routing needs no lifespan

    for method in ("DELETE", "PUT", "OPTIONS"):
        response = client.request(method, "/api/demo/pricefeed")

        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, POST"
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_error_answers_share_one_schema_and_list_their_codes() -> None:
    document = create_app(Settings(vault_address=_ANY_VAULT)).openapi()
    errors = [
        (path, status, answer)
        for path, operations in document["paths"].items()
        for operation in operations.values()
        for status, answer in operation["responses"].items()
        if int(status) >= 400
    ]

    assert {answer["content"]["application/json"]["schema"]["$ref"] for _, _, answer in errors} == {
        "#/components/schemas/ErrorDoc"
    }
    listing = document["paths"]["/api/transactions"]["get"]["responses"]
    assert "`unauthenticated`" in listing["401"]["description"]
    assert "`insufficient_scope`" in listing["403"]["description"]
    raw = document["paths"]["/api/relay/raw"]["post"]["responses"]
    assert set(raw) >= {"200", "202", "413", "415", "422", "429", "503"}
    assert "Retry-After" in raw["429"]["headers"]
