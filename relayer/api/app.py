"""The FastAPI application factory: `create_app(settings)`; nothing is connected or configured at import.

The lifespan builds the shared resources once: the chain gateway (JSON-RPC for a node, the locked web3 gateway
for the embedded chain), the vault check, and the `TransactionBuilder`. It leaves them on `app.state`:

- `settings` (`Settings`), `chain` (`Chain | None`: the sync web3 connection, for services that send),
- `gateway` (`ChainGateway`), `builder` (`TransactionBuilder`),
- `chain_lock` (`threading.RLock | None`): on the embedded chain, EVERY access to `chain.w3` must hold it
  (py-evm is not thread-safe and the API reads it from worker threads).

Further services (a relay worker, a price keeper) plug in as `services`: async context managers entered after
the core resources exist and left before they close; extra routers come in as `extra_routers`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI

from relayer.api.errors import install_error_handlers
from relayer.api.routes import router
from relayer.builder import TransactionBuilder
from relayer.chain import Chain, rpc_chain
from relayer.config import Settings
from relayer.errors import ConfigurationError
from relayer.gateway import ChainGateway, JsonRpcGateway, Web3Gateway

log = logging.getLogger("relayer.api")

ServiceHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]
"""Started by the lifespan once `app.state` holds the core resources; stopped before they close."""

API_DESCRIPTION = """\
Builds transactions for a perpetual-futures vault: close, partially close, or set take-profit / stop-loss,
checked and simulated against the chain, returned ready for the position owner to sign.

All amounts are exact decimal strings in human units (base asset, USD, ETH); request numbers may be JSON
numbers or decimal strings and are never rounded. Errors: `{"error": {"code", "message", "details"}}`.
"""


def create_app(
    settings: Settings,
    *,
    chain: Chain | None = None,
    gateway: ChainGateway | None = None,
    extra_routers: Sequence[APIRouter] = (),
    services: Sequence[ServiceHook] = (),
) -> FastAPI:
    """The REST API over `settings`' node, or over `chain` (an embedded chain with `settings.vault_address`).

    `gateway` overrides how the chain is read (tests, embedding). Nothing connects before the lifespan starts.

    Raises (at start-up):
        ConfigurationError: no chain to serve, or the node is on another chain than the deployments file says.
        VaultNotDeployedError: the address does not hold this vault's code.
        ChainUnavailableError: the node does not answer.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chain_gateway, sync_chain, lock = _connect(settings, chain, gateway)
        try:
            await chain_gateway.start()
            if settings.expected_chain_id not in (None, chain_gateway.chain_id):
                raise ConfigurationError(
                    f"the node is on chain {chain_gateway.chain_id}, the deployments file on"
                    f" {settings.expected_chain_id}"
                )
            app.state.settings = settings
            app.state.chain = sync_chain
            app.state.chain_lock = lock
            app.state.gateway = chain_gateway
            app.state.builder = TransactionBuilder(
                chain_gateway, gas_limit_margin_bps=settings.gas_limit_margin_bps
            )
            log.info(
                "serving vault %s on chain %s via %s",
                chain_gateway.vault_address,
                chain_gateway.chain_id,
                settings.rpc_url_for_display,
            )
            async with AsyncExitStack() as stack:
                for hook in services:
                    await stack.enter_async_context(hook(app))
                yield
        finally:
            await chain_gateway.aclose()

    app = FastAPI(
        title="vault-relayer",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    for extra in extra_routers:
        app.include_router(extra)
    return app


def _connect(
    settings: Settings, chain: Chain | None, gateway: ChainGateway | None
) -> tuple[ChainGateway, Chain | None, threading.RLock | None]:
    """The gateway, the sync chain for services that send, and the lock guarding an embedded chain."""
    if settings.rpc_url is not None:
        url = settings.rpc_url.get_secret_value()
        sync_chain = chain or rpc_chain(url)
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
