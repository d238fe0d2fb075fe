"""The demo price feed: a seeded, integer random walk that can pause."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.constants import BPS_DENOMINATOR
from relayer.errors import RelayerError
from relayer.services.price_feed import PriceFeed, next_price_e8

START = {"BTCUSDT": 9_600_000_000_000, "ETHUSDT": 350_000_000_000}


class Recorder:
    """Stands in for the price keeper's `setPrice` sender: remembers every call in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, market: str, price_e8: int) -> None:
        assert isinstance(price_e8, int)
        self.calls.append((market, price_e8))


def _walk(seed: int, ticks: int = 20) -> tuple[list[dict[str, int]], list[tuple[str, int]]]:
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=seed, max_step_bps=30)
    return [feed.tick() for _ in range(ticks)], recorder.calls


def test_same_seed_same_walk_other_seed_other_walk() -> None:
    first, calls = _walk(7)
    again, _ = _walk(7)
    other, _ = _walk(8)

    assert first == again
    assert first != other
    assert len(calls) == 2 * 20
    assert [market for market, _ in calls[:2]] == ["BTCUSDT", "ETHUSDT"]  # sorted, every tick
    assert calls[-2:] == sorted(first[-1].items())


def test_every_step_is_within_the_max_step() -> None:
    moves, _ = _walk(3, ticks=50)
    previous = dict(START)
    for prices in moves:
        for market, price in prices.items():
            low = previous[market] * (BPS_DENOMINATOR - 30) // BPS_DENOMINATOR
            high = previous[market] * (BPS_DENOMINATOR + 30) // BPS_DENOMINATOR
            assert low <= price <= high
            assert isinstance(price, int)
        previous = prices


def test_pause_and_resume() -> None:
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=1)

    feed.pause()
    assert feed.paused
    assert feed.tick() == {}
    assert recorder.calls == []
    assert feed.prices_e8 == START

    feed.resume()
    assert not feed.paused
    moved = feed.tick()
    assert set(moved) == set(START)
    assert feed.prices_e8 == moved


def test_resuming_continues_the_seeded_walk() -> None:
    """A pause does not consume randomness: the walk after it is the walk without it."""
    straight, _ = _walk(11, ticks=4)
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=11)
    paused_walk = [feed.tick(), feed.tick()]
    feed.pause()
    feed.tick()
    feed.resume()
    paused_walk += [feed.tick(), feed.tick()]

    assert paused_walk == straight


@given(st.integers(min_value=1, max_value=2**112), st.integers(min_value=-1_000, max_value=1_000))
def test_next_price_is_exact_integer_math(price: int, step: int) -> None:
    moved = next_price_e8(price, step)

    assert moved == max(1, price * (BPS_DENOMINATOR + step) // BPS_DENOMINATOR)
    assert moved >= 1
    if step == 0:
        assert moved == price


@pytest.mark.parametrize("step", [-10_000, -20_000])
def test_the_price_never_reaches_zero(step: int) -> None:
    assert next_price_e8(5, step) == 1


def test_control_sets_a_price_by_hand_and_pauses() -> None:
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=1)

    feed.control({"symbol": "btcusdt", "price": "99000.5", "paused": True})

    assert recorder.calls == [("BTCUSDT", 9_900_050_000_000)]
    assert feed.paused
    assert feed.tick() == {}
    assert feed.state() == {
        "paused": True,
        "walk": "paused",
        "seed": 1,
        "prices": {"BTCUSDT": "99000.5", "ETHUSDT": "3500"},
    }
    feed.control({"paused": False})
    assert not feed.paused
    assert feed.state()["walk"] == "on"


def test_with_the_walk_off_prices_are_set_by_hand_only() -> None:
    """`--price-feed-interval 0`: no walk, but the manual controls work and the state says the walk is off."""
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=1, walking=False)

    assert feed.paused
    assert feed.state()["walk"] == "off"
    feed.control({"symbol": "ETHUSDT", "price": "3333.33"})
    feed.control({"paused": True})  # harmless: nothing walks anyway

    assert recorder.calls == [("ETHUSDT", 333_333_000_000)]
    assert feed.state() == {
        "paused": True,
        "walk": "off",
        "seed": 1,
        "prices": {"BTCUSDT": "96000", "ETHUSDT": "3333.33"},
    }
    with pytest.raises(RelayerError) as raised:
        feed.control({"symbol": "BTCUSDT", "price": "1", "paused": False})  # nothing to resume
    assert raised.value.details["field"] == "paused"
    assert recorder.calls == [("ETHUSDT", 333_333_000_000)]  # the refused request changed nothing


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"paused": "yes"}, "invalid_field", "paused"),
        ({"symbol": "BTCUSDT"}, "invalid_field", "price"),
        ({"price": "1"}, "invalid_field", "symbol"),
        ({"symbol": "BTCUSDT", "price": "-1"}, "invalid_field", "price"),
        ({"symbol": "BTCUSDT", "price": "1.000000001"}, "invalid_field", "price"),
        ({"speed": 2}, "invalid_field", "speed"),
        ({"symbol": "DOGEUSDT", "price": "1", "paused": True}, "market_not_found", None),
    ],
)
def test_a_bad_control_request_changes_nothing(body: dict[str, object], code: str, field: str | None) -> None:
    recorder = Recorder()
    feed = PriceFeed(recorder, dict(START), seed=1)

    with pytest.raises(RelayerError) as raised:
        feed.control(body)

    assert raised.value.code == code
    assert raised.value.details.get("field") == field
    assert recorder.calls == []
    assert not feed.paused
