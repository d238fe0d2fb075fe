"""vault-relayer: build, check and relay transactions for a perpetual-futures vault.

The library API is what the REST routes adapt::

    from relayer import build_close_transaction

    built = build_close_transaction(w3, vault_address, {"positionId": "0x...", "sizeDelta": "0.14"})
    built.preview.to_dict()                          # what it will do, at the current price
    signed = owner.sign_transaction(built.transaction)

From async code, use `TransactionBuilder(gateway).build(...)` with a `JsonRpcGateway` or `Web3Gateway`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from web3 import Web3

from relayer.chain.gateway import ChainGateway
from relayer.chain.jsonrpc_gateway import JsonRpcGateway
from relayer.chain.web3_gateway import Web3Gateway
from relayer.constants import GAS_LIMIT_MARGIN_BPS
from relayer.domain.positions import TriggerOrder
from relayer.domain.requests import CloseAction, CloseRequest, parse_close_request
from relayer.errors import RelayerError
from relayer.services.builder import (
    BuiltTransaction,
    ClosePreview,
    TransactionBuilder,
    assemble,
    encode_request,
)

try:
    __version__ = version("vault-relayer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
"""The installed package's version: OpenAPI's `info.version` and the MCP server's `serverInfo`."""

__all__ = [
    "BuiltTransaction",
    "ChainGateway",
    "CloseAction",
    "ClosePreview",
    "CloseRequest",
    "JsonRpcGateway",
    "RelayerError",
    "TransactionBuilder",
    "TriggerOrder",
    "Web3Gateway",
    "__version__",
    "build_close_transaction",
    "parse_close_request",
]


def build_close_transaction(
    w3: Web3,
    vault_address: str,
    request: Mapping[str, Any] | CloseRequest,
    *,
    gas_limit_margin_bps: int = GAS_LIMIT_MARGIN_BPS,
    gateway: Web3Gateway | None = None,
) -> BuiltTransaction:
    """Build a close / partial close / TP-SL transaction for the position's owner, synchronously.

    `request` is a `CloseRequest` or a JSON-style mapping with the REST API's field names (numbers as `int`,
    `Decimal` or decimal strings). Pass the same `gateway` across calls to reuse its chain id, vault check and
    lock (required when other threads use the same embedded chain).

    Raises:
        RelayerError: the same errors, with the same codes, as `POST /api/closeposition`.
    """
    parsed = request if isinstance(request, CloseRequest) else parse_close_request(request)
    if gateway is None:
        gateway = Web3Gateway(w3, vault_address)
    if not gateway.started:
        gateway.start_sync()
    data = encode_request(parsed)
    state = gateway.read_close_state_sync(parsed.position_id, data)
    return assemble(parsed, data, state, gateway.vault_address, gas_limit_margin_bps=gas_limit_margin_bps)
