"""One frozen settings object, built from the environment and an optional ``.env`` file.

Every knob has a default documented in the README's Configuration table and in ``.env.example``.
Names that look like ours but are not known (``COLDHARBOUR_*`` typos, ``SNAPSHOT_SECS``...) are
rejected with a message naming the variable and the closest known name.

An empty value means "unset" (the default), so a deployment can forward ``NAME=${NAME:-}``.
Values are checked before anything touches the database, and an error names where the value came
from (``environment variable X`` or ``path/.env:LINE: X``) and what is wrong with it. The rules live
in two tables so a new setting is one field plus, at most, one row:

* :data:`_RANGES`: the bounds of a number. Every float is refused when NaN or infinite whatever its
  row says (a NaN compares false with everything, so ``nan <= 0`` let NaN through every ``> 0``
  check; an infinite interval overflows the event loop's timers).
* :data:`_TEXT_CHECKS`: a validator for a text setting (schema names, log levels, DSNs...).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.dsn import parse_dsn, same_database
from core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}: expected a boolean (true/false), got {raw!r}")


@dataclass(frozen=True, slots=True)
class _Range:
    """Allowed values of a numeric setting: ``low < value`` (or ``<=`` when ``low_inclusive``) and ``value <= high``."""

    low: float
    high: float
    low_inclusive: bool = False
    unit: str = ""

    def problem(self, value: float) -> str | None:
        above = value >= self.low if self.low_inclusive else value > self.low
        if above and value <= self.high:
            return None
        op = ">=" if self.low_inclusive else ">"
        unit = f" {self.unit}" if self.unit else ""
        return f"must be {op} {self.low:g} and <= {self.high:g}{unit}"


WEEK_S = 7 * 86_400.0
# An interval of zero spins a loop; beyond a week it is a unit mistake (ms for s), not a choice.
_INTERVAL = _Range(0.0, WEEK_S, unit="seconds")
_RANGES: dict[str, _Range] = {
    "heartbeat_sec": _INTERVAL,
    "equity_update_interval_s": _INTERVAL,
    "snapshot_sec": _INTERVAL,
    "ui_snapshot_sec": _INTERVAL,
    "flush_interval_s": _INTERVAL,
    "closed_sync_sec": _INTERVAL,
    "price_stale_after_s": _INTERVAL,
    "price_band_pct": _Range(0.0, 1e6, unit="percent"),
    "price_confirm_ticks": _Range(1, 1000, low_inclusive=True, unit="ticks"),
    # Under the bar builder's two-minute window, so an early tick cannot make the present "late".
    "price_max_lead_s": _Range(0.0, 100.0, low_inclusive=True, unit="seconds"),
    "price_max_age_s": _INTERVAL,
    "db_connect_timeout_s": _Range(0.0, 3600.0, unit="seconds"),
    "alert_eval_interval_s": _Range(0.0, 3600.0, unit="seconds"),
    "worker_metrics_port": _Range(1, 65535, low_inclusive=True),
    # Three broker calls a pass (docs/reconciliation.md): 300 s is 36 calls an hour; seconds are for tests.
    "tieout_interval_s": _Range(1.0, WEEK_S, low_inclusive=True, unit="seconds"),
    "tieout_history_days": _Range(1, 3650, low_inclusive=True, unit="days"),
    # Alpaca allows ~200 calls a minute per account, shared with the trader's own bot (docs/freshness.md).
    "rest_budget_calls_per_min": _Range(1.0, 10_000.0, low_inclusive=True, unit="calls a minute"),
    "rest_catchup_calls_per_min": _Range(1.0, 10_000.0, low_inclusive=True, unit="calls a minute"),
    "tieout_position_tolerance_usd": _Range(0.0, 1e6, low_inclusive=True, unit="dollars"),
    "tieout_account_day_tolerance_usd": _Range(0.0, 1e9, low_inclusive=True, unit="dollars"),
    # the dashboard's per-query limits: a callback must answer while the page is still open
    "dash_statement_timeout_s": _Range(0.0, 600.0, unit="seconds"),
    "export_statement_timeout_s": _Range(0.0, 3600.0, unit="seconds"),
    "export_max_concurrent": _Range(1, 64, low_inclusive=True),
    "xlsx_max_rows": _Range(1, 1_048_575 * 16, low_inclusive=True, unit="rows"),
    "sse_max_streams": _Range(1, 10_000, low_inclusive=True),
    "sse_max_streams_per_client": _Range(1, 10_000, low_inclusive=True),
    "port": _Range(1, 65535, low_inclusive=True),
    # Clock skew forgiven on a token's expiry: a huge leeway is no expiry check at all.
    "cf_access_leeway_s": _Range(0.0, 600.0, low_inclusive=True, unit="seconds"),
    "timescale_compress_after_days": _Range(0, 36_500, unit="days"),
    # 0 or less would drop every chunk, i.e. the whole history (empty = keep everything).
    "timescale_retention_days": _Range(0, 36_500, unit="days"),
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CACHE_TYPES = ("SimpleCache", "FileSystemCache", "RedisCache", "NullCache")
# Unquoted PostgreSQL identifiers fold to lower case, so "Ab" would name a different schema from
# the one quote_ident("Ab") creates; pg_* is reserved by PostgreSQL.
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _schema_problem(value: str) -> str | None:
    if not _SCHEMA_RE.match(value):
        return "must match [a-z_][a-z0-9_]* (lower case, at most 63 characters)"
    if value.startswith("pg_") or value == "information_schema":
        return "is reserved by PostgreSQL"
    return None


def _log_level_problem(value: str) -> str | None:
    return None if value.strip().upper() in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"


def _cache_type_problem(value: str) -> str | None:
    return None if value in CACHE_TYPES else f"must be one of {', '.join(CACHE_TYPES)}"


def _timezone_problem(value: str) -> str | None:
    # "localtime" and "posixrules" load but mean whatever the host says: not a display zone.
    if "/" not in value and value != "UTC":
        return "must be an IANA zone name like America/New_York or UTC"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown time zone"
    return None


def _dsn_problem(value: str) -> str | None:
    try:
        parse_dsn(value)
    except ConfigError as exc:  # its message never echoes the password
        return str(exc)
    return None


def _endpoints_problem(value: str) -> str | None:
    endpoints = [e.strip() for e in value.split(",") if e.strip()]
    if not endpoints or not all(re.match(r"^(tcp|ipc|inproc)://\S+$", e) for e in endpoints):
        return "must be comma-separated ZMQ endpoints like tcp://host:port"
    return None


_TEXT_CHECKS: dict[str, Callable[[str], str | None]] = {
    "account_schema": _schema_problem,
    "log_level": _log_level_problem,
    "cache_type": _cache_type_problem,
    "display_timezone": _timezone_problem,
    "postgresql_live_conn_string": _dsn_problem,
    "timescale_live_conn_string": _dsn_problem,
    "postgresql_live_sqlalchemy": _dsn_problem,
    "timescale_live_sqlalchemy": _dsn_problem,
    "zmq_price_endpoints": _endpoints_problem,
}


def value_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the field ``name`` (``None`` when it is fine). Never echoes a DSN."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int | float):
        rule = _RANGES.get(name)
        problem = rule.problem(value) if rule else None
        return f"{problem}, got {value!r}" if problem else None
    if isinstance(value, str) and name in _TEXT_CHECKS:
        problem = _TEXT_CHECKS[name](value)
        if problem and "conn_string" not in name and "sqlalchemy" not in name:
            problem += f", got {value[:80]!r}"
        return problem
    return None


@dataclass(frozen=True, slots=True)
class Settings:
    """All configuration of Cold Harbour. Build with :func:`load_settings`."""

    postgresql_live_conn_string: str | None = field(default=None, repr=False)
    timescale_live_conn_string: str | None = field(default=None, repr=False)
    postgresql_live_sqlalchemy: str | None = field(default=None, repr=False)
    timescale_live_sqlalchemy: str | None = field(default=None, repr=False)
    account_schema: str = "account_activities"
    heartbeat_sec: float = 30.0
    equity_update_interval_s: float = 60.0
    snapshot_sec: float = 60.0
    ui_snapshot_sec: float = 0.5
    flush_interval_s: float = 0.25
    closed_sync_sec: float = 60.0
    disable_sse: bool = False
    port: int = 5000
    web_reload: bool = False
    cf_access_client_id: str | None = field(default=None, repr=False)
    cf_access_client_secret: str | None = field(default=None, repr=False)
    destinations_file: str = "destinations.toml"
    destinations_local_file: str = "destinations.local.toml"
    data_dir: str = ".coldharbour"
    zmq_price_endpoints: str = "tcp://127.0.0.1:5556"
    price_stale_after_s: float = 10.0
    price_band_pct: float = 50.0
    price_confirm_ticks: int = 3
    price_max_lead_s: float = 60.0
    price_max_age_s: float = 86_400.0
    log_level: str = "INFO"
    cache_type: str = "SimpleCache"
    cache_redis_url: str | None = field(default=None, repr=False)
    cache_dir: str | None = None
    dash_auth: str | None = None
    dash_auth_users_file: str | None = None
    dash_auth_users: str | None = field(default=None, repr=False)
    cf_access_aud: str | None = None
    cf_access_team_domain: str | None = None
    cf_access_jwks_url: str | None = None
    cf_access_jwks_file: str | None = None
    cf_access_leeway_s: float = 30.0
    display_timezone: str = "America/New_York"
    db_connect_timeout_s: float = 10.0
    dash_statement_timeout_s: float = 5.0
    export_statement_timeout_s: float = 60.0
    export_max_concurrent: int = 2
    xlsx_max_rows: int = 100_000
    sse_max_streams: int = 16
    sse_max_streams_per_client: int = 4
    timescale_compress_after_days: int = 7
    timescale_retention_days: int | None = None
    alert_rules_file: str = "alerts.toml"
    alert_eval_interval_s: float = 1.0
    worker_metrics_port: int | None = None
    tieout_interval_s: float = 300.0
    tieout_history_days: int = 30
    tieout_position_tolerance_usd: float = 0.01
    tieout_account_day_tolerance_usd: float = 1.0
    rest_budget_calls_per_min: float = 20.0
    rest_catchup_calls_per_min: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = value_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{f.name.upper()}: {problem}")
        # One spelling downstream: logging.basicConfig refuses "info".
        object.__setattr__(self, "log_level", self.log_level.strip().upper())

    @property
    def primary_dsn(self) -> str | None:
        """The DSN for the main store; when only one of the two is set it serves both roles."""
        return (
            self.postgresql_live_sqlalchemy
            or self.postgresql_live_conn_string
            or self.timescale_live_sqlalchemy
            or self.timescale_live_conn_string
        )

    @property
    def timescale_dsn(self) -> str | None:
        """The DSN for time-series tables; falls back to the primary one."""
        return (
            self.timescale_live_sqlalchemy
            or self.timescale_live_conn_string
            or self.postgresql_live_sqlalchemy
            or self.postgresql_live_conn_string
        )

    @property
    def separate_timeseries(self) -> bool:
        """Both DSNs are set and name different databases: the time series live in the second one."""
        primary = self.postgresql_live_sqlalchemy or self.postgresql_live_conn_string
        series = self.timescale_live_sqlalchemy or self.timescale_live_conn_string
        return bool(primary and series) and not same_database(primary or "", series or "")

    @property
    def data_path(self) -> Path:
        path = Path(self.data_dir)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


_FIELDS = {f.name.upper(): f for f in fields(Settings)}
# Environment names that map onto a field under another name (the original system's spelling).
_ALIASES = {
    "POSTGRESQL_LIVE_CONN_STRING_SQLALCHEMY": "POSTGRESQL_LIVE_SQLALCHEMY",
    "TIMESCALE_LIVE_CONN_STRING_SQLALCHEMY": "TIMESCALE_LIVE_SQLALCHEMY",
}
# Prefixes we own: an unknown variable starting with one of these is a typo, not someone else's.
_OWNED_PREFIXES = ("COLDHARBOUR_", "CH_")
_KNOWN_NAMES = set(_FIELDS) | set(_ALIASES) | {"COLDHARBOUR_ENV_FILE"}
ENV_FILE_MAX_BYTES = 1 << 20


def _read_env_file(path: Path) -> dict[str, tuple[str, str]]:
    """``NAME -> (value, "path:line")`` of a dotenv file."""
    if path.stat().st_size > ENV_FILE_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {ENV_FILE_MAX_BYTES} bytes; not a settings file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    values: dict[str, tuple[str, str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :]
        if "=" not in stripped:
            raise ConfigError(f"{path}:{lineno}: expected NAME=value")
        key, _, value = stripped.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = (value, f"{path}:{lineno}")
    return values


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(_KNOWN_NAMES), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``) over an optional ``.env`` file.

    Raises :class:`ConfigError` naming where the value came from and the variable, for bad values
    or unknown owned names.
    """
    env = dict(os.environ if environ is None else environ)
    file_path = Path(env_file or env.get("COLDHARBOUR_ENV_FILE") or PROJECT_ROOT / ".env")
    merged: dict[str, tuple[str, str]] = {}
    if file_path.is_file():
        merged.update(_read_env_file(file_path))
    merged.update({k: (v, "environment variable") for k, v in env.items()})

    values: dict[str, Any] = {}
    for raw_name, (raw, origin) in merged.items():
        name = _ALIASES.get(raw_name, raw_name)
        owned = raw_name.startswith(_OWNED_PREFIXES)
        if owned:
            name = raw_name.split("_", 1)[1]
            name = _ALIASES.get(name, name)
        if name not in _FIELDS:
            if owned and raw_name not in _KNOWN_NAMES:
                raise ConfigError(f"{origin} {raw_name}: unknown setting{_suggest(name)}")
            close = difflib.get_close_matches(raw_name, sorted(_FIELDS), n=1, cutoff=0.9)
            if close and raw_name != close[0] and raw_name.endswith(("_SEC", "_SECS", "_S", "_STRING")):
                raise ConfigError(f"{origin} {raw_name}: unknown setting (did you mean {close[0]}?)")
            continue
        target = _FIELDS[name]
        if not raw.strip():
            continue  # empty = unset: the default (deployments forward ${NAME:-} for every knob)
        try:
            value = _convert(raw_name, raw, target.type)
        except ConfigError as exc:
            raise ConfigError(f"{origin} {exc}") from None
        problem = value_problem(target.name, value)
        if problem:
            raise ConfigError(f"{origin} {raw_name}: {problem}")
        values[target.name] = value
    return Settings(**values)


def _convert(name: str, raw: str, type_: Any) -> Any:
    type_text = str(type_)
    if type_text.startswith("bool"):
        return _parse_bool(name, raw)
    try:
        if type_text.startswith("float"):
            return float(raw)
        if type_text.startswith("int"):
            return int(raw)
    except ValueError:
        kind = "a number" if "float" in type_text else "an integer"
        raise ConfigError(f"{name}: expected {kind}, got {raw[:40]!r}") from None
    return raw


def configure_logging(settings: Settings, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """``logging.basicConfig`` at the validated ``LOG_LEVEL``."""
    logging.basicConfig(level=settings.log_level, format=fmt)
