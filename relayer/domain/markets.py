"""Market symbols and their on-chain bytes32 form (right-padded ASCII, e.g. "BTCUSDT")."""

from __future__ import annotations

import re

from relayer.errors import InvalidMarketError

_SYMBOL = re.compile(r"[A-Z0-9]{1,32}", re.ASCII)  # with `fullmatch`: no trailing newline


def normalize_symbol(symbol: object, field: str = "symbol") -> str:
    """Upper-cased symbol, validated: 1..32 characters of A-Z and 0-9 (any case; no spaces around it).

    >>> normalize_symbol("btcusdt")
    'BTCUSDT'
    >>> normalize_symbol(" BTCUSDT")
    Traceback (most recent call last):
    relayer.errors.InvalidMarketError: symbol: ' BTCUSDT' is not a market symbol (1-32 letters and digits)
    """
    if not isinstance(symbol, str):
        raise InvalidMarketError(field, "must be a string such as 'BTCUSDT'")
    upper = symbol.upper()
    if not _SYMBOL.fullmatch(upper):
        raise InvalidMarketError(field, f"{symbol[:40]!r} is not a market symbol (1-32 letters and digits)")
    return upper


def symbol_to_bytes32(symbol: str) -> bytes:
    """The vault's market id for `symbol`.

    >>> symbol_to_bytes32("BTCUSDT").hex()[:14]
    '42544355534454'
    """
    return normalize_symbol(symbol).encode("ascii").ljust(32, b"\0")


def bytes32_to_symbol(raw: bytes) -> str:
    """The symbol a bytes32 market id spells; non-ASCII ids are shown as 0x-hex so nothing is lost."""
    stripped = raw.rstrip(b"\0")
    try:
        text = stripped.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + raw.hex()
    return text if text.isprintable() else "0x" + raw.hex()
