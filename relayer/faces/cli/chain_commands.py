"""The one-shot commands that sign on a chain: `relayer deploy`, `relayer demo`, `relayer open`,
`relayer price set` and `relayer operator approve|revoke`.

Signing keys come from the environment or an encrypted keystore, never from an argument
(`relayer.chain.accounts`): `RELAYER_DEPLOYER_*` for `deploy`, `RELAYER_TRADER_*` for `open` and `operator`,
`RELAYER_PRICE_KEEPER_*` for `price set`. On a node, the vault's code is checked before anything is signed.
"""

from __future__ import annotations

import argparse
import os
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

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
from relayer.constants import DEFAULT_MAX_PRICE_AGE_S, PNL_DECIMALS, PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import normalize_symbol
from relayer.domain.operators import right_names
from relayer.domain.units import format_fixed, parse_fixed, size_text, to_fixed, usd_text
from relayer.errors import ConfigurationError, VaultNotDeployedError
from relayer.faces.cli.common import EXIT_OK, Subparsers, add_command
from relayer.runtime import check_expected_chain

TRADER_KEY_PREFIX = "RELAYER_TRADER"
"""`relayer open` signs with RELAYER_TRADER_KEY, or RELAYER_TRADER_KEYSTORE + RELAYER_TRADER_KEYSTORE_PASSWORD
(never a key on the command line: it would land in shell history and `ps`)."""

PRICE_KEEPER_KEY_PREFIX = "RELAYER_PRICE_KEEPER"
"""`relayer price set` signs with RELAYER_PRICE_KEEPER_KEY, or its _KEYSTORE + _KEYSTORE_PASSWORD."""

DEPLOYER_KEY_PREFIX = "RELAYER_DEPLOYER"
"""`relayer deploy` signs with RELAYER_DEPLOYER_KEY, or its _KEYSTORE + _KEYSTORE_PASSWORD."""


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
    _print_transaction(receipt)
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    """Grant an operator (e.g. a relayer signer) the relayer's reduce-only rights over the account of
    RELAYER_TRADER_KEY until an expiry, or revoke every right."""
    approved = args.operator_command == "approve"
    owner = _required_account(TRADER_KEY_PREFIX)
    chain, vault, _ = _node_and_vault(args, f"operator {args.operator_command}")
    expires_at = getattr(args, "expires_at", None)
    receipt = set_operator(chain.w3, owner, vault, args.address, approved=approved, expires_at=expires_at)
    if approved:
        grant = VaultReader(chain.w3, vault).operator_grant(owner.address, args.address)
        until = "no expiry" if grant.expires_at == 0 else f"until {grant.expires_at} (unix seconds)"
        print(
            f"{args.address} may now {right_names(grant.rights)} (never loosen or cancel a stop) on every"
            f" position of {owner.address}, {until}"
        )
    else:
        print(f"{args.address} may no longer act on any position of {owner.address}")
    _print_transaction(receipt)
    return EXIT_OK


def _print_transaction(receipt: TxReceipt) -> None:
    print(f"  tx        {receipt['transactionHash'].to_0x_hex()} (block {receipt['blockNumber']})")


def add_deploy_commands(subparsers: Subparsers) -> None:
    """Add `deploy` and `demo` to the `relayer` command's subparsers."""
    deploy = add_command(
        subparsers,
        "deploy",
        cmd_deploy,
        help="deploy the vault (embedded chain unless --rpc-url) and record it",
    )
    deploy.add_argument("--rpc-url", help="JSON-RPC node URL; key from RELAYER_DEPLOYER_KEY or _KEYSTORE")
    deploy.add_argument(
        "--deployments-dir",
        default=str(DEPLOYMENTS_DIR),
        help=f"where <chainId>.json is written (default ./{DEPLOYMENTS_DIR} in the current directory)",
    )
    deploy.add_argument(
        "--max-price-age", type=int, default=DEFAULT_MAX_PRICE_AGE_S, help="seconds (default 3600)"
    )

    demo = add_command(
        subparsers, "demo", cmd_demo, help="embedded chain: deploy, open a position, partially close it"
    )
    demo.add_argument("--deployments-dir", default=str(DEPLOYMENTS_DIR), help=f"default ./{DEPLOYMENTS_DIR}")


def add_account_commands(subparsers: Subparsers) -> None:
    """Add `open`, `price set` and `operator approve|revoke` (signed by an account's key, on a node) to the
    `relayer` command's subparsers."""
    opener = add_command(
        subparsers,
        "open",
        cmd_open,
        help="open a position on a node (key from RELAYER_TRADER_KEY or RELAYER_TRADER_KEYSTORE)",
        description="Opens a position for the account of RELAYER_TRADER_KEY (or RELAYER_TRADER_KEYSTORE + "
        "RELAYER_TRADER_KEYSTORE_PASSWORD; never a key on the command line) at the market's oracle price, "
        "and prints the position id, size, entry price and transaction hash. A market order is bounded: "
        "without --allowed-price the worst entry is the trading slippage guard (RELAYER_TRADING_DEFAULT_"
        "SLIPPAGE_BPS, default 100 = 1%) from the current oracle price. Decimals are exact; a revert prints "
        "its error code (exit 2 bad input, 1 refused, 3 node down).",
        node="required",
    )
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

    price = subparsers.add_parser("price", help="the vault's oracle prices (price keepers only)")
    price_set = add_command(
        price.add_subparsers(dest="price_command", required=True),
        "set",
        cmd_price_set,
        help="set a market's price on a node (key from RELAYER_PRICE_KEEPER_KEY or _KEYSTORE)",
        description="Sets a market's oracle price (a new market is added) as the account of "
        "RELAYER_PRICE_KEEPER_KEY (or RELAYER_PRICE_KEEPER_KEYSTORE + _KEYSTORE_PASSWORD), which must be one "
        "of the vault's price keepers (the deployer is the first).",
        node="required",
    )
    price_set.add_argument("--market", required=True, help="market symbol, e.g. BTCUSDT")
    price_set.add_argument("--price", required=True, help="USD, exact decimal with up to 8 places")

    operator = subparsers.add_parser(
        "operator",
        help="approve or revoke an operator (e.g. the relayer's signer) for the RELAYER_TRADER_KEY account",
        description="API-key trading acts through the relayer's signers, which the account grants, once, the "
        "reduce-only operator rights close, set_take_profit and tighten_stop until an expiry (never "
        "loosen_or_cancel_stop, so a leaked relayer key cannot remove a stop). Signs as RELAYER_TRADER_KEY "
        "(or RELAYER_TRADER_KEYSTORE + _KEYSTORE_PASSWORD).",
    )
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    for action, text in (
        ("approve", "let ADDRESS close, set take-profits and tighten stops on the account's positions"),
        ("revoke", "take every right back"),
    ):
        command = add_command(operator_commands, action, cmd_operator, help=text, node="required")
        command.add_argument("address", help="the operator, e.g. a relayer signer's address")
        if action == "approve":
            command.add_argument(
                "--expires-at",
                type=int,
                default=None,
                help="unix seconds the grant lasts until (0: never; default: end of the UTC day a year on)",
            )
