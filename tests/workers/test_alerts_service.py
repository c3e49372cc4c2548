"""The alerts service in-process against a real database and a real local webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from core.alert_rules import AlertConfig, load_alert_config
from core.destinations import Destination
from core.settings import Settings
from tests.workers.test_alerts_support import Receiver, free_port, wait_for
from tests.workers.test_manager_support import destination, migrate_db
from workers.alerts import AlertOptions, AlertService
from workers.alerts.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER
from workers.alerts.metrics import serve_metrics

SECRET = "whsec-test-0001"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def rules(tmp_path: Path, dests: list[Destination], receiver: Receiver, body: str) -> AlertConfig:
    path = tmp_path / "alerts.toml"
    path.write_text(f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl_env = "HOOK_URL"\nsecret_env = "HOOK_SECRET"\n'
                    f"{body}")
    return load_alert_config(path, dests, {"HOOK_URL": f"{receiver.url}/hook", "HOOK_SECRET": SECRET})


@contextlib.asynccontextmanager
async def running(settings: Settings, dests: list[Destination], config: AlertConfig) -> AsyncIterator[AlertService]:
    service = AlertService(settings, dests, config, options=AlertOptions(eval_interval_s=0.1, delivery_poll_s=0.1))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await wait_for(lambda: len(service.owned) == len(service.destinations), what="ownership")
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def insert_fill(conn: asyncpg.Connection, slug: str, qty: str, price: str, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, side, qty,
               price, raw) VALUES ($1, $2, $3, 'FILL', 'AAPL', 'buy', $4, $5, '{}'::jsonb)""",
        slug, f"x::{uuid.uuid4()}", at, Decimal(qty), Decimal(price))


async def passes(service: AlertService, n: int) -> None:
    """Let ``n`` more evaluation passes run."""
    target = service.counters.evaluations + n
    await wait_for(lambda: service.counters.evaluations >= target, what=f"{n} evaluations")


async def test_fires_once_resolves_once_then_cools_down(settings: Settings, db_dsn: str, tmp_path: Path,
                                                        receiver: Receiver) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    config = rules(tmp_path, [dest], receiver, '[[rules]]\nname = "big fill"\nkind = "large_fill"\n'
                   'threshold_usd = 1000\nwindow_s = 2\ncooldown_s = 3600\nchannels = ["hook", "log"]\n'
                   'resolved_message = "quiet again"\n')
    conn = await asyncpg.connect(db_dsn)
    try:
        async with running(settings, [dest], config) as service:
            now = await conn.fetchval("SELECT now()")
            await insert_fill(conn, dest.slug, "10", "50", now)  # $500: under the limit
            await passes(service, 3)
            assert receiver.received == []

            await insert_fill(conn, dest.slug, "20", "101", now)  # $2,020
            await wait_for(lambda: len(receiver.received) == 1, what="the fired message")
            await passes(service, 5)  # the condition still holds: no second message
            assert len(receiver.received) == 1
            await wait_for(lambda: len(receiver.received) == 2, what="the resolved message")

            await insert_fill(conn, dest.slug, "30", "100", await conn.fetchval("SELECT now()"))  # inside cool-down
            await passes(service, 5)

        fired, resolved = (r.json for r in receiver.received)
        assert (fired["event"], fired["rule"], fired["destination"], fired["severity"]) == (
            "fired", "big fill", "alpha", "warning")
        assert "$2,020.00" in fired["text"]
        assert (resolved["event"], resolved["alert_id"]) == ("resolved", fired["alert_id"])
        assert "quiet again" in resolved["text"]
        first = receiver.received[0]
        mac = hmac.new(SECRET.encode(), first.headers[TIMESTAMP_HEADER].encode() + b"." + first.body, hashlib.sha256)
        assert first.headers[SIGNATURE_HEADER] == f"sha256={mac.hexdigest()}"
        assert len(receiver.received) == 2  # the fill inside the cool-down sent nothing
        rows = await conn.fetch("SELECT state, channels FROM public.ch_alerts")
        assert [(r["state"], r["channels"]) for r in rows] == [("resolved", ["hook", "log"])]
        outbox = await conn.fetch("SELECT channel, event, status FROM public.ch_alert_outbox ORDER BY id")
        assert sorted((r["channel"], r["event"], r["status"]) for r in outbox) == [
            ("hook", "fired", "sent"), ("hook", "resolved", "sent"), ("log", "fired", "sent"), ("log", "resolved", "sent")]
    finally:
        await conn.close()


async def test_failed_delivery_is_retried_and_a_failing_channel_shows_in_health(
        settings: Settings, db_dsn: str, tmp_path: Path, receiver: Receiver) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    config = rules(tmp_path, [dest], receiver, '[[rules]]\nname = "big fill"\nkind = "large_fill"\n'
                   'threshold_usd = 1000\nwindow_s = 600\nchannels = ["hook"]\n'
                   '[[rules]]\nname = "huge fill"\nkind = "large_fill"\nthreshold_usd = 5000\nchannels = ["hook"]\n')
    receiver.fail_next = 2
    conn = await asyncpg.connect(db_dsn)
    try:
        async with running(settings, [dest], config):
            await insert_fill(conn, dest.slug, "20", "101", await conn.fetchval("SELECT now()"))
            await wait_for(lambda: len(receiver.received) == 1, what="delivery after two failures")
            row = await conn.fetchrow("SELECT status, attempts, last_error FROM public.ch_alert_outbox")
            assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)

            receiver.always_fail = True
            await insert_fill(conn, dest.slug, "60", "100", await conn.fetchval("SELECT now()"))  # opens "huge fill"

            async def failing() -> bool:
                state = await conn.fetchval("SELECT state FROM account_activities.heartbeats "
                                            "WHERE destination = 'channel:hook' AND service = 'alerts'")
                return bool(state == "failing")

            await wait_for(failing, what="the channel to show as failing")
        hb = await conn.fetchrow("SELECT last_error, errors FROM account_activities.heartbeats "
                                 "WHERE destination = 'channel:hook'")
        assert hb["last_error"] == "HTTP 500"
        assert hb["errors"] >= 3
        assert receiver.url not in (hb["last_error"] or "")
    finally:
        await conn.close()


async def test_cool_down_survives_a_restart(settings: Settings, db_dsn: str, tmp_path: Path,
                                            receiver: Receiver) -> None:
    """A new process reloads open episodes and resolve times: it neither re-sends nor forgets the cool-down."""
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    config = rules(tmp_path, [dest], receiver, '[[rules]]\nname = "big fill"\nkind = "large_fill"\n'
                   'threshold_usd = 1000\nwindow_s = 600\ncooldown_s = 3600\nchannels = ["hook"]\n')
    conn = await asyncpg.connect(db_dsn)
    try:
        async with running(settings, [dest], config):
            await insert_fill(conn, dest.slug, "20", "101", await conn.fetchval("SELECT now()"))
            await wait_for(lambda: len(receiver.received) == 1, what="the fired message")
        async with running(settings, [dest], config) as second:  # episode still open: nothing new
            await passes(second, 5)
            assert len(receiver.received) == 1
            await conn.execute("DELETE FROM account_activities.activities")  # the condition clears
            await wait_for(lambda: len(receiver.received) == 2, what="the resolved message")
        async with running(settings, [dest], config) as third:  # back inside the cool-down: quiet
            await insert_fill(conn, dest.slug, "20", "101", await conn.fetchval("SELECT now()"))
            await passes(third, 5)
        assert [r.json["event"] for r in receiver.received] == ["fired", "resolved"]
        assert await conn.fetchval("SELECT count(*) FROM public.ch_alerts") == 1
    finally:
        await conn.close()


async def test_due_report_is_written_once_and_sent_and_worker_metrics(
        settings: Settings, db_dsn: str, tmp_path: Path, receiver: Receiver) -> None:
    dests = [destination("Alpha"), destination("Beta")]
    migrate_db(settings, dests)
    local = datetime.now(ZoneInfo(settings.display_timezone)) - timedelta(minutes=1)
    config = rules(tmp_path, dests, receiver, '[[rules]]\nname = "big fill"\nkind = "large_fill"\n'
                   'threshold_usd = 1000\nchannels = ["hook"]\n'
                   f'[[reports]]\nname = "daily"\nperiod = "daily"\nat = "{local:%H:%M}"\nchannels = ["hook"]\n')
    conn = await asyncpg.connect(db_dsn)
    port = free_port()
    stop = asyncio.Event()
    try:
        for slug, equity in (("alpha", "10500"), ("beta", "9800")):
            await conn.execute(f"INSERT INTO public.equity_full_{slug} (ts, equity, net_deposits) VALUES "
                               "(now() - interval '30 hours', 10000, 10000), (now() - interval '2 hours', $1, 10000)",
                               Decimal(equity))
        metrics = asyncio.create_task(serve_metrics(settings, stop, host="127.0.0.1", port=port))
        async with running(settings, dests, config) as service:
            await wait_for(lambda: len(receiver.received) == 3, what="three reports (alpha, beta, all)")
            await insert_fill(conn, "alpha", "20", "101", await conn.fetchval("SELECT now()"))
            await wait_for(lambda: service.counters.fired == 1, what="an alert for the metrics")
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
        async with running(settings, dests, config) as again:  # a restart writes no second copy
            await passes(again, 3)
        stop.set()
        await metrics

        reports = {r.json["destination"]: r.json for r in receiver.received if r.json["event"] == "report"}
        assert set(reports) == {"alpha", "beta", "*"}
        assert "P&L: $500.00 (+5.00%)" in reports["alpha"]["text"]
        assert reports["*"]["summary"]["pnl"] == "300"
        assert await conn.fetchval("SELECT count(*) FROM public.ch_reports") == 3
        assert 'coldharbour_alerts_open{destination="alpha",severity="warning"} 1' in text
        assert "coldharbour_alerts_fired_total{replica=" in text
        assert 'coldharbour_heartbeat_age_seconds{destination="alpha",service="alerts"}' in text
    finally:
        stop.set()
        await conn.close()
