from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, load_settings


def test_defaults_match_the_documented_table() -> None:
    s = load_settings(environ={}, env_file="/nonexistent")
    assert s.account_schema == "account_activities"
    assert s.heartbeat_sec == 30.0
    assert s.port == 5000
    assert s.disable_sse is False
    assert s.primary_dsn is None


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({"HEARTBEAT_SEC": "5"}, "heartbeat_sec", 5.0),
        ({"SNAPSHOT_SEC": "2.5"}, "snapshot_sec", 2.5),
        ({"UI_SNAPSHOT_SEC": "0.5"}, "ui_snapshot_sec", 0.5),
        ({"FLUSH_INTERVAL_S": "0.1"}, "flush_interval_s", 0.1),
        ({"CLOSED_SYNC_SEC": "15"}, "closed_sync_sec", 15.0),
        ({"EQUITY_UPDATE_INTERVAL_S": "7"}, "equity_update_interval_s", 7.0),
        ({"DISABLE_SSE": "true"}, "disable_sse", True),
        ({"WEB_RELOAD": "1"}, "web_reload", True),
        ({"PORT": "8050"}, "port", 8050),
        ({"ACCOUNT_SCHEMA": "raw"}, "account_schema", "raw"),
        ({"COLDHARBOUR_PORT": "8051"}, "port", 8051),
    ],
)
def test_environment_overrides(env: dict[str, str], attr: str, expected: object) -> None:
    assert getattr(load_settings(environ=env, env_file="/nonexistent"), attr) == expected


def test_only_one_dsn_serves_both_roles() -> None:
    s = load_settings(environ={"TIMESCALE_LIVE_CONN_STRING": "postgresql://u@h/db"}, env_file="/nonexistent")
    assert s.primary_dsn == "postgresql://u@h/db"
    assert s.timescale_dsn == "postgresql://u@h/db"
    s2 = load_settings(environ={"POSTGRESQL_LIVE_CONN_STRING": "postgresql://a@h/x"}, env_file="/nonexistent")
    assert s2.timescale_dsn == "postgresql://a@h/x"


def test_sqlalchemy_variant_is_preferred_and_aliased() -> None:
    s = load_settings(
        environ={"POSTGRESQL_LIVE_CONN_STRING": "postgresql://a@h/x",
                 "POSTGRESQL_LIVE_CONN_STRING_SQLALCHEMY": "postgresql+psycopg2://a@h/x"},
        env_file="/nonexistent",
    )
    assert s.primary_dsn == "postgresql+psycopg2://a@h/x"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HEARTBEAT_SEC": "abc"}, "HEARTBEAT_SEC: expected a number"),
        ({"HEARTBEAT_SEC": "0"}, "HEARTBEAT_SEC: must be > 0"),
        ({"PORT": "99999"}, "PORT: must be >= 1 and <= 65535"),
        ({"DISABLE_SSE": "maybe"}, "DISABLE_SSE: expected a boolean"),
        ({"COLDHARBOUR_HEARTBEAT_SECS": "3"}, "COLDHARBOUR_HEARTBEAT_SECS: unknown setting (did you mean"),
        ({"SNAPSHOT_SECS": "3"}, "SNAPSHOT_SECS: unknown setting (did you mean SNAPSHOT_SEC?)"),
        ({"ACCOUNT_SCHEMA": "bad-name;"}, "ACCOUNT_SCHEMA"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_settings(environ=env, env_file="/nonexistent")


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nexport HEARTBEAT_SEC=12\nPORT='7000'\nSNAPSHOT_SEC=\"3\"\n")
    s = load_settings(environ={"PORT": "7100"}, env_file=env_file)
    assert (s.heartbeat_sec, s.port, s.snapshot_sec) == (12.0, 7100, 3.0)


def test_env_file_syntax_error_names_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=1\nthis is not valid\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected NAME=value"):
        load_settings(environ={}, env_file=env_file)


def test_settings_are_frozen_and_hide_secrets() -> None:
    s = Settings(cf_access_client_secret="topsecretvalue", cf_access_client_id="client-id-123")
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    assert "topsecretvalue" not in repr(s)
    assert "client-id-123" not in repr(s)
