"""Configuration fuzz table: each value that cannot work is refused with the exact message.

Every row names where the value came from (the environment, ``path/.env:LINE`` or the destinations
file and entry), the variable or field, and what is wrong. Nothing here touches a database: the
last test shows the CLI stops with exit code 2 before it connects.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.destinations import Destination, load_destinations
from core.errors import ConfigError
from core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
ENV = "environment variable"

SETTINGS_CASES = [
    ("STALE", "PRICE_STALE_AFTER_S", "nan", f"{ENV} PRICE_STALE_AFTER_S: must be a finite number, got nan"),
    ("UI", "UI_SNAPSHOT_SEC", "nan", f"{ENV} UI_SNAPSHOT_SEC: must be a finite number, got nan"),
    ("UI-inf", "UI_SNAPSHOT_SEC", "inf", f"{ENV} UI_SNAPSHOT_SEC: must be a finite number, got inf"),
    ("overflow", "HEARTBEAT_SEC", "1e999999", f"{ENV} HEARTBEAT_SEC: must be a finite number, got inf"),
    ("negative", "SNAPSHOT_SEC", "-1", f"{ENV} SNAPSHOT_SEC: must be > 0 and <= 604800 seconds, got -1.0"),
    ("zero", "FLUSH_INTERVAL_S", "0", f"{ENV} FLUSH_INTERVAL_S: must be > 0 and <= 604800 seconds, got 0.0"),
    ("ms-for-s", "CLOSED_SYNC_SEC", "60000000", f"{ENV} CLOSED_SYNC_SEC: must be > 0 and <= 604800 seconds, got 60000000.0"),
    ("leeway-nan", "CF_ACCESS_LEEWAY_S", "nan", f"{ENV} CF_ACCESS_LEEWAY_S: must be a finite number, got nan"),
    ("leeway-neg", "CF_ACCESS_LEEWAY_S", "-5", f"{ENV} CF_ACCESS_LEEWAY_S: must be >= 0 and <= 600 seconds, got -5.0"),
    ("leeway-huge", "CF_ACCESS_LEEWAY_S", "1e12", f"{ENV} CF_ACCESS_LEEWAY_S: must be >= 0 and <= 600 seconds, got 1000000000000.0"),
    ("timeout", "DB_CONNECT_TIMEOUT_S", "-inf", f"{ENV} DB_CONNECT_TIMEOUT_S: must be a finite number, got -inf"),
    ("retention-0", "TIMESCALE_RETENTION_DAYS", "0", f"{ENV} TIMESCALE_RETENTION_DAYS: must be > 0 and <= 36500 days, got 0"),
    ("retention-neg", "TIMESCALE_RETENTION_DAYS", "-7", f"{ENV} TIMESCALE_RETENTION_DAYS: must be > 0 and <= 36500 days, got -7"),
    ("compress-0", "TIMESCALE_COMPRESS_AFTER_DAYS", "0", f"{ENV} TIMESCALE_COMPRESS_AFTER_DAYS: must be > 0 and <= 36500 days, got 0"),
    ("int-digits", "PORT", "9" * 5000, f"{ENV} PORT: expected an integer, got '{'9' * 40}'"),
    ("port", "PORT", "0", f"{ENV} PORT: must be >= 1 and <= 65535, got 0"),
    ("log", "LOG_LEVEL", "BOGUS", f"{ENV} LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'BOGUS'"),
    ("schema-case", "ACCOUNT_SCHEMA", "Ab",
     f"{ENV} ACCOUNT_SCHEMA: must match [a-z_][a-z0-9_]* (lower case, at most 63 characters), got 'Ab'"),
    ("schema-sql", "ACCOUNT_SCHEMA", 'x"; drop',
     f"{ENV} ACCOUNT_SCHEMA: must match [a-z_][a-z0-9_]* (lower case, at most 63 characters), got 'x\"; drop'"),
    ("schema-long", "ACCOUNT_SCHEMA", "a" * 64,
     f"{ENV} ACCOUNT_SCHEMA: must match [a-z_][a-z0-9_]* (lower case, at most 63 characters), got '{'a' * 64}'"),
    ("schema-pg", "ACCOUNT_SCHEMA", "pg_raw", f"{ENV} ACCOUNT_SCHEMA: is reserved by PostgreSQL, got 'pg_raw'"),
    ("tz", "DISPLAY_TIMEZONE", "posixrules",
     f"{ENV} DISPLAY_TIMEZONE: must be an IANA zone name like America/New_York or UTC, got 'posixrules'"),
    ("tz-unknown", "DISPLAY_TIMEZONE", "Mars/Olympus", f"{ENV} DISPLAY_TIMEZONE: unknown time zone, got 'Mars/Olympus'"),
    ("cache", "CACHE_TYPE", "Memcache",
     f"{ENV} CACHE_TYPE: must be one of SimpleCache, FileSystemCache, RedisCache, NullCache, got 'Memcache'"),
    ("zmq", "ZMQ_PRICE_ENDPOINTS", "localhost:5556",
     f"{ENV} ZMQ_PRICE_ENDPOINTS: must be comma-separated ZMQ endpoints like tcp://host:port, got 'localhost:5556'"),
    ("dsn", "POSTGRESQL_LIVE_CONN_STRING", "mysql://u:hunter2@h/db",
     f"{ENV} POSTGRESQL_LIVE_CONN_STRING: DSN scheme 'mysql' is not PostgreSQL "
     "(expected postgresql:// or postgresql+driver://)"),
    ("bool", "DISABLE_SSE", "maybe", f"{ENV} DISABLE_SSE: expected a boolean (true/false), got 'maybe'"),
]


@pytest.mark.parametrize(("name", "raw", "message"), [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES])
def test_bad_setting_from_the_environment(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={name: raw}, env_file="/nonexistent")

    assert str(err.value) == message
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(("name", "raw", "message"), [c[1:] for c in SETTINGS_CASES[:6]], ids=[c[0] for c in SETTINGS_CASES[:6]])
def test_bad_setting_from_the_env_file_names_file_and_line(tmp_path: Path, name: str, raw: str, message: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"# settings\nPORT=5000\n{name}={raw}\n")

    with pytest.raises(ConfigError) as err:
        load_settings(environ={}, env_file=env_file)

    assert str(err.value) == message.replace(ENV, f"{env_file}:3")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ui_snapshot_sec": float("nan")}, "UI_SNAPSHOT_SEC: must be a finite number, got nan"),
        ({"cf_access_leeway_s": float("nan")}, "CF_ACCESS_LEEWAY_S: must be a finite number, got nan"),
        ({"timescale_retention_days": 0}, "TIMESCALE_RETENTION_DAYS: must be > 0 and <= 36500 days, got 0"),
        ({"log_level": "BOGUS"}, "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'BOGUS'"),
    ],
)
def test_settings_built_in_code_are_checked_too(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings().replace(**changes)

    assert str(err.value) == message


def test_good_edge_values_are_accepted_and_normalised() -> None:
    s = load_settings(environ={"LOG_LEVEL": "debug", "CF_ACCESS_LEEWAY_S": "0", "TIMESCALE_RETENTION_DAYS": "1",
                               "DISPLAY_TIMEZONE": "UTC", "ACCOUNT_SCHEMA": "_raw2"}, env_file="/nonexistent")

    assert (s.log_level, s.cf_access_leeway_s, s.timescale_retention_days) == ("DEBUG", 0.0, 1)


def test_dsn_passwords_stay_out_of_settings_repr() -> None:
    s = load_settings(environ={"POSTGRESQL_LIVE_CONN_STRING": "postgresql://u:hunter2@h/db"}, env_file="/nonexistent")

    assert "hunter2" not in repr(s)


# ----------------------------------------------------------------------------- destinations

ENTRY = 'name = "Acct"\nkey_id = "PKTEST0001"\nsecret_key = "s3cr3t-value"\n'
WHERE = "destination #1 ('Acct')"
CREDS = ("credentials in the URL are not allowed (the URL is logged, stored and shown; "
         "give key_id/secret_key or their *_env names)")
STALE = "must be a finite number of seconds > 0 and <= 86400, got"
DEST_CASES = [
    ("stale-nan", 'base_url = "paper"\nprice_feed = { stale_after_s = nan }\n', "price_feed.stale_after_s", f"{STALE} nan"),
    ("stale-inf", 'base_url = "paper"\nprice_feed = { stale_after_s = inf }\n', "price_feed.stale_after_s", f"{STALE} inf"),
    ("stale-neg", 'base_url = "paper"\nprice_feed = { stale_after_s = -1 }\n', "price_feed.stale_after_s", f"{STALE} -1"),
    ("stale-huge", 'base_url = "paper"\nprice_feed = { stale_after_s = 1e9 }\n', "price_feed.stale_after_s",
     f"{STALE} 1000000000.0"),
    ("deposit-nan", 'base_url = "paper"\ninitial_deposit = nan\n', "initial_deposit",
     "must be a finite number >= 0 and <= 1,000,000,000,000,000, got nan"),
    ("deposit-inf", 'base_url = "paper"\ninitial_deposit = -inf\n', "initial_deposit",
     "must be a finite number >= 0 and <= 1,000,000,000,000,000, got -inf"),
    ("deposit-huge", 'base_url = "paper"\ninitial_deposit = 1e300\n', "initial_deposit",
     "must be a finite number >= 0 and <= 1,000,000,000,000,000, got 1e+300"),
    ("creds", 'base_url = "http://user:hunter2@127.0.0.1:8765"\n', "base_url", CREDS),
    ("user-only", 'base_url = "https://hunter2@paper-api.alpaca.markets"\n', "base_url", CREDS),
    ("stream-creds", 'base_url = "paper"\nstream_url = "wss://u:hunter2@stream.data.alpaca.markets"\n', "stream_url", CREDS),
    ("query", 'base_url = "https://paper-api.alpaca.markets/?token=hunter2"\n', "base_url",
     "must not carry a query string or fragment"),
    ("space", 'base_url = "http://host name"\n', "base_url", "invalid URL (contains whitespace or control characters)"),
    ("scheme", 'base_url = "ftp://host"\n', "base_url", "invalid URL (expected http(s)://host[:port], 'live' or 'paper')"),
]


@pytest.mark.parametrize(("body", "field", "problem"), [c[1:] for c in DEST_CASES], ids=[c[0] for c in DEST_CASES])
def test_bad_destination_field(tmp_path: Path, body: str, field: str, problem: str) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text("[[destinations]]\n" + ENTRY + body)

    with pytest.raises(ConfigError) as err:
        load_destinations(path, environ={})

    assert str(err.value) == f"{path}: {WHERE}: field {field!r}: {problem}"
    assert "hunter2" not in str(err.value)
    assert "s3cr3t-value" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply (arrays or inline tables inside each other)"),
        ("x = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply (arrays or inline tables inside each other)"),
        ("[[destinations]\n", "not valid TOML: Expected ']]' at the end of an array declaration (at line 1, column 15)"),
    ],
    ids=["arrays", "inline-tables", "syntax"],
)
def test_bad_destinations_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as err:
        load_destinations(path, environ={})

    assert str(err.value) == f"{path}: {problem}"


def test_oversized_destinations_file(tmp_path: Path) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text("# " + "x" * (1 << 20) + "\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path}: larger than 1048576 bytes")):
        load_destinations(path, environ={})


@pytest.mark.parametrize(
    ("url", "normalised", "live"),
    [
        ("live", "https://api.alpaca.markets", True),
        ("https://API.alpaca.markets", "https://api.alpaca.markets", True),
        ("https://api.alpaca.markets:443", "https://api.alpaca.markets", True),
        ("HTTPS://Api.Alpaca.Markets./", "https://api.alpaca.markets", True),
        ("https://api.alpaca.markets:8443/v2", "https://api.alpaca.markets:8443/v2", True),
        ("paper", "https://paper-api.alpaca.markets", False),
        ("https://PAPER-API.alpaca.markets:443", "https://paper-api.alpaca.markets", False),
        ("https://api.alpaca.markets.example.com", "https://api.alpaca.markets.example.com", False),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765", False),
    ],
)
def test_live_detection_uses_the_parsed_host(tmp_path: Path, url: str, normalised: str, live: bool) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text("[[destinations]]\n" + ENTRY + f'base_url = "{url}"\n')

    (dest,) = load_destinations(path, environ={})

    assert (dest.base_url, dest.is_live) == (normalised, live)


def test_destination_built_in_code_refuses_credentials() -> None:
    with pytest.raises(ConfigError) as err:
        Destination(name="A", slug="a", key_id="k", secret_key="s", base_url="http://u:hunter2@h")

    assert str(err.value) == "destination 'A': base_url must not carry credentials"


@pytest.mark.parametrize(
    ("env", "what"),
    [({"UI_SNAPSHOT_SEC": "nan"}, "UI_SNAPSHOT_SEC"), ({"LOG_LEVEL": "BOGUS"}, "LOG_LEVEL"),
     ({"ACCOUNT_SCHEMA": "Ab"}, "ACCOUNT_SCHEMA")],
)
def test_cli_refuses_before_touching_the_database(env: dict[str, str], what: str) -> None:
    full_env = {"PATH": "/usr/bin:/bin", "COLDHARBOUR_ENV_FILE": "/nonexistent",
                "DESTINATIONS_FILE": str(ROOT / "destinations.example.toml"),
                "POSTGRESQL_LIVE_CONN_STRING": "postgresql://u:pw@127.0.0.1:1/db", **env}

    proc = subprocess.run([sys.executable, "-m", "workers", "migrate"], env=full_env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: environment variable {what}: ")
    assert "Traceback" not in proc.stderr
    assert "cannot reach" not in proc.stderr


def test_dashboard_cli_refuses_bad_settings_without_a_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "COLDHARBOUR_ENV_FILE": "/nonexistent", "LOG_LEVEL": "BOGUS"}

    proc = subprocess.run([sys.executable, "-m", "dashboard"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)

    assert proc.returncode == 1
    assert proc.stderr.startswith("error: environment variable LOG_LEVEL: must be one of DEBUG")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "1e12"])
def test_auth_leeway_read_from_the_environment_is_checked_too(raw: str) -> None:
    from dashboard.auth import load_auth_config

    env = {"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": "aud", "CF_ACCESS_TEAM_DOMAIN": "team.cloudflareaccess.com",
           "CF_ACCESS_LEEWAY_S": raw}

    with pytest.raises(ConfigError, match=r"^CF_ACCESS_LEEWAY_S: must be"):
        load_auth_config(None, env)
