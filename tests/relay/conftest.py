"""Relay fixtures: a service on a real SQLite journal in tmp_path, signed requests, a test HTTP app.

The relay is async; tests drive it through `tests.blocking.Blocking`, on this test's `portal` (its event loop
in a thread of its own). Each service has its own `ChainClient`, made, started and closed on that loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.deploy import Deployment
from relayer.chain.jsonrpc import RpcPort
from relayer.config import RelaySettings
from relayer.domain.sponsorship import Policy
from relayer.domain.typed_data import SignedRelay, parse_signed_relay, parse_typed_data_query
from relayer.faces.api.errors import install_error_handlers
from relayer.faces.api.relay_routes import relay_service, router
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer
from relayer.services.relay.values import SenderHooks
from relayer.stores.location import StoreLocation, open_journal
from tests.blocking import Blocking, client_on


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


def until_crash(service: Blocking[Any], method: str, *args: Any, **kwargs: Any) -> Any:
    """`service.<method>(...)` for a call a hook may stop dead: its `Crash` is raised here, in the test.

    The crash is handed back across the portal as a value: a `BaseException` escaping a portal call would
    stop the portal itself, the test's loop, which the restarted services still run on.
    """

    async def call() -> Any:
        try:
            return await getattr(service.inner, method)(*args, **kwargs)
        except Crash as died:
            return died

    result = service.portal.call(call)
    if isinstance(result, Crash):
        raise result
    return result


@pytest.fixture
def relay_accounts(accounts: list[LocalAccount]) -> list[LocalAccount]:
    """The relayer's signers: funded test keys that are neither the deployer nor a trader."""
    return accounts[5:7]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def started_client(portal: BlockingPortal, port: RpcPort, vault_address: str) -> ChainClient:
    """A `ChainClient` over `port`, made and started on `portal`'s loop (no backoff: tests do not wait)."""

    async def make() -> ChainClient:
        client = ChainClient(port, vault_address, backoff_s=0)
        await client.start()
        return client

    return portal.call(make)


def port_on(portal: BlockingPortal, chain: Chain) -> RpcPort:
    """`chain`'s port, made on `portal`'s loop (an HTTP client belongs to the loop it is used on)."""

    async def make() -> RpcPort:
        return chain_port(chain)

    return portal.call(make)


@pytest.fixture
def make_client(
    chain: Chain, deployment: Deployment, portal: BlockingPortal
) -> Iterator[Callable[..., Blocking[ChainClient]]]:
    """Factory: a started `ChainClient` of the vault on `port` (default: the test's chain), closed after."""
    made: list[ChainClient] = []

    def _make(port: RpcPort | None = None) -> Blocking[ChainClient]:
        client = started_client(portal, port or port_on(portal, chain), deployment.address)
        made.append(client)
        return Blocking(client, portal)

    yield _make
    for client in made:
        portal.call(client.aclose)


@pytest.fixture
def make_service(
    chain: Chain,
    deployment: Deployment,
    relay_accounts: list[LocalAccount],
    tmp_path: Any,
    clock: FakeClock,
    portal: BlockingPortal,
    store: StoreLocation,
) -> Iterator[Callable[..., Blocking[RelayService]]]:
    """Factory: a `RelayService` on the test's store (`tmp_path/journal.sqlite3`, or its PostgreSQL
    database; the same one each call: a restart), over a client of its own on `target` (default: the test's
    chain) or on `port` (a port the test made)."""
    made: list[RelayService] = []

    def _make(
        *,
        signers: list[LocalAccount] | None = None,
        hooks: SenderHooks | None = None,
        target: Chain | None = None,
        port: RpcPort | None = None,
        policy: Policy | None = None,
        **settings: Any,
    ) -> Blocking[RelayService]:
        settings.setdefault("journal_path", store.journal_path)
        settings.setdefault("retry_backoff_s", 0.0)
        client = started_client(portal, port or port_on(portal, target or chain), deployment.address)
        location = StoreLocation(settings["journal_path"], store.database_url)
        service = RelayService(
            journal=open_journal(location),
            chain=client,
            signers=[Signer(a) for a in (signers if signers is not None else relay_accounts)],
            settings=RelaySettings(**settings),
            clock=clock,
            hooks=hooks,
            policy=policy,
        )
        made.append(service)
        return Blocking(service, portal)

    yield _make
    for service in made:
        portal.call(service.stop)
        portal.call(service.chain.aclose)
        service.journal.close()


@pytest.fixture
def service(make_service: Callable[..., Blocking[RelayService]]) -> Blocking[RelayService]:
    return make_service()


def http_client(service: Blocking[RelayService]) -> TestClient:
    """The relay routes over `service`, their requests run on the service's loop."""
    app = FastAPI()
    install_error_handlers(app)
    inner = service.inner
    app.dependency_overrides[relay_service] = lambda: inner
    app.include_router(router)
    return client_on(service.portal, app)


@pytest.fixture
def client(service: Blocking[RelayService]) -> TestClient:
    return http_client(service)


@pytest.fixture
def signed_body(service: Blocking[RelayService]) -> Callable[..., dict[str, Any]]:
    """Factory: the POST /api/relay/signed body for a request built by the service and signed by `owner`."""

    def _body(owner: LocalAccount, position_id: bytes, kind: str = "close", **params: Any) -> dict[str, Any]:
        wanted = {"kind": kind, "positionId": "0x" + position_id.hex(), **params}
        answer = service.typed_data_for(parse_typed_data_query(wanted))
        signed = Account.sign_typed_data(owner.key, full_message=answer["typedData"])
        return {
            "kind": kind,
            "request": answer["typedData"]["message"],
            "signature": "0x" + signed.signature.hex(),
        }

    return _body


@pytest.fixture
def new_close(
    accounts: list[LocalAccount],
    open_position: Callable[..., bytes],
    signed_body: Callable[..., dict[str, Any]],
) -> Callable[..., SignedRelay]:
    """Factory: a signed close of all of a new 1 BTC position of `accounts[1]`, at its vault nonce `nonce`."""

    def _close(nonce: int = 0) -> SignedRelay:
        owner = accounts[1]
        return parse_signed_relay(signed_body(owner, open_position(owner=owner, size="1"), nonce=nonce))

    return _close


def settle(service: Blocking[RelayService], rounds: int = 10) -> None:
    """Run background-loop rounds until nothing is unfinished (bounded: a stuck record fails the test)."""
    for _ in range(rounds):
        if service.tick() == 0:
            return
    raise AssertionError(f"records still unfinished after {rounds} rounds: {service.journal.pending()}")
