"""The static HTML report and the QuantStats tearsheet of one destination.

Both read the figures the destination page shows: the report's numbers are
:func:`dashboard.kpis.kpi_values`, its monthly table and the tearsheet's input the per-session
returns of :mod:`core.metrics` (cash-flow neutral: deposits are not returns). No second formula.

Tearsheets are drawn in a small pool of worker processes: matplotlib (under QuantStats) is not
thread-safe, and a process of its own per drawing lets two destinations' tearsheets draw at once
instead of queueing behind one lock. Each is cached per equity version.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing import get_context
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from dashboard.analytics import MONTHS

TEARSHEET_WORKERS = 2
TEARSHEET_TIMEOUT_S = 120.0
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "⚠ invalid" if not math.isfinite(value) else f"{value:,.4f}"
    if isinstance(value, Decimal):
        return f"{value:,.2f}" if value.is_finite() else "⚠ invalid"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _svg_curve(equity: np.ndarray, width: int = 800, height: int = 220) -> str:
    values = equity[np.isfinite(equity)]
    if values.size < 2:
        return ""
    step = max(1, values.size // 2000)
    values = values[::step]
    low, high = float(values.min()), float(values.max())
    span = (high - low) or 1.0
    points = " ".join(
        f"{i * width / (len(values) - 1):.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" role="img" '
        f'aria-label="equity curve"><polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" '
        f'points="{points}"/></svg>'
    )


def _monthly_html(monthly: pd.DataFrame) -> str:
    """Years x months of compounded returns (``analytics.monthly_table``) as an HTML table."""
    if monthly.empty:
        return ""
    head = "".join(f"<th>{MONTHS[m - 1].title()}</th>" for m in range(1, 13))
    body = ""
    for year, row in monthly.iterrows():
        cells = "".join(
            f"<td>{row[m] * 100:.2f}%</td>" if m in row.index and pd.notna(row[m]) and math.isfinite(row[m])
            else "<td></td>" for m in range(1, 13))
        body += f"<tr><th>{html.escape(str(year))}</th>{cells}</tr>"
    return f"<h2>Monthly returns</h2><table><tr><th></th>{head}</tr>{body}</table>"


def render_report(title: str, tz: str, figures: Mapping[str, Any], monthly: pd.DataFrame,
                  daily_equity: np.ndarray, extra: Mapping[str, Any] | None = None) -> str:
    """A self-contained static HTML report (no script, no external resource).

    ``figures``: the destination's KPIs (what its page shows); ``monthly``: years x months of
    returns; ``daily_equity``: closing equity per day, for the curve; ``extra``: more rows to list.
    """
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in figures.items())
    extra_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in (extra or {}).items())
    generated = datetime.now(UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
    empty = daily_equity.size == 0
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}} table{{border-collapse:collapse;margin-bottom:1.5rem}}
th,td{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}} th{{background:#f4f4f4;text-align:left}}
@media print{{body{{margin:0}}}}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Generated {esc(generated)} ({esc(tz)}). Returns are per trading session and cash-flow neutral (deposits are
not returns): the same figures as the destination page.</p>
{'<p>No equity history yet.</p>' if empty else ''}
{_svg_curve(daily_equity)}
<h2>Summary</h2><table>{rows}</table>
{f'<h2>Details</h2><table>{extra_rows}</table>' if extra_rows else ''}
{_monthly_html(monthly)}
</body></html>"""


def tearsheet_returns(session_returns: pd.Series) -> pd.Series:
    """Per-session returns indexed by naive session dates, as QuantStats expects daily data."""
    idx = pd.DatetimeIndex(session_returns.index)
    idx = (idx.tz_convert("UTC") if idx.tz is not None else idx).tz_localize(None).normalize()
    clean = session_returns.to_numpy(dtype=float)
    return pd.Series(np.where(np.isfinite(clean), clean, 0.0), index=idx, name="returns")


def draw_tearsheet(returns: pd.Series, title: str) -> str:
    """QuantStats' HTML tearsheet, benchmark-free (so nothing is downloaded) and without remote links.

    Runs in a worker process (see the module docstring); call :func:`tearsheet` from the app.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt
    import quantstats  # heavy import (matplotlib, seaborn, yfinance): only when a tearsheet is asked for

    with tempfile.TemporaryDirectory(prefix="ch-tearsheet-") as tmp:
        path = os.path.join(tmp, "tearsheet.html")
        with warnings.catch_warnings():
            # QuantStats 0.0.86 / seaborn use APIs pandas 3 and matplotlib 3.11 deprecate
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(quantstats|seaborn)(\.|$)")
            quantstats.reports.html(  # type: ignore[no-untyped-call]
                returns, benchmark=None, rf=0.0, title=title, output=path, figfmt="svg",
                download_filename="tearsheet.html",
            )
        plt.close("all")
        with open(path, encoding="utf-8") as fh:
            page = fh.read()
    # The template links a remote favicon: drop it so the page loads nothing from outside.
    return re.sub(r"<link[^>]*rel=\"shortcut icon\"[^>]*>", "", page)


def tearsheet(returns: pd.Series, title: str) -> str:
    """:func:`draw_tearsheet` in the process pool (started on first use, spawned: no inherited threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=TEARSHEET_WORKERS, mp_context=get_context("spawn"))
        pool = _pool
    return pool.submit(draw_tearsheet, returns, title).result(timeout=TEARSHEET_TIMEOUT_S)
