"""Number, money and time formatting shared by cards, grids and charts."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

DASH = "—"
MINUS = "\u2212"
"""The minus sign of every figure on a page (d3-format's, which the grids and charts use): ``−$264.92``."""
INVALID = "⚠ invalid"
"""Shown for a stored number that is NaN, infinite or beyond float range: flagged, never a crash."""


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError, OverflowError):
        return False


def _missing(x: Any) -> str:
    """What to show instead of a number that cannot be formatted."""
    if isinstance(x, bool) or x is None:
        return DASH
    try:
        float(x)
    except (TypeError, ValueError):
        return DASH
    except OverflowError:
        return INVALID
    return INVALID


def money(x: Any, *, sign: bool = False, decimals: int = 2) -> str:
    if not _finite(x):
        return _missing(x)
    v = float(x)
    s = f"{abs(v):,.{decimals}f}"
    prefix = MINUS if v < 0 else ("+" if sign and v > 0 else "")
    return f"{prefix}${s}"


def pct(x: Any, *, sign: bool = False, decimals: int = 2) -> str:
    """``x`` is a fraction (0.0123 -> 1.23%)."""
    if not _finite(x):
        return _missing(x)
    v = float(x) * 100
    return (f"{v:+.{decimals}f}%" if sign else f"{v:.{decimals}f}%").replace("-", MINUS)


def num(x: Any, decimals: int = 2) -> str:
    return f"{float(x):,.{decimals}f}".replace("-", MINUS) if _finite(x) else _missing(x)


def qty(x: Any, max_decimals: int = 9) -> str:
    """A quantity as exact as the broker holds it (9 decimals), without trailing zeros: ``1,250``,
    ``0.000123`` (a crypto lot), ``−3`` (a short)."""
    if not _finite(x):
        return _missing(x)
    text = f"{float(x):,.{max_decimals}f}".rstrip("0").rstrip(".")
    if text.lstrip("-") == "0":
        return "0"  # -0.0, or a remainder below the last decimal
    return MINUS + text[1:] if text.startswith("-") else text


def yes_no(x: Any, yes: str = "✓ yes", no: str = "✗ no") -> str:
    """A boolean as a word with its mark (never Python's ``True``); anything else as a dash."""
    if isinstance(x, bool):
        return yes if x else no
    if isinstance(x, str) and x.strip().lower() in ("true", "false"):
        return yes if x.strip().lower() == "true" else no
    return DASH


def duration(seconds: Any) -> str:
    if not _finite(seconds):
        return DASH
    s = float(seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def tz_label(tz: str) -> str:
    """``America/New_York (EST)``-style label for headers and axes."""
    abbrev = datetime.now(UTC).astimezone(ZoneInfo(tz)).tzname() or tz
    return tz if abbrev == tz else f"{tz} ({abbrev})"


def local_time(value: Any, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if value is None:
        return DASH
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return str(value.astimezone(ZoneInfo(tz)).strftime(fmt))
    return str(value)


def ns_to_local(ts_ns: np.ndarray, tz: str) -> pd.DatetimeIndex:
    """UTC ns timestamps -> naive wall-clock times in ``tz`` (what plotly draws as given)."""
    idx = pd.DatetimeIndex(np.asarray(ts_ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")
    return idx.tz_convert(tz).tz_localize(None)


def ns_to_local_str(ts_ns: np.ndarray, tz: str) -> list[str]:
    """Like :func:`ns_to_local`, as ISO strings (``YYYY-MM-DDTHH:MM:SS[.fff]``) built in one vectorised step.

    Chart payloads use these: JSON-encoding thousands of ``Timestamp`` objects one by one costs more
    than the whole query behind a zoom.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return []
    local: Any = ns_to_local(ts, tz).to_numpy(dtype="datetime64[ns]")
    strings: Any = np.datetime_as_string(local, unit="s" if not (ts % 1_000_000_000).any() else "ms")
    return list(strings.tolist())


def local_to_ns(value: str, tz: str) -> int:
    """An axis range end from plotly (naive local wall time) -> UTC ns."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward") if stamp.tzinfo is None else stamp
    if stamp is pd.NaT:
        stamp = pd.Timestamp(value).tz_localize("UTC")
    return int(stamp.tz_convert("UTC").value)


def age(seconds: Any) -> str:
    if not _finite(seconds):
        return "never"
    return f"{duration(seconds)} ago"


def health_colour(age_s: Any, *, ok_s: float, warn_s: float) -> str:
    """green / amber / red from a heartbeat age."""
    if not _finite(age_s):
        return "danger"
    if float(age_s) <= ok_s:
        return "success"
    if float(age_s) <= warn_s:
        return "warning"
    return "danger"
