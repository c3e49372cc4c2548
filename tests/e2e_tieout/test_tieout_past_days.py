"""The tie-out end to end for the causes that need days behind the account: a broker quirk injected
in the simulator's daily history is named on that day and the day ties out again once the broker
corrects its point; a split the broker applies to shares held overnight before it lists the split's
activities is a corporate action, and ties out once they are listed.

Its own stack (:mod:`bench.stack`), with a three-session history: the broker's daily portfolio
history and the book's end-of-day equity have past days to compare, and the account holds shares
bought before today (Alpaca applies a corporate action before the open and dates it with the day
only, so it meets the positions held overnight). The tie-out runs every three seconds
(``TIEOUT_INTERVAL_S=3``, with the REST budget that needs); prices stand still.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.stack import Stack, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WAIT_S = 90  # liveness bound for the waits below, not a timing assertion
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = StackConfig(destinations=1, history_days=3, web="none", sim_args=("--daily-vol", "0", "--no-fees"),
                         env={"TIEOUT_INTERVAL_S": "3", "REST_BUDGET_CALLS_PER_MIN": "120"}, workers=False)
    with Stack(config) as running:
        text = running.dest_file.read_text().replace("initial_deposit = 100000\n",
                                                      'initial_deposit = 100000\nbenchmark = "none"\n')
        running.dest_file.write_text(text)
        running.start_workers()
        running.wait_ready(WAIT_S)
        yield running


def day_rows(stack: Stack, since: datetime | None = None) -> dict[date, dict[str, Any]]:
    """The latest row of each past day (checked after ``since``)."""
    rows = stack.query(
        """SELECT DISTINCT ON (day) day, status, causes, book_equity, broker_equity, differences::text, checked_at
           FROM public.ch_tieout WHERE destination = %s AND day IS NOT NULL AND checked_at > %s
           ORDER BY day, id DESC""", (stack.slugs[0], since or datetime(2000, 1, 1, tzinfo=UTC)))
    return {r[0]: {"status": r[1], "causes": list(r[2]), "book_equity": r[3], "broker_equity": r[4],
                   "differences": json.loads(r[5])} for r in rows}


def wait_day(stack: Stack, day: date, status: str, since: datetime, cause: str | None = None) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        row = day_rows(stack, since).get(day)
        if row is not None and row["status"] == status and (cause is None or cause in row["causes"]):
            return row
        return None

    try:
        return dict(stack.wait_for(found, WAIT_S, f"{day} {status} {cause or ''}", poll_s=0.3))
    except Exception:
        print("latest day rows:", day_rows(stack, since))
        print(stack.log_tail("workers"))
        raise


def ended_days(stack: Stack) -> dict[date, dict[str, Any]]:
    """The past days once each of them tied out (the history the simulator generated)."""
    today = datetime.now(NY).date()

    def ready() -> dict[date, dict[str, Any]] | None:
        rows = {d: r for d, r in day_rows(stack).items() if d < today}
        if len(rows) >= 2 and all(r["status"] == "tied_out" for r in rows.values()):
            return rows
        return None

    try:
        return dict(stack.wait_for(ready, WAIT_S, "two or more past days tied out", poll_s=0.5))
    except Exception:
        print("day rows:", day_rows(stack))
        print(stack.log_tail("workers"))
        raise


def test_a_repeated_end_of_day_point_is_the_broker_quirk_until_the_broker_corrects_it(stack: Stack) -> None:
    # Arrange: the newest ended day and the one before it, the book's equity moved between them
    rows = ended_days(stack)
    before, last = sorted(rows)[-2:]
    assert rows[last]["book_equity"] != rows[before]["book_equity"], "the quirk needs a day on which the book moved"
    t0 = datetime.now(UTC)

    # Act: the broker's daily history repeats the previous day's equity for the day just ended
    stack.admin("/faults", {"history_repeat_previous_day": True})
    try:
        row = wait_day(stack, last, "explained", t0, "broker_quirk")
    finally:
        t1 = datetime.now(UTC)
        stack.admin("/faults", {"history_repeat_previous_day": False})

    # Assert: named on that day with both figures, never as drift; then tied out once corrected
    equity = next(d for d in row["differences"] if d["scope"] == "day_equity")
    assert equity["cause"] == "broker_quirk"
    assert Decimal(equity["broker"]) == rows[before]["broker_equity"]
    assert Decimal(equity["book"]) == rows[last]["book_equity"]
    assert not [d for d in row["differences"] if d["cause"] == "unexplained" and d["open"]]
    wait_day(stack, last, "tied_out", t1)
    for name in ("simulator", "workers"):
        assert stack.error_lines(name) == [], f"{name} logged errors:\n{stack.log_tail(name)}"


def test_a_split_listed_late_is_a_corporate_action_then_ties_out(stack: Stack) -> None:
    # Arrange: SPY held since the history's first day, every day tied out
    ended_days(stack)
    slug = stack.slugs[0]
    held = stack.open_positions(slug).get("SPY")
    assert held, "the history's accounts hold SPY"
    stack.admin("/faults", {"delay_activity_s": 1e9})  # the position changes before the activity is listed
    t0 = datetime.now(UTC)
    try:
        # Act: a 2-for-1 split of SPY
        stack.admin("/corporate-action", {"type": "split", "symbol": "SPY", "new_rate": 2, "old_rate": 1})

        # Assert: the quantity difference is a corporate action (cost basis kept), never unexplained
        row = wait_now(stack, t0, "explained", "corporate_action")
        qty = next(d for d in row["differences"] if d["scope"] == "position_qty")
        assert (qty["subject"], qty["cause"]) == ("SPY", "corporate_action")
        assert (Decimal(qty["book"]), Decimal(qty["broker"])) == (held, 2 * held)
        assert not [d for d in row["differences"] if d["cause"] == "unexplained" and d["open"]]
    finally:
        t1 = datetime.now(UTC)
        stack.admin("/faults", {"delay_activity_s": 0})

    # Assert: once listed, the book applies it and ties out
    wait_now(stack, t1, "tied_out")
    assert stack.open_positions(slug).get("SPY") == 2 * held
    stored = stack.query("SELECT count(*) FROM account_activities.activities WHERE destination = %s "
                         "AND activity_type = 'SPLIT'", (slug,))[0][0]
    assert stored == 2  # the old shares out, the new ones in


def wait_now(stack: Stack, since: datetime, status: str, cause: str | None = None) -> dict[str, Any]:
    """The first "now" row checked after ``since`` with ``status`` (and ``cause`` among its open causes)."""
    def found() -> dict[str, Any] | None:
        rows = stack.query("""SELECT status, causes, differences::text FROM public.ch_tieout
                              WHERE destination = %s AND day IS NULL AND checked_at > %s ORDER BY id""",
                           (stack.slugs[0], since))
        for st, causes, diffs in rows:
            if st == status and (cause is None or cause in causes):
                return {"status": st, "causes": list(causes), "differences": json.loads(diffs)}
        return None

    try:
        return dict(stack.wait_for(found, WAIT_S, f"now {status} {cause or ''}", poll_s=0.3))
    except Exception:
        print(stack.query("SELECT status, causes, differences::text FROM public.ch_tieout WHERE day IS NULL "
                          "ORDER BY id DESC LIMIT 2"))
        print(stack.log_tail("workers"))
        raise
