"""The `relayer` command line: a thin adapter over the library (argument parsing in, text out).

Errors are `RelayerError`s mapped once here to a message on stderr and an exit code; no traceback for bad
input, nor for a node that is down or a wrong vault at start-up (`serve` checks both before uvicorn starts).

Signing keys come from the environment or an encrypted keystore, never from an argument
(`relayer.chain.accounts`): `RELAYER_DEPLOYER_*` for `deploy`, `RELAYER_TRADER_*` for `open` and `operator`,
`RELAYER_PRICE_KEEPER_*` for `price set`, `RELAYER_SIGNER_*` for the relayer. Every journal-using command
(`serve`, `mcp`, `keeper`, `keys`, `relay`) defaults to `.relayer/journal.sqlite3` in the current directory
(`--journal`, `RELAYER_RELAY_JOURNAL_PATH`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount

from relayer.chain.accounts import load_account
from relayer.chain.connect import Chain, embedded_chain, rpc_chain
from relayer.chain.deploy import DEPLOYMENTS_DIR, ensure_deployed, has_vault_code
from relayer.chain.transact import (
    NO_PRICE_BOUND,
    market_open_price_bound,
    open_position,
    send,
    set_market_price,
    set_operator,
)
from relayer.chain.vault import VaultReader, call_chain
from relayer.config import Settings, TradingSettings
from relayer.constants import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    DEFAULT_MAX_PRICE_AGE_S,
    PNL_DECIMALS,
    PRICE_DECIMALS,
    SIZE_DECIMALS,
)
from relayer.domain import calldata
from relayer.domain.markets import normalize_symbol
from relayer.domain.units import format_fixed, parse_fixed, size_text, to_fixed, usd_text
from relayer.errors import ConfigurationError, RelayerError, VaultNotDeployedError
from relayer.faces import logs
from relayer.faces.cli.keys import JOURNAL_HELP, add_key_commands
from relayer.faces.cli.relay import add_relay_commands
from relayer.runtime import chain_binding, check_expected_chain
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
from relayer.stores.journal import Journal, lock_for_relaying
from relayer.stores.keys import SqliteKeyStore

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
"""Exit codes: 1 for a request the chain or the relayer refused (and start-up failures such as a wrong vault
or contradictory settings), 2 for bad usage, 3 when the node is down (try again later)."""

TRADER_KEY_PREFIX = "RELAYER_TRADER"
"""`relayer open` signs with RELAYER_TRADER_KEY, or RELAYER_TRADER_KEYSTORE + RELAYER_TRADER_KEYSTORE_PASSWORD
(never a key on the command line: it would land in shell history and `ps`)."""

PRICE_KEEPER_KEY_PREFIX = "RELAYER_PRICE_KEEPER"
"""`relayer price set` signs with RELAYER_PRICE_KEEPER_KEY, or its _KEYSTORE + _KEYSTORE_PASSWORD."""

DEPLOYER_KEY_PREFIX = "RELAYER_DEPLOYER"
"""`relayer deploy` signs with RELAYER_DEPLOYER_KEY, or its _KEYSTORE + _KEYSTORE_PASSWORD."""

Command = Callable[[argparse.Namespace], int]


def exit_code_for(error: RelayerError) -> int:
    """The one mapping from the error tree to exit codes."""
    if error.retryable and error.http_status >= 500:
        return EXIT_UNAVAILABLE
    if error.http_status == 422:
        return EXIT_USAGE
    return EXIT_ERROR


def _connect(rpc_url: str | None) -> Chain:
    return embedded_chain() if rpc_url is None else rpc_chain(rpc_url)


def _required_account(prefix: str) -> LocalAccount:
    """The account of `<prefix>_KEY` or `<prefix>_KEYSTORE` (+ `_PASSWORD`).

    Raises:
        ConfigurationError: neither is set, or the key / keystore is unusable.
    """
    account = load_account(prefix)
    if account is None:
        raise ConfigurationError(f"set {prefix}_KEY, or {prefix}_KEYSTORE and {prefix}_KEYSTORE_PASSWORD")
    return account


def _deployer(chain: Chain) -> LocalAccount:
    if chain.is_embedded and load_account(DEPLOYER_KEY_PREFIX) is None:
        return chain.test_accounts()[0]
    return _required_account(DEPLOYER_KEY_PREFIX)


def cmd_deploy(args: argparse.Namespace) -> int:
    chain = _connect(args.rpc_url)
    deployer = _deployer(chain)
    deployment, created = ensure_deployed(
        chain.w3, deployer, directory=Path(args.deployments_dir), max_price_age_s=args.max_price_age
    )
    verb = (
        "deployed" if created else "already deployed (code matches the recorded deployment); not redeploying"
    )
    print(f"vault {deployment.address} on chain {deployment.chain_id}: {verb}")
    print(f"  block {deployment.block_number}, tx {deployment.transaction_hash}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Deploy on the embedded chain, open a long, close part of it, and show what the chain recorded."""
    chain = embedded_chain()
    deployer, trader = chain.test_accounts()[:2]
    deployment, _ = ensure_deployed(chain.w3, deployer, directory=Path(args.deployments_dir))
    vault = VaultReader(chain.w3, deployment.address)
    print(f"embedded chain {deployment.chain_id}: vault deployed at {deployment.address}")
    for market in vault.markets():
        print(f"  {market}: ${format_fixed(vault.price(market).price_e8, PRICE_DECIMALS)}")

    size = to_fixed(Decimal("0.42"), SIZE_DECIMALS, "size")
    bound = market_open_price_bound(
        chain.w3,
        deployment.address,
        "BTCUSDT",
        is_long=True,
        slippage_bps=TradingSettings().default_slippage_bps,
    )
    opened = open_position(
        chain.w3, trader, deployment.address, "BTCUSDT", is_long=True, size=size, allowed_price_e8=bound
    )
    position_id = opened.position_id
    entry = format_fixed(opened.entry_price_e8, PRICE_DECIMALS)
    print(f"\n{trader.address} opened a 0.42 BTC long at ${entry} (gas {opened.gas_used})")
    print(f"  positionId 0x{position_id.hex()}")

    new_price = to_fixed(Decimal("97250"), PRICE_DECIMALS, "price")
    set_market_price(chain.w3, deployer, deployment.address, "BTCUSDT", new_price)
    print("oracle: BTCUSDT moves to $97250")
    close = to_fixed(Decimal("0.14"), SIZE_DECIMALS, "sizeDelta")
    allowed = to_fixed(Decimal("97000"), PRICE_DECIMALS, "allowedPrice")
    receipt = send(chain.w3, trader, deployment.address, calldata.close_position(position_id, close, allowed))
    (decreased,) = vault.contract.events.PositionDecreased().process_receipt(receipt)
    fill = decreased["args"]
    print(f"\npartial close of 0.14 BTC with allowedPrice $97000 (gas {receipt['gasUsed']}):")
    closed, exit_price = format_fixed(fill["sizeDelta"], SIZE_DECIMALS), format_fixed(fill["exitPrice"], 8)
    print(f"  closed     {closed} BTC at ${exit_price}")
    print(f"  remaining  {format_fixed(fill['remainingSize'], SIZE_DECIMALS)} BTC")
    print(f"  realized   ${format_fixed(fill['realizedPnl'], PNL_DECIMALS)}")
    return EXIT_OK


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
    )
    journal = getattr(args, "journal", None)
    if journal:
        relay = dataclasses.replace(settings.relay, journal_path=Path(journal))
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
    journal_path = settings.relay.journal_path.resolve()
    if hold is not None and (signers or settings.embedded):
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
    chain = embedded_chain()
    journal = Journal(settings.relay.journal_path, relaying=True)
    try:
        dropped = _ready_embedded_journal(journal, chain)
        world = setup_demo_world(chain)
        signers = signers or demo_signers(chain)
        approve_relayer(chain, world, [signer.address for signer in signers])
        with contextlib.closing(SqliteKeyStore(settings.relay.journal_path)) as key_store:
            keys = issue_demo_keys(key_store, world.traders[0].address)
    finally:
        journal.close()
    settings = settings.model_copy(
        update={
            "vault_address": world.deployment.address,
            # A local chain answers in milliseconds: poll receipts often so a demo close reports back at once.
            "relay": dataclasses.replace(settings.relay, poll_interval_s=DEMO_RELAY_POLL_INTERVAL_S),
            "keeper_from_block": world.deployment.block_number,
        }
    )
    banner = describe(
        world,
        base_url,
        keys=keys,
        signers=[s.address for s in signers],
        journal=JournalNote(str(journal_path), dropped),
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
    return journal.bind_to_chain(chain_binding(chain), now=int(time.time()))


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
    from relayer.runtime import check_startup

    settings = _load_settings(args)
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
        # One worker: the embedded chain lives in this process, and the JSON-RPC gateway's caches are per
        # process.
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.access_log,
        )
    return EXIT_OK


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the MCP tools on stdio (stdout is the protocol: everything human goes to stderr)."""
    import anyio

    from relayer.faces.mcp import build_mcp_server
    from relayer.runtime import open_runtime

    prepared = _prepare(_load_settings(args), None)
    print(prepared.banner, file=sys.stderr, flush=True)

    async def serve() -> None:
        async with open_runtime(prepared.settings, chain=prepared.chain, signers=prepared.signers) as runtime:
            await build_mcp_server(lambda: runtime.trading).run_stdio_async()

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
                    for execution in await anyio.to_thread.run_sync(keeper.tick):
                        side = "take-profit" if execution.is_take_profit else "stop-loss"
                        position = f"0x{execution.position_id.hex()}"
                        print(f"executed {side} of {position}: record {execution.record_id}")
                    await anyio.sleep(interval_s)

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how an operator stops the keeper
            anyio.run(run)
    return EXIT_OK


def _node_and_vault(args: argparse.Namespace, command: str) -> tuple[Chain, str, Settings]:
    """The node, the checked vault and the settings of a one-shot command on a node (`open`, `price set`,
    `operator`).

    The vault's code is checked before anything is signed: at an address without code, `eth_estimateGas`
    succeeds and the call would be sent into the void.

    Raises:
        ConfigurationError: no node given, malformed settings, or another chain than the deployments file's.
        ChainUnavailableError: the node does not answer.
        VaultNotDeployedError: the address does not hold this vault's code.
    """
    settings = Settings.load(
        os.environ, rpc_url=args.rpc_url, vault_address=args.vault, deployments_file=args.deployments
    )
    if settings.rpc_url is None or settings.vault_address is None:
        raise ConfigurationError(
            f"`relayer {command}` needs a node: --rpc-url (or RELAYER_RPC_URL) and --vault or --deployments"
        )
    chain = rpc_chain(settings.rpc_url.get_secret_value(), timeout_s=settings.rpc_timeout_s)
    check_expected_chain(settings, int(call_chain(lambda: chain.w3.eth.chain_id)))
    if not has_vault_code(chain.w3, settings.vault_address):
        raise VaultNotDeployedError(
            "no vault with the expected code at this address", vaultAddress=settings.vault_address
        )
    return chain, settings.vault_address, settings


def cmd_open(args: argparse.Namespace) -> int:
    """Open a position on a node as the account of RELAYER_TRADER_KEY (or its keystore).

    A market order is never unbounded unless asked: without `--allowed-price` the bound is the trading
    slippage guard (`TradingSettings.default_slippage_bps`, RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS) from the
    market's current oracle price; `--no-price-bound` opens at any price.
    """
    market = normalize_symbol(args.market, "--market")
    size = parse_fixed(args.size, SIZE_DECIMALS, "--size")
    is_long = args.side == "long"
    explicit = None
    if args.allowed_price is not None:
        explicit = parse_fixed(args.allowed_price, PRICE_DECIMALS, "--allowed-price")
    trader = _required_account(TRADER_KEY_PREFIX)
    chain, vault, settings = _node_and_vault(args, "open")
    if args.no_price_bound:
        allowed_price_e8 = NO_PRICE_BOUND
    elif explicit is not None:
        allowed_price_e8 = explicit
    else:
        allowed_price_e8 = market_open_price_bound(
            chain.w3, vault, market, is_long=is_long, slippage_bps=settings.trading.default_slippage_bps
        )
    opened = open_position(
        chain.w3, trader, vault, market, is_long=is_long, size=size, allowed_price_e8=allowed_price_e8
    )
    if allowed_price_e8 == NO_PRICE_BOUND:
        bound = "none (--no-price-bound)"
    else:
        bound = f"{'at most' if is_long else 'at least'} {usd_text(allowed_price_e8)} USD"
    print(f"opened position 0x{opened.position_id.hex()}")
    print(f"  owner     {opened.owner}")
    print(f"  market    {opened.market} {'long' if opened.is_long else 'short'}")
    print(f"  size      {size_text(opened.size)}")
    print(f"  entry     {usd_text(opened.entry_price_e8)} USD")
    print(f"  allowed   {bound}")
    print(f"  tx        {opened.transaction_hash} (block {opened.block_number}, gas {opened.gas_used})")
    return EXIT_OK


def cmd_price_set(args: argparse.Namespace) -> int:
    """Set a market's oracle price on a node as a price keeper (RELAYER_PRICE_KEEPER_KEY or its keystore)."""
    market = normalize_symbol(args.market, "--market")
    price_e8 = parse_fixed(args.price, PRICE_DECIMALS, "--price")
    keeper = _required_account(PRICE_KEEPER_KEY_PREFIX)
    chain, vault, _ = _node_and_vault(args, "price set")
    receipt = set_market_price(chain.w3, keeper, vault, market, price_e8)
    print(f"{market} price set to {usd_text(price_e8)} USD by {keeper.address}")
    print(f"  tx        {receipt['transactionHash'].to_0x_hex()} (block {receipt['blockNumber']})")
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    """Approve or revoke an operator (e.g. a relayer signer) for the account of RELAYER_TRADER_KEY."""
    approved = args.operator_command == "approve"
    owner = _required_account(TRADER_KEY_PREFIX)
    chain, vault, _ = _node_and_vault(args, f"operator {args.operator_command}")
    receipt = set_operator(chain.w3, owner, vault, args.address, approved=approved)
    verb = "may now act" if approved else "may no longer act"
    print(f"{args.address} {verb} on every position of {owner.address}")
    print(f"  tx        {receipt['transactionHash'].to_0x_hex()} (block {receipt['blockNumber']})")
    return EXIT_OK


def _add_node_arguments(parser: argparse.ArgumentParser, *, embedded: bool = True) -> None:
    """Which node and vault to use (all three have `RELAYER_*` variables); none: the embedded chain."""
    node_help = "JSON-RPC node URL (prefer RELAYER_RPC_URL if it holds an API key)"
    parser.add_argument("--rpc-url", help=node_help if embedded else node_help + "; required")
    parser.add_argument("--vault", help="the vault's address on that node")
    parser.add_argument("--deployments", help="a deployments/<chainId>.json file naming the vault")


def _add_journal_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", help=JOURNAL_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayer", description="Transaction builder and relayer for the perp vault."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    deploy = sub.add_parser("deploy", help="deploy the vault (embedded chain unless --rpc-url) and record it")
    deploy.add_argument("--rpc-url", help="JSON-RPC node URL; key from RELAYER_DEPLOYER_KEY or _KEYSTORE")
    deploy.add_argument(
        "--deployments-dir",
        default=str(DEPLOYMENTS_DIR),
        help=f"where <chainId>.json is written (default ./{DEPLOYMENTS_DIR} in the current directory)",
    )
    deploy.add_argument(
        "--max-price-age", type=int, default=DEFAULT_MAX_PRICE_AGE_S, help="seconds (default 3600)"
    )
    deploy.set_defaults(handler=cmd_deploy)

    demo = sub.add_parser("demo", help="embedded chain: deploy, open a position, partially close it")
    demo.add_argument("--deployments-dir", default=str(DEPLOYMENTS_DIR), help=f"default ./{DEPLOYMENTS_DIR}")
    demo.set_defaults(handler=cmd_demo)

    serve = sub.add_parser(
        "serve",
        help="serve the REST API (embedded chain with demo accounts and positions unless --rpc-url)",
        description="Flags override RELAYER_* environment variables (RELAYER_RPC_URL, RELAYER_VAULT_ADDRESS, "
        "RELAYER_DEPLOYMENTS_FILE, RELAYER_HOST, RELAYER_PORT, RELAYER_RPC_TIMEOUT_S, "
        "RELAYER_GAS_LIMIT_MARGIN_BPS, RELAYER_LOG_LEVEL, RELAYER_ACCESS_LOG, RELAYER_RELAY_JOURNAL_PATH). "
        "The journal persists and may hold several chains' records; on the embedded chain each start drops "
        "the relay records an earlier run's embedded chain left (it is gone) and keeps API keys and every "
        "other chain's records. One relaying process per journal: a second one is refused. Exit codes at "
        "start-up: 3 when the node does not answer, 1 for a wrong vault address or settings.",
    )
    _add_node_arguments(serve)
    _add_journal_argument(serve)
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
    serve.set_defaults(handler=cmd_serve)

    mcp = sub.add_parser(
        "mcp",
        help="serve the MCP trading tools on stdio (embedded chain with a demo world unless --rpc-url)",
        description="Relayer signers from RELAYER_SIGNER_KEY / RELAYER_SIGNER_<n>_KEY (or _KEYSTORE); the "
        "journal (with API keys) from --journal, RELAYER_RELAY_JOURNAL_PATH or .relayer/journal.sqlite3.",
    )
    _add_node_arguments(mcp)
    _add_journal_argument(mcp)
    mcp.set_defaults(handler=cmd_mcp)

    keeper = sub.add_parser(
        "keeper",
        help="execute crossed take-profit / stop-loss orders through the relayer (serve runs one too)",
        description="Needs relayer signers (RELAYER_SIGNER_KEY ...) on a node; the journal (--journal, "
        "RELAYER_RELAY_JOURNAL_PATH or .relayer/journal.sqlite3) keeps executions exactly-once across "
        "restarts.",
    )
    _add_node_arguments(keeper)
    _add_journal_argument(keeper)
    keeper.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default 1)")
    keeper.set_defaults(handler=cmd_keeper)

    opener = sub.add_parser(
        "open",
        help="open a position on a node (key from RELAYER_TRADER_KEY or RELAYER_TRADER_KEYSTORE)",
        description="Opens a position for the account of RELAYER_TRADER_KEY (or RELAYER_TRADER_KEYSTORE + "
        "RELAYER_TRADER_KEYSTORE_PASSWORD; never a key on the command line) at the market's oracle price, "
        "and prints the position id, size, entry price and transaction hash. A market order is bounded: "
        "without --allowed-price the worst entry is the trading slippage guard (RELAYER_TRADING_DEFAULT_"
        "SLIPPAGE_BPS, default 100 = 1%) from the current oracle price. Decimals are exact; a revert prints "
        "its error code (exit 2 bad input, 1 refused, 3 node down).",
    )
    _add_node_arguments(opener, embedded=False)
    opener.add_argument("--market", required=True, help="market symbol, e.g. BTCUSDT")
    opener.add_argument("--side", required=True, choices=["long", "short"])
    opener.add_argument("--size", required=True, help="base-asset units, exact decimal (e.g. 0.42)")
    bound = opener.add_mutually_exclusive_group()
    bound.add_argument(
        "--allowed-price",
        help="worst acceptable entry in USD: a long pays at most it, a short sells at least at it (default: "
        "the slippage guard, 1%% from the current oracle price)",
    )
    bound.add_argument(
        "--no-price-bound",
        action="store_true",
        help="open at whatever the oracle price is when the transaction runs (no slippage guard)",
    )
    opener.set_defaults(handler=cmd_open)

    price = sub.add_parser("price", help="the vault's oracle prices (price keepers only)")
    price_commands = price.add_subparsers(dest="price_command", required=True)
    price_set = price_commands.add_parser(
        "set",
        help="set a market's price on a node (key from RELAYER_PRICE_KEEPER_KEY or _KEYSTORE)",
        description="Sets a market's oracle price (a new market is added) as the account of "
        "RELAYER_PRICE_KEEPER_KEY (or RELAYER_PRICE_KEEPER_KEYSTORE + _KEYSTORE_PASSWORD), which must be one "
        "of the vault's price keepers (the deployer is the first).",
    )
    _add_node_arguments(price_set, embedded=False)
    price_set.add_argument("--market", required=True, help="market symbol, e.g. BTCUSDT")
    price_set.add_argument("--price", required=True, help="USD, exact decimal with up to 8 places")
    price_set.set_defaults(handler=cmd_price_set)

    operator = sub.add_parser(
        "operator",
        help="approve or revoke an operator (e.g. the relayer's signer) for the RELAYER_TRADER_KEY account",
        description="API-key trading acts through the relayer's signers, which the account approves once as "
        "vault operators. Signs as RELAYER_TRADER_KEY (or RELAYER_TRADER_KEYSTORE + _KEYSTORE_PASSWORD).",
    )
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    for action, text in (("approve", "let ADDRESS act on the account's positions"), ("revoke", "undo it")):
        command = operator_commands.add_parser(action, help=text)
        command.add_argument("address", help="the operator, e.g. a relayer signer's address")
        _add_node_arguments(command, embedded=False)
        command.set_defaults(handler=cmd_operator)

    add_relay_commands(sub)
    add_key_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except RelayerError as error:
        print(f"error [{error.code}]: {error.message}", file=sys.stderr)
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())
