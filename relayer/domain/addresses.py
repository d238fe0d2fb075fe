"""`checksum_address`: EIP-55 checksummed addresses, remembered.

`eth_utils.to_checksum_address` hashes the address with keccak on every call (~20 us); a request to
`POST /api/closeposition` checksums the same few addresses (the vault, the position's owner) four times. The
answers are remembered in a bounded cache (least recently used out), so an address seen before costs a
dictionary lookup; a value that is not an address raises as before, and is not remembered.
"""

from __future__ import annotations

from functools import lru_cache

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

CHECKSUM_CACHE_SIZE = 4096
"""Addresses remembered (a few hundred bytes each)."""


def checksum_address(value: str | bytes) -> ChecksumAddress:
    """`value` (0x-hex text, or 20 bytes) as an EIP-55 checksummed address.

    Raises:
        ValueError: `value` is not an address (eth-utils' own error).
    """
    return _checksummed(value)


@lru_cache(maxsize=CHECKSUM_CACHE_SIZE)
def _checksummed(value: str | bytes) -> ChecksumAddress:
    return to_checksum_address(value)
