"""One frozen settings object, built from the environment and an optional ``.env`` file.

Every knob has a default documented in the README's Configuration table. Names that look like
ours but are not known (``COLDHARBOUR_*`` typos, ``SNAPSHOT_SECS``...) are rejected with a
message naming the variable and the closest known name.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
class Settings:
    """All configuration of Cold Harbour. Build with :func:`load_settings`."""

    postgresql_live_conn_string: str | None = None
    timescale_live_conn_string: str | None = None
    postgresql_live_sqlalchemy: str | None = None
    timescale_live_sqlalchemy: str | None = None
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
    log_level: str = "INFO"
    cache_type: str = "SimpleCache"
    cache_redis_url: str | None = None
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
    timescale_compress_after_days: int = 7
    timescale_retention_days: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_sec",
            "equity_update_interval_s",
            "snapshot_sec",
            "ui_snapshot_sec",
            "flush_interval_s",
            "closed_sync_sec",
            "price_stale_after_s",
            "db_connect_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()}: must be > 0, got {getattr(self, name)}")
        if not (0 < self.port < 65536):
            raise ConfigError(f"PORT: must be 1..65535, got {self.port}")
        if not self.account_schema.replace("_", "").isalnum() or not self.account_schema[0].isalpha():
            raise ConfigError(f"ACCOUNT_SCHEMA: must match [a-z][a-z0-9_]*, got {self.account_schema!r}")

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


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
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
        values[key.strip()] = value
    return values


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(_KNOWN_NAMES), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``) over an optional ``.env`` file.

    Raises :class:`ConfigError` naming the variable for bad values or unknown owned names.
    """
    env = dict(os.environ if environ is None else environ)
    file_path = Path(env_file or env.get("COLDHARBOUR_ENV_FILE") or PROJECT_ROOT / ".env")
    merged: dict[str, str] = {}
    if file_path.is_file():
        merged.update(_read_env_file(file_path))
    merged.update(env)

    values: dict[str, Any] = {}
    for raw_name, raw in merged.items():
        name = _ALIASES.get(raw_name, raw_name)
        owned = raw_name.startswith(_OWNED_PREFIXES)
        if owned:
            name = raw_name.split("_", 1)[1]
            name = _ALIASES.get(name, name)
        if name not in _FIELDS:
            if owned and raw_name not in _KNOWN_NAMES:
                raise ConfigError(f"{raw_name}: unknown setting{_suggest(name)}")
            close = difflib.get_close_matches(raw_name, sorted(_FIELDS), n=1, cutoff=0.9)
            if close and raw_name != close[0] and raw_name.endswith(("_SEC", "_SECS", "_S", "_STRING")):
                raise ConfigError(f"{raw_name}: unknown setting (did you mean {close[0]}?)")
            continue
        values[_FIELDS[name].name] = _convert(name, raw, _FIELDS[name].type)
    return Settings(**values)


def _convert(name: str, raw: str, type_: Any) -> Any:
    type_text = str(type_)
    if raw == "" and "None" in type_text:
        return None
    if type_text.startswith("bool"):
        return _parse_bool(name, raw)
    try:
        if type_text.startswith("float"):
            return float(raw)
        if type_text.startswith("int"):
            return int(raw)
    except ValueError:
        kind = "a number" if "float" in type_text else "an integer"
        raise ConfigError(f"{name}: expected {kind}, got {raw!r}") from None
    return raw
