"""The size rule of exit plans, property-tested on the chain against an exact-fraction model.

The rule (the vault's NatSpec): each order has a share `s` of its plan; the position keeps the plan's
remaining denominator `D`; executing an order closes `floor(size * s / D)` of the current size and then
`D -= s`, or everything when `s >= D`; an execution that would leave less than `MIN_REMAINING_SIZE` closes
all; a manual close leaves `D` alone.

Two models run beside the chain: the same rule in integers (the chain must equal it to the unit, dust rule
included) and the rule in exact fractions (no rounding at all). Against the exact model the chain may only
keep MORE than exact (floor closes less), by less than one unit per execution so far: rounding never
compounds into an over-close, and a plan whose shares add up to 100% always ends at exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3.contract import Contract

from relayer.chain.connect import Chain
from relayer.chain.decoding import decode_orders_of
from relayer.domain import calldata
from relayer.domain.markets import symbol_to_bytes32
from relayer.domain.positions import next_crossed, tier_size, walk_fills
from relayer.errors import TriggerNotCrossedError
from tests.conftest import usd
from tests.contracts.conftest import Transact
from tests.contracts.helpers import event, events

MIN_REMAINING_SIZE = 10**9
BPS = 10_000
ENTRY = 96_000 * 10**8
TP_PRICES = [97_000 * 10**8, 98_000 * 10**8, 99_000 * 10**8, 100_000 * 10**8]
STOP_PRICE = 95_000 * 10**8
BTC = symbol_to_bytes32("BTCUSDT")


@dataclass
class Model:
    """The rule in integers (what the chain must do exactly) and in exact fractions (no rounding)."""

    size: int
    exact: Fraction
    plan_bps: int = BPS
    executions: int = 0
    dust_closed: bool = False
    orders: dict[int, int] = field(default_factory=dict)  # order id -> share bps

    def execute(self, order_id: int) -> int:
        share = self.orders.pop(order_id)
        self.executions += 1
        if share >= self.plan_bps:
            closed, self.plan_bps = self.size, 0
            self.exact = Fraction(0)
        else:
            closed = self.size * share // self.plan_bps
            if self.size - closed < MIN_REMAINING_SIZE:
                closed, self.dust_closed = self.size, True
            self.exact -= self.exact * share / self.plan_bps
            self.plan_bps -= share
        self.size -= closed
        if self.size == 0:
            self.orders.clear()
        return closed

    def close(self, size_delta: int) -> None:
        self.size -= size_delta
        self.exact -= size_delta


@st.composite
def plans(draw: Any) -> tuple[list[int], int | None]:
    """Take-profit shares (1..4 tiers, partial ones summing to at most 100%) and the stop's share, if any."""
    count = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(1, BPS - 1), min_size=count, max_size=count, unique=True)))
    shares = [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    rest = BPS - cuts[-1]
    if draw(st.booleans()):
        shares[-1] += rest  # the tiers take the whole plan
        rest = 0
    stop = draw(st.sampled_from([None, BPS] + ([rest] if rest else [])))
    return shares, stop


steps = st.lists(
    st.one_of(
        st.tuples(st.just("jump"), st.integers(0, 3)),  # the price jumps to take-profit j: a gap over 0..j
        st.tuples(st.just("close"), st.integers(1, 5_000)),  # a manual close of this many bps of the size
        st.tuples(st.just("stop"), st.just(0)),  # the price falls through the stop
    ),
    min_size=1,
    max_size=6,
)
sizes = st.one_of(st.integers(10**13, 10**24), st.just(42 * 10**16))


def _run_plan(
    contract: Contract,
    transact: Transact,
    deployer: LocalAccount,
    trader: LocalAccount,
    keeper: LocalAccount,
    size: int,
    plan: tuple[list[int], int | None],
    script: list[tuple[str, int]],
) -> Model:
    transact(deployer, calldata.encode_call("setPrice", BTC, ENTRY))
    opened = transact(trader, calldata.encode_call("openPosition", BTC, True, size, 0))
    position_id = bytes(event(contract, opened, "PositionOpened")["positionId"])
    shares, stop_share = plan
    orders = [(i, TP_PRICES[i], share, 0) for i, share in enumerate(shares)]
    if stop_share is not None:
        orders.append((4, STOP_PRICE, stop_share, 0))
    transact(trader, calldata.encode_call("setExitPlan", position_id, orders))
    model = Model(size=size, exact=Fraction(size), orders={o[0]: o[2] for o in orders})

    for action, value in script:
        if model.size == 0:
            break
        if action == "close":
            size_delta = model.size * value // BPS
            if size_delta == 0:
                continue
            transact(trader, calldata.close_position(position_id, size_delta, 0))
            model.close(size_delta)
            continue
        price = STOP_PRICE if action == "stop" else TP_PRICES[value]
        transact(deployer, calldata.encode_call("setPrice", BTC, price))
        crossed = (
            [4] * (4 in model.orders)
            if action == "stop"
            else sorted(i for i in model.orders if i < 4 and TP_PRICES[i] <= price)
        )
        executed = []
        while True:
            try:
                receipt = transact(keeper, calldata.execute_trigger(position_id))
            except TriggerNotCrossedError:
                break
            (fill,) = events(contract, receipt, "PositionDecreased")
            order_id = event(contract, receipt, "TriggerExecuted")["orderId"]
            executed.append(order_id)
            assert fill["sizeDelta"] == model.execute(order_id), (order_id, model)
            assert fill["remainingSize"] == model.size
            if model.size == 0:
                break
        # Defined order, each once: the crossed orders, stops first then take-profits nearest the entry first
        # (a full close ends the run and deletes the rest).
        assert executed == crossed[: len(executed)]
        assert len(executed) == len(crossed) or model.size == 0

    view, plan_bps = contract.functions.ordersOf(position_id).call()
    assert contract.functions.getPosition(position_id).call()[3] == model.size
    assert sorted(item[0] for item in view) == sorted(model.orders)
    if model.size:
        assert plan_bps == model.plan_bps
    return model


FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES_OK)
@given(size=sizes, plan=plans(), script=steps)
@example(  # the seed: 25/25/25 and a stop for the rest, walked through tier by tier: 0.105 each, exactly
    size=42 * 10**16,
    plan=([2_500, 2_500, 2_500], 2_500),
    script=[("jump", 0), ("jump", 1), ("jump", 2), ("stop", 0)],
)
@example(size=42 * 10**16, plan=([2_500, 2_500, 2_500], 2_500), script=[("jump", 2), ("stop", 0)])  # one gap
@example(  # a manual close between tiers
    size=10**18 + 7, plan=([3_333, 3_333, 3_334], None), script=[("jump", 0), ("close", 1_234), ("jump", 3)]
)
def test_the_chain_follows_the_size_rule_and_stays_within_rounding_of_the_exact_fraction_model(
    chain: Chain,
    contract: Contract,
    transact: Transact,
    deployer: LocalAccount,
    trader: LocalAccount,
    stranger: LocalAccount,
    size: int,
    plan: tuple[list[int], int | None],
    script: list[tuple[str, int]],
) -> None:
    snapshot = chain.snapshot()  # each example starts from the deployed state
    try:
        model = _run_plan(contract, transact, deployer, trader, stranger, size, plan, script)
    finally:
        chain.revert(snapshot)
    if not model.dust_closed:
        surplus = model.size - model.exact  # what the chain keeps beyond the exact fraction
        assert 0 <= surplus < model.executions + 1, (surplus, model)
    shares, _ = plan
    reached_all = any(a == "jump" and v >= len(shares) - 1 for a, v in script)
    if sum(shares) == BPS and reached_all and model.executions >= len(shares):
        assert model.size == 0  # a plan of 100% leaves no remainder nobody planned


def test_seed_ladder_is_exact_without_rounding() -> None:
    """The model alone on the seed's numbers: 0.42 -> 0.105 four times, D 10_000, 7_500, 5_000, 2_500."""
    model = Model(
        size=42 * 10**16, exact=Fraction(42 * 10**16), orders={0: 2_500, 1: 2_500, 2: 2_500, 4: 2_500}
    )
    fills = [model.execute(order_id) for order_id in (0, 1, 2, 4)]
    assert fills == [105 * 10**15] * 4
    assert model.size == 0
    assert model.exact == 0


@pytest.mark.only_backend("eth-tester")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(st.integers(1, 10**12), st.integers(1, 2**128 - 1)),
    share_bps=st.integers(1, BPS),
    plan_bps=st.integers(0, BPS),
)
@example(size=42 * 10**16, share_bps=2_500, plan_bps=BPS)
@example(size=2 * 10**9 - 2, share_bps=5_000, plan_bps=BPS)  # dust rule
@example(size=2**128 - 1, share_bps=BPS - 1, plan_bps=BPS)  # largest product
@example(size=5, share_bps=1, plan_bps=0)
def test_python_tier_size_is_the_vaults_to_the_unit(
    contract: Contract, size: int, share_bps: int, plan_bps: int
) -> None:
    """`relayer.domain.positions.tier_size` against the vault's own `tierSize` (the function every
    execution and `ordersOf` use), on the same inputs."""
    assert tuple(contract.functions.tierSize(size, share_bps, plan_bps).call()) == tier_size(
        size, share_bps, plan_bps
    )


def test_orders_of_decodes_and_predicts_the_next_execution(
    chain: Chain,
    contract: Contract,
    transact: Transact,
    trader: LocalAccount,
    stranger: LocalAccount,
    open_position: Callable[..., bytes],
    set_market_price: Callable[[str, str], None],
) -> None:
    """`decode_orders_of` reads what web3 reads; `next_crossed` names the order `executeTrigger` executes,
    and `sizeIfExecuted` is `tier_size` of the current size and `D`."""
    position_id = open_position(size="0.42")
    plan = [(0, TP_PRICES[0], 2_500, 0), (1, TP_PRICES[1], 2_500, 0), (2, TP_PRICES[2], 2_500, 0)]
    plan.append((4, STOP_PRICE, BPS, 150))
    transact(trader, calldata.set_exit_plan(position_id, plan))
    data = chain.w3.eth.call({"to": contract.address, "data": calldata.encode_call("ordersOf", position_id)})
    decoded = decode_orders_of(bytes(data))
    raw_orders, raw_plan = contract.functions.ordersOf(position_id).call()
    assert [
        (o.order_id, o.is_take_profit, o.price_e8, o.share_bps, o.trail_bps, o.size_if_executed)
        for o in decoded.orders
    ] == [tuple(o) for o in raw_orders]
    assert decoded.plan_bps == raw_plan == BPS
    assert [o.order_id for o in decoded.orders] == [4, 0, 1, 2]
    assert {o.size_if_executed for o in decoded.orders} == {105 * 10**15, 42 * 10**16}
    quarter = 105 * 10**15
    assert walk_fills(42 * 10**16, True, decoded) == [(0, quarter), (1, quarter), (2, quarter), (4, quarter)]
    stop = decoded.order(4)
    assert stop is not None
    assert stop.is_trailing

    for price, expected in (("96500", None), ("99500", 0), ("99500", 1), ("99500", 2), ("94000", 4)):
        set_market_price("BTCUSDT", price)
        data = chain.w3.eth.call(
            {"to": contract.address, "data": calldata.encode_call("ordersOf", position_id)}
        )
        current = decode_orders_of(bytes(data))
        assert next_crossed(True, current.orders, usd(price)) == expected
        if expected is None:
            continue
        size_now = contract.functions.getPosition(position_id).call()[3]
        order = current.order(expected)
        assert order is not None
        assert order.size_if_executed == tier_size(size_now, order.share_bps, current.plan_bps)[0]
        executed = event(
            contract, transact(stranger, calldata.execute_trigger(position_id)), "TriggerExecuted"
        )
        assert executed["orderId"] == expected
        assert executed["sizeDelta"] == 105 * 10**15
    assert contract.functions.getPosition(position_id).call()[3] == 0
