"""Configuration: one TOML file plus environment overrides, validated into frozen Settings.

Every problem is reported at once, one line each: `<file>: <key>: <what was expected>`.
"""
from __future__ import annotations

import os
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError as PydanticError, field_validator

from router.errors import ConfigError
from router.messages import Channel

DEFAULT_CONFIG = Path("config/msgroute.toml")
# The copy that ships next to the packages (used when the working directory has none).
BUNDLED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "msgroute.toml"

BUILTIN_ADAPTERS = {"sandbox", "twilio", "vonage", "smtp", "sendgrid", "fcm", "apns"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class BrokerSettings(_Section):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    heartbeat_seconds: int = Field(default=10, ge=1)
    confirm_timeout_seconds: float = Field(default=5.0, gt=0)


class StoreSettings(_Section):
    url: str = "sqlite:///msgroute.db"


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    account_rate_limit: float = Field(default=500.0, gt=0)  # requests/s per account


class RegionSettings(_Section):
    name: str
    jurisdictions: list[str] = []


class InvoiceFormat(_Section):
    """How this carrier's invoice CSV names its columns (reconcile)."""

    carrier_message_id: str = "carrier_message_id"
    date: str = "date"
    destination: str = "destination"
    units: str = "units"
    amount: str = "amount"
    currency: str = "currency"
    date_format: str | None = None  # strptime format; default RFC 3339 or YYYY-MM-DD
    delimiter: str = ","


class CarrierSettings(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    channel: Channel
    adapter: str
    region: str
    rate_limit: float | None = Field(default=None, gt=0)
    receipts: bool = True
    receipt_timeout: float | None = Field(default=None, gt=0)
    priority: int = 100
    concurrency: int = Field(default=50, ge=1, le=1000)  # sends in flight per dispatch process
    settings: dict[str, Any] = {}
    rates: dict[str, str] = {}
    invoice: InvoiceFormat = InvoiceFormat()

    @field_validator("rates")
    @classmethod
    def _rates_are_decimals(cls, rates: dict[str, str]) -> dict[str, str]:
        for key, value in rates.items():
            if key == "currency":
                if not (isinstance(value, str) and len(value) == 3 and value.isalpha()):
                    raise ValueError(f"rates.currency must be a 3-letter code, got {value!r}")
                continue
            try:
                Decimal(value)
            except (InvalidOperation, TypeError):
                raise ValueError(f"rate {key!r} must be a decimal string, got {value!r}") from None
        return rates

    @property
    def currency(self) -> str:
        return self.rates.get("currency", "USD")


class RoutingSettings(_Section):
    cost_weight: float = 1.0
    latency_weight: float = 0.2
    quality_weight: float = 0.5
    retry_delays: list[float] = [1, 5, 30, 300]
    max_attempts: int = Field(default=6, ge=1)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_cooldown_seconds: float = Field(default=30, gt=0)
    # a message still `queued` this long after it was stored is published to the route queue
    # again: its first publish may never have happened (a gateway killed between storing and
    # publishing it). A copy too many is absorbed downstream.
    requeue_stranded_after_seconds: float = Field(default=600, gt=0)

    @field_validator("retry_delays")
    @classmethod
    def _delays(cls, delays: list[float]) -> list[float]:
        if not delays or any(d <= 0 for d in delays):
            raise ValueError("retry_delays must be a non-empty list of positive seconds")
        return delays


class PricingSettings(_Section):
    markup: str = "0.25"
    price_per_unit: dict[Channel, str] = {}
    currency: str = "USD"


class RetentionSettings(_Section):
    content_days: float = Field(default=30, gt=0)  # message content (body, subject, push title/data)
    sweep_interval_seconds: float = Field(default=3600, gt=0)  # how often the status worker sweeps


class PrivacySettings(_Section):
    hash_key: str = "env:MSGROUTE_HASH_KEY"  # key for pseudonymising erased addresses; env:NAME or the key


class CallbackSettings(_Section):
    allow_private_networks: bool = False
    timeout_seconds: float = Field(default=5, gt=0)
    max_attempts: int = Field(default=8, ge=1)


class AbuseSettings(_Section):
    enabled: bool = True
    window_seconds: float = Field(default=300, gt=0)
    same_body_max_recipients: int = Field(default=200, ge=1)
    invalid_ratio_max: float = Field(default=0.5, gt=0, le=1)
    invalid_min_requests: int = Field(default=50, ge=1)
    volume_spike_factor: float = Field(default=20, gt=1)
    volume_spike_min_messages: int = Field(default=1000, ge=1)
    volume_baseline_seconds: float = Field(default=86400, gt=0)  # the period the baseline averages
    denied_url_hosts: list[str] = []


class LoggingSettings(_Section):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    broker: BrokerSettings = BrokerSettings()
    store: StoreSettings = StoreSettings()
    gateway: GatewaySettings = GatewaySettings()
    regions: list[RegionSettings] = []
    carriers: list[CarrierSettings] = []
    routing: RoutingSettings = RoutingSettings()
    pricing: PricingSettings = PricingSettings()
    retention: RetentionSettings = RetentionSettings()
    privacy: PrivacySettings = PrivacySettings()
    callbacks: CallbackSettings = CallbackSettings()
    abuse: AbuseSettings = AbuseSettings()
    logging: LoggingSettings = LoggingSettings()
    admin_token: str = ""
    source: str = "<defaults>"  # the file these settings came from (not a TOML key)

    def carrier(self, name: str) -> CarrierSettings | None:
        return next((c for c in self.carriers if c.name == name), None)

    def region(self, name: str) -> RegionSettings | None:
        return next((r for r in self.regions if r.name == name), None)


_ENV_OVERRIDES = {
    "MSGROUTE_AMQP_URL": ("broker", "url"),
    "MSGROUTE_DATABASE_URL": ("store", "url"),
    "MSGROUTE_HTTP_HOST": ("gateway", "host"),
    "MSGROUTE_HTTP_PORT": ("gateway", "port"),
    "MSGROUTE_PUBLIC_URL": ("gateway", "public_url"),
}


def config_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("MSGROUTE_CONFIG"):
        return Path(os.environ["MSGROUTE_CONFIG"])
    if DEFAULT_CONFIG.exists() or not BUNDLED_CONFIG.exists():
        return DEFAULT_CONFIG
    return BUNDLED_CONFIG


def load(path: str | Path | None = None, env: dict[str, str] | None = None,
         known_adapters: set[str] | None = None) -> Settings:
    """Read, override from the environment, validate. Raises ConfigError listing every problem."""
    file = config_path(str(path) if path else None)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: no such configuration file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    return from_dict(raw, source=str(file), env=env, known_adapters=known_adapters)


def from_dict(raw: dict[str, Any], source: str = "<config>", env: dict[str, str] | None = None,
              known_adapters: set[str] | None = None) -> Settings:
    env = {} if env is None else env
    raw = {section: (dict(value) if isinstance(value, dict) else value) for section, value in raw.items()}
    for var, (section, key) in _ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = env[var]
    if "source" in raw or "admin_token" in raw:
        raise ConfigError([f"{source}: {'source' if 'source' in raw else 'admin_token'}: unknown key "
                           "(the admin token comes from MSGROUTE_ADMIN_TOKEN)"])
    raw["source"] = source
    raw["admin_token"] = env.get("MSGROUTE_ADMIN_TOKEN", "")
    adapters = known_adapters or BUILTIN_ADAPTERS
    try:
        settings = Settings.model_validate(raw)
    except PydanticError as exc:
        problems = [f"{source}: {_location(err['loc'])}: {_expected(err)}" for err in exc.errors()]
        problems += [f"{source}: {p}" for p in _unknown_adapters(raw.get("carriers"), adapters)]
        raise ConfigError(problems) from None
    problems = _cross_checks(settings, adapters)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return settings


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _expected(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"{err['msg'].lower()} (got {shown})"


def _unknown_adapter(where: str, adapter: str, adapters: set[str]) -> str:
    return f"{where}.adapter: unknown adapter {adapter!r} (expected one of {', '.join(sorted(adapters))})"


def _unknown_adapters(carriers: Any, adapters: set[str]) -> list[str]:
    """The adapter check on raw input, so it is reported alongside type errors."""
    if not isinstance(carriers, list):
        return []
    return [_unknown_adapter(f"carriers[{i}]", c["adapter"], adapters) for i, c in enumerate(carriers)
            if isinstance(c, dict) and isinstance(c.get("adapter"), str) and c["adapter"] not in adapters]


def _cross_checks(settings: Settings, adapters: set[str]) -> list[str]:
    problems = []
    region_names = {r.name for r in settings.regions}
    seen = set()
    for i, carrier in enumerate(settings.carriers):
        where = f"carriers[{i}]"
        if carrier.name in seen:
            problems.append(f"{where}.name: carrier name {carrier.name!r} is used twice")
        seen.add(carrier.name)
        if carrier.adapter not in adapters:
            problems.append(_unknown_adapter(where, carrier.adapter, adapters))
        if region_names and carrier.region not in region_names:
            problems.append(f"{where}.region: unknown region {carrier.region!r} "
                            f"(expected one of {', '.join(sorted(region_names))})")
    try:
        Decimal(settings.pricing.markup)
        for value in settings.pricing.price_per_unit.values():
            Decimal(value)
    except InvalidOperation:
        problems.append("pricing: markup and price_per_unit must be decimal strings")
    return problems
