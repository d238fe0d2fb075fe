"""JSON without floats: request bodies parse exactly or not at all."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayer.domain.jsonio import MAX_NESTING, loads_exact, loads_object
from relayer.errors import InvalidFieldError


def test_fractions_stay_exact_decimals() -> None:
    body = loads_object('{"sizeDelta": 0.1, "allowedPrice": 96000.00000001, "bps": 5000, "big": 1e-8}')
    assert body["sizeDelta"] == Decimal("0.1")
    assert isinstance(body["sizeDelta"], Decimal)
    assert body["sizeDelta"].as_tuple() == Decimal("0.1").as_tuple()
    assert body["allowedPrice"] == Decimal("96000.00000001")
    assert body["bps"] == 5000
    assert type(body["bps"]) is int
    assert body["big"] == Decimal("0.00000001")


def test_nested_numbers_are_exact_too() -> None:
    assert loads_exact('[{"a": [0.3]}]') == [{"a": [Decimal("0.3")]}]


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_literal_round_trips(value: Decimal) -> None:
    parsed = loads_exact(str(value))  # Decimal's text ("1.5E+7", "-0.001") is a valid JSON number
    assert parsed == value
    if isinstance(parsed, Decimal):
        assert parsed.as_tuple() == value.as_tuple()


@given(st.integers())
def test_integers_stay_ints(n: int) -> None:
    parsed = loads_exact(str(n))
    assert parsed == n
    assert type(parsed) is int


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(constant: str) -> None:
    with pytest.raises(InvalidFieldError, match=constant) as info:
        loads_object(f'{{"sizeDelta": {constant}}}')
    assert info.value.field == "body"


@pytest.mark.parametrize("body", ["[]", "[1]", "1", "0.1", '"text"', "null", "true"])
def test_non_object_body_is_rejected(body: str) -> None:
    loads_exact(body)  # valid JSON
    with pytest.raises(InvalidFieldError, match="must be a JSON object") as info:
        loads_object(body)
    assert info.value.field == "body"


@pytest.mark.parametrize(
    "body",
    ["", "{", '{"a": }', "{'a': 1}", '{"a": 1,}', "01", "1 2", b"\xff\xfe\x00", "[" * 100_000, "1" * 5_000],
)
def test_malformed_json_is_an_invalid_body(body: str | bytes) -> None:
    with pytest.raises(InvalidFieldError) as info:
        loads_object(body)
    assert info.value.field == "body"
    assert info.value.code == "invalid_field"
    assert info.value.__cause__ is None


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 100_000, b"[" * 100_000, "[" * (MAX_NESTING + 1)])
def test_deep_nesting_is_rejected_before_parsing(body: str | bytes) -> None:
    # With eth-account imported the recursion limit is 100_000: json's C scanner would crash the process.
    with pytest.raises(InvalidFieldError, match="nests deeper") as info:
        loads_exact(body)
    assert info.value.field == "body"


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine() -> None:
    deepest = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert loads_exact(deepest) is not None
    tricky = {"note": "[{" * 1_000 + '\\"', "x": ['\\"]]', "}{"]}  # escaped quotes and backslashes too
    assert loads_object(json.dumps(tricky)) == tricky


def test_bytes_bodies_are_accepted() -> None:
    assert loads_object(b'{"positionId": "0x01", "sizeDelta": "0.14"}') == {
        "positionId": "0x01",
        "sizeDelta": "0.14",
    }


@given(st.text(max_size=40))
def test_arbitrary_text_raises_only_invalid_field(text: str) -> None:
    try:
        value = loads_exact(text)
    except InvalidFieldError as exc:
        rejected_field = exc.field
    else:
        assert value == json.loads(text, parse_float=Decimal)
        return
    assert rejected_field == "body"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"sizeDelta": "0.1", "sizeDelta": null}', "sizeDelta"),
        ('{"dry_run": true, "dry_run": false}', "dry_run"),
        ('{"a": 1, "b": {"c": 1, "c": 1}}', "c"),  # the same value twice is still refused
        ('[{"x": 1}, {"x": 1, "x": 2}]', "x"),
    ],
)
def test_a_key_given_twice_is_refused_naming_it(text: str, field: str) -> None:
    with pytest.raises(InvalidFieldError) as raised:
        loads_exact(text)
    assert raised.value.field == field


def test_the_same_key_in_different_objects_is_fine() -> None:
    assert loads_exact('[{"x": 1}, {"x": 2}]') == [{"x": 1}, {"x": 2}]
