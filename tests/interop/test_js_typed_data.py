"""The relay's EIP-712 payloads (`GET /api/relay/typed-data`'s `typedData`) signed as they come by viem and
ethers v6: the same signature as eth-account's, for every kind of issue 12 (an `ExitOrder[]` nested in
`SetExitPlanRequest`, uint8 / uint16 / uint64 members, addresses, a market word), so a JavaScript wallet's
signature is one the relay and the vault accept (tests/relay/test_signed_v2.py relays eth-account's).

sign_typed.mjs reads each payload with `JSON.parse`, as a browser receives it; uint256 values are decimal
strings, so no number above 2**53 can be rounded on the way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from relayer.domain.typed_data import (
    CancelOrderRequest,
    CloseRequest,
    EmergencyExitRequest,
    ExitPlanRequest,
    OperatorRequest,
    SignedRequest,
    typed_data,
)
from tests.conftest import ROOT
from tests.interop.conftest import JS_PACKAGES, NODE_TIMEOUT_S

SIGN_TYPED_SCRIPT = ROOT / "tests" / "interop" / "sign_typed.mjs"
OWNER = Account.from_key("0x" + "22" * 32)
VAULT = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
POSITION = bytes.fromhex("ab" * 32)
DEADLINE = 2**64 - 1  # above 2**53: JSON.parse would round it if it were a number

REQUESTS: list[SignedRequest] = [
    ExitPlanRequest(
        POSITION,
        ((0, 9_700_000_000_000, 2_500, 0), (1, 2**112 - 1, 2_500, 0), (4, 9_400_000_000_000, 10_000, 9_999)),
        7,
        DEADLINE,
    ),
    ExitPlanRequest(POSITION, (), 0, DEADLINE),  # an empty plan: cancels every order
    CancelOrderRequest(POSITION, 5, 2**70, DEADLINE),
    OperatorRequest(OWNER.address, "0x" + "33" * 20, 15, 2**64 - 1, 1, DEADLINE),
    EmergencyExitRequest(OWNER.address, "BTCUSDT", 2, DEADLINE),
    EmergencyExitRequest(OWNER.address, None, 3, DEADLINE),
    CloseRequest(POSITION, 2**256 - 1, 0, 4, DEADLINE),  # the old kind, for comparison
]


def js_sign_typed(key: str, bodies: list[str]) -> list[dict[str, Any]]:
    """sign_typed.mjs's signatures (viem, ethers) of each answer body's `typedData`."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop tests need Node 20 (see scripts/setup.sh)")
    for package in JS_PACKAGES:
        if not (ROOT / "node_modules" / package / "package.json").exists():
            pytest.fail(f"npm package {package} is not installed: run scripts/setup.sh")
    done = subprocess.run(
        [node, str(SIGN_TYPED_SCRIPT)],
        input=json.dumps({"key": key, "answers": bodies}),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"sign_typed.mjs failed:\n{done.stderr}"
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(bodies)
    return results


def test_viem_and_ethers_sign_every_kind_exactly_as_eth_account() -> None:
    payloads = [typed_data(request, chain_id=31337, vault=VAULT) for request in REQUESTS]
    bodies = [json.dumps({"typedData": payload}) for payload in payloads]
    signed = js_sign_typed("0x" + bytes(OWNER.key).hex(), bodies)
    for request, payload, js in zip(REQUESTS, payloads, signed, strict=True):
        expected = "0x" + Account.sign_typed_data(OWNER.key, full_message=payload).signature.hex()
        assert (js["viem"], js["ethers"]) == (expected, expected), request.primary_type
        recovered = Account.recover_message(encode_typed_data(full_message=payload), signature=js["viem"])
        assert recovered == OWNER.address
