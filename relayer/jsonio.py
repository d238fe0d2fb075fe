"""JSON in and out without floats: numbers parse as `Decimal` (or `int`), and go out as exact strings.

Python's `json` turns `0.1` into a binary float and accepts `NaN`/`Infinity`; neither may reach money.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from relayer.errors import InvalidFieldError


def _reject_constant(name: str) -> Any:
    raise InvalidFieldError("body", f"{name} is not a valid JSON number")


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as an exact `Decimal`.

    Raises:
        InvalidFieldError: (field "body") for malformed JSON, NaN or Infinity.
    """
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except InvalidFieldError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidFieldError("body", f"is not valid JSON ({type(exc).__name__})") from None


def loads_object(text: str | bytes) -> dict[str, Any]:
    """`loads_exact` for a request body, which must be a JSON object."""
    value = loads_exact(text)
    if not isinstance(value, dict):
        raise InvalidFieldError("body", "must be a JSON object")
    return value
