"""API keys without storage: format and randomness, hashing, constant-time verify, the authorisation rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.domain import apikeys
from relayer.domain.apikeys import ApiKey, Scope
from relayer.errors import InsufficientScopeError, NotAuthorizedError, UnauthenticatedError

OWNER = "0x" + "ab" * 20
NOW_S = 1_800_000_000


def _key(scopes: frozenset[Scope] = frozenset(Scope), revoked_at: int | None = None) -> ApiKey:
    return ApiKey(
        1, "vrk_abcdefgh", "", "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB", scopes, 1, None, revoked_at
    )


def test_key_format_and_at_least_128_bits() -> None:
    keys = {apikeys.generate_key() for _ in range(200)}

    assert len(keys) == 200
    for key in keys:
        prefix, random_part = key.split("_", 1)
        assert prefix == "vrk"
        assert set(random_part) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        decoded = base64.urlsafe_b64decode(random_part + "=" * (-len(random_part) % 4))
        assert len(decoded) * 8 >= 128
        assert len(decoded) == apikeys.KEY_RANDOM_BYTES
    assert apikeys.KEY_RANDOM_BYTES * 8 >= 128


def test_hash_is_sha256_hex_and_the_display_prefix_is_short() -> None:
    key = apikeys.generate_key()

    assert apikeys.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert apikeys.display_prefix(key) == key[:12]
    assert apikeys.display_prefix(key).startswith("vrk_")
    assert len(key) - len(apikeys.display_prefix(key)) >= 22  # what stays secret: > 128 bits of base64


@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=64))
def test_verify_accepts_only_the_key_behind_the_hash(presented: str, other: str) -> None:
    stored = apikeys.hash_key(presented)

    assert apikeys.verify(presented, stored)
    assert apikeys.verify(other, stored) == (other == presented)


def test_require_no_key_or_revoked_is_unauthenticated() -> None:
    with pytest.raises(UnauthenticatedError) as missing:
        apikeys.require(None, Scope.READ, now_s=NOW_S)
    with pytest.raises(UnauthenticatedError):
        apikeys.require(_key(revoked_at=5), Scope.READ, now_s=NOW_S)

    assert missing.value.http_status == 401
    assert missing.value.code == "unauthenticated"


def test_require_checks_the_scope_before_the_account() -> None:
    read_only = _key(frozenset({Scope.READ}))

    with pytest.raises(InsufficientScopeError) as refused:
        apikeys.require(read_only, Scope.TRADE, now_s=NOW_S, account="0x" + "cd" * 20)

    assert refused.value.http_status == 403
    assert refused.value.details == {"required": "trade", "scopes": ["read"]}
    assert apikeys.require(read_only, Scope.READ, now_s=NOW_S) is read_only


def test_require_account_is_case_insensitive_and_refuses_others() -> None:
    key = _key()

    assert apikeys.require(key, Scope.TRADE, now_s=NOW_S, account=OWNER) is key
    assert apikeys.require(key, Scope.TRADE, now_s=NOW_S, account=OWNER.upper().replace("0X", "0x")) is key
    with pytest.raises(NotAuthorizedError) as other:
        apikeys.require(key, Scope.TRADE, now_s=NOW_S, account="0x" + "cd" * 20)
    assert other.value.http_status == 403
    assert other.value.code == "not_authorized"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read", {Scope.READ}),
        ("trade", {Scope.TRADE}),
        ("read,trade", {Scope.READ, Scope.TRADE}),
        ("read,admin", {Scope.READ, Scope.ADMIN}),
        (" TRADE , read ,", {Scope.READ, Scope.TRADE}),
        ("read,read", {Scope.READ}),
    ],
)
def test_parse_scopes(text: str, expected: set[Scope]) -> None:
    assert apikeys.parse_scopes(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["", " , ", "owner", "read,owner", "read;trade"])
def test_parse_scopes_refuses_unknown_or_empty(text: str) -> None:
    with pytest.raises(ValueError, match="read, trade"):
        apikeys.parse_scopes(text)


def test_an_api_key_never_shows_its_hash() -> None:
    key = ApiKey(1, "vrk_abcdefgh", "", OWNER, frozenset(Scope), 1, None, None, key_hash="f" * 64)

    assert "f" * 64 not in repr(key)
    assert key.active
