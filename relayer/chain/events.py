"""The vault's events, decoded from logs as a node sends them (wire JSON): pure functions, no node.

One place reads logs, for the relay (the events a mined transaction emitted, kept on its record) and for the
keeper (the `TriggerSet` orders it watches). Values come out as Python values (ints, bools, bytes,
checksummed addresses), never stringified and re-parsed; `json_args` makes them JSON-safe for a record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from relayer.chain.artifact import load_artifact
from relayer.domain.blocks import quantity


@dataclass(frozen=True)
class VaultEvent:
    """One decoded vault event and where it sits in the chain."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int


@dataclass(frozen=True)
class _EventAbi:
    name: str
    inputs: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)


@cache
def _events() -> dict[bytes, _EventAbi]:
    table: dict[bytes, _EventAbi] = {}
    for item in load_artifact().abi:
        if item["type"] == "event":
            inputs = tuple((i["name"], i["type"], bool(i.get("indexed"))) for i in item["inputs"])
            signature = f"{item['name']}({','.join(t for _, t, _ in inputs)})"
            table[keccak(text=signature)] = _EventAbi(item["name"], inputs)
    return table


def topic_of(name: str) -> str:
    """The 0x-hex topic 0 of the vault event `name` (for an `eth_getLogs` filter).

    Raises:
        KeyError: the vault has no such event.
    """
    for topic, event in _events().items():
        if event.name == name:
            return "0x" + topic.hex()
    raise KeyError(name)


def _bytes(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x-hex: {value!r}"[:80])
    return bytes.fromhex(value[2:])


def decode_log(entry: Mapping[str, Any], vault_address: str) -> VaultEvent | None:
    """The vault event a wire log carries; None for another contract's log or an event the vault lacks."""
    try:
        if to_checksum_address(str(entry.get("address"))) != to_checksum_address(vault_address):
            return None
        topics = [_bytes(t) for t in entry.get("topics") or []]
    except ValueError:
        return None
    if not topics or topics[0] not in _events():
        return None
    event = _events()[topics[0]]
    indexed = [(n, t) for n, t, is_indexed in event.inputs if is_indexed]
    plain = [(n, t) for n, t, is_indexed in event.inputs if not is_indexed]
    args: dict[str, Any] = {}
    for (name, kind), topic in zip(indexed, topics[1:], strict=True):
        (args[name],) = decode([kind], topic)
    values = decode([t for _, t in plain], _bytes(entry.get("data") or "0x"))
    args.update(zip((n for n, _ in plain), values, strict=True))
    args = {
        name: to_checksum_address(args[name]) if kind == "address" else args[name]
        for name, kind, _ in event.inputs
    }
    return VaultEvent(
        event.name,
        args,
        quantity(entry.get("blockNumber"), "log block number"),
        quantity(entry.get("logIndex"), "log index"),
    )


def decode_events(logs: Sequence[Mapping[str, Any]], vault_address: str) -> list[VaultEvent]:
    """The vault events among `logs`, in order."""
    return [event for entry in logs if (event := decode_log(entry, vault_address)) is not None]


def json_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Event arguments as a record keeps them: ints as decimal strings, bytes as 0x-hex.

    >>> json_args({"size": 10**30, "isLong": True, "positionId": b"\\x01"})
    {'size': '1000000000000000000000000000000', 'isLong': True, 'positionId': '0x01'}
    """
    return {name: _json_value(value) for name, value in args.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value
