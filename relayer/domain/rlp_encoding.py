"""`rlp_encode`: Recursive Length Prefix encoding (Ethereum's yellow paper, appendix B) of integers, byte
strings and lists of them: what an unsigned transaction is made of (`serialized_transaction` of
`relayer.services.builder_answers.BuiltTransaction`).

The `rlp` package infers a serializer per item on every call (~70 us a transaction); this writes the bytes
directly (~10 us). `tests/unit/test_rlp_encoding.py` checks it against the `rlp` package.
"""

from __future__ import annotations

from collections.abc import Sequence

RlpItem = int | bytes | Sequence["RlpItem"]


def rlp_encode(item: RlpItem) -> bytes:
    """`item` RLP-encoded: an int as its minimal big-endian bytes (0 is the empty string), bytes as they are,
    a list as the concatenation of its items' encodings.

    Raises:
        ValueError: a negative integer (RLP has none).
        TypeError: anything else (`bool`, `str`, None...).
    """
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _prefix(len(item), 0x80) + item
    if isinstance(item, int) and not isinstance(item, bool):
        if item < 0:
            raise ValueError(f"RLP has no negative integers: {item}")
        return rlp_encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    if isinstance(item, list | tuple):
        payload = b"".join(rlp_encode(part) for part in item)
        return _prefix(len(payload), 0xC0) + payload
    raise TypeError(f"cannot RLP-encode a {type(item).__name__}")


def _prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size
