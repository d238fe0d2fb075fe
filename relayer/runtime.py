"""Everything a running relayer holds, built once from `Settings` and torn down in reverse.

`open_runtime` is shared by the HTTP app's lifespan and the stdio MCP server, so both faces run the same
services the same way: the chain client, the `TransactionBuilder`, the API-key store and the
`TradingService` always (reads by API key need no signer); with relayer signers, the `RelayService`
(journal, nonces, background loop), which trading then sends through, and the keeper; on the embedded chain
with a price keeper, the demo price feed (its random walk only with an interval).

`check_startup` runs the same start-up checks and stops: `relayer serve` calls it before handing the app to
uvicorn, so a node that is down, a wrong vault, a journal another process relays through or one whose
records of this chain id belong to another chain ends as one line and an exit code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from eth_account.signers.local import LocalAccount

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.chain.jsonrpc import JsonRpcTransport
from relayer.chain.transact import send
from relayer.config import Settings
from relayer.domain import calldata
from relayer.errors import ConfigurationError, RelayNotConfiguredError
from relayer.services.builder import TransactionBuilder
from relayer.services.keeper import Keeper
from relayer.services.metrics import NO_METRICS, Metrics
from relayer.services.notice_feed import NoticeFeed
from relayer.services.periodic import Periodic
from relayer.services.price_feed import PriceFeed
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer
from relayer.services.trading import TradingService
from relayer.services.webhooks import WebhookService
from relayer.stores.journal import SqlJournal
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import Journal
from relayer.stores.keys import KeyStore
from relayer.stores.location import open_journal, open_key_store
from relayer.stores.webhooks import WebhookStore

log = logging.getLogger("relayer.runtime")


@dataclass
class Runtime:
    """The services of one process. `relay` and `keeper` are None when no relayer signer is configured;
    `trading` always exists and sends through `relay` once it is there."""

    settings: Settings
    chain: Chain | None
    """The embedded chain, driven directly by the demo's price feed and by tests (holding `chain.lock`);
    None with a node over JSON-RPC."""
    client: ChainClient
    """The one way every service reads and writes the chain."""
    builder: TransactionBuilder
    keys: KeyStore
    relay: RelayService | None = None
    keeper: Keeper | None = None
    price_feed: PriceFeed | None = None
    metrics: Metrics = NO_METRICS
    """What the relay, the keeper and the chain client count and time (`relayer.services.metrics`)."""
    notices: NoticeFeed | None = None
    """The live notices of this process (`GET /api/stream`, MCP's fills); with the relay only."""
    webhooks: WebhookService | None = None
    """Webhook subscriptions and their dispatcher (`relayer.services.webhooks`); with the relay only."""
    trading: TradingService = field(init=False)
    _loops: list[Periodic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trading = TradingService(
            builder=self.builder,
            keys=self.keys,
            relay=self.require_relay,
            operator_grants=self.client.operator_grants,
            settings=self.settings.trading,
        )

    def require_relay(self) -> RelayService:
        """The relay, for everything that sends or reads relay records (REST relay routes, trading actions,
        `get_transaction`, the keeper command): the one place a server without signers says so.

        Raises:
            RelayNotConfiguredError: no relayer signer is configured (503 `relay_not_configured`).
        """
        if self.relay is None:
            raise RelayNotConfiguredError
        return self.relay

    def require_webhooks(self) -> WebhookService:
        """The webhook service (it lives on the relay's journal, bound to its chain).

        Raises:
            RelayNotConfiguredError: no relayer signer is configured (503 `relay_not_configured`).
        """
        if self.webhooks is None:
            raise RelayNotConfiguredError
        return self.webhooks

    async def health(self) -> dict[str, Any]:
        """`GET /health`: the chain (503 `chain_unavailable` when it does not answer) and, with a relay, its
        signers; a signer below the minimum balance makes the status `degraded` (still 200: it serves)."""
        body = (await self.builder.health()).to_dict()
        if self.relay is not None:
            body["relay"] = await self.relay.health()
            if body["relay"]["lowBalance"]:
                body["status"] = "degraded"
        return body


def chain_client(settings: Settings, chain: Chain | None) -> ChainClient:
    """The chain client of `settings`: the node at `rpc_url` over HTTP, else the embedded `chain`.

    Raises:
        ConfigurationError: neither is there.
    """
    if settings.rpc_url is not None:
        assert settings.vault_address is not None  # Settings requires it with rpc_url
        transport = JsonRpcTransport(settings.rpc_url.get_secret_value(), timeout_s=settings.rpc_timeout_s)
        return ChainClient(
            transport,
            settings.vault_address,
            retries=settings.relay.broadcast_retries,
            backoff_s=settings.relay.retry_backoff_s,
        )
    if chain is None or settings.vault_address is None:
        raise ConfigurationError("nothing to serve: set rpc_url and vault_address, or pass an embedded chain")
    return ChainClient(
        chain_port(chain),
        settings.vault_address,
        retries=settings.relay.broadcast_retries,
        backoff_s=settings.relay.retry_backoff_s,
    )


def check_expected_chain(settings: Settings, chain_id: int) -> None:
    """Refuse a node on another chain than the deployments file names (a wrong URL, or the right URL of a
    reset node would otherwise serve a vault address that means something else there).

    Raises:
        ConfigurationError: the chain ids differ.
    """
    if settings.expected_chain_id not in (None, chain_id):
        raise ConfigurationError(
            f"the node is on chain {chain_id}, the deployments file on {settings.expected_chain_id}"
        )


async def chain_binding(client: ChainClient, chain: Chain | None) -> ChainBinding:
    """The chain a journal started on binds to: its id and genesis block hash, and for the embedded chain the
    run it belongs to (`Chain.run_id`).

    Raises:
        ChainUnavailableError: the node does not answer.
    """
    genesis = await client.block_hash(0)
    run = chain.run_id if chain is not None and chain.is_embedded else None
    return ChainBinding(client.chain_id, genesis, run)


async def open_bound_journal(settings: Settings, client: ChainClient, chain: Chain | None) -> Journal:
    """The relay journal of `settings`, opened for relaying (holding its relay lock until it is closed) and
    bound to the client's chain before anything in it is resumed (`Journal.bind_to_chain`).

    Raises:
        ConfigurationError: the journal cannot be opened, another process relays through it, or its records
            of this chain id belong to another chain.
        ChainUnavailableError: the node does not answer.
    """
    binding = await chain_binding(client, chain)
    journal = open_journal(settings.store, relaying=True)
    try:
        dropped = journal.bind_to_chain(binding, now=int(time.time()))
    except BaseException:
        journal.close()
        raise
    if dropped:
        log.info("journal dropped %d relay records of an earlier run's embedded chain", dropped)
    return journal


async def _start_client(settings: Settings, chain: Chain | None, client: ChainClient | None) -> ChainClient:
    """The client, started (the node answers, the vault's code is there, the chain id is the expected one);
    closed again if any check fails."""
    client = client or chain_client(settings, chain)
    try:
        if not client.started:
            await client.start()
        check_expected_chain(settings, client.chain_id)
    except BaseException:
        await client.aclose()
        raise
    return client


async def check_startup(
    settings: Settings, *, chain: Chain | None = None, signers: Sequence[Signer] = ()
) -> None:
    """Run `open_runtime`'s start-up checks without starting a service, and close everything again.

    `relayer serve` calls it before uvicorn: a failure inside the ASGI lifespan would reach the terminal as
    uvicorn's traceback and log lines, this one as the `RelayerError` the CLI prints in one line. The lifespan
    repeats the checks (cheap), so a node that fails in between still cannot be served by mistake.

    Raises:
        ChainUnavailableError: the node does not answer.
        VaultNotDeployedError: the address does not hold this vault's code.
        ConfigurationError: no chain to serve, another chain than the deployments file's, or (with signers)
            a journal that cannot be opened, that another process relays through, or whose records of this
            chain id belong to another chain.
    """
    client = await _start_client(settings, chain, None)
    try:
        if signers:
            (await open_bound_journal(settings, client, chain)).close()
    finally:
        await client.aclose()


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    chain: Chain | None = None,
    client: ChainClient | None = None,
    signers: Sequence[Signer] = (),
    price_keeper: LocalAccount | None = None,
    metrics: Metrics = NO_METRICS,
) -> AsyncIterator[Runtime]:
    """Start every service `settings` asks for; stop them all (in reverse) on exit.

    Args:
        signers: relayer accounts (from the environment, or the embedded chain's demo signers); none means no
            relay and no keeper: trading by API key then reads (positions) but sends nothing.
        price_keeper: on the embedded chain, the account that sets demo prices: the price feed (its manual
            controls) exists whenever it is given; its random walk runs only with `price_feed_interval_s` > 0.
        metrics: what the services count and time (the app's; the null object by default: nothing).

    Raises:
        ConfigurationError: no chain to serve, the node is on another chain than the deployments file says,
            another process relays through the journal, or its records of this chain id belong to another
            chain.
        VaultNotDeployedError, ChainUnavailableError: from the start-up checks.
    """
    client = await _start_client(settings, chain, client)
    runtime: Runtime | None = None
    keys: KeyStore | None = None
    try:
        builder = TransactionBuilder(client, gas_limit_margin_bps=settings.gas_limit_margin_bps)
        # Never makes the file: a relaying start (below) or `relayer keys create` does.
        keys = open_key_store(settings.store, create=False)
        embedded = chain if chain is not None and settings.rpc_url is None else None
        runtime = Runtime(settings, embedded, client, builder, keys, metrics=metrics)
        client.metrics = metrics
        if signers:
            await _start_relay(runtime, signers)
        if price_keeper is not None and embedded is not None:
            await _start_price_feed(runtime, embedded, price_keeper)
        yield runtime
    finally:
        if runtime is not None:
            await _stop(runtime)
        if keys is not None:
            keys.close()
        await client.aclose()


async def _start_relay(runtime: Runtime, signers: Sequence[Signer]) -> None:
    settings = runtime.settings
    # Holds the relay lock until `_stop`.
    journal = await open_bound_journal(settings, runtime.client, runtime.chain)
    journal.notices_enabled = settings.relay.notices
    try:
        relay = RelayService(
            chain=runtime.client,
            signers=list(signers),
            settings=settings.relay,
            journal=journal,
            instance=settings.instance_name,
            policy=settings.sponsor.to_policy(),
            metrics=runtime.metrics,
        )
        relay.start()  # resumes once (nonces from the chain, unfinished records) before a new nonce is taken
    except BaseException:
        journal.close()
        raise
    relay.watch.interval_s = settings.trading.poll_interval_s
    relay.default_slippage_bps = settings.trading.default_slippage_bps
    runtime.relay = relay  # trading sends from here on
    runtime.keeper = Keeper(
        relay=relay,
        from_block=settings.keeper_from_block,
        metrics=runtime.metrics,
        ratchet_min_bps=settings.keeper_ratchet_min_bps,
    )
    runtime.notices = NoticeFeed(
        journal, poll_interval_s=settings.stream.poll_interval_s, max_queued=settings.stream.max_queued
    )
    await runtime.notices.start()
    if isinstance(journal, SqlJournal) and journal.chain_id is not None:
        store = WebhookStore(journal.db, journal.chain_id)
        runtime.webhooks = WebhookService(store, settings.webhooks, runtime.trading.authenticate)
        runtime.webhooks.start()  # its own task (a slow receiver never holds up the relay loop); prune-only
        if settings.webhooks.enabled:  # when disabled, so old notices are deleted either way
            runtime.webhooks.listen(journal)  # a round as soon as this process commits notices
    if settings.keeper_interval_s > 0:  # 0: nobody runs it in the background (tests call `tick()`)
        _loop(runtime, "keeper", runtime.keeper.tick, settings.keeper_interval_s)
    log.info("relay started signers=%s", ",".join(relay.pool.addresses))


async def _start_price_feed(runtime: Runtime, chain: Chain, keeper: LocalAccount) -> None:
    settings = runtime.settings
    client = runtime.client
    markets = (await client.read_markets()).prices
    prices = {price.market: price.price_e8 for price in markets}
    vault = client.vault_address

    def move(market: str, price_e8: int) -> None:
        with chain.lock:
            send(chain.w3, keeper, vault, calldata.set_price(market, price_e8))

    walking = settings.price_feed_interval_s > 0
    feed = runtime.price_feed = PriceFeed(
        move,
        prices,
        seed=settings.price_feed_seed,
        max_step_bps=settings.price_feed_max_step_bps,
        walking=walking,
    )
    if walking:  # the first move waits one interval: the demo starts from the prices it printed

        async def step() -> None:
            await anyio.to_thread.run_sync(feed.tick)  # a chain transaction through web3 (blocking)

        _loop(runtime, "price-feed", step, settings.price_feed_interval_s, run_first=False)


def _loop(
    runtime: Runtime,
    name: str,
    step: Callable[[], Awaitable[object]],
    interval_s: float,
    *,
    run_first: bool = True,
) -> None:
    periodic = Periodic(name, step, interval_s, run_first=run_first)
    periodic.start()
    runtime._loops.append(periodic)


async def _stop(runtime: Runtime) -> None:
    if runtime.notices is not None:
        await runtime.notices.stop()  # ends every stream first
    for periodic in reversed(runtime._loops):
        await periodic.stop()
    if runtime.webhooks is not None:
        await runtime.webhooks.stop()  # before the journal it reads closes
    if runtime.relay is not None:
        await runtime.relay.stop()
        runtime.relay.journal.close()  # lets go of the relay lock
