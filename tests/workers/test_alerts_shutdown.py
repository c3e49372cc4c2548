"""A stopped alerts service leaves no connection and no advisory lock behind (the reports lock included).

The reports lock lives on its own connection; it was never closed on stop, so the lock stayed held (a
standby could not take the reports over until the process exited) and the garbage collector later
found the open socket. Its ``ResourceWarning``, raised inside whatever ``ast.parse`` was running (pytest
rewriting a module imported by a later test), made CPython 3.11.7 fail that parse with "AST constructor
recursion depth mismatch" (issue 19).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from core.settings import Settings
from tests.workers.test_alerts_service import rules, running
from tests.workers.test_alerts_support import Receiver, wait_for
from tests.workers.test_manager_support import destination, migrate_db

ADVISORY_LOCKS = """SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
OTHER_SESSIONS = """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()"""


async def test_stopping_the_service_closes_the_reports_lock_connection(
        settings: Settings, db_dsn: str, tmp_path: Path) -> None:
    # Arrange: one destination and a daily report, so the reports lock is taken on its own connection
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    receiver = await Receiver().start()
    local = datetime.now(ZoneInfo(settings.display_timezone)) - timedelta(minutes=1)
    config = rules(tmp_path, [dest], receiver,
                   f'[[reports]]\nname = "daily"\nperiod = "daily"\nat = "{local:%H:%M}"\nchannels = ["hook"]\n')
    conn = await asyncpg.connect(db_dsn)
    try:
        async with running(settings, [dest], config) as service:
            # no rule, so no destination is served: the one advisory lock is the reports lock
            await wait_for(lambda: _count(conn, ADVISORY_LOCKS, at_least=1), what="the reports lock held")
        # Act: leaving the context stopped the service and waited for it. ``service`` is still referenced,
        # so a leaked connection cannot be closed behind our back by the garbage collector.
        assert not service.owned  # every destination was handed back

        # Assert: the locks are released and no session of the service is left
        await wait_for(lambda: _count(conn, ADVISORY_LOCKS, at_most=0), what="no advisory lock left", timeout_s=10)
        await wait_for(lambda: _count(conn, OTHER_SESSIONS, at_most=0), what="no other session left", timeout_s=10)
    finally:
        await conn.close()
        await receiver.stop()


async def _count(conn: asyncpg.Connection, sql: str, *, at_least: int | None = None, at_most: int | None = None) -> bool:
    n = int(await conn.fetchval(sql))
    return (at_least is None or n >= at_least) and (at_most is None or n <= at_most)
