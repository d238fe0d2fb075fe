"""Relay fixtures: a service on a real SQLite journal in tmp_path, signed requests, a test HTTP app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.faces.api.errors import install_error_handlers
from relayer.faces.api.relay_routes import relay_service, router
from relayer.services.relay.config import RelaySettings
from relayer.services.relay.sender import SenderHooks
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer


class FakeClock:
    """Wall-clock seconds the test moves by hand (replacement timing without sleeps)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Crash(BaseException):  # stands for the process dying: nothing in the relayer catches it
    """Raised by a hook to stop the relayer dead at a chosen point, like `kill -9`."""


def crash(*_: Any) -> None:
    raise Crash


@pytest.fixture
def relay_accounts(accounts: list[LocalAccount]) -> list[LocalAccount]:
    """The relayer's signers: funded test keys that are neither the deployer nor a trader."""
    return accounts[5:7]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(
    chain: Chain, deployment: Deployment, relay_accounts: list[LocalAccount], tmp_path: Any, clock: FakeClock
) -> Iterator[Callable[..., RelayService]]:
    """Factory: a `RelayService` on `tmp_path/journal.sqlite3` (the same file each call: a restart)."""
    made: list[RelayService] = []

    def _make(
        *,
        signers: list[LocalAccount] | None = None,
        hooks: SenderHooks | None = None,
        target: Chain | None = None,
        **settings: Any,
    ) -> RelayService:
        settings.setdefault("journal_path", tmp_path / "journal.sqlite3")
        settings.setdefault("retry_backoff_s", 0.0)
        service = RelayService(
            chain=target or chain,
            vault_address=deployment.address,
            signers=[Signer(a) for a in (signers if signers is not None else relay_accounts)],
            settings=RelaySettings(**settings),
            clock=clock,
            hooks=hooks,
        )
        made.append(service)
        return service

    yield _make
    for service in made:
        service.stop()
        service.journal.close()


@pytest.fixture
def service(make_service: Callable[..., RelayService]) -> RelayService:
    return make_service()


def http_client(service: RelayService) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.dependency_overrides[relay_service] = lambda: service
    app.include_router(router)
    return TestClient(app)


@pytest.fixture
def client(service: RelayService) -> TestClient:
    return http_client(service)


@pytest.fixture
def signed_body(service: RelayService) -> Callable[..., dict[str, Any]]:
    """Factory: the POST /api/relay/signed body for a request built by the service and signed by `owner`."""

    def _body(owner: LocalAccount, position_id: bytes, kind: str = "close", **params: Any) -> dict[str, Any]:
        wanted = {"kind": kind, "positionId": "0x" + position_id.hex(), **params}
        answer = service.typed_data_for(wanted)
        signed = Account.sign_typed_data(owner.key, full_message=answer["typedData"])
        return {
            "kind": kind,
            "request": answer["typedData"]["message"],
            "signature": "0x" + signed.signature.hex(),
        }

    return _body


def settle(service: RelayService, rounds: int = 10) -> None:
    """Run background-loop rounds until nothing is unfinished (bounded: a stuck record fails the test)."""
    for _ in range(rounds):
        if service.tick() == 0:
            return
    raise AssertionError(f"records still unfinished after {rounds} rounds: {service.journal.pending()}")
