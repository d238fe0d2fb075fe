"""What the transaction builder answers: the built transaction, its preview, positions, markets, health.

Frozen values and their wire shapes (`to_dict`: exact decimal strings in human units, 0x-hex quantities), and
the unsigned transaction serialized for a signer (`BuiltTransaction.transaction`, `serialized_transaction`).
Pure formatting over values already read: no I/O. `TransactionBuilder` in `relayer.services.builder` (the
checks, `assemble`, the reads) returns these; the faces turn them into HTTP, CLI output or an MCP result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eth_account.typed_transactions.dynamic_fee_transaction import DynamicFeeTransaction
from eth_utils.address import to_canonical_address

from relayer.chain.quotes import ChainHead, MarketsState, PositionQuote
from relayer.constants import ETH_DECIMALS, PNL_DECIMALS
from relayer.domain.fees import Fees, fee_fields, max_cost_wei
from relayer.domain.positions import (
    ExitPlan,
    OrderView,
    Position,
    TriggerOrder,
    realized_pnl_e8,
    side_name,
    walk_fills,
)
from relayer.domain.rlp_encoding import RlpItem, rlp_encode
from relayer.domain.units import format_fixed, size_text, usd_text


def _order(order: TriggerOrder) -> dict[str, Any] | None:
    return {"price": usd_text(order.price_e8), "closeBps": order.close_bps} if order.active else None


def order_type(order: OrderView) -> str:
    """`"take_profit"`, `"stop_loss"` or `"trailing_stop"`: how every answer names an order's kind."""
    if order.is_take_profit:
        return "take_profit"
    return "trailing_stop" if order.is_trailing else "stop_loss"


def plan_orders(is_long: bool, size: int, plan: ExitPlan) -> list[dict[str, Any]]:
    """A plan's orders in the vault's execution priority (stops first, then take-profits by id), each with
    what executing it now closes (`closesNowQty`, `ordersOf`'s `sizeIfExecuted`) and what it closes if the
    price walks through the take-profits in turn and then back to the stops (`expectedQty`, `walk_fills`)."""
    expected = dict(walk_fills(size, is_long, plan))
    return [
        {
            "orderId": o.order_id,
            "type": order_type(o),
            "price": usd_text(o.price_e8),
            "shareBps": o.share_bps,
            "trailBps": o.trail_bps,
            "closesNowQty": size_text(o.size_if_executed),
            "expectedQty": size_text(expected.get(o.order_id, 0)),
        }
        for o in plan.orders
    ]


@dataclass(frozen=True)
class PlanPreview:
    """A position's exit plan as the vault holds it (after the change, for a built transaction) at the
    current oracle price, in chain units."""

    position: Position
    price_e8: int
    plan: ExitPlan
    rights_needed: int = 0
    """For a built change: the `RIGHT_*` bits an operator needs for it, judged on the plan it was built on
    (`exit_plans.rights_needed`); 0 for a read. Not on the wire."""

    def to_dict(self) -> dict[str, Any]:
        p = self.position
        return {
            "positionId": "0x" + p.position_id.hex(),
            "market": p.market,
            "side": side_name(p.is_long),
            "size": size_text(p.size),
            "currentPrice": usd_text(self.price_e8),
            "planRemainingBps": self.plan.plan_bps,
            "orders": plan_orders(p.is_long, p.size, self.plan),
        }


@dataclass(frozen=True)
class ExitClose:
    """One open position an emergency exit closes, whole, at its market's oracle price."""

    position: Position
    exit_price_e8: int

    @property
    def realized_pnl_e8(self) -> int:
        p = self.position
        return realized_pnl_e8(p.is_long, p.entry_price_e8, self.exit_price_e8, p.size)


@dataclass(frozen=True)
class ExitPreview:
    """What `emergencyExit(owner, market)` closes: every open position of `owner` (in `market` only, if
    given), oldest first."""

    owner: str
    market: str | None
    closes: tuple[ExitClose, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "market": self.market,
            "positions": [
                {
                    "positionId": "0x" + c.position.position_id.hex(),
                    "symbol": c.position.market,
                    "side": side_name(c.position.is_long),
                    "closed_qty": size_text(c.position.size),
                    "exit_price": usd_text(c.exit_price_e8),
                    "realized_pnl_usd": usd_text(c.realized_pnl_e8),
                }
                for c in self.closes
            ],
        }


@dataclass(frozen=True)
class ClosePreview:
    """What the transaction does to the position at the current oracle price, in chain units."""

    position: Position
    current_price_e8: int
    price_updated_at: int
    size_delta: int
    """Size the transaction closes (0 when it only sets orders)."""
    allowed_price_e8: int
    take_profit: TriggerOrder
    """The position's take-profit after the transaction (cleared by a full close)."""
    stop_loss: TriggerOrder
    plan: ExitPlan | None = None
    """Every pending order after the transaction, as `ordersOf` will report it (None: not read)."""

    @property
    def size_after(self) -> int:
        return self.position.size - self.size_delta

    @property
    def realized_pnl_e8(self) -> int:
        """PnL booked by this close, rounded exactly as the vault rounds it."""
        p = self.position
        return realized_pnl_e8(p.is_long, p.entry_price_e8, self.current_price_e8, self.size_delta)

    @property
    def remaining_unrealized_pnl_e8(self) -> int:
        """PnL of what stays open if it were closed at the current price (vault rounding)."""
        p = self.position
        return realized_pnl_e8(p.is_long, p.entry_price_e8, self.current_price_e8, self.size_after)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: exact decimal strings in human units (base asset, USD)."""
        p = self.position
        return {
            "positionId": "0x" + p.position_id.hex(),
            "owner": p.owner,
            "market": p.market,
            "side": side_name(p.is_long),
            "entryPrice": usd_text(p.entry_price_e8),
            "currentPrice": usd_text(self.current_price_e8),
            "priceUpdatedAt": self.price_updated_at,
            "allowedPrice": usd_text(self.allowed_price_e8) if self.allowed_price_e8 else None,
            "sizeBefore": size_text(p.size),
            "sizeDelta": size_text(self.size_delta),
            "sizeAfter": size_text(self.size_after),
            "realizedPnl": format_fixed(self.realized_pnl_e8, PNL_DECIMALS),
            "remainingUnrealizedPnl": format_fixed(self.remaining_unrealized_pnl_e8, PNL_DECIMALS),
            "takeProfit": _order(self.take_profit),
            "stopLoss": _order(self.stop_loss),
            "planRemainingBps": self.plan.plan_bps if self.plan is not None else None,
            "orders": plan_orders(p.is_long, self.size_after, self.plan) if self.plan is not None else [],
        }


Preview = ClosePreview | PlanPreview | ExitPreview
"""What a built transaction will do: a close (and its order changes), an order change, an emergency exit."""
P = TypeVar("P", bound=Preview, covariant=True)


@dataclass(frozen=True)
class BuiltTransaction(Generic[P]):
    """A transaction checked against the chain, ready for the owner to sign, and what it will do (`preview`:
    a `ClosePreview` from `build`, a `PlanPreview` from `build_orders`, an `ExitPreview` from
    `build_emergency_exit`)."""

    action: str
    """A `CloseAction`, or `"set_orders"`, `"set_exit_plan"`, `"emergency_exit"`."""
    vault_address: str
    calldata: bytes
    chain_id: int
    sender: str
    nonce: int
    gas_estimate: int
    gas_limit: int
    fees: Fees
    preview: P
    head: ChainHead
    """The block it was checked and simulated against."""

    @property
    def required_gas_fee_wei(self) -> int:
        """The most the sender can pay for gas: gas limit x the per-gas price cap."""
        return max_cost_wei(self.gas_limit, self.fees)

    @property
    def transaction(self) -> dict[str, str]:
        """The unsigned transaction as a JSON-RPC transaction object (what `eth_sendTransaction` takes).

        Every quantity is a 0x-hex string, never a JSON number: JavaScript's `JSON.parse` silently rounds
        integers above 2**53, and a wei amount gets there quickly. `eth_account.Account.sign_transaction`
        accepts this dict as is (hex quantities, `type` "0x2", and `from`, which it checks against the key).
        Legacy chains (no base fee) get `gasPrice` and no `type`: eth-account refuses `type` "0x0".
        """
        return {
            "chainId": hex(self.chain_id),
            "from": self.sender,
            "to": self.vault_address,
            "data": "0x" + self.calldata.hex(),
            "value": hex(0),
            "gas": hex(self.gas_limit),
            "nonce": hex(self.nonce),
            **{name: hex(value) for name, value in fee_fields(self.fees).items()},
        }

    @property
    def serialized_transaction(self) -> bytes:
        """The same transaction, unsigned, as EIP-2718 bytes: what viem's `parseTransaction` and ethers'
        `Transaction.from` read, so a JavaScript client signs it without mapping any field.

        EIP-1559: `0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas, to, value, data,
        accessList])`. Legacy: the EIP-155 signing payload `rlp([nonce, gasPrice, gas, to, value, data,
        chainId, 0, 0])`. Either way its keccak is the hash the owner signs (tests/interop checks that against
        eth-account's signature and against viem's and ethers' parsers).
        """
        to = to_canonical_address(self.vault_address)
        if self.fees.gas_price_wei is not None:
            fee, gas, data = self.fees.gas_price_wei, self.gas_limit, self.calldata
            legacy: list[RlpItem] = [self.nonce, fee, gas, to, 0, data, self.chain_id, 0, 0]
            return rlp_encode(legacy)
        fields: list[RlpItem] = [
            self.chain_id,
            self.nonce,
            self.fees.max_priority_fee_per_gas_wei,
            self.fees.max_fee_per_gas_wei,
            self.gas_limit,
            to,
            0,
            self.calldata,
            [],
        ]
        return bytes([DynamicFeeTransaction.transaction_type]) + rlp_encode(fields)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape of `POST /api/closeposition`.

        The transaction twice: `transaction` as a JSON-RPC object (eth-account's `sign_transaction`, a browser
        wallet's `eth_sendTransaction`) and `serializedTransaction` as unsigned EIP-2718 hex (viem, ethers).
        Wei and other quantities are hex or decimal strings, exact in any JSON parser; `gasEstimate` stays a
        JSON integer (gas is far below 2**53).
        """
        return {
            "calldata": "0x" + self.calldata.hex(),
            "vaultAddress": self.vault_address,
            "requiredGasFee": format_fixed(self.required_gas_fee_wei, ETH_DECIMALS),
            "action": str(self.action),
            "gasEstimate": self.gas_estimate,
            "transaction": self.transaction,
            "serializedTransaction": "0x" + self.serialized_transaction.hex(),
            "preview": self.preview.to_dict(),
        }


@dataclass(frozen=True)
class PositionSummary:
    """A position as the API shows it: with its market price and unrealized PnL at that price."""

    quote: PositionQuote

    def to_dict(self) -> dict[str, Any]:
        p, price = self.quote.position, self.quote.price_e8
        return {
            "positionId": "0x" + p.position_id.hex(),
            "owner": p.owner,
            "market": p.market,
            "side": side_name(p.is_long),
            "status": "open" if p.is_open else "closed",
            "size": size_text(p.size),
            "entryPrice": usd_text(p.entry_price_e8),
            "currentPrice": usd_text(price),
            "priceUpdatedAt": self.quote.price_updated_at,
            "unrealizedPnl": format_fixed(
                realized_pnl_e8(p.is_long, p.entry_price_e8, price, p.size), PNL_DECIMALS
            ),
            "takeProfit": _order(p.take_profit),
            "stopLoss": _order(p.stop_loss),
        }


@dataclass(frozen=True)
class OwnerPositions:
    owner: str
    positions: list[PositionSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "positions": [p.to_dict() for p in self.positions]}


@dataclass(frozen=True)
class Health:
    chain_id: int
    head: ChainHead
    vault_address: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "chainId": self.chain_id,
            "blockNumber": self.head.number,
            "blockTimestamp": self.head.timestamp,
            "vaultAddress": self.vault_address,
        }


def markets_to_dict(state: MarketsState) -> dict[str, Any]:
    """`GET /api/markets`: each market's price and its age against the latest block."""
    return {
        "blockNumber": state.head.number,
        "blockTimestamp": state.head.timestamp,
        "maxPriceAge": state.max_price_age_s,
        "markets": [
            {
                "symbol": m.market,
                "price": usd_text(m.price_e8),
                "updatedAt": m.updated_at,
                "ageSeconds": max(0, state.head.timestamp - m.updated_at),
                "stale": state.head.timestamp > m.updated_at + state.max_price_age_s,
            }
            for m in state.prices
        ],
    }
