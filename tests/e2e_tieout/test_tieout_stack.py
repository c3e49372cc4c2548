"""The tie-out end to end: a fault injected in the simulator, the cause named, the repair, tied out.

One stack for the module (:mod:`bench.stack`: embedded PostgreSQL, simulator, ``python -m workers all``;
no web). The tie-out runs every three seconds here (``TIEOUT_INTERVAL_S=3``) and the ingester re-reads
the REST endpoints every three seconds with a one-second overlap (the tie-out asks for a repair
backfill of the window; the ingester's own passes may read the fill first). Together they need
a larger REST budget than a destination's default 20 calls a minute (``REST_BUDGET_CALLS_PER_MIN``).
Prices stand still (``--daily-vol 0``) so that only the injected faults make differences.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.stack import Stack, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WAIT_S = 60  # liveness bound for the waits below, not a timing assertion
WORKERS_CODE = (
    "import functools, runpy, workers.ingester as m; "
    "m.run_ingester = functools.partial(m.run_ingester, options=m.IngesterOptions("
    "backfill_interval_s=3.0, overlap_s=1.0, confirm_overlap_s=1.0, reconcile_overlap_s=1.0)); "
    "import sys; sys.argv = ['workers', 'all']; runpy.run_module('workers', run_name='__main__')")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = StackConfig(destinations=1, web="none", sim_args=("--daily-vol", "0", "--no-fees"),
                         env={"TIEOUT_INTERVAL_S": "3", "REST_BUDGET_CALLS_PER_MIN": "190"},
                         workers_args=("-c", WORKERS_CODE), workers=False)
    with Stack(config) as running:
        # No benchmark: its first pass fetches years of daily bars, which keeps the simulator busy
        # (a market-data cost unrelated to the tie-out).
        text = running.dest_file.read_text().replace("initial_deposit = 100000\n",
                                                      'initial_deposit = 100000\nbenchmark = "none"\n')
        running.dest_file.write_text(text)
        running.start_workers()
        running.wait_ready(WAIT_S)
        running.admin("/fill", {"account": running.names[0], "symbol": "AAPL", "side": "buy", "qty": "10"})
        wait_status(running, "tied_out", datetime.now(UTC))
        yield running


def now_rows(stack: Stack, since: datetime) -> list[dict[str, Any]]:
    """The "now" rows of the destination checked after ``since``, oldest first."""
    rows = stack.query(
        """SELECT status, causes, differences::text, checked_at FROM public.ch_tieout
           WHERE destination = %s AND day IS NULL AND checked_at > %s ORDER BY id""", (stack.slugs[0], since))
    return [{"status": r[0], "causes": list(r[1]), "differences": json.loads(r[2]), "checked_at": r[3]} for r in rows]


def wait_status(stack: Stack, status: str, since: datetime, cause: str | None = None) -> dict[str, Any]:
    """The first "now" row after ``since`` with ``status`` (and ``cause`` among its open causes)."""
    def found() -> dict[str, Any] | None:
        for row in now_rows(stack, since):
            if row["status"] == status and (cause is None or cause in row["causes"]):
                return row
        return None

    try:
        return dict(stack.wait_for(found, WAIT_S, f"tie-out {status} {cause or ''}", poll_s=0.2))
    except Exception:
        print("latest rows:", now_rows(stack, since)[-3:])
        print(stack.log_tail("workers"))
        print(stack.log_tail("simulator"))
        raise


def faults(stack: Stack, **knobs: Any) -> None:
    stack.admin("/faults", knobs)


def fill(stack: Stack, symbol: str, side: str, qty: str) -> dict[str, Any]:
    order = stack.admin("/fill", {"account": stack.names[0], "symbol": symbol, "side": side, "qty": qty})
    assert order["status"] == "filled"
    return dict(order)


def test_a_dropped_fill_is_named_then_repaired_to_tied_out(stack: Stack) -> None:
    # Arrange: the next fill reaches neither the stream nor, for now, the activities endpoint
    t0 = datetime.now(UTC)
    faults(stack, drop_fill_updates=1, delay_activity_s=86_400)
    order = fill(stack, "MSFT", "buy", "5")

    # Act 1: the broker's orders show the fill, no activity books it
    row = wait_status(stack, "explained", t0, "fill_not_ingested")

    # Assert 1: the position names the cause and how old the fill is
    qty = next(d for d in row["differences"] if d["scope"] == "position_qty")
    assert (qty["subject"], qty["cause"]) == ("MSFT", "fill_not_ingested")
    assert qty["age_s"] is not None
    assert Decimal(qty["broker"]) - Decimal(qty["book"]) == 5

    # Act 2: the activity stays hidden while a later fill moves the ingester's cursor past it
    truth = stack.admin(f"/ground-truth?account={stack.names[0]}")["accounts"][stack.names[0]]
    hidden = [a["id"] for a in truth["activities"] if a.get("order_id") == order["id"]]
    assert hidden, "the simulator booked the fill as an activity"
    faults(stack, hide_activity_ids=hidden, delay_activity_s=0)
    time.sleep(1.5)  # the next fill is dated more than the ingester's one-second overlap later
    fill(stack, "AAPL", "buy", "1")
    stack.wait_for(lambda: stack.open_positions(stack.slugs[0]).get("AAPL") == Decimal(11), WAIT_S, "AAPL booked")
    t1 = datetime.now(UTC)
    wait_status(stack, "explained", t1, "fill_not_ingested")

    # Act 3: the broker lists it again
    t2 = datetime.now(UTC)
    faults(stack, hide_activity_ids=[])
    wait_status(stack, "tied_out", t2)

    # Assert 3: the tie-out asked for repairs of that window (the ingester's own passes may read it first)
    repairs = stack.query("""SELECT reason, rows_read FROM public.ch_backfill_requests
                             WHERE destination = %s AND requested_at > %s AND error IS NULL""", (stack.slugs[0], t0))
    assert any("fill_not_ingested" in reason and rows is not None for reason, rows in repairs), repairs
    assert stack.open_positions(stack.slugs[0]).get("MSFT") == Decimal(5)


def test_a_fee_posted_late_is_explained_then_ties_out(stack: Stack) -> None:
    # Arrange: a fee dated yesterday, posted now, that the activities endpoint does not list yet
    t0 = datetime.now(UTC)
    yesterday = (datetime.now(ZoneInfo("America/New_York")) - timedelta(days=1)).date()
    faults(stack, delay_activity_s=1e9)

    # Act
    stack.admin("/activity", {"account": stack.names[0], "type": "FEE", "amount": "-2.50",
                              "date": yesterday.isoformat(), "description": "REG fee posted late"})

    # Assert: explained by the posting the broker's history shows, then (once listed and read) tied out
    row = wait_status(stack, "explained", t0, "posted_later")
    cash = [d for d in row["differences"] if d["scope"] == "cash"]
    assert [(d["cause"], Decimal(d["amount_usd"])) for d in cash] == [("posted_later", Decimal("-2.50"))]
    t1 = datetime.now(UTC)
    faults(stack, delay_activity_s=0)
    wait_status(stack, "tied_out", t1)
    booked = stack.query("SELECT count(*) FROM account_activities.activities WHERE destination = %s "
                         "AND activity_type = 'FEE'", (stack.slugs[0],))[0][0]
    assert booked == 1


def test_a_price_difference_names_both_prices(stack: Stack) -> None:
    # Arrange: the feed stops, then the broker's price moves
    t0 = datetime.now(UTC)
    stack.admin("/pause", {"paused": True})
    try:
        stack.admin("/price", {"symbol": "AAPL", "price": "999.00"})

        # Act / Assert
        row = wait_status(stack, "explained", t0, "price")
        value = next(d for d in row["differences"] if d["scope"] == "position_value")
        assert value["subject"] == "AAPL"
        assert "999" in value["detail"]
        assert not [d for d in row["differences"] if d["cause"] == "unexplained"]
    finally:
        stack.admin("/price", {"symbol": "AAPL", "price": None})
        stack.admin("/pause", {"paused": False})


def test_a_null_base_value_is_noted_as_a_broker_quirk(stack: Stack) -> None:
    t0 = datetime.now(UTC)
    faults(stack, history_null_base=True)
    try:
        def noted() -> bool:
            return any(d["cause"] == "broker_quirk" and d["subject"] == "base_value"
                       for row in now_rows(stack, t0) for d in row["differences"])

        stack.wait_for(noted, WAIT_S, "the base_value quirk noted", poll_s=0.2)
        assert now_rows(stack, t0)[-1]["status"] in ("tied_out", "explained")  # a note never drifts
    finally:
        faults(stack, history_null_base=False)


def test_the_reconcile_command_prints_the_report(stack: Stack) -> None:
    import subprocess
    import sys

    from bench.stack import ROOT

    out = subprocess.run([sys.executable, "-m", "workers", "reconcile", "--destination", stack.slugs[0],
                          "--since", (datetime.now(UTC) - timedelta(days=3)).date().isoformat()],
                         cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"{stack.names[0]} ({stack.slugs[0]}): ")
    assert "past days:" in out.stdout
    for name in ("simulator", "workers"):
        assert stack.error_lines(name) == [], f"{name} logged errors:\n{stack.log_tail(name)}"
