"""reconciliation_drift end to end: tie-out passes computed by :func:`core.tieout.tie_out` and stored by the
manager's own writer (:func:`workers.manager.tieout.store`, with its ``ch_tieout`` NOTIFY), read by
``python -m workers alerts`` from PostgreSQL and delivered to a local webhook receiver.

The passes are built from book and broker figures rather than driven through the simulator: the tie-out
explains every difference the simulator's fault knobs can make (a fill held back is ``fill_not_ingested``,
a fee posted late ``posted_later``, a split held back ``corporate_action``), so no knob makes the
*unexplained* difference this rule is about (the book holding a position the broker never filled).

The rule fires once per subject (the position, the account now, the past account-day), resolves with its
message when a pass ties out, and stays quiet when the drift comes back inside its cool-down.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.tieout import (
    BookDay,
    BookPosition,
    BrokerDay,
    BrokerPositionFigures,
    Cause,
    Scope,
    Status,
    TieOut,
    Tolerances,
    ny_day,
    tie_out,
)
from tests.workers.test_alerts_e2e import events
from tests.workers.test_alerts_support import Receiver, wait_for
from workers.manager.tieout import store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SLUG = "risk"
TOL = Tolerances(position_usd=Decimal("0.01"), account_day_usd=Decimal("1"))
CASH = Decimal("50000")
RULES = """
[[channels]]
name = "hook"
type = "webhook"
url_env = "E2E_HOOK_URL"
secret_env = "E2E_HOOK_SECRET"
timeout_s = 2

[[rules]]
name = "drift"
kind = "reconciliation_drift"
severity = "critical"
cooldown_s = 3600
resolved_message = "the books tie out again"
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "position drift without cool-down"
kind = "reconciliation_drift"
scope = "position"
cooldown_s = 0
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "drift above a million"
kind = "reconciliation_drift"
min_usd = 1000000
destinations = ["Risk"]
channels = ["hook"]
"""


def tie_out_pass(*, phantom_qty: str, day_gap: str) -> TieOut:
    """The book holds ``phantom_qty`` more AAPL than the broker (no order, no corporate action explains it)
    and, yesterday, ``day_gap`` dollars more equity than the broker's daily history."""
    now = datetime.now(UTC)
    yesterday = _yesterday()
    book_qty = Decimal(10) + Decimal(phantom_qty)
    book = [BookPosition(symbol="AAPL", qty=book_qty, avg_entry_price=Decimal(100), mark_price=Decimal(100))]
    broker = [BrokerPositionFigures(symbol="AAPL", qty=Decimal(10), cost_basis=Decimal(1000), market_value=Decimal(1000),
                                    current_price=Decimal(100), asset_class="us_equity")]
    equity = CASH + Decimal(1000)
    # the broker's points move from day to day (a repeated point would be the broker's quirk, not drift)
    days = [BrokerDay(day=yesterday - timedelta(days=1), equity=equity - 10), BrokerDay(day=yesterday, equity=equity)]
    book_days = {d.day: BookDay(day=d.day, equity=d.equity) for d in days}
    book_days[yesterday] = BookDay(day=yesterday, equity=equity + Decimal(day_gap))
    return tie_out(now=now, book_positions=book, broker_positions=broker, book_cash=CASH, broker_cash=CASH,
                   broker_equity=equity, broker_days=days, book_days=book_days, tolerances=TOL)


def drift_subjects(report: TieOut) -> set[str]:
    """The subjects the rule should name: what the tie-out itself left unexplained past its tolerance."""
    out = set()
    for d in [*report.differences, *(x for day in report.days for x in day.differences)]:
        if d.open and d.cause is Cause.UNEXPLAINED:
            is_position = d.scope in (Scope.POSITION_QTY, Scope.POSITION_COST, Scope.POSITION_VALUE)
            out.add(d.subject if is_position else (d.day.isoformat() if d.day else ""))
    return out


def _spawn_alerts(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "workers", "alerts"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _yesterday() -> date:
    """The tie-out's days are New York days."""
    return ny_day(datetime.now(UTC)) - timedelta(days=1)


@pytest.fixture
def alerts_process(tmp_path: Path, db_dsn: str) -> Iterator[tuple[dict[str, str], list[subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield {"tmp": str(tmp_path), "dsn": db_dsn}, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.fixture
async def running(alerts_process: tuple[dict[str, str], list[subprocess.Popen[bytes]]]
                  ) -> AsyncIterator[tuple[Receiver, asyncpg.Pool]]:
    where, procs = alerts_process
    tmp, dsn = Path(where["tmp"]), where["dsn"]
    receiver = await Receiver().start()
    (tmp / "destinations.toml").write_text(
        '[[destinations]]\nname = "Risk"\nkey_id = "PKTEST0001"\nsecret_key = "unused"\nbase_url = "http://127.0.0.1:9"\n')
    (tmp / "alerts.toml").write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(tmp / "no.env"), "POSTGRESQL_LIVE_CONN_STRING": dsn,
                "DESTINATIONS_FILE": str(tmp / "destinations.toml"), "DESTINATIONS_LOCAL_FILE": str(tmp / "x.toml"),
                "ALERT_RULES_FILE": str(tmp / "alerts.toml"), "ALERT_EVAL_INTERVAL_S": "0.2", "HEARTBEAT_SEC": "1",
                "DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
                "TIEOUT_POSITION_TOLERANCE_USD": "0.01", "TIEOUT_ACCOUNT_DAY_TOLERANCE_USD": "1",
                "E2E_HOOK_URL": f"{receiver.url}/hook", "E2E_HOOK_SECRET": "e2e-secret"})
    migrate = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "workers", "migrate"], cwd=ROOT, env=env,
                                      capture_output=True, timeout=120, check=False)
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    log = tmp / "alerts.log"
    procs.append(_spawn_alerts(env, log))
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)

    async def owned() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM account_activities.heartbeats WHERE destination = $1 "
                                        "AND service = 'alerts' AND state = 'running'", SLUG))
    try:
        await wait_for(owned, what="the alerts worker to own the destination", timeout_s=90)
        yield receiver, pool
    finally:
        await pool.close()
        await receiver.stop()
        print(json.dumps({"alerts": log.read_text(errors="replace")[-3000:]}, indent=1))  # shown when it failed


def fired(receiver: Receiver, rule: str) -> list[dict[str, Any]]:
    return events(receiver, rule, "fired")


async def test_drift_fires_per_subject_resolves_when_tied_out_and_keeps_its_cool_down(
        running: tuple[Receiver, asyncpg.Pool]) -> None:
    receiver, pool = running
    # Arrange: a pass that ties out
    tied = tie_out_pass(phantom_qty="0", day_gap="0")
    assert tied.status is Status.TIED_OUT
    await store(pool, SLUG, tied, TOL)

    # Act 1: the book holds 5 AAPL the broker never filled, and yesterday's book equity is $40 above the broker's
    drifting = tie_out_pass(phantom_qty="5", day_gap="40")
    expected = drift_subjects(drifting)
    await store(pool, SLUG, drifting, TOL)
    await wait_for(lambda: {e["subject"] for e in fired(receiver, "drift")} >= expected
                   and bool(fired(receiver, "position drift without cool-down")), what="drift to fire", timeout_s=60)

    # Assert 1: one episode per subject (the position, the account now, the past account-day), naming the figure
    assert drifting.status is Status.DRIFT
    yesterday = _yesterday().isoformat()
    assert expected == {"AAPL", "", yesterday}
    aapl = next(e for e in fired(receiver, "drift") if e["subject"] == "AAPL")
    assert aapl["severity"] == "critical"
    assert "position AAPL: position qty differs by -$500.00 unexplained (broker $10.00, book $15.00)" in aapl["text"]
    assert "tolerance $0.01" in aapl["text"]
    day = next(e for e in fired(receiver, "drift") if e["subject"] == yesterday)
    assert f"account-day {yesterday}" in day["text"]
    assert [e["subject"] for e in fired(receiver, "position drift without cool-down")] == ["AAPL"]

    # Act 2: the next pass ties out
    await store(pool, SLUG, tie_out_pass(phantom_qty="0", day_gap="0"), TOL)
    await wait_for(lambda: len(events(receiver, "drift", "resolved")) == len(expected)
                   and len(events(receiver, "position drift without cool-down", "resolved")) == 1,
                   what="every drift episode to resolve", timeout_s=60)

    # Act 3: the drift comes back: the rule without a cool-down fires again, the other stays quiet
    await store(pool, SLUG, drifting, TOL)
    await wait_for(lambda: len(fired(receiver, "position drift without cool-down")) == 2, what="the second episode",
                   timeout_s=60)

    # Assert: once per episode, resolved with the rule's message; the cool-down held; $1M was never passed
    assert sorted(e["subject"] for e in fired(receiver, "drift")) == sorted(expected)
    assert all(e["text"].endswith("the books tie out again") for e in events(receiver, "drift", "resolved"))
    assert fired(receiver, "drift above a million") == []
    assert not await pool.fetchval("SELECT count(*) FROM public.ch_alerts WHERE rule = 'drift above a million'")
    rows = await pool.fetch("SELECT rule, subject, state FROM public.ch_alerts WHERE rule = 'drift'")
    assert sorted(r["subject"] for r in rows) == sorted(expected)
    assert {r["state"] for r in rows} == {"resolved"}


def test_the_passes_leave_unexplained_what_the_scenario_says() -> None:
    """The scenario itself, judged by the tie-out: guards the end-to-end test against a tie-out that learns
    to explain these differences (the rule would then rightly have nothing to fire on)."""
    yesterday = _yesterday().isoformat()

    assert drift_subjects(tie_out_pass(phantom_qty="5", day_gap="40")) == {"AAPL", "", yesterday}
    assert drift_subjects(tie_out_pass(phantom_qty="0", day_gap="0")) == set()
