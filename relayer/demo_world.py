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
from relayer.transact import send
from relayer.units import to_fixed
from relayer.vault import VaultReader

DEMO_MAX_PRICE_AGE_S = 86_400
"""A day: nothing refreshes the embedded chain's prices yet, and the demo should outlive a coffee break."""

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
    return DemoWorld(deployment, traders, positions)


def describe(world: DemoWorld, base_url: str) -> str:
    """The text `relayer serve` prints: where the API is, the demo accounts and keys, and a first request."""
    lines = [
        f"vault-relayer API on {base_url}  (OpenAPI docs: {base_url}/docs)",
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
    lines += [
        "",
        "close half of the first one:",
        f"  curl -s {base_url}/api/closeposition -H 'content-type: application/json' \\",
        f'    -d \'{{"positionId": "0x{first.position_id.hex()}", "sizeDelta": "{first.size / 2}"}}\'',
        "then sign the answer's `transaction`, as is, with the owner's key above:",
        "  eth_account.Account.from_key(KEY).sign_transaction(answer['transaction'])",
    ]
    return "\n".join(lines)
