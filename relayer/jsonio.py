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


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as an exact `Decimal`.

    Raises:
        InvalidFieldError: (field "body") for malformed JSON, NaN or Infinity, or nesting deeper than
            `MAX_NESTING`.
    """
    try:
        if isinstance(text, bytes):  # as json.loads does, so the nesting check sees the same text
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        if _nesting_depth(text) > MAX_NESTING:
            raise InvalidFieldError("body", f"nests deeper than {MAX_NESTING} levels")
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
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
