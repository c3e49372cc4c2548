"""The read-only dashboard role of docs/infrastructure.md, applied to a real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg2
import pytest

from core.db import connect, migrate
from core.destinations import load_destinations, open_trades_table
from core.dsn import parse_dsn
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def documented_grants() -> str:
    text = (ROOT / "docs" / "infrastructure.md").read_text()
    match = re.search(r"<!-- grants:begin[^>]*-->\s*```sql\n(.*?)```\s*<!-- grants:end -->", text, re.DOTALL)
    assert match, "docs/infrastructure.md has no grants:begin/grants:end sql block"
    return match.group(1)


def destinations_file(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / f"destinations_{len(names)}.toml"
    path.write_text(
        "".join(
            f'[[destinations]]\nname = "{n}"\nkey_id = "PKTEST{i:012d}"\nsecret_key = "s{i}"\nbase_url = "paper"\n\n'
            for i, n in enumerate(names)
        )
    )
    return path


def test_dashboard_role_reads_everything_writes_nothing_and_sees_new_destinations(
    db_dsn: str, settings: Settings, tmp_path: Path
) -> None:
    role = f"ch_dash_{uuid.uuid4().hex[:8]}"
    conn = connect(db_dsn)
    conn.autocommit = True
    migrate(conn, settings, load_destinations(destinations_file(tmp_path, "Alpha"), environ={}))
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        owner = cur.fetchone()[0]
    sql = (
        documented_grants()
        .replace("coldharbour_dashboard", role)
        .replace("DATABASE coldharbour ", f'DATABASE "{parse_dsn(db_dsn).dbname}" ')
        .replace("FOR ROLE coldharbour ", f'FOR ROLE "{owner}" ')
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
        # A destination added after the grants: its tables must be readable too (default privileges).
        migrate(conn, settings, load_destinations(destinations_file(tmp_path, "Alpha", "Beta"), environ={}))
        beta_open = open_trades_table("beta")

        with conn.cursor() as cur:
            cur.execute(f'SET ROLE "{role}"')
            for table in (
                "public.ch_destinations",
                "public.ch_versions",
                "account_activities.heartbeats",
                f"public.{open_trades_table('alpha')}",
                f"public.{beta_open}",
            ):
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone() is not None
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM public.ch_versions")
            cur.execute("RESET ROLE")
            cur.execute(
                "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
                (role,),
            )
            assert cur.fetchone() == (["default_transaction_read_only=on"],)
    finally:
        with conn.cursor() as cur:
            cur.execute("RESET ROLE")
            cur.execute(f'DROP OWNED BY "{role}"')
            cur.execute(f'DROP ROLE "{role}"')
        conn.close()
