"""The equity curve of one destination, held per process as numpy arrays, and the windows charts draw.

The curve is the one large object the dashboard reads (up to millions of points): it is loaded by
binary ``COPY`` and refreshed incrementally (:meth:`EquitySeries.extended`), and every chart
downsamples the visible window from it (:func:`downsample`). Its drawdown is the dashboard's one
drawdown definition (:func:`dashboard.analytics.drawdown_array`): the chart draws it and the equity
export writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from dashboard.db import f8

MAX_POINTS = 2000  # per trace, after downsampling
_EQUITY_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("ts", ">i8"), ("l2", ">i4"), ("equity", ">f8"),
                        ("l3", ">i4"), ("dep", ">f8")])


@dataclass(slots=True)
class EquitySeries:
    """The whole equity curve of one destination as arrays (UTC ns timestamps)."""

    ts_ns: np.ndarray
    equity: np.ndarray
    net_deposits: np.ndarray
    version: int = -1
    first_ts_ns: int | None = None
    _drawdown: np.ndarray | None = None

    def drawdown(self) -> np.ndarray:
        """Point-by-point cash-flow-neutral drawdown, computed once per loaded version."""
        if self._drawdown is None or self._drawdown.size != self.ts_ns.size:
            from dashboard import analytics

            self._drawdown = analytics.drawdown_array(self.equity, self.net_deposits)
        return self._drawdown

    def extended(self, tail: EquitySeries) -> EquitySeries:
        """This curve with ``tail`` (rows from this curve's last timestamp on) in place of its end.

        The last held row may have been rewritten since it was read, so ``tail`` starts at it.
        """
        keep = self.ts_ns < (tail.ts_ns[0] if len(tail) else np.iinfo(np.int64).max)
        return EquitySeries(
            np.concatenate([self.ts_ns[keep], tail.ts_ns]),
            np.concatenate([self.equity[keep], tail.equity]),
            np.concatenate([self.net_deposits[keep], tail.net_deposits]),
        )

    def __len__(self) -> int:
        return int(self.ts_ns.size)


def load_equity(copy_out: Callable[[str], bytes], table: str, since_ns: int | None) -> EquitySeries:
        """Rows via binary COPY parsed by numpy: ~20x faster than fetching 1M Python tuples."""
        where = ""
        if since_ns is not None:
            where = f"WHERE ts >= to_timestamp({int(since_ns) // 1000} / 1000000.0)"  # an int we computed
        sql = (
            f"COPY (SELECT (extract(epoch FROM ts) * 1000000)::int8, {f8('equity')}, {f8('net_deposits')} "
            f"FROM public.{table} {where} ORDER BY ts) TO STDOUT WITH (FORMAT binary)"
        )
        data = copy_out(sql)
        # binary COPY: 19-byte header, then per row int16 field count and (int32 length, value) x 3,
        # all big-endian; no NULLs (ts is the key, equity/net_deposits are NOT NULL); 2-byte trailer
        body = data[19:-2]
        rows = np.frombuffer(body, dtype=_EQUITY_ROW) if body else np.zeros(0, dtype=_EQUITY_ROW)
        if rows.size and not (rows["n"] == 3).all():
            raise ValueError("unexpected COPY row layout for the equity table")
        return EquitySeries(
            rows["ts"].astype(np.int64) * 1000,
            rows["equity"].astype(np.float64),
            rows["dep"].astype(np.float64),
        )


def equity_window(series: EquitySeries, start_ns: int | None = None, end_ns: int | None = None,
                  max_points: int = MAX_POINTS) -> dict[str, np.ndarray]:
    """Downsampled equity, drawdown and deposit markers of ``series`` within ``[start_ns, end_ns]``."""
    ts, eq, dep = series.ts_ns, series.equity, series.net_deposits
    if ts.size == 0:
        empty = np.array([], dtype=np.int64)
        return {"ts": empty, "equity": np.array([]), "dd_ts": empty, "drawdown": np.array([]),
                "flow_ts": empty, "flow": np.array([]), "flow_equity": np.array([])}
    # drawdown on the cash-flow-neutral curve: deposits are not returns
    dd = series.drawdown()
    lo = 0 if start_ns is None else int(np.searchsorted(ts, start_ns, side="left"))
    hi = ts.size if end_ns is None else int(np.searchsorted(ts, end_ns, side="right"))
    lo, hi = max(0, lo - 1), min(ts.size, hi + 1)
    idx = downsample(ts[lo:hi], eq[lo:hi], max_points) + lo
    dd_idx = downsample(ts[lo:hi], dd[lo:hi], max_points) + lo
    flows = np.flatnonzero(np.diff(dep) != 0) + 1
    flows = flows[(flows >= lo) & (flows < hi)]
    return {
        "ts": ts[idx], "equity": eq[idx], "dd_ts": ts[dd_idx], "drawdown": dd[dd_idx],
        "flow_ts": ts[flows], "flow": np.diff(dep)[flows - 1], "flow_equity": eq[flows],
    }


def downsample(ts_ns: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` points keeping the visual shape (MinMax-LTTB)."""
    n = int(ts_ns.size)
    if n <= max_points:
        return np.arange(n)
    from tsdownsample import MinMaxLTTBDownsampler

    y = np.ascontiguousarray(values, dtype=np.float64)
    x = np.ascontiguousarray(ts_ns, dtype=np.int64)
    if not np.isfinite(y).all():
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]
    return np.asarray(sampler.downsample(x, y, n_out=max_points), dtype=np.int64)


def to_ns(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000) * 1000
