"""JSON in and out without floats: numbers parse as `Decimal` (or `int`), and go out as exact strings.

Python's `json` turns `0.1` into a binary float and accepts `NaN`/`Infinity`; neither may reach money.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from relayer.errors import InvalidFieldError

MAX_NESTING = 64
"""Deepest array/object nesting a body may have. eth-account and py-evm raise Python's recursion limit to
100_000 on import, so the C JSON scanner would overflow the C stack (a segfault, not a RecursionError) on a
body of 100_000 `[` long before Python's own limit stopped it."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _reject_constant(name: str) -> Any:
    raise InvalidFieldError("body", f"{name} is not a valid JSON number")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: `{"sizeDelta": "0.1", "sizeDelta": null}` is refused, where
    Python's `json` (like most parsers) would silently keep the last one and turn a partial close into a full
    one."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidFieldError(key[:80], "is given more than once in the same JSON object")
        obj[key] = value
    return obj


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as an exact `Decimal` and every object's keys unique.

    >>> loads_exact('{"sizeDelta": 0.1}')
    {'sizeDelta': Decimal('0.1')}
    >>> loads_exact('{"dry_run": true, "dry_run": false}')
    Traceback (most recent call last):
    relayer.errors.InvalidFieldError: dry_run: is given more than once in the same JSON object

    Raises:
        InvalidFieldError: (field "body") for malformed JSON, NaN or Infinity, or nesting deeper than
            `MAX_NESTING`; (the key itself) for a key given twice in one object.
    """
    try:
        if isinstance(text, bytes):  # as json.loads does, so the nesting check sees the same text
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        if _nesting_depth(text) > MAX_NESTING:
            raise InvalidFieldError("body", f"nests deeper than {MAX_NESTING} levels")
        return json.loads(
            text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_unique_object
        )
    except InvalidFieldError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidFieldError("body", f"is not valid JSON ({type(exc).__name__})") from None


def _nesting_depth(text: str) -> int:
    """How deep `[`/`{` nest outside strings (at most `MAX_NESTING + 1`: counting stops there)."""
    if text.count("[") + text.count("{") <= MAX_NESTING:  # the common case, at C speed
        return 0
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        if depth > MAX_NESTING:
            break
    return depth


def loads_object(text: str | bytes) -> dict[str, Any]:
    """`loads_exact` for a request body, which must be a JSON object."""
    value = loads_exact(text)
    if not isinstance(value, dict):
        raise InvalidFieldError("body", "must be a JSON object")
    return value


def reject_unknown_fields(body: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse fields a request does not have: a misspelt `sizedelta` must fail, not silently mean "all".

    Raises:
        InvalidFieldError: naming the first unknown field (cut to 80 characters) and listing the allowed ones.
    """
    unknown = sorted(str(key) for key in body if key not in allowed)
    if unknown:
        fields = ", ".join(allowed)
        raise InvalidFieldError(unknown[0][:80], f"is not a field of this request (fields: {fields})")
