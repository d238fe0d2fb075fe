"""The `relayer` command line: a thin adapter over the library (argument parsing in, text out).

Errors are `RelayerError`s mapped once here to a message on stderr and an exit code; no traceback for bad
input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount

from relayer import calldata, logs
from relayer.chain import Chain, embedded_chain, rpc_chain
from relayer.config import Settings
from relayer.constants import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    DEFAULT_MAX_PRICE_AGE_S,
    PNL_DECIMALS,
    PRICE_DECIMALS,
    SIZE_DECIMALS,
)
from relayer.demo_world import (
    DEMO_PRICE_FEED_INTERVAL_S,
    DEMO_RELAY_POLL_INTERVAL_S,
    approve_relayer,
    demo_signers,
    describe,
    setup_demo_world,
)
from relayer.deploy import DEPLOYMENTS_DIR, ensure_deployed
from relayer.errors import ConfigurationError, RelayerError
from relayer.keys import load_account
from relayer.keys_cli import add_key_commands, create_key
from relayer.markets import symbol_to_bytes32
from relayer.relay.cli import add_relay_commands
from relayer.relay.journal import Journal
from relayer.relay.signers import Signer, load_signers
from relayer.transact import send
from relayer.units import format_fixed, to_fixed
from relayer.vault import VaultReader

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
"""Exit codes: 1 for a request the chain or the relayer refused, 2 for bad usage, 3 when the node is down."""

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


def _deployer(chain: Chain) -> LocalAccount:
    account = load_account("RELAYER_DEPLOYER")
    if account is not None:
        return account
    if chain.is_embedded:
        return chain.test_accounts()[0]
    raise ConfigurationError(
        "set RELAYER_DEPLOYER_KEY, or RELAYER_DEPLOYER_KEYSTORE and RELAYER_DEPLOYER_KEYSTORE_PASSWORD"
    )


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
    receipt = send(
        chain.w3,
        trader,
        deployment.address,
        calldata.encode_call("openPosition", symbol_to_bytes32("BTCUSDT"), True, size, 0),
    )
    (opened,) = vault.contract.events.PositionOpened().process_receipt(receipt)
    position_id = bytes(opened["args"]["positionId"])
    print(f"\n{trader.address} opened a 0.42 BTC long at $96000 (gas {receipt['gasUsed']})")
    print(f"  positionId 0x{position_id.hex()}")

    send(
        chain.w3,
        deployer,
        deployment.address,
        calldata.encode_call(
            "setPrice", symbol_to_bytes32("BTCUSDT"), to_fixed(Decimal("97250"), 8, "price")
        ),
    )
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
    """What `serve` and `mcp` share: settings, the chain (embedded), relayer signers, a banner to print."""

    settings: Settings
    chain: Chain | None
    signers: list[Signer]
    price_keeper: LocalAccount | None
    banner: str


def _prepare(args: argparse.Namespace, base_url: str | None) -> Prepared:
    """Settings from env + flags; on the embedded chain also the demo world, its signers and an API key."""
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
    signers = load_signers(os.environ)
    if not settings.embedded:
        banner = f"serving vault {settings.vault_address} on {settings.rpc_url_for_display}"
        if not signers:
            banner += "\n(no relayer signer: set RELAYER_SIGNER_KEY to relay and trade; building still works)"
        return Prepared(settings, None, signers, None, banner)
    if settings.vault_address is not None:
        raise ConfigurationError("a vault address needs --rpc-url: the embedded chain deploys its own")
    chain = embedded_chain()
    world = setup_demo_world(chain)
    signers = signers or demo_signers(chain)
    approve_relayer(chain, world, [signer.address for signer in signers])
    # The embedded chain lives as long as the process, so its journal does too: a fresh file per run.
    journal_path = Path(tempfile.mkdtemp(prefix="vault-relayer-")) / "journal.sqlite3"
    settings = settings.model_copy(
        update={
            "vault_address": world.deployment.address,
            # A local chain answers in milliseconds: poll receipts often so a demo close reports back at once.
            "relay": dataclasses.replace(
                settings.relay, journal_path=journal_path, poll_interval_s=DEMO_RELAY_POLL_INTERVAL_S
            ),
            "keeper_from_block": world.deployment.block_number,
        }
    )
    journal = Journal(journal_path)
    try:
        api_key, _ = create_key(journal, account=world.traders[0].address, scopes="read,trade", label="demo")
    finally:
        journal.close()
    banner = describe(world, base_url, api_key=api_key, signers=[s.address for s in signers])
    return Prepared(settings, chain, signers, world.deployer, banner)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve REST and MCP: over a node with --rpc-url, else over an embedded chain with a demo world."""
    import uvicorn

    from relayer.api.app import create_app

    if args.price_feed_interval is None and args.rpc_url is None and not os.environ.get("RELAYER_RPC_URL"):
        args.price_feed_interval = DEMO_PRICE_FEED_INTERVAL_S
    print("starting: on the embedded chain this deploys the vault and opens demo positions...", flush=True)
    host = args.host or DEFAULT_API_HOST
    prepared = _prepare(args, f"http://{host}:{args.port or DEFAULT_API_PORT}")
    settings = prepared.settings
    print(prepared.banner, flush=True)
    app = create_app(
        settings, chain=prepared.chain, signers=prepared.signers, price_keeper=prepared.price_keeper
    )
    # One worker: the embedded chain lives in this process, and the JSON-RPC gateway's caches are per process.
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

    from relayer.mcp_server import build_mcp_server
    from relayer.runtime import open_runtime

    prepared = _prepare(args, None)
    print(prepared.banner, file=sys.stderr, flush=True)

    async def serve() -> None:
        async with open_runtime(
            prepared.settings, chain=prepared.chain, signers=prepared.signers
        ) as runtime:
            await build_mcp_server(runtime.require_trading).run_stdio_async()

    anyio.run(serve)
    return EXIT_OK


def cmd_keeper(args: argparse.Namespace) -> int:
    """Run the keeper (and the relayer that sends for it) until interrupted; `serve` runs one too."""
    import anyio

    from relayer.runtime import open_runtime

    prepared = _prepare(args, None)
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
                    print(f"executed {side} of 0x{execution.position_id.hex()}: record {execution.record_id}")
                await anyio.sleep(interval_s)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how an operator stops the keeper
        anyio.run(run)
    return EXIT_OK


def _add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Which node and vault to use (all three have `RELAYER_*` variables); none: the embedded chain."""
    parser.add_argument("--rpc-url", help="JSON-RPC node URL (prefer RELAYER_RPC_URL if it holds an API key)")
    parser.add_argument("--vault", help="the vault's address on that node")
    parser.add_argument("--deployments", help="a deployments/<chainId>.json file naming the vault")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relayer", description="Transaction builder and relayer for the perp vault."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    deploy = sub.add_parser("deploy", help="deploy the vault (embedded chain unless --rpc-url) and record it")
    deploy.add_argument("--rpc-url", help="JSON-RPC node URL; key from RELAYER_DEPLOYER_KEY or _KEYSTORE")
    deploy.add_argument(
        "--deployments-dir", default=str(DEPLOYMENTS_DIR), help="where <chainId>.json is written"
    )
    deploy.add_argument(
        "--max-price-age", type=int, default=DEFAULT_MAX_PRICE_AGE_S, help="seconds (default 3600)"
    )
    deploy.set_defaults(handler=cmd_deploy)

    demo = sub.add_parser("demo", help="embedded chain: deploy, open a position, partially close it")
    demo.add_argument("--deployments-dir", default=str(DEPLOYMENTS_DIR))
    demo.set_defaults(handler=cmd_demo)

    serve = sub.add_parser(
        "serve",
        help="serve the REST API (embedded chain with demo accounts and positions unless --rpc-url)",
        description="Flags override RELAYER_* environment variables (RELAYER_RPC_URL, RELAYER_VAULT_ADDRESS, "
        "RELAYER_DEPLOYMENTS_FILE, RELAYER_HOST, RELAYER_PORT, RELAYER_RPC_TIMEOUT_S, "
        "RELAYER_GAS_LIMIT_MARGIN_BPS, RELAYER_LOG_LEVEL, RELAYER_ACCESS_LOG).",
    )
    _add_node_arguments(serve)
    serve.add_argument("--host", help=f"listen address (default {DEFAULT_API_HOST})")
    serve.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_API_PORT})")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--price-feed-interval",
        type=float,
        help=f"embedded chain: seconds between price moves (default {DEMO_PRICE_FEED_INTERVAL_S}, 0: off)",
    )
    serve.add_argument("--seed", type=int, help="embedded chain: seed of the demo price walk (default 0)")
    serve.set_defaults(handler=cmd_serve)

    mcp = sub.add_parser(
        "mcp",
        help="serve the MCP trading tools on stdio (embedded chain with a demo world unless --rpc-url)",
        description="Relayer signers from RELAYER_SIGNER_KEY / RELAYER_SIGNER_<n>_KEY (or _KEYSTORE); the "
        "journal (with API keys) from RELAYER_RELAY_JOURNAL_PATH.",
    )
    _add_node_arguments(mcp)
    mcp.set_defaults(handler=cmd_mcp)

    keeper = sub.add_parser(
        "keeper",
        help="execute crossed take-profit / stop-loss orders through the relayer (serve runs one too)",
        description="Needs relayer signers (RELAYER_SIGNER_KEY ...) on a node; the journal from "
        "RELAYER_RELAY_JOURNAL_PATH keeps executions exactly-once across restarts.",
    )
    _add_node_arguments(keeper)
    keeper.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default 1)")
    keeper.set_defaults(handler=cmd_keeper)

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
