"""API keys: generation, hashing and the authorisation rules, with no storage or HTTP in sight.

`create_key` makes a key and hands its hash to the key store (`relayer.stores.keys.KeyStore`); the `relayer
keys` command and the embedded demo both call it.

A key is `vrk_<32 url-safe characters>` (192 bits from `secrets`), shown once at creation. Only its SHA-256
is stored: the key is random and long, so a fast hash is as strong as a slow one here, and lookups stay one
indexed equality. The stored hash is still compared with `hmac.compare_digest` so no comparison leaks timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from relayer.domain.requests import parse_owner
from relayer.errors import (
    InsufficientScopeError,
    InvalidFieldError,
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
    if not names:
        raise ValueError("give at least one scope: read, trade")
    try:
        return frozenset(Scope(name) for name in names)
    except ValueError:
        raise ValueError(f"unknown scope in {text!r}: choose from read, trade") from None


def create_key(
    store: KeyStore, *, account: str, scopes: str, label: str = "", now: int
) -> tuple[str, ApiKey]:
    """Make a key for `account` with `scopes` ("read,trade") and store its hash; returns (the key, to show
    once; its stored record).

    Raises:
        InvalidFieldError: an unknown or empty scope list (`scopes`), or `account` is not an address.
    """
    try:
        scope_set = parse_scopes(scopes)
    except ValueError as exc:
        raise InvalidFieldError("scopes", str(exc)) from None
    owner = parse_owner(account, "account")
    key = generate_key()
    record = store.insert_api_key(
        key_hash=hash_key(key),
        prefix=display_prefix(key),
        label=label,
        account=owner,
        scopes=scope_set,
        now=now,
    )
    return key, record


def verify(presented: str, stored_hash: str) -> bool:
    """Constant-time check that `presented` is the key behind `stored_hash`."""
    return hmac.compare_digest(hash_key(presented), stored_hash)


def require(key: ApiKey | None, scope: Scope, *, account: str | None = None) -> ApiKey:
    """The authorisation rule, in one place.

    Raises:
        UnauthenticatedError: no key, an unknown key or a revoked key (401).
        InsufficientScopeError: a valid key without `scope` (403).
        NotAuthorizedError: a valid key used on another account's position (403).
    """
    if key is None or not key.active:
        raise UnauthenticatedError("a valid API key is required (Authorization: Bearer <key> or X-API-Key)")
    if scope not in key.scopes:
        raise InsufficientScopeError(
            f"this API key lacks the '{scope.value}' scope", required=scope.value, scopes=sorted(key.scopes)
        )
    if account is not None and account.lower() != key.account.lower():
        raise NotAuthorizedError("this API key belongs to another account", account=key.account)
    return key
