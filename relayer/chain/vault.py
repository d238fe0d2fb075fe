"""Read access to a deployed vault: positions, prices and markets as domain objects.

This is the chain-facing adapter for reads; node errors leave it as `RelayerError`s (via
`relayer.chain.revert`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract

from relayer.chain.artifact import load_artifact
from relayer.chain.decoding import decode_orders_of
from relayer.chain.quotes import MarketPrice
from relayer.chain.revert import translate
from relayer.domain import calldata
from relayer.domain.markets import bytes32_to_symbol, symbol_to_bytes32
from relayer.domain.operators import OperatorGrant
from relayer.domain.positions import ExitPlan, Position, TriggerOrder

T = TypeVar("T")


def call_chain(fn: Callable[[], T]) -> T:
    """Run a node call, turning reverts and connection failures into `RelayerError`s."""
    try:
        return fn()
    except Exception as exc:
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from exc


def position_from_tuple(position_id: bytes, raw: Any) -> Position:
    """Build a `Position` from `getPosition`'s ABI tuple."""
    owner, market, is_long, size, entry, take_profit, stop_loss = raw
    return Position(
        position_id=position_id,
        owner=to_checksum_address(owner),
        market=bytes32_to_symbol(market),
        is_long=bool(is_long),
        size=int(size),
        entry_price_e8=int(entry),
        take_profit=TriggerOrder(int(take_profit[0]), int(take_profit[1])),
        stop_loss=TriggerOrder(int(stop_loss[0]), int(stop_loss[1])),
    )


class VaultReader:
    """Typed views of one vault contract."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(address=self.address, abi=load_artifact().abi)

    def position(self, position_id: bytes) -> Position:
        raw = call_chain(lambda: self.contract.functions.getPosition(position_id).call())
        return position_from_tuple(position_id, raw)

    def position_ids_of(self, owner: str) -> list[bytes]:
        ids = call_chain(lambda: self.contract.functions.positionIdsOf(to_checksum_address(owner)).call())
        return [bytes(i) for i in ids]

    def price(self, market: str) -> MarketPrice:
        price, updated_at = call_chain(
            lambda: self.contract.functions.priceOf(symbol_to_bytes32(market)).call()
        )
        return MarketPrice(market, int(price), int(updated_at))

    def markets(self) -> list[str]:
        return [bytes32_to_symbol(m) for m in call_chain(lambda: self.contract.functions.markets().call())]

    def max_price_age_s(self) -> int:
        return int(call_chain(lambda: self.contract.functions.maxPriceAge().call()))

    def nonce_of(self, owner: str) -> int:
        """The owner's next signed-request nonce (the relay checks a signed request against it)."""
        return int(call_chain(lambda: self.contract.functions.nonces(to_checksum_address(owner)).call()))

    def is_operator(self, owner: str, operator: str) -> bool:
        return bool(
            call_chain(
                lambda: self.contract.functions.isOperator(
                    to_checksum_address(owner), to_checksum_address(operator)
                ).call()
            )
        )

    def operator_grant(self, owner: str, operator: str) -> OperatorGrant:
        """What `owner` granted `operator` (`operatorGrant`): rights (bit flags) and expiry (0 = never)."""
        rights, expires_at = call_chain(
            lambda: self.contract.functions.operatorGrant(
                to_checksum_address(owner), to_checksum_address(operator)
            ).call()
        )
        return OperatorGrant(int(rights), int(expires_at))

    def orders_of(self, position_id: bytes) -> ExitPlan:
        """The position's pending orders in execution priority and the plan's `D` (`ordersOf`)."""
        data = call_chain(
            lambda: self.w3.eth.call(
                {"to": self.address, "data": HexBytes(calldata.encode_call("ordersOf", position_id))}
            )
        )
        return decode_orders_of(bytes(data))
