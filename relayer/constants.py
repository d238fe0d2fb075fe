"""Protocol and policy constants, one place, units in the names."""

from __future__ import annotations

from typing import Final

SIZE_DECIMALS: Final = 18
"""Position sizes are base-asset units with 18 decimals (1 BTC = 10**18)."""

PRICE_DECIMALS: Final = 8
"""Oracle, entry, exit and trigger prices are USD with 8 decimals."""

PNL_DECIMALS: Final = 8
"""Realized and unrealized PnL are signed USD with 8 decimals."""

ETH_DECIMALS: Final = 18
"""Gas fees are reported in ETH; 1 ETH = 10**18 wei."""

BPS_DENOMINATOR: Final = 10_000
"""Basis points in 100%: close percentages are 1..10_000."""

PERCENT: Final = 100
"""Percent in 100%: `exit_pct` and `close_pct` are 1..100."""

MAX_SLIPPAGE_BPS: Final = BPS_DENOMINATOR - 1
"""Widest slippage bound a close may ask for (99.99%): 100% would let a long close at a price of 0."""

DEFAULT_SLIPPAGE_BPS: Final = 100
"""Slippage bound (1%) of a close that gives none: `TradingSettings.default_slippage_bps`'s default, and the
bound `GET /api/relay/typed-data` puts in a signed close without `allowedPrice`."""

UINT256_MAX: Final = 2**256 - 1
"""Largest uint256: also the vault's close-all sentinel for `sizeDelta`."""

CLOSE_ALL_SIZE: Final = UINT256_MAX
"""`closePosition(id, CLOSE_ALL_SIZE, ...)` closes whatever remains at execution time."""

MAX_POSITION_SIZE: Final = 2**128 - 1
"""The vault stores sizes in 128 bits."""

MAX_TRIGGER_PRICE_E8: Final = 2**112 - 1
"""The vault stores oracle and trigger prices in 112 bits."""

DEFAULT_MAX_PRICE_AGE_S: Final = 3_600
"""An oracle price older than this many seconds is stale and trading on it reverts."""

GAS_LIMIT_MARGIN_BPS: Final = 2_000
"""Head-room added to `eth_estimateGas` (20%) so a state change between estimate and inclusion still fits."""

OPERATOR_CHECK_GAS: Final = 5_000
"""Gas a relayer signer's call may spend beyond the same call from the owner, which the builder simulated: the
vault's operator check (a cold storage read, 2,100 gas, and its hashing), with room to spare."""

BASE_FEE_MULTIPLIER: Final = 2
"""maxFeePerGas = 2 x latest base fee + priority fee: survives six full blocks of base-fee growth."""

DEFAULT_PRIORITY_FEE_WEI: Final = 1_000_000_000
"""1 gwei tip when the node cannot suggest one."""

EMBEDDED_CHAIN_NAME: Final = "embedded"
"""The in-process eth-tester (py-evm) chain."""

EIP712_NAME: Final = "PerpVault"
"""EIP-712 domain name; must match `_NAME_HASH` in contracts/Vault.sol."""

EIP712_VERSION: Final = "1"
"""EIP-712 domain version; must match `_VERSION_HASH` in contracts/Vault.sol."""

# --- exit plans and operator rights (issue 12) --------------------------------------------------------------

MIN_REMAINING_SIZE: Final = 10**9
"""An order execution that would leave less than this (1e-9 base units) closes the whole position (the vault's
`MIN_REMAINING_SIZE`)."""

TAKE_PROFIT_COUNT: Final = 4
"""Order ids 0..3 are take-profits, reached in id order (the vault's `TAKE_PROFIT_COUNT`)."""

FIRST_STOP_ID: Final = 4
"""Order ids 4 and 5 are stops; `setStopLoss` is order 4 and `setTakeProfit` order 0."""

ORDER_COUNT: Final = 6
"""Orders per position: four take-profits and two stops."""

MAX_TRAIL_BPS: Final = BPS_DENOMINATOR - 1
"""Widest trail distance of a trailing stop (the vault refuses 10_000 and above)."""

RIGHT_CLOSE: Final = 1
"""Operator right: close and partially close, including the emergency exit."""

RIGHT_SET_TAKE_PROFIT: Final = 2
"""Operator right: set, replace and cancel take-profits."""

RIGHT_TIGHTEN_STOP: Final = 4
"""Operator right: set a stop or move one toward the price."""

RIGHT_LOOSEN_OR_CANCEL_STOP: Final = 8
"""Operator right: move a stop away from the price, shrink or untrail it, or cancel it."""

ALL_RIGHTS: Final = 15
"""Every operator right (what the vault's `setOperator(operator, true)` grants)."""

RIGHT_NAMES: Final = {
    RIGHT_CLOSE: "close",
    RIGHT_SET_TAKE_PROFIT: "set_take_profit",
    RIGHT_TIGHTEN_STOP: "tighten_stop",
    RIGHT_LOOSEN_OR_CANCEL_STOP: "loosen_or_cancel_stop",
}
"""Each right's name in answers and errors."""

RELAYER_RIGHTS: Final = RIGHT_CLOSE | RIGHT_SET_TAKE_PROFIT | RIGHT_TIGHTEN_STOP
"""What the API-key relayer's signers ask an account for: reduce-only (close, set take-profits, tighten
stops), never loosening or cancelling a stop, so a leaked relayer key cannot remove a stop."""

DEFAULT_OPERATOR_GRANT_S: Final = 365 * 24 * 3_600
"""How long `relayer operator approve` (and the demo world) grant the relayer's rights for: a year."""

# --- transaction builder and REST API (issue 3) -------------------------------------------------------------

DEFAULT_API_HOST: Final = "127.0.0.1"
"""`relayer serve` listens on loopback unless told otherwise."""

DEFAULT_API_PORT: Final = 8000
"""`relayer serve`'s default HTTP port."""

DEFAULT_RPC_TIMEOUT_S: Final = 10
"""Seconds to wait for a JSON-RPC node before answering `chain_unavailable`."""

RPC_RETRIES: Final = 3
"""Attempts at a JSON-RPC batch the node leaves unanswered before answering `chain_unavailable`."""

RPC_BACKOFF_S: Final = 0.05
"""Seconds before the second attempt at an unanswered batch; doubled before each further one."""

MAX_RPC_CALLS_PER_BATCH: Final = 100
"""JSON-RPC calls sent in one HTTP request; public nodes cap batches (often at 100 to 1000)."""

MAX_RPC_REQUESTS_IN_FLIGHT: Final = 4
"""Concurrent HTTP requests to the node; calls made while all are busy wait and share the next batch."""

SYNC_SEND_WAIT_S: Final = 2.0
"""How long a batch of `eth_sendRawTransactionSync` (on a node mining on arrival) may take before the relay
stops waiting, sends the bytes again the plain way (the node answers "already known") and never uses the sync
method on that chain again (anvil can miss a receipt and hold the call for its own 30 s timeout)."""

MAX_PRICE_AGE_CACHE_S: Final = 60
"""Seconds the vault's `maxPriceAge()` (an admin setting) is reused before it is read again."""

POSITION_OWNER_CACHE_SIZE: Final = 100_000
"""Position owners remembered (never change for an id) so one batch can read, simulate and count nonces."""

MAX_LIST_LIMIT: Final = 1_000
"""Most records one listing returns."""

MAX_LIST_OFFSET: Final = 1_000_000_000
"""Largest `offset` a listing accepts: larger ones are refused (422), never handed to SQLite to overflow."""
