"""Prices, the bars they leave behind, and the session clock.

Prices are a seeded random walk per equity and crypto symbol (log-normal steps scaled by the
simulated time that passed, plus a gap at each session open for equities), so the same seed and
the same sequence of steps give the same prices. Option premiums follow their underlying (see
:func:`simulator.instruments.option_price`). Every quote is also folded into one-minute OHLCV bars
(the market-data endpoint serves them). The session clock is the NYSE calendar of
``core.market_schedule``.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from core import market_schedule
from simulator.instruments import PRE_MARKET_OPEN, AssetClass, Instrument, option_price, parse_instrument
from simulator.wire import CENT, NY

SESSION_SECONDS = 6.5 * 3600
CRYPTO_VOL_FACTOR = 2.5  # crypto moves more than the equity universe, around the clock

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
CRYPTO_UNIVERSE: dict[str, float] = {"BTC/USD": 64_000.0, "ETH/USD": 3_100.0}

_ASSET_NS = uuid.UUID("6c0f6f3e-5b51-4a4f-9a43-6f2f1c6d9a10")


def asset_id(symbol: str) -> str:
    """Stable asset UUID for a symbol (same across runs)."""
    return str(uuid.uuid5(_ASSET_NS, symbol))


def to_cents(value: float) -> Decimal:
    """Round half up to the cent (integer arithmetic: this runs for every quote)."""
    return Decimal(math.floor(value * 100 + 0.5)).scaleb(-2)


@dataclass(slots=True)
class Quote:
    symbol: str
    price: Decimal
    bid: Decimal
    ask: Decimal
    size: int


@dataclass(slots=True)
class Bar:
    """One minute of one symbol, starting at ``ts_s`` (Unix seconds)."""

    ts_s: int
    o: Decimal
    h: Decimal
    low: Decimal
    c: Decimal
    v: int
    n: int = 1
    vw_sum: float = 0.0  # Σ price × size, for the bar's VWAP (a float: it is only ever shown as one)

    @property
    def t(self) -> datetime:
        return datetime.fromtimestamp(self.ts_s, UTC)


class Market:
    """Seeded random-walk prices for a universe of equities, crypto pairs and option contracts."""

    def __init__(
        self,
        symbols: dict[str, float] | None = None,
        *,
        seed: int = 0,
        daily_vol: float = 0.016,
        gap_vol: float = 0.008,
        spread_bps: float = 1.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        universe = symbols or DEFAULT_UNIVERSE
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.instruments: dict[str, Instrument] = {}
        self.symbols: list[str] = []
        self._log_price: dict[str, float] = {}
        self._rng = random.Random(f"market:{seed}")
        self._sigma_per_sqrt_s = daily_vol / math.sqrt(SESSION_SECONDS)
        self._gap_vol = gap_vol
        self._spread = spread_bps / 10_000
        self.quotes: dict[str, Quote] = {}
        self.overrides: dict[str, Decimal] = {}
        self.bars: dict[str, list[Bar]] = {}
        self.watched: set[str] = set()  # option contracts held or ordered: re-priced every step
        self.adjustments: list[tuple[str, datetime, str, Decimal]] = []  # (symbol, at, "split"/"dividend", factor)
        self.record_bars = False  # the opening quotes are no trade (a history may start before "now")
        for s, p in universe.items():
            self.add_symbol(s, p)
        self.record_bars = True

    # ------------------------------------------------------------------ universe
    def add_symbol(self, symbol: str, price: float) -> Instrument:
        inst = parse_instrument(symbol)
        self.instruments[symbol] = inst
        if symbol not in self.symbols:
            self.symbols.append(symbol)
        if inst.asset_class is not AssetClass.US_OPTION:
            self._log_price[symbol] = math.log(price)
        self._requote(symbol)
        return inst

    def remove_symbol(self, symbol: str) -> None:
        """Delist (a merger's target): no more quotes; its bars stay for the history endpoint."""
        self.symbols.remove(symbol)
        self.watched.discard(symbol)
        self.quotes.pop(symbol, None)
        self._log_price.pop(symbol, None)
        self.overrides.pop(symbol, None)

    def rename(self, old: str, new: str) -> None:
        """A symbol change: the walk and the bar history continue under the new symbol."""
        self.symbols[self.symbols.index(old)] = new
        self.bars[new] = self.bars.pop(old, [])  # history follows the new symbol, as Alpaca's data does
        self.adjustments = [(new if s == old else s, t, k, f) for s, t, k, f in self.adjustments]
        self.instruments[new] = parse_instrument(new)
        self._log_price[new] = self._log_price.pop(old)
        if old in self.overrides:
            self.overrides[new] = self.overrides.pop(old)
        self.quotes.pop(old, None)
        self._requote(new)

    def scale(self, symbol: str, factor: Decimal) -> None:
        """Multiply a price by ``factor`` (a split divides it by the split ratio)."""
        if symbol in self.overrides:
            self.overrides[symbol] = (self.overrides[symbol] * factor).quantize(CENT)
        self._log_price[symbol] += math.log(float(factor))
        self._requote(symbol)

    def record_split(self, symbol: str, at: datetime, ratio: Decimal) -> None:
        self.adjustments.append((symbol, at, "split", ratio))

    def record_dividend(self, symbol: str, at: datetime, per_share: Decimal) -> None:
        """Dividend adjustment factor for earlier bars: 1 − dividend / the price before it."""
        price = self.quotes[symbol].price if symbol in self.quotes else Decimal(0)
        if price > 0:
            self.adjustments.append((symbol, at, "dividend", 1 - per_share / price))

    def of_class(self, *classes: AssetClass) -> list[str]:
        return [s for s in self.symbols if self.instruments[s].asset_class in classes]

    # ------------------------------------------------------------------ quotes
    def _requote(self, symbol: str, minute: int | None = None) -> Quote:
        inst = self.instruments[symbol]
        option = inst.asset_class is AssetClass.US_OPTION
        price = self.overrides.get(symbol)
        if price is None:
            if option:
                assert inst.underlying is not None
                under = self.quotes[inst.underlying].price if inst.underlying in self.quotes else Decimal(0)
                value = option_price(inst, under, self.now())
            else:
                value = math.exp(self._log_price[symbol])
            price = to_cents(value) if value >= 0.01 else CENT
        # half the spread in cents, at least one (crypto and options quote wider than equities)
        spread = self._spread if inst.asset_class is AssetClass.US_EQUITY else self._spread * 5
        half = Decimal(max(1, math.floor(float(price) * spread * 50 + 0.5))).scaleb(-2)
        size = 100 * (1 + int(self._rng.random() * 20))
        bid = price - half
        quote = Quote(symbol, price, bid if bid >= CENT else CENT, price + half, size)
        self.quotes[symbol] = quote
        if self.record_bars and not option:  # bars are served for stocks
            self._record(quote, self._minute() if minute is None else minute)
        return quote

    def refresh(self, symbol: str) -> Quote:
        """A current quote (an option nobody watches is priced on demand, not every step)."""
        return self._requote(symbol) if self.instruments[symbol].asset_class is AssetClass.US_OPTION else self.quotes[symbol]

    def _minute(self) -> int:
        return int(self.now().timestamp()) // 60 * 60

    def _record(self, q: Quote, minute_s: int) -> None:
        series = self.bars.get(q.symbol)
        if series is None:
            series = self.bars[q.symbol] = []
        if series and series[-1].ts_s == minute_s:
            bar = series[-1]
            bar.h, bar.low, bar.c = max(bar.h, q.price), min(bar.low, q.price), q.price
            bar.v += q.size
            bar.n += 1
            bar.vw_sum += float(q.price) * q.size
        elif not series or series[-1].ts_s < minute_s:
            series.append(Bar(minute_s, q.price, q.price, q.price, q.price, q.size, 1, float(q.price) * q.size))

    def step(self, dt_s: float, classes: Iterable[AssetClass] | None = None) -> list[Quote]:
        """Advance the symbols of ``classes`` (default: all) by ``dt_s`` simulated seconds; options
        of a moving underlying are re-priced. Returns the new quotes."""
        moving = set(classes) if classes is not None else set(AssetClass)
        sigma = self._sigma_per_sqrt_s * math.sqrt(max(dt_s, 0.0))
        minute = self._minute()
        out = []
        for s in list(self.symbols):
            inst = self.instruments[s]
            if inst.asset_class not in moving or (inst.asset_class is AssetClass.US_OPTION and s not in self.watched):
                continue
            if inst.asset_class is not AssetClass.US_OPTION and s not in self.overrides:
                sig = sigma * (CRYPTO_VOL_FACTOR if inst.asset_class is AssetClass.CRYPTO else 1.0)
                self._log_price[s] += self._rng.gauss(0.0, sig) - 0.5 * sig * sig
            out.append(self._requote(s, minute))
        return out

    def gap(self) -> None:
        """Overnight gap of the equities, applied once at each session open."""
        for s in self.of_class(AssetClass.US_EQUITY):
            if s not in self.overrides:
                self._log_price[s] += self._rng.gauss(0.0, self._gap_vol)
            self._requote(s)
        for s in self.watched:
            self._requote(s)

    def set_price(self, symbol: str, price: Decimal | None) -> None:
        """Pin a symbol's price (tests); ``None`` releases it and the walk continues from there."""
        if price is None:
            pinned = self.overrides.pop(symbol, None)
            if pinned is not None and symbol in self._log_price:
                self._log_price[symbol] = math.log(float(pinned))
        else:
            self.overrides[symbol] = price.quantize(CENT)
            if symbol in self._log_price:
                self._log_price[symbol] = math.log(float(price))
        self._requote(symbol)
        for s in self.of_class(AssetClass.US_OPTION):
            if self.instruments[s].underlying == symbol:
                self._requote(s)

    def price(self, symbol: str) -> Decimal:
        return self.quotes[symbol].price


class SessionCalendar:
    """NYSE regular sessions (from ``core.market_schedule``) as UTC (open, close) pairs, looked up by
    bisection, plus the extended-hours window equities may trade in."""

    def __init__(self, start: date, end: date) -> None:
        self.sessions: list[tuple[datetime, datetime]] = []
        for day in market_schedule.sessions_between(start, end):
            s = market_schedule.session(day)
            if s is not None:
                self.sessions.append((s.open, s.close))
        self._opens = [o for o, _ in self.sessions]
        self._by_day = {o.astimezone(NY).date(): (o, c) for o, c in self.sessions}

    def session_at(self, ts: datetime) -> tuple[datetime, datetime] | None:
        i = bisect.bisect_right(self._opens, ts) - 1
        if i >= 0:
            o, c = self.sessions[i]
            if o <= ts < c:
                return o, c
        return None

    def is_open(self, ts: datetime) -> bool:
        return self.session_at(ts) is not None

    def is_session_day(self, day: date) -> bool:
        return day in self._by_day

    def is_extended(self, ts: datetime) -> bool:
        """Pre-market, regular or after hours: 04:00 to 20:00 New York on a session day (a half day's
        after hours end four hours after its early close)."""
        local = ts.astimezone(NY)
        session = self._by_day.get(local.date())
        if session is None:
            return False
        return datetime.combine(local.date(), PRE_MARKET_OPEN, NY) <= ts < session[1] + timedelta(hours=4)

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
