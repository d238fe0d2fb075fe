"""What `relayer serve` sets up on the embedded chain so a newcomer can try the API at once.

A fresh vault with prices, three demo traders (the chain's well-known, public test keys) holding longs and
shorts on BTCUSDT and ETHUSDT, a price move so every position shows a PnL, and two demo API keys in the
persistent journal (the previous run's demo keys are revoked first, so they never pile up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from eth_account.signers.local import LocalAccount

from relayer.chain.connect import Chain
from relayer.chain.deploy import Deployment, deploy_vault, set_price
from relayer.chain.transact import market_open_price_bound, open_position, send
from relayer.config import TradingSettings
from relayer.constants import RELAYER_RIGHTS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.apikeys import create_key
from relayer.domain.operators import grant_expiry
from relayer.domain.units import to_fixed
from relayer.services.relay.signers import Signer
from relayer.stores.keys import KeyStore

DEMO_MAX_PRICE_AGE_S = 86_400
"""A day: with the price feed paused (or off) the demo should still outlive a coffee break."""

DEMO_PRICE_FEED_INTERVAL_S = 5.0
"""`relayer serve` moves the embedded chain's prices this often, so take-profits and stop-losses fire."""

DEMO_RELAY_POLL_INTERVAL_S = 0.1
"""The embedded chain mines on arrival: the relay loop may look for receipts this often."""

DEMO_SIGNER_INDEXES = (5, 6)
"""The embedded chain's test accounts the demo relayer signs with (traders are 1..3, the deployer 0)."""

DEMO_POSITIONS: tuple[tuple[int, str, bool, str], ...] = (
    (1, "BTCUSDT", True, "0.5"),
    (1, "ETHUSDT", False, "4"),
    (2, "BTCUSDT", False, "0.25"),
    (2, "ETHUSDT", True, "10"),
    (3, "BTCUSDT", True, "1.2"),
)
"""(trader number, market, is long, size in base units) opened at the deployment's default prices."""

DEMO_PRICE_MOVES_USD: dict[str, Decimal] = {"BTCUSDT": Decimal("97250"), "ETHUSDT": Decimal("3420.5")}
"""Prices after the positions are opened, so longs and shorts show profits and losses."""

DEMO_TRADE_KEY_LABEL = "embedded-demo"
"""Label of the demo key (scopes read,trade) that `relayer serve` prints (reserved: see `issue_demo_keys`)."""

DEMO_READ_KEY_LABEL = "embedded-demo-read"
"""Label of the read-only demo key `relayer serve` prints (reserved: see `issue_demo_keys`)."""


@dataclass(frozen=True)
class DemoPosition:
    position_id: bytes
    owner: str
    market: str
    is_long: bool
    size: Decimal


@dataclass(frozen=True)
class DemoWorld:
    deployment: Deployment
    deployer: LocalAccount
    traders: list[LocalAccount]
    positions: list[DemoPosition]


@dataclass(frozen=True)
class DemoKeys:
    """The API keys `relayer serve` prints for the first demo trader (each shown once; hashes are stored)."""

    account: str
    trade: str
    """Scopes read,trade."""
    read: str
    """Scope read only: reads work, trading answers 403 `insufficient_scope`."""


@dataclass(frozen=True)
class JournalNote:
    """Where the embedded server's journal lives, and how many stale records its start dropped."""

    path: str
    dropped_records: int = 0


def setup_demo_world(chain: Chain) -> DemoWorld:
    """Deploy the vault on `chain` (account 0 is admin and price keeper) and open the demo positions."""
    deployer, *traders = chain.test_accounts()[:4]
    deployment = deploy_vault(chain.w3, deployer, max_price_age_s=DEMO_MAX_PRICE_AGE_S)
    slippage_bps = TradingSettings().default_slippage_bps  # market orders, bounded like every market order
    positions = []
    for trader_number, market, is_long, size in DEMO_POSITIONS:
        trader = traders[trader_number - 1]
        allowed_price_e8 = market_open_price_bound(
            chain.w3, deployment.address, market, is_long=is_long, slippage_bps=slippage_bps
        )
        opened = open_position(
            chain.w3,
            trader,
            deployment.address,
            market,
            is_long=is_long,
            size=to_fixed(Decimal(size), SIZE_DECIMALS, "size"),
            allowed_price_e8=allowed_price_e8,
        )
        positions.append(DemoPosition(opened.position_id, trader.address, market, is_long, Decimal(size)))
    for market, price in DEMO_PRICE_MOVES_USD.items():
        set_price(chain.w3, deployer, deployment.address, market, price)
    return DemoWorld(deployment, deployer, traders, positions)


def demo_signers(chain: Chain) -> list[Signer]:
    """The embedded chain's relayer signers when none is configured (public test keys, demo only)."""
    accounts = chain.test_accounts()
    return [Signer(accounts[index]) for index in DEMO_SIGNER_INDEXES]


def approve_relayer(chain: Chain, world: DemoWorld, signers: list[str]) -> None:
    """Every demo trader grants every relayer signer the relayer's reduce-only rights (close, set
    take-profits, tighten stops) for a year, so API-key trading works."""
    expires_at = grant_expiry(int(chain.w3.eth.get_block("latest")["timestamp"]))
    for trader in world.traders:
        for signer in signers:
            data = calldata.set_operator_rights(signer, RELAYER_RIGHTS, expires_at)
            send(chain.w3, trader, world.deployment.address, data)


def issue_demo_keys(store: KeyStore, account: str) -> DemoKeys:
    """Revoke the demo keys of earlier runs (by their reserved labels), then make this run's two keys.

    The key store (in the journal file) outlives the embedded chain and also holds the keys users made with
    `relayer keys create`, so without the revocation every start would leave one more valid key behind. A
    key a user labels `embedded-demo` or `embedded-demo-read` is revoked too: those labels belong to the
    demo.
    """
    now = int(time.time())
    store.revoke_api_keys_labelled((DEMO_TRADE_KEY_LABEL, DEMO_READ_KEY_LABEL), now)
    trade, _ = create_key(store, account=account, scopes="read,trade", label=DEMO_TRADE_KEY_LABEL, now=now)
    read, _ = create_key(store, account=account, scopes="read", label=DEMO_READ_KEY_LABEL, now=now)
    return DemoKeys(account, trade, read)


def describe(
    world: DemoWorld,
    base_url: str | None,
    *,
    keys: DemoKeys | None = None,
    signers: list[str] | None = None,
    journal: JournalNote | None = None,
) -> str:
    """The text `relayer serve` prints: where the API is, the demo accounts and keys, and first requests."""
    lines = [
        f"vault-relayer API on {base_url}  (OpenAPI docs: {base_url}/docs, MCP: {base_url}/mcp/)"
        if base_url
        else "vault-relayer MCP tools on stdio",
        f"embedded chain {world.deployment.chain_id}, vault {world.deployment.address}",
        "",
        "demo accounts (well-known public test keys of the embedded chain; never use them elsewhere):",
    ]
    for trader in world.traders:
        lines.append(f"  {trader.address}  key 0x{trader.key.hex()}")
    lines += ["", "demo positions:"]
    for p in world.positions:
        side = "long " if p.is_long else "short"
        lines.append(f"  0x{p.position_id.hex()}  {p.owner}  {p.market} {side} {p.size}")
    first = world.positions[0]
    if signers:
        lines += [
            "",
            "relayer signers (granted close, set_take_profit and tighten_stop by every demo trader):"
            f" {', '.join(signers)}",
        ]
    if journal is not None:
        lines += [
            "",
            f"journal (relay records and API keys; `relayer keys create` here adds keys): {journal.path}",
        ]
        if journal.dropped_records:
            lines.append(
                f"  dropped {journal.dropped_records} relay records of an earlier run's embedded chain"
                " (that chain is gone); API keys kept"
            )
    if keys is not None:
        lines += [
            "",
            f"demo API keys of {keys.account} (shown once; earlier runs' demo keys are revoked):",
            f"  scopes read,trade  {keys.trade}",
            f"  scope read         {keys.read}",
        ]
    if base_url is None:
        return "\n".join(lines)
    lines += [
        "",
        "build a transaction that closes half of the first position (you sign and send it):",
        f"  curl -s {base_url}/api/closeposition -H 'content-type: application/json' \\",
        f'    -d \'{{"positionId": "0x{first.position_id.hex()}", "sizeDelta": "{first.size / 2}"}}\'',
        "  then: eth_account.Account.from_key(KEY).sign_transaction(answer['transaction'])",
    ]
    if keys is not None:
        lines += [
            "",
            "or let the relayer do it with the API key: take 33% off the BTC long",
            f"  curl -s {base_url}/api/partialclose -H 'authorization: Bearer {keys.trade}' \\",
            '    -H \'content-type: application/json\' -d \'{"symbol": "BTCUSDT", "exit_pct": 33}\'',
            "read the account's positions with the read-only key:",
            f"  curl -s {base_url}/api/trade/positions -H 'authorization: Bearer {keys.read}'",
        ]
    return "\n".join(lines)
