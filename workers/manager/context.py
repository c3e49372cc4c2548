"""What a destination runner is given by the process that owns it (instead of a reference to it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.settings import Settings
from core.snapshots import MarketOpen
from workers.manager.port import BrokerFactory


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerContext:
    """Shared resources and the callbacks a runner uses to tell the process about itself."""

    pool: asyncpg.Pool
    series_pool: asyncpg.Pool | None = None
    """The time-series database's pool when it is a database of its own (else the primary ``pool`` serves)."""
    settings: Settings
    market_open: MarketOpen
    broker_factory: BrokerFactory
    holdings_changed: Callable[[], None]
    """Positions changed: the process re-subscribes the feeds to the held symbols."""
    bar_stats: Callable[[], Mapping[str, Any]]
    """The process's price-bar writer counters (heartbeat ``details.price_bars``)."""
    stalled: Callable[[], str | None]
    """Why the process's shared loops are not making progress (``None`` when they are)."""
