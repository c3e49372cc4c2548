"""What the manager needs from a broker, typed (the adapter's records, never raw JSON), and its defaults."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from core.destinations import Destination
from core.settings import Settings
from workers.alpaca import BrokerAccount, BrokerPosition, PortfolioHistory


class BrokerPort(Protocol):
    """The calls the manager makes (:class:`workers.alpaca.BrokerClient` satisfies it)."""

    async def get_account(self) -> BrokerAccount: ...

    async def get_positions(self) -> Sequence[BrokerPosition]: ...

    async def get_portfolio_history(self, *, period: str, timeframe: str) -> PortfolioHistory: ...

    async def close(self) -> None: ...


BrokerFactory = Callable[[Destination, Settings], BrokerPort]


def default_broker(destination: Destination, settings: Settings) -> BrokerPort:
    from workers.alpaca import BrokerClient

    return BrokerClient(destination, settings)


def default_market_open(ts: datetime) -> bool:
    """The NYSE schedule (imported lazily: the calendar is slow to load)."""
    from core import market_schedule

    return market_schedule.is_open(ts)


def always_open(ts: datetime) -> bool:
    """A market that never closes (tests, crypto-only accounts)."""
    return True
