"""Deploying the vault and recording where it lives (deployments/<chainId>.json in the current directory).

Re-running against a chain whose recorded deployment still has the vault's code is a no-op that says so, so
deploy scripts are safe to repeat.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3

from relayer.chain.artifact import load_artifact
from relayer.chain.transact import send, set_market_price
from relayer.chain.vault import call_chain
from relayer.constants import DEFAULT_MAX_PRICE_AGE_S, PRICE_DECIMALS
from relayer.domain.units import to_fixed

DEPLOYMENTS_DIR = Path("deployments")
"""Relative, so it resolves in the current directory when used: a deployment is a fact about the user's
project, not about where the package happens to be installed (inside a virtualenv's site-packages, the
package folder may not even be writable)."""

DEFAULT_PRICES_USD: dict[str, Decimal] = {
    "BTCUSDT": Decimal("96000"),
    "ETHUSDT": Decimal("3500"),
    "SOLUSDT": Decimal("200"),
}
"""Initial oracle prices set by a fresh deployment (demo values)."""


@dataclass(frozen=True)
class Deployment:
    """Where a vault was deployed and from which build."""

    chain_id: int
    address: str
    block_number: int
    transaction_hash: str
    artifact_hash: str
    deployer: str


def deployment_path(chain_id: int, directory: Path = DEPLOYMENTS_DIR) -> Path:
    return directory / f"{chain_id}.json"


def load_deployment(path: Path) -> Deployment:
    raw = json.loads(path.read_text())
    return Deployment(**raw)


def save_deployment(deployment: Deployment, directory: Path = DEPLOYMENTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = deployment_path(deployment.chain_id, directory)
    path.write_text(json.dumps(asdict(deployment), indent=2) + "\n")
    return path


def has_vault_code(w3: Web3, address: str) -> bool:
    """Whether `address` holds exactly the committed artifact's runtime code."""
    code = call_chain(lambda: w3.eth.get_code(to_checksum_address(address)))
    return load_artifact().matches_runtime_code(bytes(code))


def deploy_vault(
    w3: Web3,
    deployer: LocalAccount,
    *,
    max_price_age_s: int = DEFAULT_MAX_PRICE_AGE_S,
    prices_usd: dict[str, Decimal] | None = None,
) -> Deployment:
    """Deploy a new vault from `deployer` (admin and first price keeper) and set its initial prices."""
    artifact = load_artifact()
    constructor_args = call_chain(
        lambda: w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode).constructor(max_price_age_s)
    )
    receipt = send(w3, deployer, None, bytes.fromhex(constructor_args.data_in_transaction[2:]))
    address = receipt["contractAddress"]
    assert address is not None
    deployment = Deployment(
        chain_id=int(call_chain(lambda: w3.eth.chain_id)),
        address=to_checksum_address(address),
        block_number=int(receipt["blockNumber"]),
        transaction_hash=receipt["transactionHash"].to_0x_hex(),
        artifact_hash=artifact.artifact_hash,
        deployer=deployer.address,
    )
    for symbol, price in (DEFAULT_PRICES_USD if prices_usd is None else prices_usd).items():
        set_price(w3, deployer, deployment.address, symbol, price)
    return deployment


def set_price(w3: Web3, keeper: LocalAccount, vault: str, symbol: str, price_usd: Decimal) -> None:
    """Set a market's oracle price from a price-keeper account (`NotAuthorizedError` from anyone else)."""
    set_market_price(w3, keeper, vault, symbol, to_fixed(price_usd, PRICE_DECIMALS, "price"))


def ensure_deployed(
    w3: Web3,
    deployer: LocalAccount,
    *,
    directory: Path = DEPLOYMENTS_DIR,
    max_price_age_s: int = DEFAULT_MAX_PRICE_AGE_S,
) -> tuple[Deployment, bool]:
    """The recorded deployment if its code is still there, else a fresh, recorded one.

    Returns:
        `(deployment, created)`: `created` is False when the recorded vault was reused.
    """
    chain_id = int(call_chain(lambda: w3.eth.chain_id))
    path = deployment_path(chain_id, directory)
    if path.exists():
        recorded = load_deployment(path)
        if has_vault_code(w3, recorded.address):
            return recorded, False
    deployment = deploy_vault(w3, deployer, max_price_age_s=max_price_age_s)
    save_deployment(deployment, directory)
    return deployment, True
