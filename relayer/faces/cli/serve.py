"""`relayer serve`, `relayer mcp` and `relayer keeper`: the long-running commands, which share their start-up
(`_prepare`: settings, the relayer signers, the journal's relay lock, and on the embedded chain the demo
world) and run the services `relayer.runtime` builds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain, embedded_chain
from relayer.config import Settings
from relayer.constants import DEFAULT_API_HOST, DEFAULT_API_PORT
from relayer.errors import ConfigurationError
from relayer.faces import logs
from relayer.faces.cli.common import EXIT_OK, Subparsers, add_command
from relayer.services.demo_world import (
    DEMO_PRICE_FEED_INTERVAL_S,
    DEMO_RELAY_POLL_INTERVAL_S,
    JournalNote,
    approve_relayer,
    demo_signers,
    describe,
    issue_demo_keys,
    setup_demo_world,
)
from relayer.services.relay.signers import Signer, load_signers
from relayer.stores.journal_chains import ChainBinding
from relayer.stores.journal_port import Journal
from relayer.stores.location import open_journal, open_key_store
from relayer.stores.relay_lock import lock_for_relaying


@dataclass
class Prepared:
    """What `serve`, `mcp` and `keeper` share: settings, the chain (embedded), relayer signers, a banner."""

    settings: Settings
    chain: Chain | None
    signers: list[Signer]
    price_keeper: LocalAccount | None
    banner: str


def _load_settings(args: argparse.Namespace) -> Settings:
    """Settings from env + flags (flags win), logging configured first; `--journal` replaces the journal
    path of `RELAYER_RELAY_JOURNAL_PATH` or the default."""
    logs.configure(getattr(args, "log_level", None) or os.environ.get("RELAYER_LOG_LEVEL") or "info")
    settings = Settings.load(
        os.environ,
        rpc_url=args.rpc_url,
        vault_address=args.vault,
        deployments_file=args.deployments,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        log_level=getattr(args, "log_level", None),
        price_feed_interval_s=getattr(args, "price_feed_interval", None),
        price_feed_seed=getattr(args, "seed", None),
        database_url=getattr(args, "database_url", None),
    )
    journal = getattr(args, "journal", None)
    if journal:
        relay = settings.relay.model_copy(update={"journal_path": Path(journal)})
        settings = settings.model_copy(update={"relay": relay})
    return settings


def _prepare(
    settings: Settings, base_url: str | None, *, hold: contextlib.ExitStack | None = None
) -> Prepared:
    """On a node: the signers and a banner. On the embedded chain also the demo world, its signers, and the
    persistent journal readied for this new chain (see `_ready_embedded_journal`).

    A relaying start (signers, or the embedded chain, which always has its demo signers) takes the journal's
    relay lock first (`lock_for_relaying`), so a second relayer on the journal stops here, before anything
    changes: for the binding only, or, given `hold`, for as long as that stack lives (`serve` and `keeper`
    hold it through to their end; the runtime takes its own share for as long as its relay runs).

    Raises:
        ConfigurationError: another process relays through the journal; a vault address without a node; on
            the embedded chain, the journal's records of its chain id belong to a real chain.
    """
    signers = load_signers(os.environ)
    store = settings.store
    journal_path = store.describe() if store.shared else str(settings.relay.journal_path.resolve())
    if hold is not None and (signers or settings.embedded) and not store.shared:
        hold.enter_context(lock_for_relaying(settings.relay.journal_path))
    if not settings.embedded:
        banner = f"serving vault {settings.vault_address} on {settings.rpc_url_for_display}"
        if signers:
            banner += f"\nrelayer signers: {', '.join(signer.address for signer in signers)}"
            banner += "\n  (accounts approve them once: `relayer operator approve ADDRESS` as the account)"
            banner += f"\njournal (relay records and API keys): {journal_path}"
        else:
            banner += (
                "\n(no relayer signer: set RELAYER_SIGNER_KEY to relay and trade; building, and reading"
                f" positions by API key, still work)\nAPI keys: {journal_path}"
            )
        return Prepared(settings, None, signers, None, banner)
    if settings.vault_address is not None:
        raise ConfigurationError("a vault address needs --rpc-url: the embedded chain deploys its own")
    if store.shared:
        # Every embedded chain lives and dies with its process: instances sharing a database would each
        # start a chain of their own under one chain id, and each start drops the last run's records.
        raise ConfigurationError(
            "a shared database (RELAYER_DATABASE_URL) is for several instances on one node: give --rpc-url;"
            " the embedded chain keeps its journal in a file"
        )
    chain = embedded_chain()
    journal = open_journal(store, relaying=True)
    try:
        dropped = _ready_embedded_journal(journal, chain)
        world = setup_demo_world(chain)
        signers = signers or demo_signers(chain)
        approve_relayer(chain, world, [signer.address for signer in signers])
        key_store = open_key_store(store, create=True)
        try:
            keys = issue_demo_keys(key_store, world.traders[0].address)
        finally:
            key_store.close()
    finally:
        journal.close()
    settings = settings.model_copy(
        update={
            "vault_address": world.deployment.address,
            # A local chain answers in milliseconds: poll receipts often so a demo close reports back at once.
            "relay": settings.relay.model_copy(update={"poll_interval_s": DEMO_RELAY_POLL_INTERVAL_S}),
            "keeper_from_block": world.deployment.block_number,
        }
    )
    banner = describe(
        world,
        base_url,
        keys=keys,
        signers=[s.address for s in signers],
        journal=JournalNote(journal_path, dropped),
    )
    return Prepared(settings, chain, signers, world.deployer, banner)


def _ready_embedded_journal(journal: Journal, chain: Chain) -> int:
    """Bind the persistent journal to this process's new embedded chain; returns the records dropped.

    The embedded chain is born new on every run while the journal (with its API keys) persists. Relay records
    of an earlier run's embedded chain belong to a chain that no longer exists: resuming them would resend
    dead transactions, and their (sender, nonce) pairs would collide with the new chain's nonces, which start
    again at 0. Binding to the new chain drops them (`Journal.bind_to_chain`: only records of the embedded
    chain's id written by another run; records of every other chain id, a node's server's in the same
    folder included, stay untouched) and keeps API keys. `journal` is opened for relaying: the relay lock
    keeps a running relayer's records from being dropped under it.

    Raises:
        ConfigurationError: the journal's records of the embedded chain's id were written by a real chain.
    """
    with chain.lock:
        binding = ChainBinding(
            chain.w3.eth.chain_id, chain.w3.eth.get_block(0)["hash"].to_0x_hex(), chain.run_id
        )
    return journal.bind_to_chain(binding, now=int(time.time()))


def _starting_line(settings: Settings) -> str:
    if settings.embedded:
        return "starting: on the embedded chain this deploys the vault and opens demo positions..."
    return (
        f"starting: checking the node at {settings.rpc_url_for_display} and the vault"
        f" {settings.vault_address}..."
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve REST and MCP: over a node with --rpc-url, else over an embedded chain with a demo world.

    The start-up checks (the node answers, the vault's code is at the address, the chain id, the journal's
    chain) run before uvicorn gets the app, so their failure is one `error [code]: message` line and the
    CLI's exit code (3 for a node that is down, 1 otherwise) instead of uvicorn's lifespan traceback.
    """
    import anyio
    import uvicorn

    from relayer.faces.api.app import create_app
    from relayer.faces.api.edge import server_config
    from relayer.runtime import check_startup

    settings = _load_settings(args)
    if settings.metrics.enabled and settings.metrics.multiproc_dir is not None:
        from relayer.services.metrics import use_multiprocess_dir

        use_multiprocess_dir(settings.metrics.multiproc_dir)  # before any metric value exists
    if (
        settings.embedded
        and args.price_feed_interval is None
        and not os.environ.get("RELAYER_PRICE_FEED_INTERVAL_S")
    ):
        settings = settings.model_copy(update={"price_feed_interval_s": DEMO_PRICE_FEED_INTERVAL_S})
    print(_starting_line(settings), flush=True)
    with contextlib.ExitStack() as hold:  # the journal's relay lock, from the first check to the last request
        prepared = _prepare(settings, f"http://{settings.host}:{settings.port}", hold=hold)
        settings = prepared.settings
        anyio.run(functools.partial(check_startup, settings, chain=prepared.chain, signers=prepared.signers))
        print(prepared.banner, flush=True)
        app = create_app(
            settings, chain=prepared.chain, signers=prepared.signers, price_keeper=prepared.price_keeper
        )
        uvicorn.Server(server_config(app, settings)).run()  # one worker, the edge bounds of settings.http
    return EXIT_OK


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the MCP tools on stdio (stdout is the protocol: everything human goes to stderr)."""
    import anyio

    from relayer.faces.mcp import build_mcp_server
    from relayer.faces.mcp_fills import RecentFills
    from relayer.runtime import open_runtime

    prepared = _prepare(_load_settings(args), None)
    print(prepared.banner, file=sys.stderr, flush=True)

    async def serve() -> None:
        async with open_runtime(prepared.settings, chain=prepared.chain, signers=prepared.signers) as runtime:
            key = prepared.settings.stream.mcp_api_key
            fills = None
            if key is not None:  # the recent-fills resource, for this key's account
                fills = RecentFills(lambda: runtime.trading, lambda: runtime.notices, key.get_secret_value())
            await build_mcp_server(lambda: runtime.trading, fills=fills).run_stdio_async()

    anyio.run(serve)
    return EXIT_OK


def cmd_keeper(args: argparse.Namespace) -> int:
    """Run the keeper (and the relayer that sends for it) until interrupted; `serve` runs one too."""
    import anyio

    from relayer.runtime import open_runtime

    with contextlib.ExitStack() as hold:  # the journal's relay lock, until the keeper stops
        prepared = _prepare(_load_settings(args), None, hold=hold)
        print(prepared.banner, file=sys.stderr, flush=True)
        interval_s = args.interval

        async def run() -> None:
            async with open_runtime(
                prepared.settings.model_copy(update={"keeper_interval_s": 0}),
                chain=prepared.chain,
                signers=prepared.signers,
            ) as runtime:
                runtime.require_relay()
                keeper = runtime.keeper
                assert keeper is not None
                print(f"keeper: checking every {interval_s}s (Ctrl-C to stop)", file=sys.stderr, flush=True)
                while True:
                    for execution in await keeper.tick():
                        side = "take-profit" if execution.is_take_profit else "stop-loss"
                        position = f"0x{execution.position_id.hex()}"
                        print(f"executed {side} of {position}: record {execution.record_id}")
                    await anyio.sleep(interval_s)

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how an operator stops the keeper
            anyio.run(run)
    return EXIT_OK


def add_serve_commands(subparsers: Subparsers) -> None:
    """Add `serve`, `mcp` and `keeper` to the `relayer` command's subparsers."""
    serve = add_command(
        subparsers,
        "serve",
        cmd_serve,
        help="serve the REST API (embedded chain with demo accounts and positions unless --rpc-url)",
        description="Flags override RELAYER_* environment variables (RELAYER_RPC_URL, RELAYER_VAULT_ADDRESS, "
        "RELAYER_DEPLOYMENTS_FILE, RELAYER_HOST, RELAYER_PORT, RELAYER_RPC_TIMEOUT_S, "
        "RELAYER_GAS_LIMIT_MARGIN_BPS, RELAYER_LOG_LEVEL, RELAYER_ACCESS_LOG, RELAYER_RELAY_JOURNAL_PATH; "
        "the HTTP edge: RELAYER_HTTP_HEADER_TIMEOUT_S, _BODY_TIMEOUT_S, _MAX_CONNECTIONS, _KEEP_ALIVE_S). "
        "The journal persists and may hold several chains' records; on the embedded chain each start drops "
        "the relay records an earlier run's embedded chain left (it is gone) and keeps API keys and every "
        "other chain's records. One relaying process per journal: a second one is refused. Exit codes at "
        "start-up: 3 when the node does not answer, 1 for a wrong vault address or settings.",
        node="embedded",
        journal=True,
    )
    serve.add_argument("--host", help=f"listen address (default {DEFAULT_API_HOST})")
    serve.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_API_PORT})")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--price-feed-interval",
        type=float,
        help=f"embedded chain: seconds between random price moves (default {DEMO_PRICE_FEED_INTERVAL_S};"
        " 0: no walk, prices still set by hand with POST /api/demo/pricefeed)",
    )
    serve.add_argument("--seed", type=int, help="embedded chain: seed of the demo price walk (default 0)")

    add_command(
        subparsers,
        "mcp",
        cmd_mcp,
        help="serve the MCP trading tools on stdio (embedded chain with a demo world unless --rpc-url)",
        description="Relayer signers from RELAYER_SIGNER_KEY / RELAYER_SIGNER_<n>_KEY (or _KEYSTORE); the "
        "journal (with API keys) from --journal, RELAYER_RELAY_JOURNAL_PATH or .relayer/journal.sqlite3. "
        "RELAYER_STREAM_MCP_API_KEY (a read key) adds the resource relayer://fills/recent of its account, "
        "which a client may subscribe to.",
        node="embedded",
        journal=True,
    )

    keeper = add_command(
        subparsers,
        "keeper",
        cmd_keeper,
        help="execute crossed take-profit / stop-loss orders through the relayer (serve runs one too)",
        description="Needs relayer signers (RELAYER_SIGNER_KEY ...) on a node; the journal (--journal, "
        "RELAYER_RELAY_JOURNAL_PATH or .relayer/journal.sqlite3) keeps executions exactly-once across "
        "restarts.",
        node="embedded",
        journal=True,
    )
    keeper.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default 1)")
