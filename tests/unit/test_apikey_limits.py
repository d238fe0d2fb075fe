"""API keys' limits (the Gains API model): an expiry, the markets a key may trade and its own daily spend.

The rules without storage (`apikeys.require`, `apikeys.require_market`, the input checks and parsers), then
what `create_key` stores, then the key store keeping the limits on both databases (`store`: SQLite and
PostgreSQL).
"""

from __future__ import annotations

from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.domain import apikeys
from relayer.domain.apikeys import ApiKey, Scope
from relayer.errors import (
    ApiKeyExpiredError,
    InsufficientScopeError,
    InvalidFieldError,
    InvalidMarketError,
    MarketNotAllowedError,
    UnauthenticatedError,
)
from relayer.stores.location import StoreLocation, open_key_store
from tests.unit.test_create_key import MemoryStore

ACCOUNT = "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
NOW_S = 1_800_000_000
"""2027-01-15T08:00:00Z: every rule here takes the time as an argument."""


def _key(
    *,
    scopes: frozenset[Scope] = frozenset({Scope.READ, Scope.TRADE}),
    revoked_at: int | None = None,
    expires_at: int | None = None,
    markets: frozenset[str] | None = None,
) -> ApiKey:
    return ApiKey(
        1,
        "vrk_abcdefgh",
        "",
        ACCOUNT,
        scopes,
        1,
        None,
        revoked_at,
        expires_at=expires_at,
        markets=markets,
    )


# --- expiry -------------------------------------------------------------------------------------------------


def test_a_key_is_refused_from_its_expiry_on_with_expires_at_in_the_details() -> None:
    key = _key(expires_at=NOW_S)

    assert apikeys.require(key, Scope.TRADE, now_s=NOW_S - 1) is key
    for now_s in (NOW_S, NOW_S + 1, NOW_S + 10**9):
        with pytest.raises(ApiKeyExpiredError) as expired:
            apikeys.require(key, Scope.TRADE, now_s=now_s)
        assert (expired.value.http_status, expired.value.code) == (401, "api_key_expired")
        assert expired.value.details == {"expiresAt": NOW_S}
        assert "2027-01-15T08:00:00Z" in expired.value.message


def test_a_key_without_expiry_never_expires() -> None:
    key = _key()

    assert apikeys.require(key, Scope.READ, now_s=apikeys.MAX_EXPIRES_AT_S) is key


def test_revoked_comes_before_expired_and_expired_before_the_scope() -> None:
    with pytest.raises(UnauthenticatedError):
        apikeys.require(_key(revoked_at=5, expires_at=NOW_S), Scope.READ, now_s=NOW_S)
    with pytest.raises(ApiKeyExpiredError):  # an expired key says so, not which scope it lacks
        apikeys.require(_key(scopes=frozenset({Scope.READ}), expires_at=NOW_S), Scope.TRADE, now_s=NOW_S)
    with pytest.raises(InsufficientScopeError):
        apikeys.require(_key(scopes=frozenset({Scope.READ}), expires_at=NOW_S), Scope.TRADE, now_s=NOW_S - 1)


# --- markets ------------------------------------------------------------------------------------------------


def test_a_key_limited_to_markets_trades_only_those() -> None:
    key = _key(markets=frozenset({"ETHUSDT", "BTCUSDT"}))

    apikeys.require_market(key, "BTCUSDT")
    apikeys.require_market(key, "ETHUSDT")
    with pytest.raises(MarketNotAllowedError) as refused:
        apikeys.require_market(key, "SOLUSDT")

    assert (refused.value.http_status, refused.value.code) == (403, "market_not_allowed")
    assert refused.value.details == {"market": "SOLUSDT", "allowed": ["BTCUSDT", "ETHUSDT"]}


def test_a_key_without_markets_trades_every_market_and_an_empty_set_none() -> None:
    apikeys.require_market(_key(), "ANYTHING1")
    with pytest.raises(MarketNotAllowedError):  # never made by create_key; read from a row, it fails closed
        apikeys.require_market(_key(markets=frozenset()), "BTCUSDT")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTCUSDT", {"BTCUSDT"}),
        ("btcusdt, ETHUSDT", {"BTCUSDT", "ETHUSDT"}),
        ("ETHUSDT,ETHUSDT", {"ETHUSDT"}),
        (["solusdt", "BTCUSDT"], {"SOLUSDT", "BTCUSDT"}),
    ],
)
def test_parse_markets(text: str | list[str], expected: set[str]) -> None:
    assert apikeys.parse_markets(text) == frozenset(expected)


@pytest.mark.parametrize(
    "text", ["", " ", ",", "BTCUSDT,", "BTCUSDT,,ETHUSDT", "BTC-USDT", "BTC/USD", "A" * 33, [], ["é"]]
)
def test_parse_markets_refuses_malformed_or_empty_lists(text: str | list[str]) -> None:
    with pytest.raises(InvalidMarketError) as refused:
        apikeys.parse_markets(text)

    assert refused.value.details["field"] == "markets"
    assert refused.value.http_status == 422


def test_parse_markets_bounds_the_list() -> None:
    many = ",".join(f"M{index}" for index in range(apikeys.MAX_MARKETS_PER_KEY + 1))

    assert len(apikeys.parse_markets(many.rsplit(",", 1)[0])) == apikeys.MAX_MARKETS_PER_KEY
    with pytest.raises(InvalidMarketError, match="at most"):
        apikeys.parse_markets(many)


# --- the input rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86_400), ("12h", 43_200), ("90m", 5_400), ("3600s", 3_600), (" 1D ", 86_400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert apikeys.parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "0s", "-5s", "1.5h", "1w", "3600 s", "1e3s", "30d1h"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidFieldError):
        apikeys.parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "unix_s"),
    [
        ("1798761600", 1_798_761_600),
        ("2027-01-01T00:00:00Z", 1_798_761_600),
        ("2027-01-01T02:00:00+02:00", 1_798_761_600),
        ("2027-01-01 00:00:00.999+00:00", 1_798_761_600),  # a fraction of a second is dropped
    ],
)
def test_parse_timestamp(text: str, unix_s: int) -> None:
    assert apikeys.parse_timestamp_s(text) == unix_s


@pytest.mark.parametrize("text", ["2027-01-01T00:00:00", "2027-01-01", "tomorrow", "-5", "1.5", ""])
def test_parse_timestamp_refuses_a_guess(text: str) -> None:
    with pytest.raises(InvalidFieldError):
        apikeys.parse_timestamp_s(text)


@given(st.integers(min_value=0, max_value=apikeys.MAX_EXPIRES_AT_S))
def test_a_shown_time_reads_back_as_itself(unix_s: int) -> None:
    assert apikeys.parse_timestamp_s(apikeys.time_text(unix_s)) == unix_s


@pytest.mark.parametrize(
    ("expires_at", "reason"),
    [
        (NOW_S, "not in the future"),
        (NOW_S - 1, "not in the future"),
        (-1, "not in the future"),
        (apikeys.MAX_EXPIRES_AT_S + 1, "year 10000"),
        (True, "unix seconds"),
        ("1900000000", "unix seconds"),
    ],
)
def test_check_expiry_refuses_the_past_and_nonsense(expires_at: object, reason: str) -> None:
    with pytest.raises(InvalidFieldError, match=reason):
        apikeys.check_expiry(expires_at, NOW_S)


@pytest.mark.parametrize("wei", [0, -1, 2**256, True, "5", None])
def test_check_daily_spend_refuses_what_is_not_a_positive_uint256(wei: object) -> None:
    with pytest.raises(InvalidFieldError):
        apikeys.check_daily_spend(wei)


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "1e18", "0x10", "", str(2**256)])
def test_parse_wei_takes_digits_only(text: str) -> None:
    with pytest.raises(InvalidFieldError):
        apikeys.parse_wei(text)


def test_parse_wei_is_exact_up_to_a_uint256() -> None:
    assert apikeys.parse_wei(str(2**256 - 1)) == 2**256 - 1
    assert apikeys.parse_wei("50000000000000000") == 5 * 10**16


# --- create_key ---------------------------------------------------------------------------------------------


def test_create_key_stores_the_limits_it_checked() -> None:
    store = MemoryStore()

    key, record = apikeys.create_key(
        store,
        account=ACCOUNT,
        scopes="read,trade,admin",
        now=NOW_S,
        expires_at=NOW_S + 3_600,
        markets="ethusdt,BTCUSDT",
        daily_spend_wei=5 * 10**16,
    )

    assert store.kept == [record]
    assert record.scopes == {Scope.READ, Scope.TRADE, Scope.ADMIN}
    assert record.expires_at == NOW_S + 3_600
    assert record.markets == frozenset({"BTCUSDT", "ETHUSDT"})
    assert record.daily_spend_wei == 5 * 10**16
    assert apikeys.verify(key, record.key_hash)


def test_create_key_without_limits_keeps_none() -> None:
    _, record = apikeys.create_key(MemoryStore(), account=ACCOUNT, scopes="read", now=NOW_S)

    assert (record.expires_at, record.markets, record.daily_spend_wei) == (None, None, None)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"expires_at": NOW_S}, "expires_at"),
        ({"markets": "BTC-USD"}, "markets"),
        ({"markets": ""}, "markets"),
        ({"daily_spend_wei": 0}, "daily_spend_wei"),
        ({"daily_spend_wei": -(10**18)}, "daily_spend_wei"),
    ],
)
def test_create_key_with_a_bad_limit_stores_nothing(limits: dict[str, object], field: str) -> None:
    store = MemoryStore()

    with pytest.raises(InvalidFieldError) as refused:
        apikeys.create_key(store, account=ACCOUNT, scopes="read", now=NOW_S, **limits)  # type: ignore[arg-type]

    assert refused.value.details["field"] == field
    assert store.kept == []


# --- the key store, on SQLite and PostgreSQL ----------------------------------------------------------------


def test_the_store_keeps_the_limits_exactly(store: StoreLocation) -> None:
    """Past 2038 (a 32-bit column would overflow) and a uint256 budget (no numeric column holds it)."""
    with closing(open_key_store(store, create=True)) as keys:
        key, made = apikeys.create_key(
            keys,
            account=ACCOUNT,
            scopes="read,trade",
            now=NOW_S,
            expires_at=apikeys.MAX_EXPIRES_AT_S,
            markets=["ETHUSDT", "BTCUSDT"],
            daily_spend_wei=2**256 - 1,
        )
        _, plain = apikeys.create_key(keys, account=ACCOUNT, scopes="read", now=NOW_S)

    with closing(open_key_store(store, create=False)) as again:  # another connection reads what was written
        found = again.api_key_by_hash(apikeys.hash_key(key))
        listed = again.api_keys()

    assert found == made
    assert found.expires_at == apikeys.MAX_EXPIRES_AT_S
    assert found.markets == frozenset({"BTCUSDT", "ETHUSDT"})
    assert found.daily_spend_wei == 2**256 - 1
    assert listed == [made, plain]
    assert (plain.expires_at, plain.markets, plain.daily_spend_wei) == (None, None, None)
