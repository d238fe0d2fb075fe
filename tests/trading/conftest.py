"""Fixtures of the API-key trading suite: the real app (relay, trading, keeper, MCP) over the session chain.

Each test gets a fresh app on its own journal in `tmp_path`, relayer signers `accounts[5]` and `accounts[6]`
approved as vault operators by the traders `accounts[1..3]`, and real API keys made with
`keys_cli.create_key` in the app's key store (in that journal file). The keeper's background loop is off:
tests call `keeper.tick()` and then settle the relay by hand, so nothing depends on timing. The app's
services live on its lifespan's loop (`TestClient.portal`): `Trading.relay` and `Trading.keeper` are
`tests.blocking.Blocking` proxies that run their coroutines there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import Client
from mcp_types import CallToolResult
from web3.types import TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment
from relayer.config import RelaySettings, Settings, TradingSettings
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.faces.api.app import create_app
from relayer.faces.cli import keys as keys_cli
from relayer.faces.mcp import build_mcp_server
from relayer.runtime import Runtime
from relayer.services.keeper import Keeper
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer
from relayer.services.trading import TradingService
from relayer.stores.location import StoreLocation
from tests.blocking import Blocking

T = TypeVar("T")

RECEIPT_TIMEOUT_S = 10.0
"""Generous: a trading call returns as soon as the receipt is in; this only bounds a broken run."""


def trading_settings(
    chain: Chain,
    deployment: Deployment,
    journal_path: Path,
    *,
    receipt_timeout_s: float = RECEIPT_TIMEOUT_S,
    **extra: Any,
) -> Settings:
    """Settings as `relayer serve` would build them per backend, with a fast relay and no keeper loop."""
    fields: dict[str, Any] = {
        "relay": RelaySettings(journal_path=journal_path, poll_interval_s=0.02, retry_backoff_s=0.0),
        "trading": TradingSettings(receipt_timeout_s=receipt_timeout_s, poll_interval_s=0.02),
        "keeper_interval_s": 0,
        "keeper_from_block": deployment.block_number,
        **extra,
    }
    if chain.is_embedded:
        return Settings(vault_address=deployment.address, **fields)
    return Settings.load({}, rpc_url=chain.name, vault_address=deployment.address, **fields)


@dataclass
class Trading:
    """One running app and what a test needs around it."""

    app: FastAPI
    client: TestClient
    chain: Chain
    signers: list[Signer]
    traders: list[LocalAccount]

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def portal(self) -> BlockingPortal:
        """The app's event loop (its lifespan's): where its services live and a test calls them."""
        portal = self.client.portal
        assert portal is not None
        return portal

    @property
    def relay(self) -> Blocking[RelayService]:
        return Blocking(self.runtime.require_relay(), self.portal)

    @property
    def service(self) -> TradingService:
        return self.runtime.trading

    @property
    def keeper(self) -> Blocking[Keeper]:
        assert self.runtime.keeper is not None
        return Blocking(self.runtime.keeper, self.portal)

    def key(self, account: LocalAccount | str, scopes: str = "read,trade", label: str = "") -> str:
        """A real API key for `account`, stored (as a hash) in this app's key store."""
        address = account if isinstance(account, str) else account.address
        key, _ = keys_cli.create_key(self.runtime.keys, account=address, scopes=scopes, label=label)
        return key

    def post(self, path: str, body: dict[str, Any], key: str | None, **headers: str) -> Any:
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")
        return self.client.post(path, json=body, headers=headers)

    def get(self, path: str, key: str | None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.client.get(path, headers=headers, params=params)

    def settle(self) -> None:
        """Drive the relay until no record is unfinished (each round moves every record forward)."""
        for _ in range(50):
            if self.relay.tick() == 0:
                return
        pytest.fail(f"relay records still unfinished: {[r.id for r in self.relay.journal.pending()]}")

    def mcp(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call an MCP tool with the SDK's real client, in-process, on the app's own event loop."""

        async def call() -> CallToolResult:
            server = build_mcp_server(lambda: self.service)
            async with Client(server) as client:
                return await client.call_tool(tool, arguments)

        return self.run(call)

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an async function on the app's event loop (where its chain client lives)."""
        return self.portal.call(fn)


def tool_json(result: CallToolResult) -> dict[str, Any]:
    """A successful tool call's JSON result (the same dict as structured content and as text)."""
    assert not result.is_error, result.content
    text = result.content[0]
    assert text.type == "text"
    parsed: dict[str, Any] = json.loads(text.text)
    if result.structured_content is not None:
        assert result.structured_content == parsed
    return parsed


def tool_error(result: CallToolResult) -> dict[str, Any]:
    """A failed tool call's error body, `{"code", "message", "details"}`."""
    assert result.is_error, result.content
    text = result.content[0]
    assert text.type == "text"
    body: dict[str, Any] = json.loads(text.text)
    return dict(body["error"])


@pytest.fixture
def approve_operators(
    accounts: list[LocalAccount], transact: Callable[[LocalAccount, bytes], TxReceipt]
) -> Callable[..., None]:
    """Factory: `trader` grants every relayer signer the relayer's rights (`RELAYER_RIGHTS`, no expiry), or
    (`approved` False) revokes them."""

    def _approve(
        trader: LocalAccount, *, approved: bool = True, signers: list[LocalAccount] | None = None
    ) -> None:
        for signer in signers if signers is not None else accounts[5:7]:
            rights = RELAYER_RIGHTS if approved else 0
            transact(trader, calldata.set_operator_rights(signer.address, rights, 0))

    return _approve


@pytest.fixture
def make_trading(
    chain: Chain,
    deployment: Deployment,
    accounts: list[LocalAccount],
    store: StoreLocation,
) -> Iterator[Callable[..., Trading]]:
    """Factory: start an app (lifespan running) on the test's store (`tmp_path/journal.sqlite3`, or its
    PostgreSQL database); the same one on every call. Its relayer signers are `accounts[5:7]`, or
    `signers`."""
    opened: list[TestClient] = []

    def _make(*, signers: list[LocalAccount] | None = None, **settings: Any) -> Trading:
        chosen = accounts[5:7] if signers is None else signers
        app = create_app(
            trading_settings(
                chain, deployment, store.journal_path, database_url=store.database_url, **settings
            ),
            chain=chain,
            signers=[Signer(account) for account in chosen],
        )
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return Trading(app, client, chain, [Signer(account) for account in chosen], accounts[1:4])

    yield _make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def trading(
    make_trading: Callable[..., Trading],
    accounts: list[LocalAccount],
    approve_operators: Callable[..., None],
) -> Trading:
    """The app with traders 1 and 2 having approved the relayer's signers (trader 3 has not)."""
    approve_operators(accounts[1])
    approve_operators(accounts[2])
    return make_trading()


def set_automine(chain: Chain, on: bool) -> None:
    """Mine every transaction at once (the default) or leave them pending until `mine(chain)`."""
    if chain.tester is not None:
        with chain.lock:  # the app's relay loop reads the embedded chain meanwhile
            if on:
                chain.tester.enable_auto_mine_transactions()  # also mines what is pending
            else:
                chain.tester.disable_auto_mine_transactions()
        return
    chain.w3.provider.make_request("evm_setAutomine", [on])  # type: ignore[arg-type]


def mine(chain: Chain) -> None:
    """Mine one block with whatever is pending."""
    if chain.tester is not None:
        with chain.lock:
            chain.tester.mine_blocks(1)
        return
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


@dataclass
class Mining:
    """Switch automine off for a while and mine by hand; the fixture switches it back on after the test."""

    chain: Chain

    def stop(self) -> None:
        set_automine(self.chain, False)

    def mine(self) -> None:
        mine(self.chain)


@pytest.fixture
def mining(chain: Chain) -> Iterator[Mining]:
    try:
        yield Mining(chain)
    finally:
        set_automine(chain, True)
