"""Everything a running relayer holds, built once from `Settings` and torn down in reverse.

`open_runtime` is shared by the HTTP app's lifespan and the stdio MCP server, so both faces run the same
services the same way: the chain gateway and the `TransactionBuilder` always; with relayer signers, the
`RelayService` (journal, nonces, background loop), the `TradingService` behind API keys, and the keeper;
on the embedded chain, optionally the demo price feed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from eth_account.signers.local import LocalAccount

from relayer import calldata
from relayer.builder import TransactionBuilder
from relayer.chain import Chain, rpc_chain
from relayer.config import Settings
from relayer.errors import ConfigurationError, RelayNotConfiguredError
from relayer.gateway import ChainGateway, JsonRpcGateway, Web3Gateway
from relayer.keeper import Keeper
from relayer.markets import symbol_to_bytes32
from relayer.periodic import Periodic
from relayer.price_feed import PriceFeed
from relayer.relay.service import RelayService
from relayer.relay.signers import Signer
from relayer.trading import TradingService
from relayer.transact import send
from relayer.vault import VaultReader

log = logging.getLogger("relayer.runtime")


@dataclass
class Runtime:
    """The services of one process. `relay` and `trading` are None when no relayer signer is configured."""

    settings: Settings
    chain: Chain | None
    chain_lock: threading.RLock | None
    gateway: ChainGateway
    builder: TransactionBuilder
    relay: RelayService | None = None
    trading: TradingService | None = None
    keeper: Keeper | None = None
    price_feed: PriceFeed | None = None
    _loops: list[Periodic] = field(default_factory=list)

    def require_relay(self) -> RelayService:
        if self.relay is None:
            raise RelayNotConfiguredError
        return self.relay

    async def health(self) -> dict[str, Any]:
        """`GET /health`: the chain (503 `chain_unavailable` when it does not answer) and, with a relay, its
        signers; a signer below the minimum balance makes the status `degraded` (still 200: it serves)."""
        body = (await self.builder.health()).to_dict()
        if self.relay is not None:
            body["relay"] = await anyio.to_thread.run_sync(self.relay.health)
            if body["relay"]["lowBalance"]:
                body["status"] = "degraded"
        return body

    def require_trading(self) -> TradingService:
        self.require_relay()
        assert self.trading is not None
        return self.trading


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
            relay, no trading and no keeper.
        price_keeper: on the embedded chain, the account that moves demo prices (when the feed is on).

    Raises:
        ConfigurationError: no chain to serve, or the node is on another chain than the deployments file says.
        VaultNotDeployedError, ChainUnavailableError: from the start-up checks.
    """
    chain_gateway, sync_chain, lock = connect(settings, chain, gateway)
    await chain_gateway.start()
    runtime: Runtime | None = None
    try:
        if settings.expected_chain_id not in (None, chain_gateway.chain_id):
            raise ConfigurationError(
                f"the node is on chain {chain_gateway.chain_id}, the deployments file on"
                f" {settings.expected_chain_id}"
            )
        builder = TransactionBuilder(chain_gateway, gas_limit_margin_bps=settings.gas_limit_margin_bps)
        runtime = Runtime(settings, sync_chain, lock, chain_gateway, builder)
        if signers and sync_chain is not None:
            _start_relay(runtime, sync_chain, signers)
        if price_keeper is not None and sync_chain is not None and settings.price_feed_interval_s > 0:
            _start_price_feed(runtime, sync_chain, price_keeper)
        yield runtime
    finally:
        if runtime is not None:
            _stop(runtime)
        await chain_gateway.aclose()


def _start_relay(runtime: Runtime, chain: Chain, signers: Sequence[Signer]) -> None:
    settings = runtime.settings
    vault = runtime.gateway.vault_address
    relay = RelayService(
        chain=chain,
        vault_address=vault,
        signers=list(signers),
        settings=settings.relay,
        chain_lock=runtime.chain_lock,
    )
    relay.start()  # resumes once (nonces from the chain, unfinished records) before any new nonce is taken
    runtime.relay = relay
    reader = VaultReader(chain.w3, vault)
    runtime.trading = TradingService(
        builder=runtime.builder,
        relay=relay,
        keys=relay.journal,
        is_operator=lambda owner, operator: relay.node.read(lambda: reader.is_operator(owner, operator)),
        settings=settings.trading,
    )
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
            data = calldata.encode_call("setPrice", symbol_to_bytes32(market), price_e8)
            send(chain.w3, keeper, vault, data)

    runtime.price_feed = PriceFeed(
        move, prices, seed=settings.price_feed_seed, max_step_bps=settings.price_feed_max_step_bps
    )
    # The first move waits one interval: the demo starts from the prices it printed.
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
        runtime.relay.journal.close()
