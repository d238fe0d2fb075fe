"""The relayer's configuration: one frozen, validated `Settings`, built once at the edge and passed down.

Sources, later ones winning: defaults, `RELAYER_*` environment variables, command-line flags. The node URL is
a secret (hosted nodes put the API key in it), so it is a `SecretStr` and never printed whole.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
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

from relayer.chain.deploy import load_deployment
from relayer.constants import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    DEFAULT_RPC_TIMEOUT_S,
    DEFAULT_SLIPPAGE_BPS,
    GAS_LIMIT_MARGIN_BPS,
)
from relayer.domain.bps import parse_slippage_bps
from relayer.domain.requests import parse_owner
from relayer.domain.sponsorship import Policy
from relayer.errors import ConfigurationError, InvalidFieldError
from relayer.stores.location import StoreLocation

ENV_PREFIX = "RELAYER_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

DEFAULT_JOURNAL_PATH = Path(".relayer") / "journal.sqlite3"
"""The journal every command uses unless told otherwise (`--journal`, `RELAYER_RELAY_JOURNAL_PATH`): relative,
so it resolves in the current directory, and the same for `serve`, `mcp`, `keeper`, `keys` and `relay`,
which is what lets a key made by `relayer keys create` work on the next `relayer serve` started in the same
folder. The journal creates `.relayer/` (mode 0700) and the file (0600) when missing."""


def _configuration_error(exc: ValidationError, prefix: str) -> ConfigurationError:
    """A settings validation failure as the one `ConfigurationError`, naming the setting and variable."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    message = str(first["msg"]).removeprefix("Value error, ")
    variable = f" ({prefix}{field.upper()})" if prefix and "." not in field and field != "settings" else ""
    return ConfigurationError(f"{field}{variable}: {message}", field=field)


def _env_values(fields: Mapping[str, object], env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """`<prefix><FIELD>` variables of `env` for `fields`; unset and empty ones are left out (defaults)."""
    values = {}
    for name in fields:
        raw = env.get(prefix + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    return values


class _Section(BaseModel):
    """A frozen, validated group of settings with its own variables (`env_prefix` + the field in capitals).

    Built from keywords, from `from_env`, or inside `Settings.load`: one mechanism, one meaning of "unset"
    (an absent or empty variable, or a keyword not given, keeps the default). Invalid values raise
    `ConfigurationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env_prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _configuration_error(exc, self.env_prefix) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """The section from `env`'s variables (pass `os.environ` at the edge).

        Raises:
            ConfigurationError: a value that is not of the setting's type, or out of range.
        """
        return cls(**_env_values(cls.model_fields, env, cls.env_prefix))


class RelaySettings(_Section):
    """How the relayer signs, submits, replaces and journals (`RELAYER_RELAY_*`)."""

    env_prefix: ClassVar[str] = "RELAYER_RELAY_"

    journal_path: Path = DEFAULT_JOURNAL_PATH
    """The SQLite journal file (WAL mode) holding relay records and API keys; ":memory:" only for throwaway
    use."""
    confirmations: int = Field(default=1, ge=1)
    """Blocks on top of (and including) the one a transaction was mined in before it is final."""
    replace_after_blocks: int = Field(default=3, ge=1, le=1_000)
    """Blocks without a receipt before a transaction is replaced with bumped fees: this many times the chain's
    block time, as measured from the heads the relay rounds read (the median gap of recent blocks)."""
    replace_after_min_s: int = Field(default=2, ge=1)
    """The floor of that wait in seconds (a chain of quarter-second blocks is not bumped every round)."""
    replace_after_s: int = Field(default=30, gt=0)
    """Seconds without a receipt before a replacement while the chain's block time is unknown: too few heads
    seen yet, or blocks made only with transactions (automine, where many share one second)."""
    replace_after_blocks_by_chain: dict[int, int] = Field(default_factory=dict)
    """Per-chain `replace_after_blocks` (`1:3,42161:2`, or JSON); chains not named use the default."""
    replace_after_min_s_by_chain: dict[int, int] = Field(default_factory=dict)
    """Per-chain `replace_after_min_s` (`31337:30` keeps a local node at the old fixed 30 s)."""
    max_in_flight_per_signer: int = Field(default=16, ge=1, le=4_096)
    """Transactions one signer may have journaled and not yet mined (geth's pool keeps 16 per account
    beyond which it may evict): further calls wait for a slot of some signer."""
    queue_limit: int = Field(default=256, ge=0, le=100_000)
    """Calls that may wait on this instance for a signer slot; beyond, 503 `relay_queue_full`."""
    queue_wait_s: float = Field(default=20.0, gt=0, le=600, allow_inf_nan=False)
    """How long a call waits for a signer slot before it is answered 503 `relay_queue_full`."""
    fee_bump_bps: int = Field(default=1_250, ge=1_000)
    """Fee increase of a replacement on both EIP-1559 fees, in basis points (nodes refuse less than +10%)."""
    max_fee_per_gas_wei: int = Field(default=500 * 10**9, gt=0)
    """Cap on maxFeePerGas for relayed transactions (no-op nonce fillers may exceed it)."""
    min_signer_balance_wei: int = Field(default=10**17, ge=0)
    """Below this, a signer is reported as low in health (and `relay signers`)."""
    poll_interval_s: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    """Pause between two rounds of the background loop (0 would spin it)."""
    broadcast_retries: int = Field(default=3, ge=1)
    """Attempts (with doubling backoff) before a broadcast, or a read, is left to the next round."""
    retry_backoff_s: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    """The first backoff between node retries."""
    request_ttl_s: int = Field(default=600, gt=0)
    """Default validity of a signed request built by `GET /api/relay/typed-data`."""
    lease_ttl_s: float = Field(default=10.0, ge=0.5, le=600, allow_inf_nan=False)
    """How long a signer's (or the keeper's) lease lives unless renewed (every third of it). When its holder
    dies, another instance takes it within twice this."""
    min_deadline_margin_s: int = Field(default=30, ge=0)
    """A signed request is refused (422 `deadline_too_soon`) unless its deadline is at least this many seconds
    after the latest block's timestamp: one that could expire before it is mined would cost a no-op."""
    raw_nonce_window: int = Field(default=4, ge=0, le=64)
    """A raw transaction's nonce may be at most this far ahead of its sender's next nonce (0: exactly the
    next one); further ahead it could not be mined until the sender fills the gap (422 `nonce_too_far`)."""
    raw_ttl_s: int = Field(default=600, gt=0)
    """A raw transaction not mined this many seconds after it was accepted is dropped: status `expired`, never
    broadcast again."""
    raw_max_pending_per_sender: int = Field(default=4, ge=1)
    """Unfinished raw transactions one sender may have here at once (429 `too_many_pending` beyond)."""
    notices: bool = True
    """Journal a notice with every status change, fill and order execution (`relayer.domain.notices`), in
    the same transaction; webhooks, `/api/stream` and MCP's fills read them. False only to measure what
    they cost: nothing is then told."""

    @field_validator("replace_after_blocks_by_chain", "replace_after_min_s_by_chain", mode="before")
    @classmethod
    def _parse_by_chain(cls, value: object) -> object:
        """`chain:value` pairs separated by commas (an environment variable), else as given (JSON, a map)."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("not a JSON object") from None
        if isinstance(value, str):
            pairs = [pair.split(":") for pair in value.replace(" ", "").split(",") if pair]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected chainId:value pairs separated by commas, e.g. 1:3,42161:2")
            return dict(pairs)
        return value

    @field_validator("replace_after_blocks_by_chain", "replace_after_min_s_by_chain")
    @classmethod
    def _check_by_chain(cls, value: dict[int, int]) -> dict[int, int]:
        if any(chain_id <= 0 or count < 1 for chain_id, count in value.items()):
            raise ValueError("chain ids and values must be positive")
        return value

    def replacement(self, chain_id: int) -> tuple[int, int]:
        """(`replace_after_blocks`, `replace_after_min_s`) on `chain_id`, its overrides applied."""
        return (
            self.replace_after_blocks_by_chain.get(chain_id, self.replace_after_blocks),
            self.replace_after_min_s_by_chain.get(chain_id, self.replace_after_min_s),
        )

    @model_validator(mode="after")
    def _check_margin(self) -> RelaySettings:
        if self.request_ttl_s <= self.min_deadline_margin_s:
            raise ValueError(
                "request_ttl_s must be above min_deadline_margin_s: typed data would carry deadlines the"
                " relay refuses"
            )
        return self


class TradingSettings(_Section):
    """Policy of the API-key trading surface (`RELAYER_TRADING_*`)."""

    env_prefix: ClassVar[str] = "RELAYER_TRADING_"

    default_slippage_bps: int = DEFAULT_SLIPPAGE_BPS
    """Slippage guard when a close gives neither `allowedPrice` nor `maxSlippageBps` (1%): never unbounded."""
    receipt_timeout_s: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    """How long a trading call waits for the receipt before answering 202 with the transaction id."""
    poll_interval_s: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    """How often the calls waiting for a record (a trading call's receipt, a call handed to the instance that
    holds its signer) read the journal: all of them in one query (`RecordWatch`)."""

    @field_validator("default_slippage_bps", mode="before")
    @classmethod
    def _check_slippage(cls, value: object) -> int:
        try:
            return parse_slippage_bps(value, "default_slippage_bps")
        except InvalidFieldError as exc:
            raise ValueError(f"{exc.message.removeprefix(exc.field + ': ')} (basis points)") from None


class SponsorshipSettings(_Section):
    """Who the relayer pays gas for and how much (`RELAYER_SPONSOR_*`; `relayer.domain.sponsorship`). A limit
    of 0 turns that budget off."""

    env_prefix: ClassVar[str] = "RELAYER_SPONSOR_"

    who: Literal["anyone", "allowlist", "api_keys"] = "anyone"
    """Whose signed requests get gas paid: any owner, only `allowlist`, or none (API-key accounts only).
    API-key accounts and the keeper's executions are always sponsored (within their budgets)."""
    allowlist: tuple[str, ...] = ()
    """Owner addresses sponsored when `who` is "allowlist" (comma-separated in the variable)."""
    window_s: int = Field(default=60, ge=1, le=86_400)
    """The request-count window, in seconds."""
    owner_requests_per_window: int = Field(default=60, ge=0)
    owner_gas_wei_per_day: int = Field(default=10**17, ge=0)
    """Gas the relayer pays per owner per UTC day, in wei (0.1 ether)."""
    key_requests_per_window: int = Field(default=600, ge=0)
    key_gas_wei_per_day: int = Field(default=10**18, ge=0)
    """Gas per API key per UTC day, in wei, unless the key has its own `daily_spend_wei`."""
    daily_cap_wei: int = Field(default=10 * 10**18, ge=0)
    """Everything the relayer pays per UTC day, keeper executions counted (they are never refused)."""
    signed_daily_cap_wei: int = Field(default=5 * 10**18, ge=0)
    """What all signed requests together may spend per UTC day (their owners are anyone): a share of the
    daily cap, so throwaway owners cannot spend all of it and lock out the API-key accounts."""
    expired_noop_charged_to: Literal["owner", "relayer"] = "owner"
    """Who is charged the no-op that fills the nonce of a request that expired or was refused before
    mining."""

    @field_validator("allowlist", mode="before")
    @classmethod
    def _split_allowlist(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return items
        try:
            return tuple(parse_owner(str(item).strip(), "allowlist") for item in items if str(item).strip())
        except InvalidFieldError as exc:
            raise ValueError(exc.message) from None

    def to_policy(self) -> Policy:
        return Policy(
            who=self.who,
            allowlist=frozenset(address.lower() for address in self.allowlist),
            window_s=self.window_s,
            owner_requests_per_window=self.owner_requests_per_window,
            owner_gas_wei_per_day=self.owner_gas_wei_per_day,
            key_requests_per_window=self.key_requests_per_window,
            key_gas_wei_per_day=self.key_gas_wei_per_day,
            daily_cap_wei=self.daily_cap_wei,
            signed_daily_cap_wei=self.signed_daily_cap_wei,
            expired_noop_charged_to=self.expired_noop_charged_to,
        )


class HttpSettings(_Section):
    """The HTTP edge's bounds (`RELAYER_HTTP_*`): what one slow or greedy client may hold."""

    env_prefix: ClassVar[str] = "RELAYER_HTTP_"

    header_timeout_s: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    """A connection whose request headers have not all arrived this long after it opened (or after its
    previous response) is closed."""
    body_timeout_s: float = Field(default=15.0, gt=0, le=600, allow_inf_nan=False)
    """A request body not fully read this long after its headers is answered 408 `request_timeout`."""
    max_connections: int = Field(default=512, ge=1)
    """Open connections (and requests in flight) at most; beyond, new ones are answered 503 at once."""
    keep_alive_s: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)
    """An idle keep-alive connection is closed after this."""


class MetricsSettings(_Section):
    """The Prometheus metrics (`RELAYER_METRICS_*`): `GET /metrics`, or a port of their own."""

    env_prefix: ClassVar[str] = "RELAYER_METRICS_"

    enabled: bool = True
    """Count and time what the relayer does; False: no collection at all, `/metrics` answers 404."""
    token: SecretStr | None = None
    """A bearer token `GET /metrics` on the API port accepts besides an `admin` API key (for a scraper)."""
    port: int | None = Field(default=None, ge=0, le=65_535)
    """Serve the metrics on this port too, without authentication (bind it to a private interface with
    `host`); None: only `GET /metrics` on the API port, behind the token or an `admin` key."""
    host: str = "127.0.0.1"
    """The interface the metrics port listens on."""
    multiproc_dir: Path | None = None
    """prometheus-client's multi-process directory, for several instances on one host serving one scrape
    (`PROMETHEUS_MULTIPROC_DIR`); None: each process exports its own."""


class WebhookSettings(_Section):
    """Webhook deliveries (`RELAYER_WEBHOOKS_*`), Standard Webhooks signed, at least once."""

    env_prefix: ClassVar[str] = "RELAYER_WEBHOOKS_"

    enabled: bool = True
    """Deliver from this instance (any instance may; each delivery is claimed by one)."""
    timeout_s: float = Field(default=10.0, gt=0, le=120, allow_inf_nan=False)
    """A receiver that has not answered in this long counts as a failed attempt."""
    max_attempts: int = Field(default=10, ge=1, le=100)
    """Attempts before a delivery ends `failed`."""
    backoff_base_s: float = Field(default=1.0, gt=0, le=3600, allow_inf_nan=False)
    """The wait after the first failed attempt; it doubles after each one, up to `backoff_max_s`."""
    backoff_max_s: float = Field(default=3600.0, gt=0, le=86_400, allow_inf_nan=False)
    poll_interval_s: float = Field(default=0.25, gt=0, le=60, allow_inf_nan=False)
    """How often notices written by other instances are looked for (this instance's wake it at once)."""
    concurrency: int = Field(default=16, ge=1, le=256)
    """Deliveries in flight at once from this instance."""
    per_webhook_in_flight: int = Field(default=4, ge=1, le=256)
    """Deliveries in flight at once to one subscription from this instance: a receiver that hangs holds at
    most this many of the `concurrency` slots, never all of them."""
    per_account_in_flight: int = Field(default=0, ge=0, le=255)
    """Deliveries in flight at once to one account's subscriptions (all global subscriptions together count
    as one more account) from this instance; 0: half of `concurrency` (at least 1). Below `concurrency`
    (when it is above 1): an account whose receivers hang never holds every slot, whatever its number of
    subscriptions, so other accounts' and global subscriptions keep being delivered. Above
    `per_webhook_in_flight` (as by default, 8 and 4), one hanging receiver of an account leaves slots to its
    other subscriptions too."""
    max_per_account: int = Field(default=10, ge=1, le=1000)
    """Subscriptions one API-key account may hold."""
    allow_private_urls: bool = False
    """Accept receivers on loopback, private and link-local addresses (off: an account's subscription could
    otherwise reach the relayer's own network)."""
    retention_days: int = Field(default=7, ge=1, le=3650)
    """Notices and finished deliveries older than this are deleted (also while `enabled` is false)."""

    @property
    def account_in_flight(self) -> int:
        """The effective `per_account_in_flight`."""
        return self.per_account_in_flight or max(self.concurrency // 2, 1)

    @model_validator(mode="after")
    def _check_account_share(self) -> WebhookSettings:
        if self.concurrency > 1 and self.account_in_flight >= self.concurrency:
            raise ValueError(
                "per_account_in_flight must be below concurrency: one account's hanging receivers would"
                " otherwise hold every delivery slot"
            )
        return self


class StreamSettings(_Section):
    """`GET /api/stream` (Server-Sent Events) and MCP's fills (`RELAYER_STREAM_*`)."""

    env_prefix: ClassVar[str] = "RELAYER_STREAM_"

    max_per_key: int = Field(default=4, ge=1, le=1000)
    """Open streams one API key may hold (429 `too_many_streams` beyond)."""
    heartbeat_s: float = Field(default=15.0, gt=0, le=600, allow_inf_nan=False)
    """A comment line is sent after this long without an event, so proxies keep the stream open."""
    poll_interval_s: float = Field(default=0.25, gt=0, le=60, allow_inf_nan=False)
    """How often notices written by other instances are looked for."""
    max_queued: int = Field(default=1000, ge=10, le=100_000)
    """Notices one stream may have waiting to be sent; a client that falls this far behind is ended (event
    `stream.end`, reason `too_slow`) and resumes with `Last-Event-ID`, losing nothing."""
    mcp_api_key: SecretStr | None = None
    """`relayer mcp` (stdio): the API key whose account's fills the resource `relayer://fills/recent` shows
    and notifies subscribers of (`read` scope); None: no such resource (the tools still take `api_key`)."""


def journal_path(env: Mapping[str, str], path_arg: str | None) -> Path:
    """The journal an operator command names: `--journal` if given, else `RELAYER_RELAY_JOURNAL_PATH`, else
    `.relayer/journal.sqlite3` in the current directory."""
    return Path(path_arg) if path_arg else RelaySettings.from_env(env).journal_path


def store_location(env: Mapping[str, str], path_arg: str | None, url_arg: str | None) -> StoreLocation:
    """Where an operator command reads and writes: `--database-url`, else `RELAYER_DATABASE_URL` (PostgreSQL),
    else the journal file of `journal_path`.

    Raises:
        ConfigurationError: the URL is not a postgresql:// one.
    """
    url = url_arg or env.get(ENV_PREFIX + "DATABASE_URL") or None
    if url is not None and urlsplit(url).scheme not in {"postgresql", "postgres"}:
        raise ConfigurationError("the database URL must be a postgresql:// URL (RELAYER_DATABASE_URL)")
    return StoreLocation(journal_path(env, path_arg), url)


class Settings(BaseModel):
    """Everything `relayer serve` and `create_app` need; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpc_url: SecretStr | None = None
    """JSON-RPC node (http or https). None: the embedded chain with the demo world."""
    database_url: SecretStr | None = None
    """PostgreSQL (`postgresql://user:password@host:port/db`), shared by several instances. None: the SQLite
    journal file (`relay.journal_path`). A secret: its password is never printed."""
    instance_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    """This process's name in leases and `/health` (None: `<hostname>-<pid>`)."""
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
    sponsor: SponsorshipSettings = Field(default_factory=SponsorshipSettings)
    """The gas sponsorship policy (`RELAYER_SPONSOR_*`)."""
    http: HttpSettings = Field(default_factory=HttpSettings)
    """Timeouts and the connection cap of the HTTP edge (`RELAYER_HTTP_*`)."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """Prometheus metrics (`RELAYER_METRICS_*`)."""
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    """Webhook deliveries (`RELAYER_WEBHOOKS_*`)."""
    stream: StreamSettings = Field(default_factory=StreamSettings)
    """Server-Sent Events and MCP fills (`RELAYER_STREAM_*`)."""
    keeper_interval_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    """Seconds between keeper passes over TP/SL orders (it needs a relayer signer); 0: no background loop."""
    keeper_from_block: int = Field(default=0, ge=0)
    """First block the keeper scans for `TriggerSet` events (the vault's deployment block is enough)."""
    keeper_ratchet_min_bps: int = Field(default=10, ge=0, le=9_999)
    """The keeper ratchets a trailing stop only when the move is at least this many basis points of the price
    (10: 0.1%, $96 on a $96,000 BTC): a smaller move is not worth a transaction's gas."""
    price_feed_interval_s: float = Field(default=0, ge=0, allow_inf_nan=False)
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

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in {"postgresql", "postgres"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @property
    def store(self) -> StoreLocation:
        """Where the journal and the API keys live: PostgreSQL at `database_url`, else the SQLite file."""
        url = None if self.database_url is None else self.database_url.get_secret_value()
        return StoreLocation(self.relay.journal_path, url)

    @property
    def instance_name(self) -> str:
        """`instance_id`, or `<hostname>-<pid>`."""
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

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
        """Defaults, then `RELAYER_<FIELD>` variables from `env` (None: no variables; pass `os.environ` at
        the edge), then `overrides` that are not None (None: the flag was not given).

        Raises:
            ConfigurationError: a value is malformed, the sources contradict each other, or the deployments
                file cannot be read.
        """
        source: Mapping[str, str] = {} if env is None else env
        values: dict[str, Any] = {
            "relay": RelaySettings.from_env(source),
            "trading": TradingSettings.from_env(source),
            "sponsor": SponsorshipSettings.from_env(source),
            "http": HttpSettings.from_env(source),
            "metrics": MetricsSettings.from_env(source),
            "webhooks": WebhookSettings.from_env(source),
            "stream": StreamSettings.from_env(source),
        }
        plain = {name: info for name, info in cls.model_fields.items() if name not in values}
        values.update(_env_values(plain, source, ENV_PREFIX))
        values.update({name: value for name, value in overrides.items() if value is not None})
        deployments_file = values.get("deployments_file")
        if deployments_file is not None:
            try:
                deployment = load_deployment(Path(deployments_file))
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"cannot read the deployments file {deployments_file}: {type(exc).__name__}"
                ) from None
            given = values.get("vault_address")
            if given is not None and str(given).lower() != deployment.address.lower():
                raise ConfigurationError("vault_address and the deployments file name different vaults")
            values["vault_address"] = deployment.address
            values["expected_chain_id"] = deployment.chain_id
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _configuration_error(exc, ENV_PREFIX) from None
