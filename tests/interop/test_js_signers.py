"""`POST /api/closeposition` answers signed as they come by eth-account, viem and ethers v6.

A client must not have to map a field: eth-account signs `transaction` (a JSON-RPC transaction object), viem
and ethers parse `serializedTransaction` (the unsigned EIP-2718 bytes). sign.mjs reads each answer with
JavaScript's own `JSON.parse`, so a wei amount above 2**53 sent as a JSON number would be caught rounded.
The three signers must produce the very same signed bytes (all sign deterministically, RFC 6979), and the
chain must then do exactly what the answer's preview said.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.crypto import keccak
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxReceipt

from relayer.chain.connect import Chain
from relayer.chain.quotes import ChainHead, CloseState, PositionQuote
from relayer.chain.vault import VaultReader
from relayer.constants import PNL_DECIMALS, PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain.fees import Fees
from relayer.domain.positions import Position, TriggerOrder
from relayer.domain.requests import parse_close_request
from relayer.domain.units import format_fixed
from relayer.services.builder import assemble, encode_request
from relayer.services.builder_answers import BuiltTransaction, ClosePreview
from tests.interop.conftest import JsSign

QUANTITIES = ("chainId", "nonce", "gas", "value", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice")
JS_MAX_SAFE_INTEGER = 2**53 - 1
OWNER = Account.from_key("0x" + "11" * 32)
VAULT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"


def key_hex(account: LocalAccount) -> str:
    return "0x" + bytes(account.key).hex()


def assert_signed_alike(body: str, report: dict[str, Any], account: LocalAccount) -> bytes:
    """Node read `body` exactly as Python does, and viem, ethers and eth-account signed the same bytes."""
    answer = json.loads(body)
    assert json.loads(report["reparsed"]) == answer, "JSON.parse changed a value (a number above 2**53?)"
    tx = answer["transaction"]
    expected = {name: str(int(tx[name], 16)) if name in tx else None for name in QUANTITIES}
    assert all(isinstance(tx[name], str) for name in QUANTITIES if name in tx)
    assert report["transaction"] == expected
    legacy = "gasPrice" in tx
    for library, type_name in (("viem", "legacy" if legacy else "eip1559"), ("ethers", 0 if legacy else 2)):
        parsed = report[library]
        assert parsed["type"] == type_name, library
        assert parsed["fields"] | {"to": parsed["fields"]["to"].lower()} == expected | {
            "to": tx["to"].lower(),
            "data": tx["data"],
        }, library
        assert parsed["reserialized"] == answer["serializedTransaction"], library

    signed = Account.sign_transaction(tx, account.key).raw_transaction
    assert report["viem"]["signed"] == report["ethers"]["signed"] == "0x" + bytes(signed).hex()
    assert Account.recover_transaction(signed) == account.address
    return bytes(signed)


def post_close(client: TestClient, **body: Any) -> str:
    response = client.post("/api/closeposition", json=body)
    assert response.status_code == 200, response.text
    return response.text


def send_raw(chain: Chain, raw_hex: str) -> TxReceipt:
    with chain.lock:  # the app's services use the embedded chain from their own thread meanwhile
        receipt = chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_raw_transaction(HexStr(raw_hex)), timeout=30
        )
    assert receipt["status"] == 1
    return receipt


def assert_fill_matches_preview(vault: VaultReader, receipt: TxReceipt, preview: dict[str, Any]) -> None:
    (event,) = vault.contract.events.PositionDecreased().process_receipt(receipt, errors=DISCARD)
    fill = event["args"]
    assert format_fixed(fill["sizeDelta"], SIZE_DECIMALS) == preview["sizeDelta"]
    assert format_fixed(fill["remainingSize"], SIZE_DECIMALS) == preview["sizeAfter"]
    assert format_fixed(fill["exitPrice"], PRICE_DECIMALS) == preview["currentPrice"]
    assert format_fixed(fill["realizedPnl"], PNL_DECIMALS) == preview["realizedPnl"]


# --- against a chain: real answers, JavaScript signatures, the preview checked on chain ---------------------


def test_viem_and_ethers_sign_real_answers_unchanged(
    client: TestClient,
    chain: Chain,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
    accounts: list[LocalAccount],
    js_sign: JsSign,
) -> None:
    owner = accounts[1]
    long_btc = open_position(is_long=True, size="0.5", owner=owner)
    short_eth = open_position(market="ETHUSDT", is_long=False, size="3.000000000000000007", owner=owner)
    set_market_price("BTCUSDT", "97250.5")
    set_market_price("ETHUSDT", "3311.12345678")
    closes = [
        ("viem", {"positionId": "0x" + long_btc.hex(), "sizeDelta": "0.2", "allowedPrice": "97000"}),
        ("ethers", {"positionId": "0x" + short_eth.hex()}),
    ]
    for library, request in closes:  # one after the other: the second answer takes the next nonce
        body = post_close(client, **request)
        (report,) = js_sign(key_hex(owner), [body])
        assert_signed_alike(body, report, owner)
        receipt = send_raw(chain, report[library]["signed"])
        assert_fill_matches_preview(vault, receipt, json.loads(body)["preview"])
    assert vault.position(long_btc).size == 3 * 10**17
    assert vault.position(short_eth).size == 0


@contextmanager
def next_base_fee(chain: Chain, base_fee_wei: int) -> Iterator[None]:
    """anvil's next base fee set to `base_fee_wei`, then put back: `evm_revert` restores blocks and state but
    not anvil's fee tracker, so without this every later test on the session's node would underprice its fees.
    """
    before = chain.w3.eth.get_block("pending")["baseFeePerGas"]
    chain.w3.provider.make_request(RPCEndpoint("anvil_setNextBlockBaseFeePerGas"), [hex(base_fee_wei)])
    try:
        yield
    finally:
        chain.w3.provider.make_request(RPCEndpoint("anvil_setNextBlockBaseFeePerGas"), [hex(before)])


@pytest.mark.only_backend("anvil")  # only anvil can set the base fee
def test_wei_amounts_above_2_53_stay_exact_in_javascript(
    client: TestClient,
    chain: Chain,
    vault: VaultReader,
    open_position: Callable[..., bytes],
    accounts: list[LocalAccount],
    js_sign: JsSign,
) -> None:
    owner = accounts[1]
    position_id = open_position(size="0.42", owner=owner)
    # 6,000,000 gwei: a fee cap above 2**53 wei; gas x cap (~1,000 ETH) is within the owner's test ETH
    with next_base_fee(chain, 6 * 10**15):
        chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        body = post_close(client, positionId="0x" + position_id.hex(), sizeDelta="0.1")
    answer = json.loads(body)
    assert int(answer["transaction"]["maxFeePerGas"], 16) > JS_MAX_SAFE_INTEGER
    (report,) = js_sign(key_hex(owner), [body])
    assert report["viem"]["fields"]["maxFeePerGas"] == str(int(answer["transaction"]["maxFeePerGas"], 16))
    assert_signed_alike(body, report, owner)
    receipt = send_raw(chain, report["ethers"]["signed"])
    assert_fill_matches_preview(vault, receipt, answer["preview"])


# --- without a chain: the wire shape at the edges of its ranges ---------------------------------------------


def built(
    fees: Fees, *, chain_id: int = 31337, nonce: int = 4, gas_estimate: int = 50_000
) -> BuiltTransaction[ClosePreview]:
    """A partial close of OWNER's position, priced with `fees` (a hand-made chain state, no node)."""
    request = parse_close_request({"positionId": "0x" + "cd" * 32, "sizeDelta": "0.5"})
    no_order = TriggerOrder(0, 0)
    position = Position(
        bytes.fromhex("cd" * 32), OWNER.address, "BTCUSDT", True, 10**18, 96_000 * 10**8, no_order, no_order
    )
    state = CloseState(
        chain_id=chain_id,
        quote=PositionQuote(position, 97_000 * 10**8, 1_000),
        head=ChainHead(number=7, timestamp=1_100, base_fee_wei=1),
        max_price_age_s=3_600,
        fees=fees,
        nonce=nonce,
        gas_estimate=gas_estimate,
        simulation_error=None,
    )
    return assemble(request, encode_request(request), state, VAULT)


@pytest.mark.parametrize(
    "transaction",
    [
        built(Fees(2_875_000_001, 1_000_000_000)),
        built(Fees(2**255 + 1, 2**128 + 3), chain_id=131277322940537, nonce=2**32),
        built(Fees(0, 0, gas_price_wei=7)),
        built(Fees(0, 0, gas_price_wei=2**200 + 7), chain_id=131277322940537, gas_estimate=29_000_000),
    ],
    ids=["eip1559", "eip1559-huge-wei", "legacy", "legacy-huge-wei"],
)
def test_javascript_reads_and_signs_every_quantity_exactly(
    transaction: BuiltTransaction[ClosePreview], js_sign: JsSign
) -> None:
    body = json.dumps(transaction.to_dict())
    (report,) = js_sign(key_hex(OWNER), [body])
    assert_signed_alike(body, report, OWNER)


@settings(deadline=None, max_examples=200)
@given(
    legacy=st.booleans(),
    chain_id=st.integers(1, 2**64 - 1),
    nonce=st.integers(0, 2**64 - 2),
    gas=st.integers(21_000, 2**63),
    max_fee=st.integers(0, 2**256 - 1),
    tip_share=st.fractions(0, 1),
)
def test_serialized_transaction_hashes_to_what_eth_account_signs(
    legacy: bool, chain_id: int, nonce: int, gas: int, max_fee: int, tip_share: Any
) -> None:
    """The round trip in Python: the keccak of `serializedTransaction` is the hash eth-account signs for
    `transaction` (same key, deterministic signatures: same r and s only for the same hash)."""
    fees = Fees(0, 0, max_fee) if legacy else Fees(max_fee, int(max_fee * tip_share))
    tx = replace(built(fees, chain_id=chain_id, nonce=nonce), gas_limit=gas)
    answer = tx.to_dict()
    assert answer["serializedTransaction"] == "0x" + tx.serialized_transaction.hex()
    assert tx.serialized_transaction[0] >= 0xC0 if legacy else tx.serialized_transaction[0] == 0x02
    signed = OWNER.sign_transaction(answer["transaction"])
    by_hash = OWNER.unsafe_sign_hash(keccak(tx.serialized_transaction))
    assert (signed.r, signed.s) == (by_hash.r, by_hash.s)
    assert all(
        isinstance(answer["transaction"][name], str) for name in QUANTITIES if name in answer["transaction"]
    )
