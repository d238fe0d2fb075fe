"""Trading, keeper and price-feed settings: defaults, `RELAYER_*` variables, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayer.config import Settings, TradingSettings
from relayer.errors import ConfigurationError

VAULT = "0x" + "12" * 20


def test_trading_defaults_guard_every_close() -> None:
    settings = TradingSettings()

    assert settings.default_slippage_bps == 100
    assert settings.receipt_timeout_s == 20.0
    assert settings.poll_interval_s > 0


def test_trading_from_env() -> None:
    settings = TradingSettings.from_env(
        {
            "RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS": "25",
            "RELAYER_TRADING_RECEIPT_TIMEOUT_S": "2.5",
            "RELAYER_TRADING_POLL_INTERVAL_S": "0.1",
            "RELAYER_OTHER": "ignored",
        }
    )

    assert settings == TradingSettings(default_slippage_bps=25, receipt_timeout_s=2.5, poll_interval_s=0.1)
    assert isinstance(settings.default_slippage_bps, int)
    assert TradingSettings.from_env({"RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS": ""}) == TradingSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS", "1.5"),
        ("RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS", "lots"),
        ("RELAYER_TRADING_RECEIPT_TIMEOUT_S", "soon"),
    ],
)
def test_trading_env_must_be_numbers(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        TradingSettings.from_env({name: value})


@pytest.mark.parametrize(
    "values",
    [
        {"default_slippage_bps": -1},
        {"default_slippage_bps": 10_000},
        {"receipt_timeout_s": 0},
        {"poll_interval_s": -0.1},
    ],
)
def test_trading_settings_refuse_nonsense(values: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        TradingSettings(**values)


def test_settings_load_reads_trading_keeper_and_feed_variables() -> None:
    settings = Settings.load(
        {
            "RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS": "40",
            "RELAYER_KEEPER_INTERVAL_S": "0",
            "RELAYER_KEEPER_FROM_BLOCK": "1234",
            "RELAYER_KEEPER_RATCHET_MIN_BPS": "25",
            "RELAYER_PRICE_FEED_INTERVAL_S": "2.5",
            "RELAYER_PRICE_FEED_SEED": "42",
            "RELAYER_PRICE_FEED_MAX_STEP_BPS": "15",
            "RELAYER_RELAY_JOURNAL_PATH": "/tmp/j.sqlite3",
        }
    )

    assert settings.trading.default_slippage_bps == 40
    assert settings.keeper_interval_s == 0
    assert settings.keeper_from_block == 1234
    assert settings.keeper_ratchet_min_bps == 25
    assert (settings.price_feed_interval_s, settings.price_feed_seed, settings.price_feed_max_step_bps) == (
        2.5,
        42,
        15,
    )
    assert settings.relay.journal_path == Path("/tmp/j.sqlite3")


def test_settings_defaults() -> None:
    settings = Settings()

    assert settings.trading == TradingSettings()
    assert settings.keeper_interval_s == 1.0
    assert settings.keeper_from_block == 0
    assert settings.keeper_ratchet_min_bps == 10
    assert settings.price_feed_interval_s == 0  # the feed is off unless `relayer serve` turns it on


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAYER_KEEPER_INTERVAL_S", "-1"),
        ("RELAYER_KEEPER_FROM_BLOCK", "-5"),
        ("RELAYER_KEEPER_RATCHET_MIN_BPS", "10000"),
        ("RELAYER_PRICE_FEED_MAX_STEP_BPS", "5000"),
        ("RELAYER_TRADING_RECEIPT_TIMEOUT_S", "-3"),
    ],
)
def test_settings_load_refuses_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.load({name: value})


def test_settings_are_frozen_and_overrides_win() -> None:
    settings = Settings.load({"RELAYER_KEEPER_INTERVAL_S": "3"}, keeper_interval_s=0.5, vault_address=VAULT)

    assert settings.keeper_interval_s == 0.5
    with pytest.raises(ValueError, match="frozen"):
        settings.keeper_interval_s = 2  # type: ignore[misc]
