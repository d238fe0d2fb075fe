"""Everything a running relayer holds, built once from `Settings` and torn down in reverse.

`open_runtime` is shared by the HTTP app's lifespan and the stdio MCP server, so both faces run the same
services the same way: the chain gateway, the `TransactionBuilder`, the API-key store and the
`TradingService` always (reads by API key need no signer); with relayer signers, the `RelayService`
(journal, nonces, background loop), which trading then sends through, and the keeper; on the embedded chain
with a price keeper, the demo price feed (its random walk only with an interval).

`check_startup` runs the same start-up checks and stops: `relayer serve` calls it before handing the app to
uvicorn, so a node that is down, a wrong vault, a journal another process relays through or one whose
records of this chain id belong to another chain ends as one line and an exit code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain, rpc_chain
from relayer.chain.gateway import ChainGateway
from relayer.chain.jsonrpc_gateway import JsonRpcGateway
from relayer.chain.transact import send
from relayer.chain.vault import VaultReader, call_chain
from relayer.chain.web3_gateway import Web3Gateway
from relayer.config import Settings
from relayer.domain import calldata
from relayer.errors import ConfigurationError, RelayNotConfiguredError
from relayer.services.builder import TransactionBuilder
from relayer.services.keeper import Keeper
from relayer.services.periodic import Periodic
from relayer.services.price_feed import PriceFeed
from relayer.services.relay.service import RelayService
from relayer.services.relay.signers import Signer
from relayer.services.trading import TradingService
from relayer.stores.journal import Journal
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.keys import KeyStore, SqliteKeyStore

log = logging.getLogger("relayer.runtime")


@dataclass
class Runtime:
    """The services of one process. `relay` and `keeper` are None when no relayer signer is configured;
    `trading` always exists and sends through `relay` once it is there."""

    settings: Settings
    chain: Chain | None
    chain_lock: threading.RLock | None
    gateway: ChainGateway
    builder: TransactionBuilder
    keys: KeyStore
    relay: RelayService | None = None
    keeper: Keeper | None = None
    price_feed: PriceFeed | None = None
    trading: TradingService = field(init=False)
    vault_reader: VaultReader | None = None
    """The vault read through the relay's chain (set with `relay`): operator approvals, the keeper's reads."""
    _loops: list[Periodic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trading = TradingService(
            builder=self.builder,
            keys=self.keys,
            relay=self.require_relay,
            is_operator=self.is_operator,
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

    def is_operator(self, owner: str, operator: str) -> bool:
        """Whether `owner` approved `operator` (a relayer signer) as its vault operator; read through the
        relay's node (blocking).

        Raises:
            RelayNotConfiguredError: no relayer signer is configured.
        """
        relay = self.require_relay()
        reader = self.vault_reader
        assert reader is not None  # set with the relay (`_start_relay`)
        return relay.node.read(lambda: reader.is_operator(owner, operator))

    async def health(self) -> dict[str, Any]:
        """`GET /health`: the chain (503 `chain_unavailable` when it does not answer) and, with a relay, its
        signers; a signer below the minimum balance makes the status `degraded` (still 200: it serves)."""
        body = (await self.builder.health()).to_dict()
        if self.relay is not None:
            body["relay"] = await anyio.to_thread.run_sync(self.relay.health)
            if body["relay"]["lowBalance"]:
                body["status"] = "degraded"
        return body


def connect(
    settings: Settings, chain: Chain | None, gateway: ChainGateway | None
) -> tuple[ChainGateway, Chain | None, threading.RLock | None]:
    """The gateway, the sync chain for services that send, and the lock guarding an embedded chain."""
    if settings.rpc_url is not None:
        url = settings.rpc_url.get_secret_value()
        sync_chain = chain or rpc_chain(url, timeout_s=settings.rpc_timeout_s)
        if gateway is None:
            assert settings.vault_address is not None  # Settings requires it with rpc_url
            gateway = JsonRpcGateway.connect(url, settings.vault_address, timeout_s=settings.rpc_timeout_s)
        return gateway, sync_chain, None
    if gateway is not None:
        return gateway, chain, gateway.lock if isinstance(gateway, Web3Gateway) else None
    if chain is None or settings.vault_address is None:
        raise ConfigurationError("nothing to serve: set rpc_url and vault_address, or pass an embedded chain")
    web3_gateway = Web3Gateway(chain.w3, settings.vault_address)
    return web3_gateway, chain, web3_gateway.lock


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


def chain_binding(chain: Chain, lock: threading.RLock | None = None) -> ChainBinding:
    """The chain a journal started on `chain` binds to: its id and genesis block hash, and for the embedded
    chain the run it belongs to (`Chain.run_id`). Blocking node calls.

    Raises:
        ChainUnavailableError: the node does not answer.
    """
    with lock if lock is not None else contextlib.nullcontext():
        chain_id = int(call_chain(lambda: chain.w3.eth.chain_id))
        genesis = call_chain(lambda: chain.w3.eth.get_block(0))
    run = chain.run_id if chain.is_embedded else None
    return ChainBinding(chain_id, "0x" + bytes(genesis["hash"]).hex(), run)


def open_bound_journal(settings: Settings, chain: Chain, lock: threading.RLock | None = None) -> Journal:
    """The relay journal of `settings`, opened for relaying (holding its relay lock until it is closed) and
    bound to `chain` before anything in it is resumed (`Journal.bind_to_chain`).

    Raises:
        ConfigurationError: the journal cannot be opened, another process relays through it, or its records
            of this chain id belong to another chain.
        ChainUnavailableError: the node does not answer.
    """
    binding = chain_binding(chain, lock)
    journal = Journal(settings.relay.journal_path, relaying=True)
    try:
        dropped = journal.bind_to_chain(binding, now=int(time.time()))
    except BaseException:
        journal.close()
        raise
    if dropped:
        log.info("journal dropped %d relay records of an earlier run's embedded chain", dropped)
    return journal


async def _start_gateway(
    settings: Settings, chain: Chain | None, gateway: ChainGateway | None
) -> tuple[ChainGateway, Chain | None, threading.RLock | None]:
    """`connect`, then the gateway's own checks (the node answers, the vault's code is there) and the chain
    id; the gateway is closed again if any of them fails."""
    chain_gateway, sync_chain, lock = connect(settings, chain, gateway)
    try:
        await chain_gateway.start()
        check_expected_chain(settings, chain_gateway.chain_id)
    except BaseException:
        await chain_gateway.aclose()
        raise
    return chain_gateway, sync_chain, lock


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
    chain_gateway, sync_chain, lock = await _start_gateway(settings, chain, None)
    try:
        if signers and sync_chain is not None:
            bound = sync_chain
            journal = await anyio.to_thread.run_sync(lambda: open_bound_journal(settings, bound, lock))
            journal.close()
    finally:
        await chain_gateway.aclose()


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    chain: Chain | None = None,
    gateway: ChainGateway | None = None,
    signers: Sequence[Signer] = (),
    price_keeper: LocalAccount | None = None,
) -> AsyncIterator[Runtime]:
    """Start every service `settings` asks for; stop them all (in reverse) on exit.

    Args:
        signers: relayer accounts (from the environment, or the embedded chain's demo signers); none means no
            relay and no keeper: trading by API key then reads (positions) but sends nothing.
        price_keeper: on the embedded chain, the account that sets demo prices: the price feed (its manual
            controls) exists whenever it is given; its random walk runs only with `price_feed_interval_s` > 0.

    Raises:
        ConfigurationError: no chain to serve, the node is on another chain than the deployments file says,
            another process relays through the journal, or its records of this chain id belong to another
            chain.
        VaultNotDeployedError, ChainUnavailableError: from the start-up checks.
    """
    chain_gateway, sync_chain, lock = await _start_gateway(settings, chain, gateway)
    runtime: Runtime | None = None
    keys: KeyStore | None = None
    try:
        builder = TransactionBuilder(chain_gateway, gas_limit_margin_bps=settings.gas_limit_margin_bps)
        # Never makes the file: a relaying start (below) or `relayer keys create` does.
        keys = SqliteKeyStore(settings.relay.journal_path, create=False)
        runtime = Runtime(settings, sync_chain, lock, chain_gateway, builder, keys)
        if signers and sync_chain is not None:
            _start_relay(runtime, sync_chain, signers)
        if price_keeper is not None and sync_chain is not None:
            _start_price_feed(runtime, sync_chain, price_keeper)
        yield runtime
    finally:
        if runtime is not None:
            _stop(runtime)
        if keys is not None:
            keys.close()
        await chain_gateway.aclose()


def _start_relay(runtime: Runtime, chain: Chain, signers: Sequence[Signer]) -> None:
    settings = runtime.settings
    vault = runtime.gateway.vault_address
    journal = open_bound_journal(settings, chain, runtime.chain_lock)  # holds the relay lock until `_stop`
    try:
        relay = RelayService(
            chain=chain,
            vault_address=vault,
            signers=list(signers),
            settings=settings.relay,
            journal=journal,
            chain_lock=runtime.chain_lock,
        )
        relay.start()  # resumes once (nonces from the chain, unfinished records) before a new nonce is taken
    except BaseException:
        journal.close()
        raise
    reader = VaultReader(chain.w3, vault)
    runtime.relay, runtime.vault_reader = relay, reader  # trading sends from here on
    runtime.keeper = Keeper(vault=reader, relay=relay, from_block=settings.keeper_from_block)
    if settings.keeper_interval_s > 0:  # 0: nobody runs it in the background (tests call `tick()`)
        _loop(runtime, "keeper", runtime.keeper.tick, settings.keeper_interval_s)
    log.info("relay started signers=%s", ",".join(relay.pool.addresses))


def _start_price_feed(runtime: Runtime, chain: Chain, keeper: LocalAccount) -> None:
    settings = runtime.settings
    vault = runtime.gateway.vault_address
    reader = VaultReader(chain.w3, vault)
    lock = runtime.chain_lock or threading.RLock()
    with lock:
        prices = {market: reader.price(market).price_e8 for market in reader.markets()}

    def move(market: str, price_e8: int) -> None:
        with lock:
            send(chain.w3, keeper, vault, calldata.set_price(market, price_e8))

    walking = settings.price_feed_interval_s > 0
    runtime.price_feed = PriceFeed(
        move,
        prices,
        seed=settings.price_feed_seed,
        max_step_bps=settings.price_feed_max_step_bps,
        walking=walking,
    )
    if walking:  # the first move waits one interval: the demo starts from the prices it printed
        _loop(runtime, "price-feed", runtime.price_feed.tick, settings.price_feed_interval_s, run_first=False)


def _loop(
    runtime: Runtime, name: str, step: Callable[[], object], interval_s: float, *, run_first: bool = True
) -> None:
    periodic = Periodic(name, step, interval_s, run_first=run_first)
    periodic.start()
    runtime._loops.append(periodic)


def _stop(runtime: Runtime) -> None:
    for periodic in reversed(runtime._loops):
        periodic.stop()
    if runtime.relay is not None:
        runtime.relay.stop()
        runtime.relay.journal.close()  # lets go of the relay lock
