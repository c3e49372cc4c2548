"""Least privilege in the shipped deployments: the web service gets the read-only role and nothing else.

Compose and Cloud Build are parsed (no Docker engine or Google Cloud here); the SQL that creates the
read-only role in Compose runs against a real PostgreSQL through the real ``psql``.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from core.db import connect, migrate
from core.destinations import load_destinations
from core.dsn import ConnInfo, parse_dsn
from core.settings import Settings
from tests.deploy.test_compose import interpolate

ROOT = Path(__file__).resolve().parents[2]
# What entrypoint.sh's web role and its health probe read besides the settings.
ENTRYPOINT_WEB_VARS = {"GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT_S", "GUNICORN_GRACEFUL_TIMEOUT_S",
                       "HEALTHCHECK_TIMEOUT_S"}
# Settings properties and the variables behind them.
PROPERTIES = {"primary_dsn": {"POSTGRESQL_LIVE_CONN_STRING"}, "timescale_dsn": {"TIMESCALE_LIVE_CONN_STRING"},
              "data_path": {"DATA_DIR"}}
SECRET_ENV_NAMES = {"CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET", "DESTINATIONS_FILE", "DESTINATIONS_LOCAL_FILE",
                    "POSTGRESQL_LIVE_SQLALCHEMY", "TIMESCALE_LIVE_SQLALCHEMY", "POSTGRES_PASSWORD", "POSTGRES_USER"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return document


def dashboard_settings() -> set[str]:
    """Every variable the dashboard reads: ``settings.<field>`` anywhere under dashboard/, plus auth's knobs."""
    field_names = {f.name for f in fields(Settings)}
    names: set[str] = set()
    for path in (ROOT / "dashboard").rglob("*.py"):
        for attr in re.findall(r"settings\.([a-z_]+)", path.read_text()):
            if attr in field_names:
                names.add(attr.upper())
            names |= PROPERTIES.get(attr, set())
    auth = (ROOT / "dashboard" / "auth.py").read_text()
    names |= set(re.findall(r'"((?:DASH_AUTH|CF_ACCESS)_?[A-Z_]*)"', auth)) & {n.upper() for n in field_names}
    return names


def web_environment(compose: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """What the web container's environment holds once Compose has read ``dotenv`` (.env) for interpolation."""
    web = compose["services"]["web"]
    return {name: interpolate(str(value), dotenv) for name, value in web["environment"].items()}


HOSTILE_DOTENV = {
    "POSTGRES_USER": "coldharbour",
    "POSTGRES_PASSWORD": "owner-password-9f3",
    "POSTGRESQL_LIVE_CONN_STRING": "postgresql://coldharbour:owner-password-9f3@db:5432/coldharbour",
    "CF_ACCESS_CLIENT_ID": "cf-id-5b1e.access",
    "CF_ACCESS_CLIENT_SECRET": "cf-secret-77aa",
    "SWING_KEY_ID": "PKBROKERKEY0001",
    "SWING_SECRET_KEY": "broker-secret-2c4d",
    "DESTINATIONS_FILE": "/run/coldharbour/destinations.toml",
    "DASHBOARD_DB_PASSWORD": "read-only-pw",
}


def test_compose_web_reads_no_env_file_and_mounts_no_destinations(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]

    assert "env_file" not in web
    assert "configs" not in web
    assert "secrets" not in web


def test_compose_web_gets_the_read_only_dsn_and_none_of_the_secrets(compose: dict[str, Any]) -> None:
    env = web_environment(compose, HOSTILE_DOTENV)

    text = "\n".join(env.values())
    for secret in ("owner-password-9f3", "cf-id-5b1e.access", "cf-secret-77aa", "PKBROKERKEY0001", "broker-secret-2c4d"):
        assert secret not in text
    assert not SECRET_ENV_NAMES & set(env)
    for name in ("POSTGRESQL_LIVE_CONN_STRING", "TIMESCALE_LIVE_CONN_STRING"):
        info = parse_dsn(env[name])
        assert (info.user, info.password, info.host) == ("coldharbour_dashboard", "read-only-pw", "db")


def test_compose_web_forwards_exactly_what_the_dashboard_reads(compose: dict[str, Any]) -> None:
    forwarded = set(compose["services"]["web"]["environment"])
    allowed = {f.name.upper() for f in fields(Settings)} - SECRET_ENV_NAMES | ENTRYPOINT_WEB_VARS

    assert dashboard_settings() - forwarded == set()  # a new dashboard setting must be forwarded
    assert forwarded - allowed == set()


def test_compose_web_waits_for_the_read_only_role(compose: dict[str, Any]) -> None:
    roles = compose["services"]["db-roles"]

    assert compose["services"]["web"]["depends_on"]["db-roles"]["condition"] == "service_completed_successfully"
    assert roles["depends_on"]["db"]["condition"] == "service_healthy"
    assert roles["image"] == compose["services"]["db"]["image"]
    assert roles["environment"]["PGHOST"] == "db"
    # The password reaches psql through the environment (\getenv), never its command line.
    assert not any("PASSWORD" in str(arg) for arg in roles["command"])


def run_role_sql(compose: dict[str, Any], tmp_path: Path, dsn: str, role: str, password: str) -> None:
    script = tmp_path / "dashboard-role.sql"
    script.write_text(interpolate(compose["configs"]["dashboard-role"]["content"], {}))
    info = parse_dsn(dsn)
    env = {"PATH": "/usr/bin:/bin", "PGHOST": info.host, "PGPORT": str(info.port), "PGUSER": info.user or "postgres",
           "PGDATABASE": info.dbname, "PGPASSWORD": info.password or "", "DASHBOARD_DB_USER": role,
           "DASHBOARD_DB_PASSWORD": password}
    command = list(compose["services"]["db-roles"]["command"])
    command[command.index("/run/coldharbour/dashboard-role.sql")] = str(script)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr


def destinations(tmp_path: Path, *names: str) -> list[Any]:
    path = tmp_path / f"d{len(names)}.toml"
    path.write_text("".join(f'[[destinations]]\nname = "{n}"\nkey_id = "PK{i}"\nsecret_key = "s"\nbase_url = "paper"\n'
                            for i, n in enumerate(names)))
    return load_destinations(path, environ={})


def test_compose_role_reads_every_table_now_and_later_and_writes_nothing(
    compose: dict[str, Any], db_dsn: str, settings: Settings, tmp_path: Path
) -> None:
    role, password = f"ch_ro_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    owner = connect(db_dsn)
    owner.autocommit = True
    migrate(owner, settings, destinations(tmp_path, "Alpha"))
    try:
        run_role_sql(compose, tmp_path, db_dsn, role, password)
        run_role_sql(compose, tmp_path, db_dsn, role, password)  # every `up` runs it again
        migrate(owner, settings, destinations(tmp_path, "Alpha", "Beta"))  # a destination added later

        info = parse_dsn(db_dsn)
        ro = connect(ConnInfo(info.host, info.port, info.dbname, role, password, info.options).uri())
        ro.autocommit = True
        try:
            with ro.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone() == (role,)
                for table in ("public.ch_destinations", "public.price_bars", f"{settings.account_schema}.heartbeats",
                              "public.open_trades_alpha", "public.open_trades_beta", "public.equity_full_beta"):
                    cur.execute(f"SELECT count(*) FROM {table}")
                    assert cur.fetchone() is not None
                cur.execute("SHOW default_transaction_read_only")
                assert cur.fetchone() == ("on",)
                with pytest.raises(psycopg2.Error):
                    cur.execute("DELETE FROM public.ch_versions")
        finally:
            ro.close()
    finally:
        with owner.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{role}"')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        owner.close()


# ----------------------------------------------------------------------------- Cloud Build

def deploy_args(build: dict[str, Any], step_id: str) -> list[str]:
    [step] = [s for s in build["steps"] if s.get("id") == step_id]
    args: list[str] = step["args"]
    return args


def flag(args: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


def pairs(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(","))


def test_cloud_run_web_gets_only_the_dashboard_secrets(build: dict[str, Any]) -> None:
    web, workers = deploy_args(build, "deploy-web"), deploy_args(build, "deploy-workers")
    web_secrets, worker_secrets = pairs(flag(web, "--set-secrets")), pairs(flag(workers, "--set-secrets"))
    web_env = pairs(flag(web, "--set-env-vars"))

    assert set(web_secrets) == {"POSTGRESQL_LIVE_CONN_STRING", "TIMESCALE_LIVE_CONN_STRING",
                                "CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET"}  # no file mounts
    assert not set(web_secrets.values()) & set(worker_secrets.values())  # no secret shared with the workers
    assert "DESTINATIONS_FILE" not in web_env
    subs = build["substitutions"]
    for name in ("POSTGRESQL_LIVE_CONN_STRING", "TIMESCALE_LIVE_CONN_STRING"):
        ref = web_secrets[name].split(":")[0].strip("${}")
        assert "dashboard" in subs[ref]  # the read-only role's DSN


def test_cloud_run_web_runs_as_its_own_service_account(build: dict[str, Any]) -> None:
    web_sa = flag(deploy_args(build, "deploy-web"), "--service-account")
    workers_sa = flag(deploy_args(build, "deploy-workers"), "--service-account")

    assert web_sa != workers_sa
    assert build["substitutions"][web_sa.strip("${}")] != build["substitutions"][workers_sa.strip("${}")]


def test_docs_grant_the_web_account_only_its_secrets() -> None:
    text = (ROOT / "docs" / "infrastructure.md").read_text()
    match = re.search(r"for s in ([^;]*); do\s+gcloud secrets add-iam-policy-binding \$s [^\n]*\n\s+"
                      r"--member=serviceAccount:coldharbour-web@", text)

    assert match, "docs/infrastructure.md must bind the web account's secrets in one loop"
    web_secrets = set(match.group(1).replace("\\", " ").split())
    assert web_secrets == {"coldharbour-dashboard-postgresql-dsn", "coldharbour-dashboard-timescale-dsn",
                           "coldharbour-web-cf-access-client-id", "coldharbour-web-cf-access-client-secret"}
