"""alerts.toml validation: every bad entry names the file, the entry and the field."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from core.alert_rules import (
    LOG_CHANNEL,
    AlertConfig,
    ChannelType,
    ReportPeriod,
    RuleKind,
    Severity,
    load_alert_config,
)
from core.destinations import Destination
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DESTS = [Destination(name=n, slug=s, key_id="PKTEST0001", secret_key="x", base_url="http://127.0.0.1:1")
         for n, s in (("Swing", "swing"), ("Day Trader", "day_trader"), ("Core", "core"))]
ENV = {"HOOK_URL": "http://127.0.0.1:9/hook", "HOOK_SECRET": "hmac-secret-value", "TG_TOKEN": "123:abc",
       "SLACK_URL": "https://hooks.example/T000/B000/XXXX", "SMTP_PASSWORD": "smtp-pass"}

GOOD = """
[groups]
active = ["Swing", "day_trader"]

[[channels]]
name = "ops"
type = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[[channels]]
name = "chat"
type = "telegram"
token_env = "TG_TOKEN"
chat_id = "42"
base_url = "http://127.0.0.1:9/"

[[channels]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = 2525
from = "ch@example.com"
to = ["me@example.com"]
password_env = "SMTP_PASSWORD"

[[rules]]
name = "deep drawdown"
kind = "drawdown"
threshold_pct = 5
basis = "day_high"
group = "active"
severity = "critical"
cooldown_s = 60
channels = ["ops", "log"]

[[rules]]
name = "big fill"
kind = "large_fill"
threshold_usd = 10000
destinations = ["Core"]

[[rules]]
name = "stream"
kind = "stream_disconnected"

[[rules]]
name = "off"
kind = "ingest_lag"
max_lag_s = 5
enabled = false

[[reports]]
name = "weekly"
period = "weekly"
weekday = "fri"
at = "17:30"
channels = ["mail"]
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> AlertConfig:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    return load_alert_config(path, DESTS, ENV if env is None else env)


def test_good_file(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)

    drawdown, fill, stream = config.rules
    assert (drawdown.kind, drawdown.severity, drawdown.slugs) == (RuleKind.DRAWDOWN, Severity.CRITICAL,
                                                                   ("swing", "day_trader"))
    assert drawdown.number("threshold_pct") == 5.0
    assert drawdown.text("basis") == "day_high"
    assert drawdown.channels == ("ops", "log")
    assert fill.slugs == ("core",)
    assert fill.number("window_s") == 300.0  # the default
    assert stream.slugs == ("swing", "day_trader", "core")  # no scope: every destination
    assert stream.for_s == 30.0  # the kind's default outage length
    assert [r.name for r in config.rules_for("core")] == ["big fill", "stream"]
    assert config.channels["ops"].type is ChannelType.WEBHOOK
    assert config.channels["ops"].secret == "hmac-secret-value"
    assert config.channels["chat"].base_url == "http://127.0.0.1:9"
    assert config.channels[LOG_CHANNEL].type is ChannelType.LOG
    (report,) = config.reports
    assert (report.period, report.weekday, report.at) == (ReportPeriod.WEEKLY, 4, time(17, 30))


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)

    text = repr(config)

    for secret in ENV.values():
        assert secret not in text


def test_missing_file_means_log_channel_only(tmp_path: Path) -> None:
    config = load_alert_config(tmp_path / "absent.toml", DESTS, {})

    assert config.rules == ()
    assert list(config.channels) == [LOG_CHANNEL]


def test_example_file_is_valid() -> None:
    """The shipped example loads against the shipped example destinations (no secrets needed)."""
    from core.destinations import load_destinations

    env = {"SIM_KEY_ID": "PK1", "SIM_SECRET_KEY": "s"}
    dests = load_destinations(ROOT / "destinations.example.toml", None, environ=env | dict(__import__("os").environ))
    config = load_alert_config(ROOT / "alerts.example.toml", dests, {})

    assert config.rules
    assert all(r.slugs for r in config.rules)


RULE = '[[rules]]\nname = "r1"\n'


@pytest.mark.parametrize(("text", "expected"), [
    (RULE + 'kind = "nope"\n', "rule #1 ('r1'): field 'kind': must be one of"),
    (RULE + 'kind = "drawdown"\n', "rule #1 ('r1'): field 'threshold_pct': missing"),
    (RULE + 'kind = "drawdown"\nthreshold_pct = -1\n', "field 'threshold_pct': must be > 0 and <= 100"),
    (RULE + 'kind = "drawdown"\nthreshold_pct = nan\n', "field 'threshold_pct': must be a number"),
    (RULE + 'kind = "drawdown"\nthreshold_pct = true\n', "field 'threshold_pct': must be a number"),
    (RULE + 'kind = "drawdown"\nthreshold_pct = 5\nbasis = "x"\n', "field 'basis': must be one of peak, day_high"),
    (RULE + 'kind = "drawdown"\nthreshold_pct = 5\nthreshhold = 1\n', "field 'threshhold': unknown field"),
    (RULE + 'kind = "daily_loss"\n', "field 'limit_usd': give limit_usd or limit_pct"),
    (RULE + 'kind = "losing_streak"\ntrades = 2.5\n', "field 'trades': must be an integer"),
    (RULE + 'kind = "ingest_lag"\nmax_lag_s = 5\nseverity = "loud"\n', "field 'severity': must be one of"),
    (RULE + 'kind = "ingest_lag"\nmax_lag_s = 5\ncooldown_s = -1\n', "field 'cooldown_s': must be >= 0"),
    (RULE + 'kind = "ingest_lag"\nmax_lag_s = 5\ndestinations = ["Nope"]\n', "field 'destinations': unknown destination 'Nope'"),
    (RULE + 'kind = "ingest_lag"\nmax_lag_s = 5\ngroup = "g"\n', "field 'group': unknown group 'g'"),
    (RULE + 'kind = "ingest_lag"\nmax_lag_s = 5\nchannels = ["pager"]\n', "field 'channels': unknown channel 'pager'"),
    (RULE + 'kind = "order_rejected"\nstatuses = ["filled"]\n', "field 'statuses': unknown status 'filled'"),
    ('[[rules]]\nkind = "price_stale"\n', "rule #1: field 'name': missing"),
    (RULE + 'kind = "price_stale"\n' + RULE + 'kind = "price_stale"\n', "rule #2 ('r1'): field 'name': duplicate rule"),
    ('[[channels]]\nname = "c"\ntype = "webhook"\n', "channel #1 ('c'): field 'url': missing"),
    ('[[channels]]\nname = "c"\ntype = "webhook"\nurl_env = "UNSET_VAR"\n', "field 'url_env': environment variable UNSET_VAR is not set"),
    ('[[channels]]\nname = "c"\ntype = "slack"\nurl = "ftp://x"\n', "channel #1 ('c'): field 'url': must be an http(s):// URL"),
    ('[[channels]]\nname = "c"\ntype = "pager"\n', "field 'type': must be one of"),
    ('[[channels]]\nname = "c"\ntype = "email"\nhost = "h"\nfrom = "a@b"\nto = ["nobody"]\n', "field 'to': every recipient"),
    ('[[channels]]\nname = "c"\ntype = "log"\nurl = "http://x"\n', "field 'url': unknown field for a log channel"),
    ('[[reports]]\nname = "d"\nat = "25:00"\n', "report #1 ('d'): field 'at': must be a local time HH:MM"),
    ('[[reports]]\nname = "d"\nweekday = "someday"\n', "field 'weekday': must be one of mon"),
    ('[groups]\ng = ["Nope"]\n', "group 'g': field 'members': unknown destination 'Nope'"),
    ('[alerts]\n', "unknown top-level key 'alerts'"),
    ('rules = 3\n', "'rules' must be an array of tables"),
    ('[[rules]\n', "not valid TOML"),
])
def test_bad_entries_name_file_entry_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    message = str(caught.value)
    assert str(tmp_path / "alerts.toml") in message
    assert expected in message


def test_secret_url_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[[channels]]\nname = "c"\ntype = "slack"\nurl_env = "BAD"\n', {"BAD": "ftp://token-xyz"})

    assert "token-xyz" not in str(caught.value)
