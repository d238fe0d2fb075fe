"""Gas and fee arithmetic: pure integer math in wei, no node access.

>>> suggest_fees(base_fee_wei=7, priority_fee_wei=2)
Fees(max_fee_per_gas_wei=16, max_priority_fee_per_gas_wei=2, gas_price_wei=None)
>>> gas_limit_with_margin(100_000)
120000
"""

from __future__ import annotations

from dataclasses import dataclass

from relayer.constants import BASE_FEE_MULTIPLIER, DEFAULT_PRIORITY_FEE_WEI, GAS_LIMIT_MARGIN_BPS
from relayer.domain.bps import plus_bps


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees, or a legacy gas price on chains without a base fee (then the 1559 fields are 0)."""

    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int
    gas_price_wei: int | None = None

    @property
    def is_legacy(self) -> bool:
        return self.gas_price_wei is not None

    @property
    def price_cap_wei(self) -> int:
        """The most one unit of gas can cost under these fees."""
        return self.gas_price_wei if self.gas_price_wei is not None else self.max_fee_per_gas_wei


def suggest_fees(
    base_fee_wei: int | None, priority_fee_wei: int, legacy_gas_price_wei: int | None = None
) -> Fees:
    """EIP-1559 fees from the latest base fee, or legacy pricing when the chain has no base fee."""
    if base_fee_wei is None:
        price = legacy_gas_price_wei if legacy_gas_price_wei is not None else priority_fee_wei
        return Fees(0, 0, price)
    max_fee = BASE_FEE_MULTIPLIER * base_fee_wei + priority_fee_wei
    return Fees(max_fee, priority_fee_wei)


def node_fees(base_fee_wei: int | None, suggestion_wei: int | None) -> Fees:
    """Fees for the next block from the latest base fee and what the node suggests: its priority fee
    (`eth_maxPriorityFeePerGas`) on an EIP-1559 chain, its gas price on a legacy one. None: the node gave no
    suggestion (it lacks the method), so the default tip `DEFAULT_PRIORITY_FEE_WEI` is used.

    >>> node_fees(7, 3)
    Fees(max_fee_per_gas_wei=17, max_priority_fee_per_gas_wei=3, gas_price_wei=None)
    >>> node_fees(7, None).max_priority_fee_per_gas_wei == DEFAULT_PRIORITY_FEE_WEI
    True
    >>> node_fees(None, 5)
    Fees(max_fee_per_gas_wei=0, max_priority_fee_per_gas_wei=0, gas_price_wei=5)
    """
    if base_fee_wei is None:
        return suggest_fees(None, DEFAULT_PRIORITY_FEE_WEI, suggestion_wei)
    return suggest_fees(base_fee_wei, DEFAULT_PRIORITY_FEE_WEI if suggestion_wei is None else suggestion_wei)


def fee_fields(fees: Fees) -> dict[str, int]:
    """The fee part of a signable transaction dict: type 2 with EIP-1559 fees, or a legacy `gasPrice`.

    >>> fee_fields(Fees(16, 2))
    {'type': 2, 'maxFeePerGas': 16, 'maxPriorityFeePerGas': 2}
    >>> fee_fields(Fees(0, 0, 7))
    {'gasPrice': 7}
    """
    if fees.gas_price_wei is not None:
        return {"gasPrice": fees.gas_price_wei}
    return {
        "type": 2,
        "maxFeePerGas": fees.max_fee_per_gas_wei,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas_wei,
    }


def gas_limit_with_margin(estimate: int, margin_bps: int = GAS_LIMIT_MARGIN_BPS) -> int:
    """The estimate plus `margin_bps`, rounded up so the margin is never lost to integer division."""
    return plus_bps(estimate, margin_bps, round_up=True)


def max_cost_wei(gas_limit: int, fees: Fees) -> int:
    """The most a transaction can cost its sender: gas limit x the per-gas price cap."""
    return gas_limit * fees.price_cap_wei
