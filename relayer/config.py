"""The relayer's configuration: one frozen, validated `Settings`, built once at the edge and passed down.

Sources, later ones winning: defaults, `RELAYER_*` environment variables, command-line flags. The node URL is
a secret (hosted nodes put the API key in it), so it is a `SecretStr` and never printed whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from relayer.close_request import parse_owner
from relayer.constants import DEFAULT_API_HOST, DEFAULT_API_PORT, DEFAULT_RPC_TIMEOUT_S, GAS_LIMIT_MARGIN_BPS
from relayer.deploy import load_deployment
from relayer.errors import ConfigurationError, InvalidFieldError

ENV_PREFIX = "RELAYER_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


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
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = (env or {}).get(ENV_PREFIX + name.upper())
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
