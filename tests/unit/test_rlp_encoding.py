"""`relayer.domain.rlp_encoding` against the `rlp` package (eth-account's codec), on every shape it takes."""

from __future__ import annotations

from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from relayer.domain.rlp_encoding import RlpItem, rlp_encode

_items: st.SearchStrategy[Any] = st.recursive(
    st.integers(min_value=0, max_value=2**300) | st.binary(max_size=80),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


@given(_items)
def test_the_same_bytes_as_the_rlp_package(item: Any) -> None:
    assert rlp_encode(item) == rlp.encode(item)


def test_the_edges_of_each_prefix() -> None:
    edges: list[RlpItem] = [0, 1, 127, 128, 255, 256, b"", b"\x00", b"\x7f", b"\x80", b"a" * 55, b"a" * 56]
    for item in [*edges, b"a" * 300]:
        assert rlp_encode(item) == rlp.encode(item)
    assert rlp_encode([b"a" * 54]) == rlp.encode([b"a" * 54])  # a 55-byte list payload: short form
    assert rlp_encode([b"a" * 55]) == rlp.encode([b"a" * 55])  # 56 bytes: long form
    assert rlp_encode([]) == rlp.encode([]) == b"\xc0"


@pytest.mark.parametrize("bad", [-1, True, "0x00", None, 1.5])
def test_what_rlp_has_no_encoding_for_is_refused(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        rlp_encode(bad)
