"""Alert rules, channels and scheduled reports: ``alerts.toml`` (``ALERT_RULES_FILE``), validated like
``destinations.toml``.

A bad entry stops the process before it touches the database, with an error naming the file, the
entry (``rule #2 ('deep drawdown')``) and the field. Channel secrets come from the environment
(``*_env`` fields) and are kept out of every ``repr``.

File layout::

    [groups]
    swing = ["Swing", "Day Trader"]          # destination names or slugs

    [[channels]]
    name = "ops"                             # rules and reports refer to channels by name
    type = "webhook"                         # log | webhook | slack | telegram | email
    url_env = "OPS_WEBHOOK_URL"
    secret_env = "OPS_WEBHOOK_SECRET"        # HMAC-SHA256 key for the signature header

    [[rules]]
    name = "deep drawdown"
    kind = "drawdown"                        # see RULE_PARAMS for every kind and its parameters
    threshold_pct = 5
    group = "swing"                          # or destinations = [...]; neither: every destination
    severity = "critical"                    # info | warning | critical
    cooldown_s = 600
    channels = ["ops"]                       # default: ["log"]

    [[reports]]
    name = "daily"
    period = "daily"                         # daily | weekly (weekday = "fri")
    at = "17:15"                             # in DISPLAY_TIMEZONE
    channels = ["log"]

A channel named ``log`` (type ``log``: the worker's log, nothing leaves the machine) always exists.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from core.destinations import Destination, slugify
from core.errors import ConfigError

ParamValue = float | int | str | bool | tuple[str, ...]


class Severity(StrEnum):
    """How loud an alert is."""

    INFO = "info"  # worth knowing
    WARNING = "warning"  # look today
    CRITICAL = "critical"  # look now


class RuleKind(StrEnum):
    """What a rule watches. Risk kinds read the derived tables, operations kinds the raw ones."""

    DRAWDOWN = "drawdown"  # equity below its flow-adjusted peak (or the day's high) by more than X %
    DAILY_LOSS = "daily_loss"  # today's P&L below -$X or -X % of the day's starting equity
    CONCENTRATION = "concentration"  # one position's |market value| above X % of equity
    GROSS_EXPOSURE = "gross_exposure"  # sum of |market value| above X times equity
    LARGE_FILL = "large_fill"  # a single fill's notional above $N within the window
    LOSING_STREAK = "losing_streak"  # the last N closed round trips all lost
    HEARTBEAT_STALE = "heartbeat_stale"  # a worker's heartbeat older than factor x HEARTBEAT_SEC
    PRICE_STALE = "price_stale"  # a held symbol's mark is stale
    STREAM_DISCONNECTED = "stream_disconnected"  # the trade_updates stream is down (for for_s seconds)
    INGEST_LAG = "ingest_lag"  # the ingester's lag above X seconds
    ORDER_REJECTED = "order_rejected"  # orders ended rejected (or canceled) within the window
    REST_BUDGET = "rest_budget"  # the broker answered 429 (REST budget spent) within the window
    RECONCILIATION_DRIFT = "reconciliation_drift"  # the latest tie-out pass has an unexplained difference


class ChannelType(StrEnum):
    """Where a notification goes."""

    LOG = "log"  # the worker's log (default; nothing leaves the machine)
    WEBHOOK = "webhook"  # generic JSON POST with an HMAC-SHA256 signature header
    SLACK = "slack"  # Slack-compatible incoming webhook ({"text": ...})
    TELEGRAM = "telegram"  # Telegram bot API sendMessage
    EMAIL = "email"  # SMTP, STARTTLS optional


class ReportPeriod(StrEnum):
    """How often a scheduled report is sent."""

    DAILY = "daily"
    WEEKLY = "weekly"


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a rule kind: ``kind`` is number, int, choice, bool or strings."""

    name: str
    kind: str
    default: ParamValue | None = None  # None: required
    min_value: float | None = None  # lower bound for number/int (exclusive unless min_inclusive)
    max_value: float | None = None  # inclusive upper bound
    choices: tuple[str, ...] = ()
    min_inclusive: bool = False


_WINDOW = ParamSpec("window_s", "number", 300.0, 0)
# Every rule kind and its parameters: adding a kind is one row here and one function in core.alerts.
RULE_PARAMS: Mapping[RuleKind, tuple[ParamSpec, ...]] = MappingProxyType({
    RuleKind.DRAWDOWN: (ParamSpec("threshold_pct", "number", None, 0, 100),
                        ParamSpec("basis", "choice", "peak", choices=("peak", "day_high"))),
    RuleKind.DAILY_LOSS: (ParamSpec("limit_usd", "number", 0.0, 0, min_inclusive=True),
                          ParamSpec("limit_pct", "number", 0.0, 0, 100, min_inclusive=True)),
    RuleKind.CONCENTRATION: (ParamSpec("threshold_pct", "number", None, 0, 1000),),
    RuleKind.GROSS_EXPOSURE: (ParamSpec("max_ratio", "number", None, 0),),
    RuleKind.LARGE_FILL: (ParamSpec("threshold_usd", "number", None, 0), _WINDOW),
    RuleKind.LOSING_STREAK: (ParamSpec("trades", "int", None, 0, 1000),),
    RuleKind.HEARTBEAT_STALE: (ParamSpec("factor", "number", 2.0, 0),
                               ParamSpec("services", "strings", ("ingester", "manager"))),
    RuleKind.PRICE_STALE: (),
    RuleKind.STREAM_DISCONNECTED: (),
    RuleKind.INGEST_LAG: (ParamSpec("max_lag_s", "number", None, 0),),
    RuleKind.ORDER_REJECTED: (ParamSpec("statuses", "strings", ("rejected",)), _WINDOW),
    RuleKind.REST_BUDGET: (ParamSpec("min_429", "int", 1, 0), _WINDOW),
    # scope: account = per account-day (cash and equity now, each past day), position = per instrument;
    # min_usd: a floor above the tie-out's own TIEOUT_*_TOLERANCE_USD (0: those tolerances alone)
    RuleKind.RECONCILIATION_DRIFT: (ParamSpec("scope", "choice", "any", choices=("any", "account", "position")),
                                    ParamSpec("min_usd", "number", 0.0, 0, min_inclusive=True)),
})
# A stream reconnects within seconds after a routine drop: only a longer outage is worth a message.
DEFAULT_FOR_S: Mapping[RuleKind, float] = MappingProxyType({RuleKind.STREAM_DISCONNECTED: 30.0})
_RULE_FIELDS = {"name", "kind", "severity", "cooldown_s", "for_s", "destinations", "group", "channels", "message",
                "resolved_message", "enabled"}
_ORDER_STATUSES = {"rejected", "canceled", "expired"}
_REPORT_FIELDS = {"name", "period", "at", "weekday", "destinations", "group", "channels", "combined"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CHANNEL_FIELDS: Mapping[ChannelType, frozenset[str]] = MappingProxyType({
    ChannelType.LOG: frozenset({"level"}),
    ChannelType.WEBHOOK: frozenset({"url", "url_env", "secret_env", "timeout_s"}),
    ChannelType.SLACK: frozenset({"url", "url_env", "timeout_s"}),
    ChannelType.TELEGRAM: frozenset({"token_env", "chat_id", "chat_id_env", "base_url", "timeout_s"}),
    ChannelType.EMAIL: frozenset({"host", "port", "starttls", "username_env", "password_env", "from", "to",
                                  "timeout_s"}),
})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,79}$")
DEFAULT_COOLDOWN_S = 300.0
LOG_CHANNEL = "log"


@dataclass(frozen=True, slots=True)
class Channel:
    """One delivery target. ``secret`` (HMAC key, bot token, SMTP password) and ``url`` never print."""

    name: str
    type: ChannelType
    url: str = field(default="", repr=False)  # webhook/slack URL (itself a secret for Slack)
    secret: str = field(default="", repr=False)  # HMAC key, Telegram token or SMTP password
    username: str = field(default="", repr=False)
    chat_id: str = ""
    base_url: str = ""  # Telegram API root, configurable so tests point it at a local server
    host: str = ""
    port: int = 0
    starttls: bool = False
    sender: str = ""
    recipients: tuple[str, ...] = ()
    level: str = "WARNING"
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One validated rule. ``slugs`` is every destination it applies to."""

    name: str
    kind: RuleKind
    slugs: tuple[str, ...]
    severity: Severity = Severity.WARNING
    cooldown_s: float = DEFAULT_COOLDOWN_S  # quiet time after an episode resolves before the next may fire
    for_s: float = 0.0  # the condition must hold this long before the episode opens
    channels: tuple[str, ...] = (LOG_CHANNEL,)
    message: str = ""  # optional text prefixed to the generated detail
    resolved_message: str = ""
    params: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))

    def number(self, name: str) -> float:
        value = self.params[name]
        assert isinstance(value, int | float)
        return float(value)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.params[name]
        assert isinstance(value, tuple)
        return value

    def text(self, name: str) -> str:
        return str(self.params[name])


@dataclass(frozen=True, slots=True)
class ReportSchedule:
    """A scheduled summary, one per destination in scope (plus one for all when ``combined``)."""

    name: str
    period: ReportPeriod
    at: time  # local time in DISPLAY_TIMEZONE
    weekday: int  # 0 = Monday; weekly reports only
    slugs: tuple[str, ...]
    channels: tuple[str, ...] = (LOG_CHANNEL,)
    combined: bool = True


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Everything ``alerts.toml`` says; empty (only the log channel) when the file does not exist."""

    source: str
    rules: tuple[AlertRule, ...] = ()
    channels: Mapping[str, Channel] = field(
        default_factory=lambda: MappingProxyType({LOG_CHANNEL: Channel(LOG_CHANNEL, ChannelType.LOG)}))
    reports: tuple[ReportSchedule, ...] = ()

    def rules_for(self, slug: str) -> tuple[AlertRule, ...]:
        return tuple(r for r in self.rules if slug in r.slugs)


def _err(source: str, entry: str, field_name: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {entry}: field {field_name!r}: {message}")


def _entry_label(kind: str, index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{kind} #{index + 1}" + (f" ({name.strip()!r})" if isinstance(name, str) and name.strip() else "")


def _name(raw: dict[str, Any], source: str, entry: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name.strip()):
        raise _err(source, entry, "name", "missing, or not 1-80 letters, digits, spaces or _.:-")
    return name.strip()


def _number(value: Any, source: str, entry: str, field_name: str, lo: float | None = None,
            hi: float | None = None, integer: bool = False, lo_inclusive: bool = False) -> float:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or value != value:  # NaN
        raise _err(source, entry, field_name, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    below = lo is not None and (value < lo if lo_inclusive else value <= lo)
    if below or (hi is not None and value > hi):
        low = f"{'>=' if lo_inclusive else '>'} {lo:g}"
        bounds = low if hi is None else f"{low} and <= {hi:g}"
        raise _err(source, entry, field_name, f"must be {bounds}, got {value!r}")
    return float(value)


def _strings(value: Any, source: str, entry: str, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(source, entry, field_name, "must be a non-empty list of strings")
    return tuple(v.strip() for v in value)


def _env_secret(raw: dict[str, Any], key: str, source: str, entry: str, environ: Mapping[str, str],
                required: bool) -> str:
    """``key`` given inline, or ``key_env`` naming an environment variable (the variable's value is never echoed)."""
    if key in raw and f"{key}_env" in raw:
        raise _err(source, entry, key, f"give {key} or {key}_env, not both")
    if key in raw:
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise _err(source, entry, key, "must be a non-empty string")
        return value.strip()
    env_key = f"{key}_env"
    if env_key in raw:
        var = raw[env_key]
        if not isinstance(var, str) or not var:
            raise _err(source, entry, env_key, "must be the name of an environment variable")
        value = environ.get(var, "")
        if not value:
            raise _err(source, entry, env_key, f"environment variable {var} is not set")
        return value.strip()
    if required:
        raise _err(source, entry, key, f"missing (give {key}_env)")
    return ""


def _http_url(value: str, source: str, entry: str, field_name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # the value may be a secret (a Slack webhook URL): name the field, never echo it
        raise _err(source, entry, field_name, "must be an http(s):// URL")
    return value.rstrip("/") if field_name == "base_url" else value


def parse_channel(raw: Any, source: str, index: int, environ: Mapping[str, str]) -> Channel:
    """Validate one ``[[channels]]`` entry."""
    entry = _entry_label("channel", index, raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {entry}: must be a table")
    name = _name(raw, source, entry)
    try:
        ctype = ChannelType(str(raw.get("type")))
    except ValueError:
        raise _err(source, entry, "type", f"must be one of {', '.join(ChannelType)}") from None
    allowed = _CHANNEL_FIELDS[ctype] | {"name", "type"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _err(source, entry, unknown[0], f"unknown field for a {ctype} channel (known: {', '.join(sorted(allowed))})")
    timeout_s = _number(raw.get("timeout_s", 10.0), source, entry, "timeout_s", 0, 300)
    if ctype is ChannelType.LOG:
        level = str(raw.get("level", "WARNING")).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise _err(source, entry, "level", "must be a logging level name")
        return Channel(name, ctype, level=level)
    if ctype in {ChannelType.WEBHOOK, ChannelType.SLACK}:
        url = _http_url(_env_secret(raw, "url", source, entry, environ, True), source, entry, "url")
        secret = _env_secret(raw, "secret", source, entry, environ, False) if ctype is ChannelType.WEBHOOK else ""
        return Channel(name, ctype, url=url, secret=secret, timeout_s=timeout_s)
    if ctype is ChannelType.TELEGRAM:
        token = _env_secret(raw, "token", source, entry, environ, True)
        chat_id = _env_secret(raw, "chat_id", source, entry, environ, True)
        base = _http_url(str(raw.get("base_url", "https://api.telegram.org")), source, entry, "base_url")
        return Channel(name, ctype, secret=token, chat_id=chat_id, base_url=base, timeout_s=timeout_s)
    host = raw.get("host")
    if not isinstance(host, str) or not host.strip():
        raise _err(source, entry, "host", "missing or empty")
    port = int(_number(raw.get("port", 587), source, entry, "port", 0, 65535, integer=True))
    starttls = raw.get("starttls", False)
    if not isinstance(starttls, bool):
        raise _err(source, entry, "starttls", "must be true or false")
    sender = raw.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        raise _err(source, entry, "from", "must be an e-mail address")
    recipients = _strings(raw.get("to"), source, entry, "to")
    if not all("@" in r for r in recipients):
        raise _err(source, entry, "to", "every recipient must be an e-mail address")
    return Channel(name, ctype, host=host.strip(), port=port, starttls=starttls, sender=sender.strip(),
                   recipients=recipients, username=_env_secret(raw, "username", source, entry, environ, False),
                   secret=_env_secret(raw, "password", source, entry, environ, False), timeout_s=timeout_s)


def _scope(raw: dict[str, Any], source: str, entry: str, by_key: Mapping[str, str],
           groups: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    if "destinations" in raw and "group" in raw:
        raise _err(source, entry, "group", "give destinations or group, not both")
    if "group" in raw:
        group = raw["group"]
        if not isinstance(group, str) or group not in groups:
            raise _err(source, entry, "group", f"unknown group {group!r} (known: {', '.join(sorted(groups)) or 'none'})")
        return groups[group]
    if "destinations" in raw:
        return _resolve_names(_strings(raw["destinations"], source, entry, "destinations"), source, entry,
                              "destinations", by_key)
    return tuple(dict.fromkeys(by_key.values()))


def _resolve_names(names: Sequence[str], source: str, entry: str, field_name: str,
                   by_key: Mapping[str, str]) -> tuple[str, ...]:
    slugs: list[str] = []
    for n in names:
        slug = by_key.get(n) or by_key.get(slugify(n))
        if slug is None:
            raise _err(source, entry, field_name, f"unknown destination {n!r}")
        slugs.append(slug)
    return tuple(dict.fromkeys(slugs))


def _channel_refs(raw: dict[str, Any], source: str, entry: str, channels: Mapping[str, Channel]) -> tuple[str, ...]:
    refs = _strings(raw.get("channels", [LOG_CHANNEL]), source, entry, "channels")
    for ref in refs:
        if ref not in channels:
            raise _err(source, entry, "channels", f"unknown channel {ref!r} (known: {', '.join(sorted(channels))})")
    return refs


def _param(spec: ParamSpec, raw: dict[str, Any], source: str, entry: str) -> ParamValue:
    if spec.name not in raw:
        if spec.default is None:
            raise _err(source, entry, spec.name, "missing (required for this kind)")
        return spec.default
    value = raw[spec.name]
    if spec.kind in {"number", "int"}:
        number = _number(value, source, entry, spec.name, spec.min_value, spec.max_value, spec.kind == "int",
                         spec.min_inclusive)
        return int(number) if spec.kind == "int" else number
    if spec.kind == "choice":
        if value not in spec.choices:
            raise _err(source, entry, spec.name, f"must be one of {', '.join(spec.choices)}, got {value!r}")
        return str(value)
    return _strings(value, source, entry, spec.name)


def parse_rule(raw: Any, source: str, index: int, by_key: Mapping[str, str],
               groups: Mapping[str, tuple[str, ...]], channels: Mapping[str, Channel]) -> AlertRule | None:
    """Validate one ``[[rules]]`` entry (``None`` when ``enabled = false``)."""
    entry = _entry_label("rule", index, raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {entry}: must be a table")
    name = _name(raw, source, entry)
    try:
        kind = RuleKind(str(raw.get("kind")))
    except ValueError:
        raise _err(source, entry, "kind", f"must be one of {', '.join(RuleKind)}") from None
    specs = RULE_PARAMS[kind]
    known = _RULE_FIELDS | {s.name for s in specs}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _err(source, entry, unknown[0], f"unknown field for a {kind} rule (known: {', '.join(sorted(known))})")
    try:
        severity = Severity(str(raw.get("severity", "warning")))
    except ValueError:
        raise _err(source, entry, "severity", f"must be one of {', '.join(Severity)}") from None
    cooldown_s = _number(raw.get("cooldown_s", DEFAULT_COOLDOWN_S), source, entry, "cooldown_s", 0, lo_inclusive=True)
    for_s = _number(raw.get("for_s", DEFAULT_FOR_S.get(kind, 0.0)), source, entry, "for_s", 0, lo_inclusive=True)
    texts = {}
    for key in ("message", "resolved_message"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise _err(source, entry, key, "must be a string")
        texts[key] = value.strip()
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(source, entry, "enabled", "must be true or false")
    params = {s.name: _param(s, raw, source, entry) for s in specs}
    _check_kind(kind, params, source, entry)
    rule = AlertRule(name=name, kind=kind, slugs=_scope(raw, source, entry, by_key, groups), severity=severity,
                     cooldown_s=cooldown_s, for_s=for_s, channels=_channel_refs(raw, source, entry, channels),
                     message=texts["message"], resolved_message=texts["resolved_message"],
                     params=MappingProxyType(params))
    return rule if enabled else None


def _check_kind(kind: RuleKind, params: Mapping[str, ParamValue], source: str, entry: str) -> None:
    """Cross-field checks a single parameter cannot express."""
    if kind is RuleKind.DAILY_LOSS and not (params["limit_usd"] or params["limit_pct"]):
        raise _err(source, entry, "limit_usd", "give limit_usd or limit_pct (> 0)")
    if kind is RuleKind.ORDER_REJECTED:
        statuses = params["statuses"]
        assert isinstance(statuses, tuple)
        bad = sorted(set(statuses) - _ORDER_STATUSES)
        if bad:
            raise _err(source, entry, "statuses", f"unknown status {bad[0]!r} (known: {', '.join(sorted(_ORDER_STATUSES))})")


def parse_report(raw: Any, source: str, index: int, by_key: Mapping[str, str],
                 groups: Mapping[str, tuple[str, ...]], channels: Mapping[str, Channel]) -> ReportSchedule:
    """Validate one ``[[reports]]`` entry."""
    entry = _entry_label("report", index, raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {entry}: must be a table")
    name = _name(raw, source, entry)
    unknown = sorted(set(raw) - _REPORT_FIELDS)
    if unknown:
        raise _err(source, entry, unknown[0], f"unknown field (known: {', '.join(sorted(_REPORT_FIELDS))})")
    try:
        period = ReportPeriod(str(raw.get("period", "daily")))
    except ValueError:
        raise _err(source, entry, "period", "must be daily or weekly") from None
    at_text = raw.get("at", "17:00")
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", at_text) if isinstance(at_text, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise _err(source, entry, "at", f"must be a local time HH:MM, got {at_text!r}")
    weekday = raw.get("weekday", "mon")
    if weekday not in WEEKDAYS:
        raise _err(source, entry, "weekday", f"must be one of {', '.join(WEEKDAYS)}")
    combined = raw.get("combined", True)
    if not isinstance(combined, bool):
        raise _err(source, entry, "combined", "must be true or false")
    return ReportSchedule(name=name, period=period, at=time(int(match[1]), int(match[2])),
                          weekday=WEEKDAYS.index(weekday), slugs=_scope(raw, source, entry, by_key, groups),
                          channels=_channel_refs(raw, source, entry, channels), combined=combined)


def _groups(raw: Any, source: str, by_key: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [groups]: must be a table of name = [destinations]")
    return {name: _resolve_names(_strings(members, source, f"group {name!r}", "members"), source,
                                 f"group {name!r}", "members", by_key) for name, members in raw.items()}


def _unique(names: Sequence[str], source: str, kind: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise _err(source, f"{kind} #{i + 1} ({n!r})", "name", f"duplicate {kind} name")
        seen.add(n)


def parse_alert_config(data: Mapping[str, Any], source: str, destinations: Sequence[Destination],
                       environ: Mapping[str, str]) -> AlertConfig:
    """Validate a decoded rules document; errors name ``source``, the entry and the field."""
    unknown = sorted(set(data) - {"groups", "channels", "rules", "reports"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {unknown[0]!r} (expected groups, channels, rules, reports)")
    by_key = {d.name: d.slug for d in destinations} | {d.slug: d.slug for d in destinations}
    groups = _groups(data.get("groups", {}), source, by_key)
    for key in ("channels", "rules", "reports"):
        if not isinstance(data.get(key, []), list):
            raise ConfigError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    channels: dict[str, Channel] = {LOG_CHANNEL: Channel(LOG_CHANNEL, ChannelType.LOG)}
    parsed = [parse_channel(raw, source, i, environ) for i, raw in enumerate(data.get("channels", []))]
    _unique([c.name for c in parsed], source, "channel")
    channels.update({c.name: c for c in parsed})
    rules = [parse_rule(raw, source, i, by_key, groups, channels) for i, raw in enumerate(data.get("rules", []))]
    _unique([r.name for r in rules if r is not None], source, "rule")
    reports = [parse_report(raw, source, i, by_key, groups, channels) for i, raw in enumerate(data.get("reports", []))]
    _unique([r.name for r in reports], source, "report")
    return AlertConfig(source=source, rules=tuple(r for r in rules if r is not None),
                       channels=MappingProxyType(channels), reports=tuple(reports))


def load_alert_config(path: str | Path, destinations: Sequence[Destination],
                      environ: Mapping[str, str] | None = None) -> AlertConfig:
    """Load ``path`` (a missing file means no rules: only the log channel, no reports).

    Raises :class:`ConfigError` naming the file, the entry and the field.
    """
    import os

    file_path = Path(path)
    if not file_path.exists():
        return AlertConfig(source=str(file_path))
    try:
        data = tomllib.loads(file_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file_path}: not valid TOML: {exc}") from None
    return parse_alert_config(data, str(file_path), destinations, dict(os.environ if environ is None else environ))
