"""`relayer open`, `relayer price set` and `relayer operator` on a real node (anvil), run as a user would.

Keys come only from the environment (or a keystore file); the chain is read back after each command, and
every refusal is one `error [code]: message` line with the documented exit code, never a traceback (an
unexpected exception would escape `main` and fail the test).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from relayer.chain.connect import ANVIL_DEFAULT_KEYS, Chain
from relayer.chain.deploy import Deployment
from relayer.chain.transact import market_open_price_bound, set_market_price
from relayer.chain.vault import VaultReader
from relayer.constants import RELAYER_RIGHTS
from relayer.domain import calldata
from relayer.domain.operators import OperatorGrant
from relayer.faces.cli.common import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from relayer.faces.cli.main import main
from tests.conftest import _free_port, units, usd

pytestmark = pytest.mark.only_backend("anvil")

TRADER_KEY = ANVIL_DEFAULT_KEYS[1]  # accounts[1]; accounts[0] deployed the vault and keeps its prices
KEEPER_KEY = ANVIL_DEFAULT_KEYS[0]
ONE_BTC_LONG = ("--market", "BTCUSDT", "--side", "long", "--size", "1")


@pytest.fixture(autouse=True)
def _no_relayer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's RELAYER_* variables must not leak into the commands under test."""
    for name in [name for name in os.environ if name.startswith("RELAYER_")]:
        monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def node(chain: Chain, deployment: Deployment) -> list[str]:
    return ["--rpc-url", chain.name, "--vault", deployment.address]


def test_open_prints_the_position_the_chain_records(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    trader = Account.from_key(TRADER_KEY).address
    args = ["--market", "btcusdt", "--side", "long", "--size", "0.42", "--allowed-price", "96000"]

    code, out, err = run(capsys, "open", *node(chain, deployment), *args)

    assert (code, err) == (EXIT_OK, ""), err
    found = re.search(r"opened position (0x[0-9a-f]{64})", out)
    assert found is not None, out
    position = vault.position(bytes.fromhex(found.group(1)[2:]))
    assert position.owner == trader
    assert (position.market, position.is_long) == ("BTCUSDT", True)
    assert position.size == units("0.42")  # exact: 420000000000000000, not a float's neighbour
    assert position.entry_price_e8 == usd("96000")
    assert re.search(r"^  size\s+0\.42$", out, re.MULTILINE)
    assert re.search(r"^  entry\s+96000 USD$", out, re.MULTILINE)
    tx_hash = re.search(r"^  tx\s+(0x[0-9a-f]{64})", out, re.MULTILINE)
    assert tx_hash is not None
    receipt = chain.w3.eth.get_transaction_receipt(HexStr(tx_hash.group(1)))
    assert receipt["status"] == 1
    assert receipt["from"] == trader
    assert TRADER_KEY.removeprefix("0x") not in out


def test_the_price_keeper_sets_the_price_a_short_then_opens_at(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYER_PRICE_KEEPER_KEY", KEEPER_KEY)
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)

    price = ["--market", "ETHUSDT", "--price", "3512.12345678"]
    code, out, err = run(capsys, "price", "set", *node(chain, deployment), *price)
    assert (code, err) == (EXIT_OK, ""), err
    assert out.startswith("ETHUSDT price set to 3512.12345678 USD by ")
    assert vault.price("ETHUSDT").price_e8 == 351_212_345_678

    short = ["--market", "ETHUSDT", "--side", "short", "--size", "3"]
    code, out, err = run(capsys, "open", *node(chain, deployment), *short)
    assert (code, err) == (EXIT_OK, ""), err
    assert re.search(r"^  entry\s+3512\.12345678 USD$", out, re.MULTILINE)
    assert re.search(r"^  market\s+ETHUSDT short$", out, re.MULTILINE)


def test_the_key_may_come_from_an_encrypted_keystore(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keystore = tmp_path / "trader.json"
    password = "correct horse battery staple"  # a test keystore's password
    keystore.write_text(
        json.dumps(Account.encrypt(HexStr(TRADER_KEY), password, kdf="pbkdf2", iterations=2_048))
    )
    monkeypatch.setenv("RELAYER_TRADER_KEYSTORE", str(keystore))
    monkeypatch.setenv("RELAYER_TRADER_KEYSTORE_PASSWORD", password)

    position = ["--market", "SOLUSDT", "--side", "long", "--size", "12.5"]
    code, out, err = run(capsys, "open", *node(chain, deployment), *position)

    assert (code, err) == (EXIT_OK, ""), err
    ids = vault.position_ids_of(Account.from_key(TRADER_KEY).address)
    assert vault.position(ids[-1]).size == units("12.5")
    assert password not in out


def test_operator_approve_and_revoke(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    accounts: list[LocalAccount],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    owner, relayer_signer = Account.from_key(TRADER_KEY).address, accounts[5].address

    code, out, _ = run(capsys, "operator", "approve", relayer_signer, *node(chain, deployment))
    assert code == EXIT_OK
    grant = vault.operator_grant(owner, relayer_signer)
    latest = int(chain.w3.eth.get_block("latest")["timestamp"])
    assert grant.rights == RELAYER_RIGHTS == 7  # close, set take-profits, tighten stops: never loosen a stop
    assert latest + 365 * 86_400 <= grant.expires_at <= latest + 366 * 86_400
    assert grant.expires_at % 86_400 == 0
    assert "close, set_take_profit, tighten_stop" in out
    assert f"until {grant.expires_at}" in out

    expiry = ["--expires-at", str(latest + 3_600)]
    assert run(capsys, "operator", "approve", relayer_signer, *expiry, *node(chain, deployment))[0] == EXIT_OK
    assert vault.operator_grant(owner, relayer_signer) == OperatorGrant(RELAYER_RIGHTS, latest + 3_600)

    assert run(capsys, "operator", "revoke", relayer_signer, *node(chain, deployment))[0] == EXIT_OK
    assert not vault.is_operator(owner, relayer_signer)
    assert vault.operator_grant(owner, relayer_signer) == OperatorGrant(0, 0)


def _bad_open(why: str, code: str, exit_code: int, call: str) -> Any:
    """A row of the table below: `relayer open MARKET SIDE SIZE [flags]` by the trader, and its answer."""
    market, side, size, *extra = call.split()
    argv = ["open", "--market", market, "--side", side, "--size", size, *extra]
    return pytest.param({"RELAYER_TRADER_KEY": TRADER_KEY}, argv, code, exit_code, id=why)


def _bad_price(why: str, code: str, exit_code: int, key: str, price: str) -> Any:
    """A row of the table below: `relayer price set` of BTCUSDT signed with `key`, and its answer."""
    argv = ["price", "set", "--market", "BTCUSDT", "--price", price]
    return pytest.param({"RELAYER_PRICE_KEEPER_KEY": key}, argv, code, exit_code, id=why)


@pytest.mark.parametrize(
    ("env", "argv", "code", "exit_code"),
    [
        _bad_open(
            "long above its allowed price",
            "price_slippage",
            EXIT_ERROR,
            "BTCUSDT long 1 --allowed-price 95999.99",
        ),
        _bad_open(
            "finer than the vault holds", "invalid_field", EXIT_USAGE, "BTCUSDT short 0.0000000000000000001"
        ),
        _bad_open(
            "a size above 128 bits (the vault's revert)", "invalid_size", EXIT_USAGE, "BTCUSDT long 1e40"
        ),
        _bad_open("a market without a price", "price_not_set", EXIT_ERROR, "DOGEUSDT long 1"),
        _bad_open("not a market symbol", "invalid_market", EXIT_USAGE, "BTC/USDT long 1"),
        pytest.param(
            {},
            ["open", "--market", "BTCUSDT", "--side", "long", "--size", "1"],
            "configuration_error",
            EXIT_ERROR,
            id="no trader key",
        ),
        _bad_price("a price from a trader", "not_authorized", EXIT_ERROR, TRADER_KEY, "1"),
        _bad_price("a zero price", "invalid_field", EXIT_USAGE, KEEPER_KEY, "0"),
    ],
)
def test_a_bad_call_is_one_line_with_its_exit_code(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    argv: list[str],
    code: str,
    exit_code: int,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    block = chain.w3.eth.block_number

    status, out, err = run(capsys, *argv, *node(chain, deployment))

    assert status == exit_code, err
    (line,) = err.splitlines()
    assert line.startswith(f"error [{code}]: "), line
    assert out == ""
    assert chain.w3.eth.block_number == block  # nothing was sent
    for secret in (TRADER_KEY, KEEPER_KEY):
        assert secret.removeprefix("0x") not in err


def test_an_address_without_the_vault_is_refused_before_signing(
    chain: Chain,
    accounts: list[LocalAccount],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At an address without code `eth_estimateGas` succeeds: the command must not send into the void."""
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    nonce = chain.w3.eth.get_transaction_count(accounts[1].address)
    no_code = accounts[9].address

    status, _, err = run(capsys, "open", "--rpc-url", chain.name, "--vault", no_code, *ONE_BTC_LONG)

    assert status == EXIT_ERROR
    assert err.startswith("error [vault_not_deployed]: ")
    assert chain.w3.eth.get_transaction_count(accounts[1].address) == nonce


def test_a_node_that_is_down_exits_3(
    chain: Chain, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    vault = Account.from_key(KEEPER_KEY).address

    url = f"http://127.0.0.1:{_free_port()}"  # nobody listens there

    status, _, err = run(capsys, "open", "--rpc-url", url, "--vault", vault, *ONE_BTC_LONG)

    assert status == EXIT_UNAVAILABLE
    (line,) = err.splitlines()
    assert line.startswith("error [chain_unavailable]: ")


def test_without_a_node_open_says_what_it_needs(
    chain: Chain, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)

    status, _, err = run(capsys, "open", *ONE_BTC_LONG)

    assert status == EXIT_ERROR
    assert err.startswith("error [configuration_error]: `relayer open` needs a node: --rpc-url")


def sent_allowed_price(chain: Chain, out: str) -> int:
    """The `allowedPrice` the printed transaction really carried, decoded from the chain's copy of it."""
    tx_hash = re.search(r"^  tx\s+(0x[0-9a-f]{64})", out, re.MULTILINE)
    assert tx_hash is not None, out
    sent = chain.w3.eth.get_transaction(HexStr(tx_hash.group(1)))
    function, args = calldata.decode_call(bytes(sent["input"]))
    assert function == "openPosition"
    return int(args["allowedPrice"])


@pytest.mark.parametrize(
    ("side", "bound", "guard_e8"),
    [
        ("long", "at most", lambda price: price * 10_100 // 10_000),  # a long buys: 1% above, a maximum
        (
            "short",
            "at least",
            lambda price: -(-price * 9_900 // 10_000),
        ),  # a short sells: 1% below, a minimum
    ],
)
def test_a_market_open_is_bounded_by_the_slippage_guard_unless_told_otherwise(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    side: str,
    bound: str,
    guard_e8: Any,
) -> None:
    """No `--allowed-price`: the trading slippage guard (100 bps) from the current oracle price, never an
    unbounded order; `--no-price-bound` is the explicit way to open at any price."""
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    price_e8 = vault.price("BTCUSDT").price_e8
    order = ["--market", "BTCUSDT", "--side", side, "--size", "0.5"]

    code, out, err = run(capsys, "open", *node(chain, deployment), *order)
    assert (code, err) == (EXIT_OK, ""), err
    assert sent_allowed_price(chain, out) == guard_e8(price_e8) != 0
    assert re.search(rf"^  allowed\s+{bound} \d+(\.\d+)? USD$", out, re.MULTILINE), out

    code, out, err = run(capsys, "open", *node(chain, deployment), *order, "--no-price-bound")
    assert (code, err) == (EXIT_OK, ""), err
    assert sent_allowed_price(chain, out) == 0
    assert re.search(r"^  allowed\s+none \(--no-price-bound\)$", out, re.MULTILINE), out


def test_the_guard_follows_the_trading_setting(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    monkeypatch.setenv("RELAYER_TRADING_DEFAULT_SLIPPAGE_BPS", "250")
    price_e8 = vault.price("ETHUSDT").price_e8

    code, out, err = run(
        capsys, "open", *node(chain, deployment), "--market", "ETHUSDT", "--side", "long", "--size", "1"
    )

    assert (code, err) == (EXIT_OK, ""), err
    assert sent_allowed_price(chain, out) == price_e8 * 10_250 // 10_000


def test_a_price_that_moves_past_the_guard_before_the_open_runs_is_refused(
    chain: Chain,
    deployment: Deployment,
    vault: VaultReader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The oracle jumps 2% between the price read and the transaction: the default guard refuses the fill
    (the vault's `PriceSlippage`, decoded), where an unbounded order would have bought at the jump."""
    monkeypatch.setenv("RELAYER_TRADER_KEY", TRADER_KEY)
    keeper = Account.from_key(KEEPER_KEY)

    def bound_then_jump(w3: Any, vault_address: str, market: str, **kwargs: Any) -> int:
        allowed = market_open_price_bound(w3, vault_address, market, **kwargs)
        price = vault.price(market).price_e8
        set_market_price(w3, keeper, vault_address, market, price * 102 // 100)
        return allowed

    monkeypatch.setattr("relayer.faces.cli.chain_commands.market_open_price_bound", bound_then_jump)
    trader = Account.from_key(TRADER_KEY).address
    positions = len(vault.position_ids_of(trader))

    status, out, err = run(capsys, "open", *node(chain, deployment), *ONE_BTC_LONG)

    assert status == EXIT_ERROR, out + err
    (line,) = err.splitlines()
    assert line.startswith("error [price_slippage]: ")
    assert len(vault.position_ids_of(trader)) == positions


def test_an_allowed_price_and_no_price_bound_do_not_go_together(
    chain: Chain, deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["open", *node(chain, deployment), *ONE_BTC_LONG, "--allowed-price", "1", "--no-price-bound"])
    assert usage.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err
