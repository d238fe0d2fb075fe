"""The `relayer` command line: a thin adapter over the library (argument parsing in, text out).

Errors are `RelayerError`s mapped once here to a message on stderr and an exit code; no traceback for bad
input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount

from relayer import calldata
from relayer.chain import Chain, embedded_chain, rpc_chain
from relayer.constants import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    DEFAULT_MAX_PRICE_AGE_S,
    PNL_DECIMALS,
    PRICE_DECIMALS,
    SIZE_DECIMALS,
)
from relayer.deploy import DEPLOYMENTS_DIR, ensure_deployed
from relayer.errors import ConfigurationError, RelayerError
from relayer.keys import load_account
from relayer.markets import symbol_to_bytes32
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


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the REST API: over a node with --rpc-url, else over an embedded chain with a demo world."""
    import uvicorn

    from relayer.api.app import create_app
    from relayer.config import Settings
    from relayer.demo_world import describe, setup_demo_world

    settings = Settings.load(
        os.environ,
        rpc_url=args.rpc_url,
        vault_address=args.vault,
        deployments_file=args.deployments,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    chain = None
    if settings.embedded:
        if settings.vault_address is not None:
            raise ConfigurationError("a vault address needs --rpc-url: the embedded chain deploys its own")
        chain = embedded_chain()
        print("embedded chain: deploying the vault and opening demo positions...", flush=True)
        world = setup_demo_world(chain)
        settings = settings.model_copy(update={"vault_address": world.deployment.address})
        print(describe(world, f"http://{settings.host}:{settings.port}"), flush=True)
    else:
        print(
            f"serving vault {settings.vault_address} on {settings.rpc_url_for_display}"
            f" at http://{settings.host}:{settings.port}",
            flush=True,
        )
    app = create_app(settings, chain=chain)
    # One worker: the embedded chain lives in this process, and the JSON-RPC gateway's caches are per process.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
    )
    return EXIT_OK


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
    serve.add_argument("--rpc-url", help="JSON-RPC node URL (prefer RELAYER_RPC_URL if it holds an API key)")
    serve.add_argument("--vault", help="the vault's address on that node")
    serve.add_argument("--deployments", help="a deployments/<chainId>.json file naming the vault")
    serve.add_argument("--host", help=f"listen address (default {DEFAULT_API_HOST})")
    serve.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_API_PORT})")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=cmd_serve)
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
