"""What `relayer serve` sets up on the embedded chain so a newcomer can try the API at once.

A fresh vault with prices, three demo traders (the chain's well-known, public test keys) holding longs and
shorts on BTCUSDT and ETHUSDT, and a price move so every position shows a PnL.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from eth_account.signers.local import LocalAccount

from relayer import calldata
from relayer.chain import Chain
from relayer.constants import SIZE_DECIMALS
from relayer.deploy import Deployment, deploy_vault, set_price
from relayer.markets import symbol_to_bytes32
from relayer.relay.signers import Signer
from relayer.transact import send
from relayer.units import to_fixed
from relayer.vault import VaultReader

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


def setup_demo_world(chain: Chain) -> DemoWorld:
    """Deploy the vault on `chain` (account 0 is admin and price keeper) and open the demo positions."""
    deployer, *traders = chain.test_accounts()[:4]
    deployment = deploy_vault(chain.w3, deployer, max_price_age_s=DEMO_MAX_PRICE_AGE_S)
    vault = VaultReader(chain.w3, deployment.address)
    opened = vault.contract.events.PositionOpened()
    positions = []
    for trader_number, market, is_long, size in DEMO_POSITIONS:
        trader = traders[trader_number - 1]
        size_units = to_fixed(Decimal(size), SIZE_DECIMALS, "size")
        receipt = send(
            chain.w3,
            trader,
            deployment.address,
            calldata.encode_call("openPosition", symbol_to_bytes32(market), is_long, size_units, 0),
        )
        (event,) = opened.process_receipt(receipt)
        positions.append(
            DemoPosition(bytes(event["args"]["positionId"]), trader.address, market, is_long, Decimal(size))
        )
    for market, price in DEMO_PRICE_MOVES_USD.items():
        set_price(chain.w3, deployer, deployment.address, market, price)
    return DemoWorld(deployment, deployer, traders, positions)


def demo_signers(chain: Chain) -> list[Signer]:
    """The embedded chain's relayer signers when none is configured (public test keys, demo only)."""
    accounts = chain.test_accounts()
    return [Signer(accounts[index]) for index in DEMO_SIGNER_INDEXES]


def approve_relayer(chain: Chain, world: DemoWorld, signers: list[str]) -> None:
    """Every demo trader approves every relayer signer as a vault operator, so API-key trading works."""
    for trader in world.traders:
        for signer in signers:
            send(chain.w3, trader, world.deployment.address, calldata.set_operator(signer, True))


def describe(
    world: DemoWorld, base_url: str | None, *, api_key: str | None = None, signers: list[str] | None = None
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
        lines += ["", f"relayer signers (approved as operators by every demo trader): {', '.join(signers)}"]
    if api_key:
        lines += [
            "",
            f"demo API key of {world.traders[0].address} (scopes read,trade; shown once):",
            f"  {api_key}",
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
    if api_key:
        lines += [
            "",
            "or let the relayer do it with the API key: take 33% off the BTC long",
            f"  curl -s {base_url}/api/partialclose -H 'authorization: Bearer {api_key}' \\",
            "    -H 'content-type: application/json' -d '{\"symbol\": \"BTCUSDT\", \"exit_pct\": 33}'",
        ]
    return "\n".join(lines)
