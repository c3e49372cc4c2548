"""The read side of strategies and benchmarks: per-strategy books from the round trips and their orders.

- **Attribution** (:mod:`core.strategies`): each destination's orders (id, client order id, parent,
  the order it replaces) are attributed once per data version; a round trip takes its opening
  order's strategy, an open position its ``entry_order_id``'s.
- **Books** (:func:`daily_book`, pure): per business day (New York dates; a weekend's exits count on
  the Friday before) the realized net P&L of the round trips that closed, the unrealized P&L of
  what is still open (on the last day), and the strategy's **capital**: its configured ``capital``
  or, by default, its **gross exposure**, the entry notional of every round trip open at any time
  that day (``|qty × entry price × multiplier|``) plus the open positions'. The day's return is
  P&L / capital (0 without capital), so deposits, withdrawals and the size of the account never
  move it: the series is cash-flow neutral by construction. Returns are clipped above -100%.
- **Benchmarks**: daily closes from ``public.benchmark_bars`` (the workers' REST fetch) and, for the
  days the price feed's one-minute bars cover, the last bar at or before 16:00 New York of
  ``public.price_bars``. Strategy and benchmark are aligned by New York date (:func:`by_ny_day`),
  so an early close or a UTC/local stamp cannot move a day.

Everything is memoised per the server's data versions and the published rules (docs/strategies.md).
The large objects (each destination's attributed round trips, the order attribution, the books) are
held per process (:func:`local_memo`) like the equity series, not in the shared cache: pickling a
100,000-row frame in and out of it on every hit would cost more than the callback's whole budget.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from core import benchmark as bm
from core.destinations import DEFAULT_BENCHMARK, closed_trades_table, open_trades_table, slugify
from core.instruments import instrument_for
from core.schema import quote_ident
from core.strategies import UNATTRIBUTED, OrderLink, StrategyRule, attribute_orders, trip_strategy
from dashboard import analytics
from dashboard.db import f8

if TYPE_CHECKING:
    from dashboard.queries import ReadModel

log = logging.getLogger(__name__)
T = TypeVar("T")
NY = "America/New_York"
LOCAL_MAX_ENTRIES = {"frames": 24, "views": 256}
"""Per-process LRU sizes: frames (a destination's round trips, ~20 MB per 100,000) and drawn views."""
CONFIG_TTL_S = 30
BENCHMARK_TTL_S = 300
TRADE_COLUMNS = ("trade_id", "symbol", "direction", "qty", "entry_price", "exit_price", "gross_pl", "fees", "net_pl",
                 "return_pct", "holding_s", "exit_reason", "entry_order_id", "exit_order_id")
BOOK_COLUMNS = ("realized", "unrealized", "pnl", "capital", "ret", "cum_pnl", "growth")


@dataclass(frozen=True, slots=True)
class StrategyKey:
    """A strategy as the pages name it: its name and the URL-safe key of ``/strategy/<key>``."""

    name: str
    key: str


def strategy_key(name: str) -> str:
    return slugify(name) or "s_" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest()


# ----------------------------------------------------------------------------- per-process memo


class _Local:
    """One model's per-process LRU memos (keys hold the server's versions, so nothing is ever stale)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, OrderedDict[Hashable, Any]] = {k: OrderedDict() for k in LOCAL_MAX_ENTRIES}


_LOCAL: weakref.WeakKeyDictionary[Any, _Local] = weakref.WeakKeyDictionary()
_LOCAL_LOCK = threading.Lock()


def local_memo(model: ReadModel, kind: str, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``key`` in this process, the ``LOCAL_MAX_ENTRIES[kind]`` newest kept.

    Two threads missing one key at once both compute it (the same value): no lock is held while computing.
    """
    with _LOCAL_LOCK:
        store = _LOCAL.get(model)
        if store is None:
            store = _LOCAL[model] = _Local()
    entries = store.entries[kind]
    with store.lock:
        if key in entries:
            entries.move_to_end(key)
            return entries[key]  # type: ignore[no-any-return]
    value = compute()
    with store.lock:
        entries[key] = value
        while len(entries) > LOCAL_MAX_ENTRIES[kind]:
            entries.popitem(last=False)
    return value


# ----------------------------------------------------------------------------- configuration


def rules(model: ReadModel) -> tuple[StrategyRule, ...]:
    """The rules the workers published (``ch_strategy_rules``); none before they have run."""

    def load() -> tuple[StrategyRule, ...]:
        try:
            rows = model.rows("SELECT rule FROM public.ch_strategy_rules ORDER BY position")
        except Exception:  # noqa: BLE001 - not migrated yet: no rules
            log.debug("ch_strategy_rules not readable", exc_info=True)
            return ()
        out = []
        for r in rows:
            raw = r["rule"] if isinstance(r["rule"], dict) else json.loads(r["rule"])
            out.append(StrategyRule.from_json(raw))
        return tuple(out)

    return model.memo(("strategy-rules",), load, timeout_s=CONFIG_TTL_S)


def rules_token(model: ReadModel) -> str:
    text = json.dumps([r.as_json() for r in rules(model)], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def benchmarks(model: ReadModel) -> dict[str, str | None]:
    """``slug -> benchmark symbol`` (``None``: none) as published; a destination not listed gets SPY."""

    def load() -> dict[str, str | None]:
        try:
            rows = model.rows("SELECT slug, symbol FROM public.ch_benchmarks")
        except Exception:  # noqa: BLE001 - not migrated yet
            return {}
        return {r["slug"]: r["symbol"] for r in rows}

    return model.memo(("benchmarks",), load, timeout_s=CONFIG_TTL_S)


def benchmark_of(model: ReadModel, slug: str) -> str | None:
    return benchmarks(model).get(slug, DEFAULT_BENCHMARK)


# ----------------------------------------------------------------------------- attribution


def _frame(model: ReadModel, sql: str, **dtypes: Any) -> pd.DataFrame:
    data = model._copy_out(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)")
    return pd.read_csv(io.BytesIO(data), dtype=dtypes or None, keep_default_na=False, na_values=[""])


def order_strategies(model: ReadModel, slug: str, need: Iterable[Any] = ()) -> dict[str, str]:
    """``order_id -> strategy`` of every order of ``slug``, per closed version and rules; read again (once
    per such set) when an order id in ``need`` is not in it yet.

    Not per positions version: that one moves with every mark of a live account, and reading and
    attributing every order again each time (~2 s at 200,000 orders) is what the pages cannot afford.
    A new position's opening order is then the only reason to read them again before the next close.
    """
    v = model.current(slug)
    the_rules = rules(model)

    def load() -> dict[str, str]:
        schema = quote_ident(model.account_schema)
        frame = _frame(model, f"""SELECT order_id::text AS o, client_order_id AS c, symbol AS s,
                                          parent_order_id::text AS p, raw->>'replaces' AS r
                                   FROM {schema}.orders WHERE destination = '{slug}'""",
                       o=str, c=str, s=str, p=str, r=str)
        frame = frame.astype(object).where(frame.notna(), None)
        links = [OrderLink(o, c, s, p, r) for o, c, s, p, r in frame.itertuples(index=False, name=None)]
        return attribute_orders(the_rules, slug, links)

    key = ("order-strategies", slug, v.closed, rules_token(model))
    known = local_memo(model, "frames", key, load)
    missing = frozenset(o for o in need if isinstance(o, str) and o and o not in known)
    return local_memo(model, "frames", (*key, missing), load) if missing else known


def _multiplier(symbols: pd.Series) -> np.ndarray:
    unique = {s: float(instrument_for(s).multiplier) if _parses(s) else 1.0 for s in symbols.unique()}
    out: np.ndarray = symbols.map(unique).to_numpy(dtype=float)
    return out


def _parses(symbol: str) -> bool:
    try:
        instrument_for(symbol)
    except Exception:  # noqa: BLE001 - a symbol the instrument parser refuses is counted as a share
        return False
    return True


def trades(model: ReadModel, slug: str) -> pd.DataFrame:
    """``slug``'s round trips with their ``strategy`` (and ``destination``), oldest exit first."""
    v = model.current(slug)
    token = rules_token(model)

    def load() -> pd.DataFrame:
        ct = quote_ident(closed_trades_table(slug))
        numbers = ", ".join(f"{f8(c)} AS {c}" for c in ("qty", "entry_price", "exit_price", "gross_pl", "fees",
                                                         "net_pl", "return_pct", "holding_s"))
        frame = _frame(model, f"""SELECT trade_id, symbol, direction, exit_reason, entry_order_id::text AS entry_order_id,
                                          exit_order_id::text AS exit_order_id,
                                          (extract(epoch FROM entry_time) * 1000000)::int8 AS entry_us,
                                          (extract(epoch FROM exit_time) * 1000000)::int8 AS exit_us, {numbers}
                                   FROM public.{ct} ORDER BY exit_time, trade_id""",
                       trade_id=str, symbol=str, direction=str, exit_reason=str, entry_order_id=str, exit_order_id=str)
        frame["entry_time"] = pd.to_datetime(frame.pop("entry_us") * 1000, utc=True)
        frame["exit_time"] = pd.to_datetime(frame.pop("exit_us") * 1000, utc=True)
        by_order = order_strategies(model, slug, frame["entry_order_id"])
        frame["strategy"] = [trip_strategy(by_order, o if isinstance(o, str) else None)
                             for o in frame["entry_order_id"]]
        frame["destination"] = slug
        frame["multiplier"] = _multiplier(frame["symbol"]) if len(frame) else np.zeros(0)
        return frame

    return local_memo(model, "frames", ("strategy-trades", slug, v.closed, token), load)


def open_positions(model: ReadModel, slug: str) -> pd.DataFrame:
    """``slug``'s open positions with their ``strategy`` (the opening order's)."""
    v = model.current(slug)

    def load() -> pd.DataFrame:
        ot = quote_ident(open_trades_table(slug))
        frame = _frame(model, f"""SELECT symbol, side, entry_order_id::text AS entry_order_id,
                                          (extract(epoch FROM entry_time) * 1000000)::int8 AS entry_us,
                                          {f8('qty')} AS qty, {f8('avg_entry_price')} AS avg_entry_price,
                                          {f8('market_value')} AS market_value, {f8('unrealized_pl')} AS unrealized_pl
                                   FROM public.{ot} ORDER BY symbol""",
                       symbol=str, side=str, entry_order_id=str)
        frame["entry_time"] = pd.to_datetime(frame.pop("entry_us") * 1000, utc=True)
        by_order = order_strategies(model, slug, frame["entry_order_id"])
        frame["strategy"] = [trip_strategy(by_order, o if isinstance(o, str) else None)
                             for o in frame["entry_order_id"]]
        frame["destination"] = slug
        frame["multiplier"] = _multiplier(frame["symbol"]) if len(frame) else np.zeros(0)
        return frame

    return local_memo(model, "frames", ("strategy-open", slug, v.pos, rules_token(model)), load)


def data_token(model: ReadModel, slugs: Sequence[str]) -> tuple[Any, ...]:
    """What every strategy figure over ``slugs`` depends on: their closed/pos versions and the rules."""
    return (tuple((s, model.current(s).closed, model.current(s).pos) for s in slugs), rules_token(model))


def all_trades(model: ReadModel, slugs: Sequence[str]) -> pd.DataFrame:
    def load() -> pd.DataFrame:
        frames = [f for f in (trades(model, s) for s in slugs) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=[*TRADE_COLUMNS, "strategy", "destination", "entry_time", "exit_time", "multiplier"])

    return local_memo(model, "frames", ("all-trades", data_token(model, slugs)), load)


def all_open(model: ReadModel, slugs: Sequence[str]) -> pd.DataFrame:
    def load() -> pd.DataFrame:
        frames = [f for f in (open_positions(model, s) for s in slugs) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["symbol", "side", "qty", "avg_entry_price", "market_value", "unrealized_pl", "strategy",
                     "destination", "entry_time", "multiplier"])

    return local_memo(model, "frames", ("all-open", data_token(model, slugs)), load)


def strategy_list(model: ReadModel, slugs: Sequence[str]) -> list[StrategyKey]:
    """Configured strategies first (in order), then names only the data has (templated patterns), then
    unattributed when anything is."""
    return local_memo(model, "views", ("strategy-list", data_token(model, slugs)),
                      lambda: _strategy_list(model, slugs))


def _strategy_list(model: ReadModel, slugs: Sequence[str]) -> list[StrategyKey]:
    seen: dict[str, None] = {}
    for r in rules(model):
        if "{" not in r.name:
            seen.setdefault(r.name)
    extra: set[str] = set()
    for s in slugs:
        extra |= set(trades(model, s)["strategy"].unique()) | set(open_positions(model, s)["strategy"].unique())
    for name in sorted(extra - {UNATTRIBUTED}):
        seen.setdefault(name)
    if UNATTRIBUTED in extra:
        seen.setdefault(UNATTRIBUTED)
    return [StrategyKey(n, strategy_key(n)) for n in seen]


# ----------------------------------------------------------------------------- books (pure)


def _busday(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """New York business dates (``datetime64[D]``); a weekend goes to the Friday before."""
    days = pd.DatetimeIndex(ts).tz_convert(NY).tz_localize(None).to_numpy().astype("datetime64[D]")
    out: np.ndarray = np.busday_offset(days, 0, roll="backward")
    return out


def daily_book(closed: pd.DataFrame, held: pd.DataFrame, *, today: pd.Timestamp,
               capital_usd: float | None = None) -> pd.DataFrame:
    """One row per business day: ``realized``, ``unrealized``, ``pnl``, ``capital``, ``ret``, ``cum_pnl``,
    ``growth``; index: New York dates (see the module docstring for the rules)."""
    if closed.empty and held.empty:
        return pd.DataFrame(columns=list(BOOK_COLUMNS), index=pd.DatetimeIndex([], name="date"))
    entry_d = _busday(closed["entry_time"]) if len(closed) else np.zeros(0, "datetime64[D]")
    exit_d = _busday(closed["exit_time"]) if len(closed) else np.zeros(0, "datetime64[D]")
    held_d = _busday(held["entry_time"]) if len(held) else np.zeros(0, "datetime64[D]")
    today_d = _busday(pd.DatetimeIndex([today]))[0]
    first = np.concatenate([entry_d, exit_d, held_d]).min()
    ends = [exit_d, np.array([today_d], dtype="datetime64[D]")] if len(held) else [exit_d]
    last = max(np.concatenate(ends).max(), first)
    n = int(np.busday_count(first, last)) + 1
    days = np.busday_offset(first, np.arange(n), roll="forward")

    def at(d: np.ndarray) -> np.ndarray:
        return np.clip(np.busday_count(first, d), 0, n - 1)

    realized = np.bincount(at(exit_d), weights=closed["net_pl"].to_numpy(dtype=float), minlength=n) \
        if len(closed) else np.zeros(n)
    notional = np.abs(closed["qty"].to_numpy(dtype=float) * closed["entry_price"].to_numpy(dtype=float)
                      * closed["multiplier"].to_numpy(dtype=float)) if len(closed) else np.zeros(0)
    diff = np.zeros(n + 1)
    np.add.at(diff, at(entry_d), notional)
    np.add.at(diff, at(exit_d) + 1, -notional)
    unrealized = np.zeros(n)
    if len(held):
        held_notional = np.abs(held["qty"].to_numpy(dtype=float) * held["avg_entry_price"].to_numpy(dtype=float)
                               * held["multiplier"].to_numpy(dtype=float))
        np.add.at(diff, at(held_d), held_notional)
        unrealized[-1] = float(np.nansum(held["unrealized_pl"].to_numpy(dtype=float)))
    exposure = np.cumsum(diff)[:n]
    capital = np.full(n, float(capital_usd)) if capital_usd else exposure
    pnl = np.nan_to_num(realized) + unrealized
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(capital > 0, pnl / np.where(capital > 0, capital, 1.0), 0.0)
    ret = np.maximum(ret, -0.9999)  # a loss past the capital (a short's) would end the wealth index
    out = pd.DataFrame({"realized": realized, "unrealized": unrealized, "pnl": pnl, "capital": capital, "ret": ret,
                        "cum_pnl": np.cumsum(pnl), "growth": np.cumprod(1.0 + ret)},
                       index=pd.DatetimeIndex(days.astype("datetime64[ns]"), name="date"))
    return out


def returns_of(book: pd.DataFrame) -> pd.Series:
    """The book's daily returns indexed by each day's 16:00 New York instant (UTC), as core.metrics expects."""
    if book.empty:
        return pd.Series(dtype=float)
    idx = (pd.DatetimeIndex(book.index) + pd.Timedelta(hours=16)).tz_localize(NY).tz_convert("UTC")
    return pd.Series(book["ret"].to_numpy(dtype=float), index=idx, name="returns")


def by_ny_day(series: pd.Series) -> pd.Series:
    """``series`` re-stamped at the end of its New York date (the last value of a date wins)."""
    if series.empty:
        return series
    day = pd.DatetimeIndex(series.index).tz_convert(NY).normalize()
    out = pd.Series(series.to_numpy(), index=day).groupby(level=0).last()
    out.index = pd.DatetimeIndex(out.index) + pd.Timedelta(hours=23, minutes=59)
    return out


def select(frame: pd.DataFrame, strategy: str | None = None, destination: str | None = None) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    if strategy is not None and len(frame):
        mask &= (frame["strategy"] == strategy).to_numpy()
    if destination is not None and len(frame):
        mask &= (frame["destination"] == destination).to_numpy()
    return frame[mask]


def capital_of(model: ReadModel, name: str) -> float | None:
    rule = next((r for r in rules(model) if r.name == name), None)
    return float(rule.capital_usd) if rule is not None and rule.capital_usd is not None else None


# ----------------------------------------------------------------------------- benchmarks


def benchmark_prices(model: ReadModel, symbol: str) -> pd.Series:
    """Daily closes of ``symbol`` by New York date (see the module docstring), as :func:`by_ny_day` stamps them."""
    import time

    def load() -> pd.Series:
        closes: dict[pd.Timestamp, float] = {}
        try:
            for r in model.rows("SELECT day, close FROM public.benchmark_bars WHERE symbol = :s ORDER BY day",
                                {"s": symbol}):
                closes[pd.Timestamp(r["day"])] = float(r["close"])
        except Exception:  # noqa: BLE001 - not migrated yet
            log.debug("benchmark_bars not readable", exc_info=True)
        try:
            for r in model.rows(
                    """SELECT DISTINCT ON (d) d, close FROM (
                           SELECT (ts AT TIME ZONE 'America/New_York')::date AS d, ts, close FROM public.price_bars
                           WHERE symbol = :s AND (ts AT TIME ZONE 'America/New_York')::time < TIME '16:00') x
                       ORDER BY d, ts DESC""", {"s": symbol}):
                closes[pd.Timestamp(r["d"])] = float(r["close"])
        except Exception:  # noqa: BLE001 - no price_bars table: daily bars only
            log.debug("price_bars not readable", exc_info=True)
        if not closes:
            return pd.Series(dtype=float)
        s = pd.Series(closes).sort_index()
        s.index = (pd.DatetimeIndex(s.index) + pd.Timedelta(hours=23, minutes=59)).tz_localize(NY)
        return s

    return model.memo(("bench-prices", symbol, int(time.time() // BENCHMARK_TTL_S)), load, timeout_s=BENCHMARK_TTL_S)


def against(returns: pd.Series, prices: pd.Series) -> dict[str, Any]:
    """:func:`core.benchmark.compare` of ``returns`` on New York days; empty figures without prices."""
    daily = by_ny_day(returns)
    if prices.empty or daily.empty:
        return {k: math.nan for k in bm.METRIC_KEYS} | {"returns": daily.iloc[:0], "benchmark_returns": daily.iloc[:0],
                                                         "rolling_beta": daily.iloc[:0], "relative_drawdown": daily.iloc[:0]}
    return bm.compare(daily, prices)


# ----------------------------------------------------------------------------- figures for pages


def kpis(closed: pd.DataFrame, held: pd.DataFrame, returns: pd.Series) -> dict[str, float | None]:
    """The destination page's figures for one book (core.metrics through dashboard.analytics)."""
    out: dict[str, float | None] = dict(analytics.summary(returns))
    frame = closed[["exit_time", "net_pl", "holding_s"]] if len(closed) else pd.DataFrame()
    out |= analytics.trade_stats(frame)
    out["realized_pl"] = float(closed["net_pl"].sum()) if len(closed) else 0.0
    out["fees"] = float(closed["fees"].sum()) if len(closed) else 0.0
    out["unrealized_pl"] = float(np.nansum(held["unrealized_pl"].to_numpy(dtype=float))) if len(held) else 0.0
    out["open_positions"] = float(len(held))
    out["gross_exposure"] = float(np.nansum(np.abs(held["market_value"].to_numpy(dtype=float)))) if len(held) else 0.0
    out["current_drawdown"] = analytics.current_drawdown(returns)
    return out


def book_for(model: ReadModel, slugs: Sequence[str], name: str, destination: str | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(closed, held, daily book)`` of strategy ``name`` in ``destination`` (``None``: across ``slugs``)."""
    def load() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        closed = select(all_trades(model, slugs), name, destination)
        held = select(all_open(model, slugs), name, destination)
        book = daily_book(closed, held, today=pd.Timestamp.now(tz="UTC"), capital_usd=capital_of(model, name))
        return closed, held, book

    return local_memo(model, "views", ("strategy-book", name, destination, data_token(model, slugs)), load)
