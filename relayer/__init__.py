"""vault-relayer: build, check and relay transactions for a perpetual-futures vault.

The library API is what the REST routes adapt::

    from relayer import build_close_transaction

    chain = rpc_chain("http://127.0.0.1:8545")        # or embedded_chain(), from relayer.chain.connect
    built = build_close_transaction(chain, vault_address, {"positionId": "0x...", "sizeDelta": "0.14"})
    built.preview.to_dict()                          # what it will do, at the current price
    signed = owner.sign_transaction(built.transaction)

From async code, use `TransactionBuilder(client).build(...)` with a started `ChainClient`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio

from relayer.chain.client import ChainClient
from relayer.chain.connect import Chain, chain_port
from relayer.constants import GAS_LIMIT_MARGIN_BPS
from relayer.domain.positions import TriggerOrder
from relayer.domain.requests import CloseAction, CloseRequest, parse_close_request
from relayer.errors import RelayerError
from relayer.services.builder import TransactionBuilder, assemble, encode_request
from relayer.services.builder_answers import BuiltTransaction, ClosePreview

try:
    __version__ = version("vault-relayer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
"""The installed package's version: OpenAPI's `info.version` and the MCP server's `serverInfo`."""

__all__ = [
    "BuiltTransaction",
    "Chain",
    "ChainClient",
    "CloseAction",
    "ClosePreview",
    "CloseRequest",
    "RelayerError",
    "TransactionBuilder",
    "TriggerOrder",
    "__version__",
    "build_close_transaction",
    "parse_close_request",
]


def build_close_transaction(
    chain: Chain,
    vault_address: str,
    request: Mapping[str, Any] | CloseRequest,
    *,
    gas_limit_margin_bps: int = GAS_LIMIT_MARGIN_BPS,
) -> BuiltTransaction[ClosePreview]:
    """Build a close / partial close / TP-SL transaction for the position's owner, synchronously (not from
    inside a running event loop: there, use `TransactionBuilder`).

    `request` is a `CloseRequest` or a JSON-style mapping with the REST API's field names (numbers as `int`,
    `Decimal` or decimal strings).

    Raises:
        RelayerError: the same errors, with the same codes, as `POST /api/closeposition`.
    """
    parsed = request if isinstance(request, CloseRequest) else parse_close_request(request)

    async def build() -> BuiltTransaction[ClosePreview]:
        client = ChainClient(chain_port(chain), vault_address)
        try:
            await client.start()
            data = encode_request(parsed)
            state = await client.read_close_state(parsed.position_id, data)
        finally:
            await client.aclose()
        return assemble(parsed, data, state, client.vault_address, gas_limit_margin_bps=gas_limit_margin_bps)

    return anyio.run(build)
