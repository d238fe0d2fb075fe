"""The FastAPI application factory: `create_app(settings)`; nothing is connected or configured at import.

The lifespan opens the process's services once with `relayer.runtime.open_runtime` (chain client, vault
check, `TransactionBuilder`, the API-key store and trading; with relayer signers the relay and the keeper; on
the embedded chain optionally the demo price feed) and leaves them on `app.state`: `runtime` (`Runtime`, which
the relay and trading routes ask for their service), and for the routes `settings`, `chain` (the embedded
chain or None), `client` (`ChainClient`), `builder`. On the embedded chain every direct use of `chain.w3`
holds `chain.lock` (py-evm is not thread-safe; the client's own calls take it too).

Routes: the builder's (`relayer.faces.api.routes`), the relay's (`relay_routes`), API-key trading
(`trading_routes`) and the operator console (`console_routes`: `/console` and `/api/console`); the MCP
tool server is mounted at `/mcp/` (streamable HTTP, stateless: no sessions, so nothing a client's
`initialize` could pile up; `app.state.mcp` is the server). Further services plug in
as `services`: async context managers entered after the core resources exist and left before they close.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from eth_account.signers.local import LocalAccount
from fastapi import APIRouter, Depends, FastAPI

from relayer import __version__
from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain
from relayer.config import Settings
from relayer.faces.api import console_routes, demo_routes, relay_routes, trading_routes, webhook_routes
from relayer.faces.api.errors import install_error_handlers
from relayer.faces.api.hot_path import HotRoutes
from relayer.faces.api.inputs import strict_query
from relayer.faces.api.metrics_routes import RequestMetrics, metrics_port
from relayer.faces.api.metrics_routes import router as metrics_router
from relayer.faces.api.middleware import RequestGuard, StrictJsonBody
from relayer.faces.api.routes import router
from relayer.faces.api.stream_routes import router as stream_router
from relayer.faces.mcp import build_mcp_server
from relayer.runtime import Runtime, open_runtime
from relayer.services.metrics import build_metrics
from relayer.services.relay.signers import Signer
from relayer.services.trading import TradingService

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
    client: ChainClient | None = None,
    signers: Sequence[Signer] = (),
    price_keeper: LocalAccount | None = None,
    extra_routers: Sequence[APIRouter] = (),
    services: Sequence[ServiceHook] = (),
) -> FastAPI:
    """The REST API (and the MCP server at `/mcp/`) over `settings`' node, or over an embedded `chain`.

    `client` overrides how the chain is read (tests, embedding). `signers` are the relayer's accounts: with
    none, the app builds transactions and reads positions by API key, and answers 503 `relay_not_configured`
    on the relay routes and the trading routes that send or read relay records. Nothing connects before the
    lifespan starts.

    Raises (at start-up):
        ConfigurationError: no chain to serve, or the node is on another chain than the deployments file says.
        VaultNotDeployedError: the address does not hold this vault's code.
        ChainUnavailableError: the node does not answer.
    """
    state: dict[str, Runtime] = {}
    metrics = build_metrics(settings.metrics)  # this app's own registry (`relayer.services.metrics`)

    def trading() -> TradingService:
        return state["runtime"].trading

    mcp = build_mcp_server(trading)
    # Stateless: every MCP request stands alone (the tools are request/response and take their API key as an
    # argument), so no `initialize` leaves a session behind: anonymous clients have no table to fill.
    mcp_app = mcp.streamable_http_app(streamable_http_path="/", host=settings.host, stateless_http=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(
            settings, chain=chain, client=client, signers=signers, price_keeper=price_keeper, metrics=metrics
        ) as runtime:
            state["runtime"] = runtime
            app.state.runtime = runtime
            app.state.settings = settings
            app.state.chain = runtime.chain
            app.state.client = runtime.client
            app.state.builder = runtime.builder
            app.state.price_feed = runtime.price_feed
            log.info(
                "serving vault %s on chain %s via %s",
                runtime.client.vault_address,
                runtime.client.chain_id,
                settings.rpc_url_for_display,
            )
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(mcp.session_manager.run())
                stack.callback(metrics.close)
                app.state.metrics_port = await stack.enter_async_context(metrics_port(settings, runtime))
                for hook in services:
                    await stack.enter_async_context(hook(app))
                yield

    app = FastAPI(
        title="vault-relayer",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(strict_query)],
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(relay_routes.router)
    app.include_router(trading_routes.router)
    app.include_router(demo_routes.router)
    app.include_router(stream_router)
    app.include_router(webhook_routes.router)
    app.include_router(console_routes.router)
    for extra in extra_routers:
        app.include_router(extra)
    if metrics.enabled:  # off: no route, `/metrics` is a 404 like any unknown path
        app.include_router(metrics_router)
    app.mount("/mcp", StrictJsonBody(mcp_app))
    app.add_middleware(HotRoutes)  # innermost: POST /api/closeposition without FastAPI's routing
    app.add_middleware(RequestGuard, body_timeout_s=settings.http.body_timeout_s)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts the guard's refusals too
    app.state.mcp = mcp
    return app
