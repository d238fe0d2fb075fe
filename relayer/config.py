"""The relayer's configuration: one frozen, validated `Settings`, built once at the edge and passed down.

Sources, later ones winning: defaults, `RELAYER_*` environment variables, command-line flags. The node URL is
a secret (hosted nodes put the API key in it), so it is a `SecretStr` and never printed whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from relayer.chain.deploy import load_deployment
from relayer.constants import DEFAULT_API_HOST, DEFAULT_API_PORT, DEFAULT_RPC_TIMEOUT_S, GAS_LIMIT_MARGIN_BPS
from relayer.domain.bps import parse_slippage_bps
from relayer.domain.requests import parse_owner
from relayer.errors import ConfigurationError, InvalidFieldError
from relayer.services.relay.config import RelaySettings

ENV_PREFIX = "RELAYER_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


TRADING_ENV_PREFIX = "RELAYER_TRADING_"


@dataclass(frozen=True)
class TradingSettings:
    """Policy of the API-key trading surface (`RELAYER_TRADING_*` variables)."""

    default_slippage_bps: int = 100
    """Slippage guard when a close gives neither `allowedPrice` nor `maxSlippageBps` (1%): never unbounded."""
    receipt_timeout_s: float = 20.0
    """How long a trading call waits for the receipt before answering 202 with the transaction id."""
    poll_interval_s: float = 0.05
    """How often a waiting trading call looks at the journal."""

    def __post_init__(self) -> None:
        try:
            parse_slippage_bps(self.default_slippage_bps, "default_slippage_bps")
        except InvalidFieldError as exc:
            raise ConfigurationError(f"trading {exc.message} (basis points)", field=exc.field) from None
        if self.receipt_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ConfigurationError("trading receipt timeout and poll interval must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TradingSettings:
        values: dict[str, Any] = {}
        types = get_type_hints(cls)
        for item in fields(cls):
            name = TRADING_ENV_PREFIX + item.name.upper()
            raw = env.get(name)
            if raw:
                kind = types[item.name]
                try:
                    values[item.name] = TypeAdapter(kind).validate_strings(raw)
                except ValidationError:
                    raise ConfigurationError(f"{name} must be a number ({kind.__name__})") from None
        return cls(**values)


class Settings(BaseModel):
    """Everything `relayer serve` and `create_app` need; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpc_url: SecretStr | None = None
    """JSON-RPC node (http or https). None: the embedded chain with the demo world."""
    vault_address: str | None = None
    """The vault to serve; required with `rpc_url` (or from `deployments_file`). On the embedded chain it is
    the vault the demo world (or a test) deployed."""
    deployments_file: Path | None = None
    """A `deployments/<chainId>.json` record: gives the vault address and the chain id it must be on."""
    expected_chain_id: int | None = None
    """Set from `deployments_file`; the app refuses to start against another chain."""
    host: str = DEFAULT_API_HOST
    port: int = Field(default=DEFAULT_API_PORT, ge=0, le=65_535)
    rpc_timeout_s: float = Field(default=DEFAULT_RPC_TIMEOUT_S, gt=0, le=600)
    gas_limit_margin_bps: int = Field(default=GAS_LIMIT_MARGIN_BPS, ge=0, le=100_000)
    """Head-room added to every gas estimate, in basis points of it."""
    log_level: LogLevel = "info"
    access_log: bool = False
    relay: RelaySettings = Field(default_factory=RelaySettings)
    """Journal, confirmations, fee bumping and caps of the relayer (`RELAYER_RELAY_*`)."""
    trading: TradingSettings = Field(default_factory=TradingSettings)
    keeper_interval_s: float = Field(default=1.0, ge=0)
    """Seconds between keeper passes over TP/SL orders (it needs a relayer signer); 0: no background loop."""
    keeper_from_block: int = Field(default=0, ge=0)
    """First block the keeper scans for `TriggerSet` events (the vault's deployment block is enough)."""
    price_feed_interval_s: float = Field(default=0, ge=0)
    """Embedded chain only: seconds between demo price moves; 0 turns the random walk off (setting a price by
    hand through `/api/demo/pricefeed` still works)."""
    price_feed_seed: int = 0
    price_feed_max_step_bps: int = Field(default=30, ge=0, le=1_000)

    @property
    def embedded(self) -> bool:
        """No node configured: serve the in-process chain."""
        return self.rpc_url is None

    @property
    def rpc_url_for_display(self) -> str:
        """Scheme, host and port only: the path and query of hosted nodes carry API keys."""
        if self.rpc_url is None:
            return "embedded"
        parts = urlsplit(self.rpc_url.get_secret_value())
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    @field_validator("rpc_url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in {"http", "https"}:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("vault_address")
    @classmethod
    def _check_vault(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_owner(value, "vault_address")
        except InvalidFieldError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _check_sources(self) -> Settings:
        if self.rpc_url is not None and self.vault_address is None:
            raise ValueError("a node (rpc_url) needs the vault: give vault_address or deployments_file")
        return self

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `RELAYER_<FIELD>` variables from `env`, then `overrides` that are not None.

        Raises:
            ConfigurationError: a value is malformed, the sources contradict each other, or the deployments
                file cannot be read.
        """
        source: Mapping[str, str] = {} if env is None else env
        values: dict[str, Any] = {
            "relay": RelaySettings.from_env(source),
            "trading": TradingSettings.from_env(source),
        }
        for name in cls.model_fields:
            if name in values:
                continue
            raw = source.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({name: value for name, value in overrides.items() if value is not None})
        deployments_file = values.get("deployments_file")
        if deployments_file is not None:
            try:
                deployment = load_deployment(Path(deployments_file))
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"cannot read the deployments file {deployments_file}: {type(exc).__name__}"
                ) from None
            if values.get("vault_address") not in (None, deployment.address):
                raise ConfigurationError("vault_address and the deployments file name different vaults")
            values["vault_address"] = deployment.address
            values["expected_chain_id"] = deployment.chain_id
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "settings"
            raise ConfigurationError(f"{field}: {first['msg']}", field=field) from None
