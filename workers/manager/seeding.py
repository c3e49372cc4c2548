"""The runner's equity points it does not stamp live: the first-run seed from the broker's daily portfolio
history, and the gap a take-over or restart left."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.snapshots import DrawdownTracker, SnapshotSource
from workers.alpaca.budget import Priority, spending
from workers.manager.seed import gap_points, seed_points

if TYPE_CHECKING:
    from workers.manager.runner import DestinationRunner


async def seed_from_history(runner: DestinationRunner) -> None:
    """Write the points :func:`~workers.manager.seed.seed_points` makes of the broker's history (first run)."""
    if runner.broker is None:
        return
    # A catch-up for the REST budget: until this one call lands the destination has no equity curve at
    # all. At the reconcile priority, behind the periodic reads, it waited ~2 min on a 20-a-minute budget;
    # as a gap repair alone, ~1 min (the ingester's start-up backfill had filled the window at the
    # raised rate). So it is first in line and may use the catch-up rate, shown as such on Health.
    budget = getattr(runner.broker, "budget", None)
    with spending(Priority.GAP_REPAIR), (budget.catching_up("equity seed") if budget else contextlib.nullcontext()):
        history = await runner.broker.get_portfolio_history(period="1A", timeframe="1D")
    ledger = runner.ledger
    first_deposit = min((t for t, _ in ledger.deposit_events), default=None)
    first_entry = min((p.entry_time for p in runner.positions.values()), default=None)
    tracker = DrawdownTracker()
    baseline = runner.deposit_baseline
    snaps = seed_points(history, now=datetime.now(UTC), tracker=tracker,
                        deposits_until=lambda ts: ledger.deposits_until(ts, baseline),
                        initial_deposit=runner.dest.initial_deposit, deposit_baseline=baseline,
                        first_seen=first_deposit or first_entry)
    if snaps:
        await runner.write_equity(snaps)
        runner.tracker.absorb(tracker)
        runner.log.info("dest=%s seeded %d equity points from portfolio history", runner.slug, len(snaps))


async def refill_gap(runner: DestinationRunner, now: datetime) -> None:
    """After a take-over or restart: the grid instants missed while nobody owned the destination.

    Valued with the current book and marks (no price history is stored): exact for cash and
    deposits, approximate for market value when prices moved during the gap.
    """
    assert runner.last_snapshot_ts is not None
    points = gap_points(runner.last_snapshot_ts, now, snapshot_sec=runner.settings.snapshot_sec,
                        market_open=runner.ctx.market_open)
    if not points:
        return
    inserted = await runner.snapshot(points, time.monotonic_ns(), SnapshotSource.GAP)
    runner.stats.gap_snapshots += inserted
    runner.log.info("dest=%s refilled %d missed snapshots", runner.slug, inserted)
