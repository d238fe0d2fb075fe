"""API keys: generation, hashing and the authorisation rules, with no storage or HTTP in sight.

`create_key` makes a key and hands its hash to the key store (`relayer.stores.keys.KeyStore`); the `relayer
keys` command and the embedded demo both call it.

A key is `vrk_<32 url-safe characters>` (192 bits from `secrets`), shown once at creation. Only its SHA-256
is stored: the key is random and long, so a fast hash is as strong as a slow one here, and lookups stay one
indexed equality. The stored hash is still compared with `hmac.compare_digest` so no comparison leaks timing.

A key may carry limits (the Gains API model): an expiry (`expires_at`, unix seconds; refused from then on
with 401 `api_key_expired`), the markets it may trade (refused elsewhere with 403 `market_not_allowed`; reads
are not limited) and its own daily gas budget in wei (enforced by the sponsorship policy). Markets are checked
for their syntax here (`relayer.domain.markets`); whether the vault lists one is the chain's to say, and a key
made without a node cannot ask it, so a key may name a market the vault does not have (yet): it then simply
finds no position there.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from relayer.domain.markets import normalize_symbol
from relayer.domain.requests import parse_owner
from relayer.errors import (
    ApiKeyExpiredError,
    InsufficientScopeError,
    InvalidFieldError,
    InvalidMarketError,
    MarketNotAllowedError,
    NotAuthorizedError,
    UnauthenticatedError,
)

if TYPE_CHECKING:  # the port is typed with this module's `ApiKey` and `Scope`
    from relayer.stores.keys import KeyStore

KEY_PREFIX = "vrk"
KEY_RANDOM_BYTES = 24
"""192 bits of randomness per key (the issue asks for at least 128)."""
DISPLAY_PREFIX_CHARS = 12
"""How much of a key `keys list` shows (`vrk_` + 8 characters): tells keys apart, useless to an attacker."""
MAX_EXPIRES_AT_S = 253_402_300_799
"""The latest expiry a key may have: 9999-12-31T23:59:59Z, the last second a date can show."""
MAX_MARKETS_PER_KEY = 64
"""How many markets one key may name: a bound on the stored list, far above any vault's market count."""
MAX_DAILY_SPEND_WEI = 2**256 - 1
"""A key's daily budget is a uint256 amount of wei, like every amount on the chain."""
_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
"""`--expires-in` units: seconds, minutes, hours, days."""
_DURATION = re.compile(r"([0-9]{1,12})([smhd])", re.ASCII)
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}", re.ASCII)
_WEI = re.compile(r"[0-9]{1,78}", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Scope(StrEnum):
    """What a key may do: `read` positions and transactions, `trade` (close, partial close, set TP/SL),
    `admin` (read every account's records, the operator's views)."""

    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A stored key as the service sees it (never the key itself)."""

    key_id: int
    prefix: str
    label: str
    account: str
    scopes: frozenset[Scope]
    created_at: int
    last_used_at: int | None
    revoked_at: int | None
    key_hash: str = field(default="", repr=False)
    """The stored SHA-256 hex, for the constant-time `verify` after the indexed lookup."""
    expires_at: int | None = None
    """Unix seconds after which the key is refused (None: never)."""
    markets: frozenset[str] | None = None
    """The market symbols the key may trade (None: all)."""
    daily_spend_wei: int | None = None
    """The key's own gas budget per UTC day, in wei (None: the sponsorship policy's per-key budget)."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now_s: int) -> bool:
        """Whether the key has passed its expiry at `now_s` (it is refused from `expires_at` on)."""
        return self.expires_at is not None and now_s >= self.expires_at

    def may_trade(self, market: str) -> bool:
        """Whether the key may trade `market` (a normalized symbol): every market when it names none."""
        return self.markets is None or market in self.markets


def generate_key() -> str:
    """A new random key; the caller shows it once and stores only `hash_key(key)`."""
    return f"{KEY_PREFIX}_{secrets.token_urlsafe(KEY_RANDOM_BYTES)}"


def hash_key(key: str) -> str:
    """SHA-256 hex of the key: what the store keeps.

    >>> hash_key("vrk_example")[:16]
    '9a49d8a358d978f5'
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_CHARS]


def parse_scopes(text: str) -> frozenset[Scope]:
    """`"read,trade"` -> {READ, TRADE}; `trade` implies nothing else, so ask for both when both are needed.

    Raises:
        ValueError: for an unknown or empty scope list.
    """
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    choices = ", ".join(scope.value for scope in Scope)
    if not names:
        raise ValueError(f"give at least one scope: {choices}")
    try:
        return frozenset(Scope(name) for name in names)
    except ValueError:
        raise ValueError(f"unknown scope in {text!r}: choose from {choices}") from None


def parse_markets(value: str | Iterable[str], field: str = "markets") -> frozenset[str]:
    """The market symbols a key is limited to: `"BTCUSDT,ethusdt"` (or an iterable of symbols) -> upper-cased
    symbols, each checked by `normalize_symbol` (syntax only: the vault's own list is on the chain).

    >>> sorted(parse_markets("btcusdt, ETHUSDT"))
    ['BTCUSDT', 'ETHUSDT']

    Raises:
        InvalidMarketError: an empty list, a malformed symbol, or more than `MAX_MARKETS_PER_KEY`.
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [part.strip() for part in parts]
    if not names or all(name == "" for name in names):
        raise InvalidMarketError(field, "give at least one market symbol, e.g. BTCUSDT (none: every market)")
    markets = frozenset(normalize_symbol(name, field) for name in names)
    if len(markets) > MAX_MARKETS_PER_KEY:
        raise InvalidMarketError(field, f"at most {MAX_MARKETS_PER_KEY} markets per key", count=len(markets))
    return markets


def check_expiry(expires_at: object, now_s: int, field: str = "expires_at") -> int:
    """A key's expiry: unix seconds after `now_s` and at most `MAX_EXPIRES_AT_S`.

    Raises:
        InvalidFieldError: not an integer, not in the future, or past year 9999.
    """
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise InvalidFieldError(field, "must be unix seconds (an integer)")
    if expires_at <= now_s:
        raise InvalidFieldError(
            field, f"{time_text(expires_at)} is not in the future", expiresAt=expires_at, now=now_s
        )
    if expires_at > MAX_EXPIRES_AT_S:
        raise InvalidFieldError(field, "must be before the year 10000", expiresAt=expires_at)
    return expires_at


def check_daily_spend(wei: object, field: str = "daily_spend_wei") -> int:
    """A key's daily gas budget: a positive whole number of wei (at most 2**256 - 1).

    Raises:
        InvalidFieldError: not an integer, zero or negative, or above a uint256.
    """
    if isinstance(wei, bool) or not isinstance(wei, int):
        raise InvalidFieldError(field, "must be a whole number of wei")
    if not 0 < wei <= MAX_DAILY_SPEND_WEI:
        raise InvalidFieldError(field, "must be between 1 wei and 2**256 - 1 wei", value=str(wei))
    return wei


def parse_duration_s(text: str, field: str = "expires_in") -> int:
    """A lifetime as `<n>s`, `<n>m`, `<n>h` or `<n>d` (seconds, minutes, hours, days) -> seconds.

    >>> parse_duration_s("30d"), parse_duration_s("12h"), parse_duration_s("3600s")
    (2592000, 43200, 3600)

    Raises:
        InvalidFieldError: any other text, or a zero duration.
    """
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise InvalidFieldError(field, f"{text[:40]!r} is not a duration such as 30d, 12h, 90m or 3600s")
    seconds = int(found.group(1)) * _DURATION_UNITS_S[found.group(2)]
    if seconds == 0:
        raise InvalidFieldError(field, "must be longer than zero")
    return seconds


def parse_timestamp_s(text: str, field: str = "expires_at") -> int:
    """A moment as unix seconds (`1798761600`) or ISO-8601 with a UTC offset (`2027-01-01T00:00:00Z`,
    `2027-01-01T02:00:00+02:00`) -> unix seconds. A time without an offset is refused: local or UTC would
    be a guess.

    >>> parse_timestamp_s("2027-01-01T00:00:00Z"), parse_timestamp_s("1798761600")
    (1798761600, 1798761600)

    Raises:
        InvalidFieldError: neither form, or no UTC offset.
    """
    text = text.strip()
    if _UNIX_SECONDS.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidFieldError(
            field, f"{text[:40]!r} is neither unix seconds nor an ISO-8601 time such as 2027-01-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InvalidFieldError(field, f"{text[:40]!r} has no UTC offset: add Z (UTC) or +hh:mm")
    return (moment - _EPOCH) // timedelta(seconds=1)


def parse_wei(text: str, field: str = "daily_spend_wei") -> int:
    """A whole number of wei written in decimal digits (`"50000000000000000"`), checked by
    `check_daily_spend`.

    Raises:
        InvalidFieldError: anything but digits, zero, or above a uint256.
    """
    if not _WEI.fullmatch(text.strip()):
        raise InvalidFieldError(field, f"{text[:40]!r} is not a whole number of wei")
    return check_daily_spend(int(text.strip()), field)


def time_text(unix_s: int) -> str:
    """Unix seconds as UTC ISO-8601 (`2027-01-01T00:00:00Z`), how keys' times are shown.

    >>> time_text(1798761600)
    '2027-01-01T00:00:00Z'
    >>> time_text(-1)
    '-1'
    """
    if not 0 <= unix_s <= MAX_EXPIRES_AT_S:  # no date to show: the number itself
        return str(unix_s)
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_key(
    store: KeyStore,
    *,
    account: str,
    scopes: str,
    label: str = "",
    now: int,
    expires_at: int | None = None,
    markets: str | Iterable[str] | None = None,
    daily_spend_wei: int | None = None,
) -> tuple[str, ApiKey]:
    """Make a key for `account` with `scopes` ("read,trade") and store its hash; returns (the key, to show
    once; its stored record). The limits are optional: `expires_at` (unix seconds, after `now`), `markets`
    ("BTCUSDT,ETHUSDT" or symbols; None: every market), `daily_spend_wei` (None: the sponsorship policy's
    per-key budget). Nothing is stored unless every argument is valid.

    Raises:
        InvalidFieldError: an unknown or empty scope list (`scopes`), `account` is not an address, an expiry
            not in the future, a malformed or empty market list (`InvalidMarketError`), a daily spend that is
            not a positive whole number of wei.
    """
    try:
        scope_set = parse_scopes(scopes)
    except ValueError as exc:
        raise InvalidFieldError("scopes", str(exc)) from None
    owner = parse_owner(account, "account")
    expiry = None if expires_at is None else check_expiry(expires_at, now)
    market_set = None if markets is None else parse_markets(markets)
    budget_wei = None if daily_spend_wei is None else check_daily_spend(daily_spend_wei)
    key = generate_key()
    record = store.insert_api_key(
        key_hash=hash_key(key),
        prefix=display_prefix(key),
        label=label,
        account=owner,
        scopes=scope_set,
        now=now,
        expires_at=expiry,
        markets=market_set,
        daily_spend_wei=budget_wei,
    )
    return key, record


def verify(presented: str, stored_hash: str) -> bool:
    """Constant-time check that `presented` is the key behind `stored_hash`."""
    return hmac.compare_digest(hash_key(presented), stored_hash)


def require(key: ApiKey | None, scope: Scope, *, now_s: int, account: str | None = None) -> ApiKey:
    """The authorisation rule, in one place (with `require_market` for a trade's market). `now_s` is the
    caller's clock, in unix seconds.

    Raises:
        UnauthenticatedError: no key, an unknown key or a revoked key (401).
        ApiKeyExpiredError: a key past its expiry (401; `expiresAt` in the details).
        InsufficientScopeError: a valid key without `scope` (403).
        NotAuthorizedError: a valid key used on another account's position (403).
    """
    if key is None or not key.active:
        raise UnauthenticatedError("a valid API key is required (Authorization: Bearer <key> or X-API-Key)")
    if key.expires_at is not None and key.expired(now_s):
        raise ApiKeyExpiredError(
            f"this API key expired at {time_text(key.expires_at)}: ask for a new one",
            expiresAt=key.expires_at,
        )
    if scope not in key.scopes:
        raise InsufficientScopeError(
            f"this API key lacks the '{scope.value}' scope", required=scope.value, scopes=sorted(key.scopes)
        )
    if account is not None and account.lower() != key.account.lower():
        raise NotAuthorizedError("this API key belongs to another account", account=key.account)
    return key


def require_market(key: ApiKey, market: str) -> None:
    """The market rule of a trade: a key limited to markets trades only those (`market` normalized).

    Raises:
        MarketNotAllowedError: the key is limited to other markets (403; `market` and the `allowed` ones in
            the details).
    """
    if key.markets is not None and not key.may_trade(market):
        allowed = sorted(key.markets)
        raise MarketNotAllowedError(
            f"this API key may trade only {', '.join(allowed)}, not {market}", market=market, allowed=allowed
        )
