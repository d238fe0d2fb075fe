"""The vault's gas figures: one fixed scenario on a fresh embedded chain.

Measured in exactly one place, here: `scripts/gas_snapshot.py` writes them to `gas-snapshot.json` (or checks
it), and `tests/contracts/test_gas_snapshot.py` fails when a figure rises above the committed snapshot.

The scenario is deterministic: a fresh eth-tester chain always deploys the vault at the same address with the
same chain id, position ids follow from them, and the signed request uses a constant deadline, so the calldata
(whose zero bytes cost less gas) and the RFC 6979 signature are byte-identical on every run.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_account.signers.local import LocalAccount

from relayer.chain.connect import embedded_chain
from relayer.chain.deploy import deploy_vault
from relayer.chain.transact import send
from relayer.chain.vault import VaultReader
from relayer.constants import CLOSE_ALL_SIZE, PRICE_DECIMALS, SIZE_DECIMALS
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from tests.contracts.helpers import as_struct, close_request, eip712_domain, event, sign_request

ROOT = Path(__file__).resolve().parent.parent.parent
SNAPSHOT_PATH = ROOT / "gas-snapshot.json"
BACKEND = "eth-tester (py-evm), fresh chain"

RIGHT_CLOSE = 1
"""The vault's `RIGHT_CLOSE` operator flag."""

FIXED_DEADLINE = 4_102_444_800
"""2100-01-01T00:00:00Z: a constant deadline keeps the signed request's calldata and signature identical."""

OPERATIONS = (
    "open",
    "partial_close",
    "partial_close_later",
    "partial_close_operator",
    "set_take_profit",
    "multicall_partial_close_and_set_tp",
    "execute_trigger",
    "close_with_sig",
    "full_close",
    "set_exit_plan_4_tiers",
    "execute_ladder_tier",
    "execute_ladder_tier_later",
    "ratchet_stop",
    "emergency_exit_one_position",
)
"""The measured operations, in the order the scenario runs them."""


def _usd(whole: int) -> int:
    return whole * 10**PRICE_DECIMALS


def _size(hundredths: int) -> int:
    return hundredths * int(10 ** (SIZE_DECIMALS - 2))


def measure_gas() -> dict[str, int]:
    """Gas used by each operation of the scenario.

    `partial_close` is the owner's FIRST close (the case issue 12 bounds at 40,000), `partial_close_later` a
    second one, `partial_close_operator` another owner's first close sent by an operator holding
    `RIGHT_CLOSE` (bound 42,000). The ladder is the seed's tiered exit on a 0.42 BTC long: three take-profits
    of 25% and a trailing stop for the rest, set in one transaction; `execute_ladder_tier` executes the first
    tier and `execute_ladder_tier_later` the second (bound 45,000 each).
    """
    chain = embedded_chain()
    w3 = chain.w3
    deployer, trader, keeper, other_trader = chain.test_accounts()[
        :4
    ]  # keeper: an unprivileged bot / relayer
    deployment = deploy_vault(w3, deployer)
    vault = VaultReader(w3, deployment.address)
    btc = symbol_to_bytes32("BTCUSDT")

    def gas(account: LocalAccount, data: bytes) -> int:
        return int(send(w3, account, deployment.address, data)["gasUsed"])

    def set_price(whole_usd: int) -> None:
        send(w3, deployer, deployment.address, calldata.encode_call("setPrice", btc, _usd(whole_usd)))

    def open_(owner: LocalAccount, hundredths: int, allowed_usd: int = 0) -> tuple[bytes, int]:
        opened = send(
            w3,
            owner,
            deployment.address,
            calldata.encode_call("openPosition", btc, True, _size(hundredths), _usd(allowed_usd)),
        )
        return bytes(event(vault.contract, opened, "PositionOpened")["positionId"]), int(opened["gasUsed"])

    figures: dict[str, int] = {}
    position_id, figures["open"] = open_(trader, 100, 96_100)  # the trader's first position

    set_price(97_000)
    figures["partial_close"] = gas(trader, calldata.close_position(position_id, _size(25), _usd(96_900)))
    figures["partial_close_later"] = gas(trader, calldata.close_position(position_id, _size(5), _usd(96_900)))
    operated_id, _ = open_(other_trader, 100)
    send(
        w3,
        other_trader,
        deployment.address,
        calldata.encode_call("setOperatorRights", keeper.address, RIGHT_CLOSE, 0),
    )
    figures["partial_close_operator"] = gas(
        keeper, calldata.close_position(operated_id, _size(25), _usd(96_900))
    )
    figures["set_take_profit"] = gas(trader, calldata.set_take_profit(position_id, _usd(100_000), 5_000))
    figures["multicall_partial_close_and_set_tp"] = gas(
        trader,
        calldata.multicall(
            [
                calldata.close_position(position_id, _size(20), _usd(96_900)),
                calldata.set_take_profit(position_id, _usd(101_000), 5_000),
            ]
        ),
    )

    set_price(101_000)
    figures["execute_trigger"] = gas(keeper, calldata.execute_trigger(position_id))  # closes 50% of 0.50

    domain = eip712_domain(int(w3.eth.chain_id), deployment.address)
    request = close_request(position_id, _size(10), _usd(100_000), 0, FIXED_DEADLINE)
    signature = sign_request(trader, domain, request)
    figures["close_with_sig"] = gas(
        keeper, calldata.encode_call("closePositionWithSig", as_struct(request), signature)
    )
    figures["full_close"] = gas(trader, calldata.close_position(position_id, CLOSE_ALL_SIZE, 0))

    set_price(96_000)
    ladder_id, _ = open_(trader, 42)
    plan = [
        (0, _usd(98_000), 2_500, 0),
        (1, _usd(99_000), 2_500, 0),
        (2, _usd(100_000), 2_500, 0),
        (4, _usd(94_000), 2_500, 200),  # trailing stop for the rest, 2% behind the price
    ]
    figures["set_exit_plan_4_tiers"] = gas(trader, calldata.encode_call("setExitPlan", ladder_id, plan))
    set_price(98_500)
    figures["execute_ladder_tier"] = gas(keeper, calldata.execute_trigger(ladder_id))
    set_price(99_500)
    figures["execute_ladder_tier_later"] = gas(keeper, calldata.execute_trigger(ladder_id))
    figures["ratchet_stop"] = gas(keeper, calldata.encode_call("ratchetStop", ladder_id, 4))
    figures["emergency_exit_one_position"] = gas(
        trader, calldata.encode_call("emergencyExit", trader.address, b"\x00" * 32)
    )
    assert tuple(figures) == OPERATIONS
    return figures


CEILINGS = {
    "partial_close": 40_000,  # the owner's first close (issue 12)
    "partial_close_later": 40_000,
    "partial_close_operator": 42_000,  # another owner's first close, sent by an operator with RIGHT_CLOSE
    "execute_ladder_tier": 45_000,
    "execute_ladder_tier_later": 45_000,
}
"""Issue 12's gas bounds (gas counts are deterministic, not timings), enforced by `--check` and a test."""


def over_ceilings(figures: dict[str, int]) -> list[str]:
    """Each figure above its issue 12 ceiling, as a line saying so."""
    return [
        f"{name}: {figures[name]} gas > ceiling {ceiling}"
        for name, ceiling in CEILINGS.items()
        if name in figures and figures[name] > ceiling
    ]


def load_snapshot(path: Path = SNAPSHOT_PATH) -> dict[str, int]:
    """The committed figures (empty when the file does not exist yet)."""
    if not path.exists():
        return {}
    return {name: int(value) for name, value in json.loads(path.read_text())["gasUsed"].items()}


def render_snapshot(figures: dict[str, int]) -> str:
    """The snapshot file's text: stable key order so a rewrite with the same figures is byte-identical."""
    document = {
        "backend": BACKEND,
        "gasUsed": {name: figures[name] for name in OPERATIONS},
        "regenerate": "python scripts/gas_snapshot.py",
    }
    return json.dumps(document, indent=2) + "\n"


def rises(measured: dict[str, int], recorded: dict[str, int]) -> list[str]:
    """What got more expensive than the snapshot, or is missing from it: each a line saying so."""
    problems = []
    for name, used in measured.items():
        if name not in recorded:
            problems.append(f"{name}: {used} gas is not in the snapshot")
        elif used > recorded[name]:
            problems.append(f"{name}: {used} gas > snapshot {recorded[name]} (+{used - recorded[name]})")
    problems.extend(
        f"{name}: in the snapshot but no longer measured" for name in recorded if name not in measured
    )
    return problems


def differences(measured: dict[str, int], recorded: dict[str, int]) -> list[str]:
    """Every figure that differs from the snapshot in either direction (what `--check` reports)."""
    lowered = [
        f"{name}: {used} gas < snapshot {recorded[name]} ({used - recorded[name]})"
        for name, used in measured.items()
        if name in recorded and used < recorded[name]
    ]
    return rises(measured, recorded) + lowered
