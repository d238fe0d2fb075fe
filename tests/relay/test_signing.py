"""The relayer's fast signer gives exactly eth-account's bytes and hash, for both shapes it signs (and hands
any other shape to eth-account)."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from relayer.chain.signing import TxSigner
from relayer.domain.fees import Fees
from relayer.services.relay.values import build_tx

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's account 1 (public)
ACCOUNT = Account.from_key(KEY)
SIGNER = TxSigner(ACCOUNT)
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)


def _eth_account(tx: dict[str, Any]) -> tuple[bytes, str]:
    signed = ACCOUNT.sign_transaction(tx)
    return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


@settings(max_examples=200, deadline=None)
@given(
    chain_id=st.integers(min_value=1, max_value=2**53),
    nonce=UINT64,
    to=st.binary(min_size=20, max_size=20),
    data=st.binary(max_size=600),
    value=st.integers(min_value=0, max_value=2**200),
    gas=st.integers(min_value=21_000, max_value=2**40),
    fees=st.one_of(
        st.builds(Fees, UINT64, UINT64),
        st.builds(Fees, st.just(0), st.just(0), UINT64),  # legacy: a gas price
    ),
)
def test_the_fast_signer_signs_what_eth_account_signs(
    chain_id: int, nonce: int, to: bytes, data: bytes, value: int, gas: int, fees: Fees
) -> None:
    tx = build_tx(
        chain_id=chain_id,
        nonce=nonce,
        to=to_checksum_address(to),
        data=data,
        value_wei=value,
        gas=gas,
        fees=fees,
    )
    assert SIGNER.sign(tx) == _eth_account(tx)


def test_another_shape_is_signed_by_eth_account() -> None:
    tx = {
        "chainId": 1,
        "nonce": 0,
        "to": to_checksum_address("0x" + "11" * 20),
        "data": b"",
        "value": 0,
        "gas": 30_000,
        "type": 1,
        "gasPrice": 7,
        "accessList": [],
    }
    assert SIGNER.sign(tx) == _eth_account(tx)
    assert repr(SIGNER) == "TxSigner()"  # never the key
