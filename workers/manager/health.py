"""A destination's health: the watchdog (is every loop completing passes, not merely alive?) and the
heartbeat's ``details``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from workers.heartbeat import REPLICA_ID, write_heartbeat
from workers.manager.options import CHECKPOINT_INTERVAL_S, SERVICE, STALL_FACTOR, STALL_HEARTBEATS
from workers.supervise import LoopHealth

if TYPE_CHECKING:
    from workers.manager.runner import DestinationRunner


def stall_limit_s(interval_s: float, heartbeat_sec: float) -> float:
    """How long a loop with this period may go without completing a pass (never under three heartbeats)."""
    return max(STALL_HEARTBEATS * heartbeat_sec, STALL_FACTOR * interval_s)


def runner_intervals_s(settings: Settings) -> dict[str, float]:
    """The period of each of a runner's watched loops (the flush is driven by the process)."""
    return {"activities": settings.closed_sync_sec, "reconcile": settings.closed_sync_sec,
            "account": settings.equity_update_interval_s, "checkpoint": CHECKPOINT_INTERVAL_S,
            "flush": settings.flush_interval_s}


def stall_reason(loops: Mapping[str, LoopHealth], intervals_s: Mapping[str, float], *, now_mono: float,
                 started_mono: float, heartbeat_sec: float) -> str | None:
    """``"name: no progress for N s (last error)"`` of the first loop past its limit; ``None`` when all progress.

    Only loops with an interval are watched; before its first pass a loop is measured from ``started_mono``.
    """
    for name in sorted(intervals_s):
        health = loops.get(name)
        last_ok = health.last_ok_monotonic if health is not None else None
        silent_s = now_mono - (last_ok if last_ok is not None else started_mono)
        if silent_s > stall_limit_s(intervals_s[name], heartbeat_sec):
            why = f" ({health.last_error})" if health is not None and health.last_error else ""
            return f"{name}: no progress for {silent_s:.0f}s{why}"
    return None


def heartbeat_details(runner: DestinationRunner, stalled: str | None) -> dict[str, Any]:
    """The heartbeat's ``details``: counters, loop progress, reconciliation, feed and bar figures."""
    feed = runner.feed
    return {
        "replica": REPLICA_ID,
        "stats": runner.stats.as_dict(exclude=frozenset()),
        "loops": {name: h.as_dict() for name, h in sorted(runner.loops.items())},
        "stalled": stalled,
        "qty_mismatch": {s: [str(a), str(b)] for s, (a, b) in sorted(runner.mismatch.items())},
        "stale_symbols": sorted(s for s, m in runner.current_marks(time.monotonic_ns()).items() if m.stale),
        "open_positions": len(runner.positions),
        "fills": runner.book.fill_count,
        "last_seq": runner.last_seq,
        "cash_offset": str(runner.cash.offset),
        "broker_cash": None if runner.broker_cash is None else str(runner.broker_cash),
        "broker_equity": None if runner.broker_equity is None else str(runner.broker_equity),
        "price_feed": asdict(feed.stats) if feed is not None else None,
        "price_feed_last_tick_age_s": feed.last_tick_age_s() if feed is not None else None,
        "price_bars": {**runner.ctx.bar_stats(), "late": feed.bars.late if feed is not None else 0,
                       "ignored": feed.bars.ignored if feed is not None else 0},
        "pos_version": runner.pos_version,
        "closed_version": runner.closed_version,
    }


async def write_runner_heartbeat(runner: DestinationRunner, state: str) -> None:
    """The runner's heartbeat row; ``stalled`` (with the reason) when a loop makes no progress."""
    runner.stats.heartbeats += 1
    stalled = runner.stall_reason(time.monotonic()) if state == "running" else None
    last = runner.last_snapshot_ts
    lag = (datetime.now(UTC) - last).total_seconds() if last else None
    await write_heartbeat(runner.ctx.pool, runner.settings.account_schema, runner.slug, SERVICE,
                          state="stalled" if stalled else state, last_event_at=runner.last_fill_at, lag_s=lag,
                          rows_ingested=runner.stats.fills_applied, errors=runner.stats.errors,
                          last_error=f"stalled: {stalled}" if stalled else runner.stats.last_error,
                          details=heartbeat_details(runner, stalled))
