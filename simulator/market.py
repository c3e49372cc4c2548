"""Prices and the session clock.

Prices are a seeded random walk per symbol (log-normal steps scaled by the simulated time that
passed, plus a gap at each session open), so the same seed and the same sequence of steps give the
same prices. The session clock follows the NYSE calendar (``exchange_calendars`` XNYS) unless the
simulator runs ``always_open``.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import exchange_calendars as xcals
import pandas as pd

CENT = Decimal("0.01")
SESSION_SECONDS = 6.5 * 3600

# A small, liquid default universe with plausible starting prices.
DEFAULT_UNIVERSE: dict[str, float] = {
    "AAPL": 190.0,
    "MSFT": 410.0,
    "NVDA": 120.0,
    "AMZN": 180.0,
    "GOOGL": 165.0,
    "META": 500.0,
    "TSLA": 220.0,
    "SPY": 540.0,
    "QQQ": 470.0,
    "JPM": 200.0,
}

_ASSET_NS = uuid.UUID("6c0f6f3e-5b51-4a4f-9a43-6f2f1c6d9a10")


def asset_id(symbol: str) -> str:
    """Stable asset UUID for a symbol (same across runs)."""
    return str(uuid.uuid5(_ASSET_NS, symbol))


def to_cents(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(slots=True)
class Quote:
    symbol: str
    price: Decimal
    bid: Decimal
    ask: Decimal
    size: int


class Market:
    """Seeded random-walk prices for a fixed universe of symbols."""

    def __init__(
        self,
        symbols: dict[str, float] | None = None,
        *,
        seed: int = 0,
        daily_vol: float = 0.016,
        gap_vol: float = 0.008,
        spread_bps: float = 1.0,
    ) -> None:
        universe = symbols or DEFAULT_UNIVERSE
        self.symbols: list[str] = list(universe)
        self._log_price = {s: math.log(p) for s, p in universe.items()}
        self._rng = random.Random(f"market:{seed}")
        self._sigma_per_sqrt_s = daily_vol / math.sqrt(SESSION_SECONDS)
        self._gap_vol = gap_vol
        self._spread = spread_bps / 10_000
        self.quotes: dict[str, Quote] = {}
        self.overrides: dict[str, Decimal] = {}
        for s in self.symbols:
            self._requote(s)

    def _requote(self, symbol: str) -> Quote:
        price = self.overrides.get(symbol) or to_cents(math.exp(self._log_price[symbol]))
        price = max(price, CENT)
        half = max(CENT, to_cents(float(price) * self._spread / 2))
        size = 100 * (1 + int(self._rng.random() * 20))
        quote = Quote(symbol, price, max(CENT, price - half), price + half, size)
        self.quotes[symbol] = quote
        return quote

    def step(self, dt_s: float) -> list[Quote]:
        """Advance every symbol by ``dt_s`` simulated seconds; returns the new quotes."""
        sigma = self._sigma_per_sqrt_s * math.sqrt(max(dt_s, 0.0))
        out = []
        for s in self.symbols:
            if s not in self.overrides:
                self._log_price[s] += self._rng.gauss(0.0, sigma) - 0.5 * sigma * sigma
            out.append(self._requote(s))
        return out

    def gap(self) -> None:
        """Overnight gap, applied once at each session open."""
        for s in self.symbols:
            if s not in self.overrides:
                self._log_price[s] += self._rng.gauss(0.0, self._gap_vol)
            self._requote(s)

    def set_price(self, symbol: str, price: Decimal | None) -> None:
        """Pin a symbol's price (tests); ``None`` releases it and the walk continues from there."""
        if price is None:
            pinned = self.overrides.pop(symbol, None)
            if pinned is not None:
                self._log_price[symbol] = math.log(float(pinned))
        else:
            self.overrides[symbol] = price.quantize(CENT)
            self._log_price[symbol] = math.log(float(price))
        self._requote(symbol)

    def price(self, symbol: str) -> Decimal:
        return self.quotes[symbol].price


class SessionCalendar:
    """NYSE regular sessions as UTC (open, close) pairs, looked up by bisection."""

    def __init__(self, start: date, end: date) -> None:
        with warnings.catch_warnings():
            # exchange_calendars 4.13 calls Series.values on tz-aware data, which pandas 3.1 deprecates.
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray", category=Warning)
            cal = xcals.get_calendar("XNYS", start=pd.Timestamp(start), end=pd.Timestamp(end))
            sched = cal.schedule.loc[pd.Timestamp(start) : pd.Timestamp(end)]
        self.sessions: list[tuple[datetime, datetime]] = [
            (o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
            for o, c in zip(sched["open"], sched["close"], strict=True)
        ]
        self._opens = [o for o, _ in self.sessions]

    def session_at(self, ts: datetime) -> tuple[datetime, datetime] | None:
        i = bisect.bisect_right(self._opens, ts) - 1
        if i >= 0:
            o, c = self.sessions[i]
            if o <= ts < c:
                return o, c
        return None

    def is_open(self, ts: datetime) -> bool:
        return self.session_at(ts) is not None

    def next_open(self, ts: datetime) -> datetime:
        i = bisect.bisect_right(self._opens, ts)
        return self.sessions[i][0] if i < len(self.sessions) else ts + timedelta(days=1)

    def next_close(self, ts: datetime) -> datetime:
        for _o, c in self.sessions:
            if c > ts:
                return c
        return ts + timedelta(days=1)

    def sessions_before(self, ts: datetime, n: int) -> list[tuple[datetime, datetime]]:
        """The last ``n`` complete sessions that closed at or before ``ts``."""
        done = [s for s in self.sessions if s[1] <= ts]
        return done[-n:] if n > 0 else []
