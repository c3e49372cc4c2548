"""Asset class and option contract details as grid columns, derived from the stored symbol.

The derived tables store only the symbol; :mod:`core.instruments` says what it is. Two spellings of
that one rule live here side by side, and ``tests/dashboard/test_real_accounts.py`` proves they agree
symbol for symbol:

- :func:`instrument_fields` (Python, through :func:`core.instruments.instrument_for`) for rows the
  dashboard already holds (open positions, the trade page);
- :func:`instrument_specs` (SQL expressions) for the server-side closed-trades grid and the exports,
  so the new columns sort and filter in the database like every other column.

A symbol :mod:`core.instruments` refuses (a malformed OCC symbol, ``BTC/``) keeps its guessed class
and gets no contract details and no multiplier: shown as blank, never a crash.
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidInput
from core.instruments import AssetClass, instrument_for
from core.schema import quote_ident

INSTRUMENT_FIELDS = ("asset_class", "underlying", "expiry", "right", "strike", "multiplier")
"""The derived columns, in display and export order."""

# The same patterns as core.instruments (_OCC_RE, _OCC_LIKE_RE), as PostgreSQL regular expressions.
_OCC_LIKE = "^[A-Z][A-Z0-9.]{0,5}[0-9]{6}[A-Z][0-9]+$"
# month 01-12 and day 01-31 in the pattern, so make_date below never sees an impossible month
_OCC = "^[A-Z][A-Z0-9.]{0,5}[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[CP][0-9]{8}$"


def instrument_fields(symbol: Any) -> dict[str, Any]:
    """``asset_class``, ``underlying``, ``expiry`` (ISO date), ``right``, ``strike`` and ``multiplier``
    of ``symbol`` (``None`` where a field does not apply)."""
    out: dict[str, Any] = dict.fromkeys(INSTRUMENT_FIELDS)
    text = str(symbol or "").strip().upper()
    if not text:
        return out
    try:
        inst = instrument_for(text)
    except InvalidInput:  # only a malformed pair or OCC symbol raises: keep the class the symbol shows
        out["asset_class"] = (AssetClass.CRYPTO if "/" in text else AssetClass.US_OPTION).value
        return out
    out["asset_class"] = inst.asset_class.value
    out["multiplier"] = float(inst.multiplier)
    if inst.option is not None:
        out.update(underlying=inst.option.underlying, expiry=inst.option.expiry.isoformat(),
                   right=inst.option.right.value, strike=float(inst.option.strike))
    return out


def contract_label(symbol: Any) -> str:
    """One line for a page header: ``Option · AAPL call 150 · exp 2024-07-19 · ×100``."""
    f = instrument_fields(symbol)
    if f["asset_class"] == AssetClass.US_OPTION.value and f["underlying"]:
        strike = f"{f['strike']:,.2f}".rstrip("0").rstrip(".")
        return f"Option · {f['underlying']} {f['right']} {strike} · exp {f['expiry']} · ×{f['multiplier']:.0f}"
    labels = {AssetClass.US_OPTION.value: "Option (unreadable OCC symbol)", AssetClass.CRYPTO.value: "Crypto",
              AssetClass.US_EQUITY.value: "US equity"}
    return labels.get(f["asset_class"] or "", "")


def instrument_specs(symbol_column: str = "symbol") -> dict[str, tuple[str, str]]:
    """``colId -> (trusted SQL expression, kind)`` for the derived columns of ``symbol_column``.

    ``kind`` is a :class:`dashboard.grid_sql.ColumnKind` value (this module does not import
    grid_sql, which imports it). Every expression is a ``CASE`` (evaluated in order, unlike ``AND``),
    so the casts and ``make_date`` only ever see a symbol that matched the strict OCC pattern, whose
    month is 01-12.
    """
    raw = quote_ident(symbol_column)
    s = f"upper({raw})"
    # Cost: one regular expression per row and column at most (a 100k-row sort evaluates it 100k
    # times), none for a symbol without a digit (every equity and crypto pair): once the strict OCC
    # pattern matched, every part sits at a fixed distance from the end of the symbol.
    no_digit = f"{raw} !~ '[0-9]'"  # cheaper than translate(), which costs as much as the OCC pattern
    n = f"length({s})"
    yy, mm, dd = (f"substr({s}, {n} - {k}, 2)::int" for k in (14, 12, 10))
    first = f"make_date(2000 + {yy}, {mm}, 1)"
    # a day past the month's end (230231) is no date: core.instruments refuses it, so does this
    valid_day = f"{dd} <= extract(day FROM {first} + interval '1 month' - interval '1 day')"
    strike_milli = f"right({s}, 8)::numeric"

    def option_only(expr: str, otherwise: str = "NULL") -> str:
        return (f"CASE WHEN {no_digit} THEN {otherwise} WHEN {s} ~ '{_OCC}' THEN CASE WHEN {valid_day} "
                f"AND {strike_milli} > 0 THEN {expr} END END")

    blank = f"coalesce(btrim({raw}), '') = ''"
    asset_class = (f"CASE WHEN {blank} THEN NULL WHEN position('/' IN {raw}) > 0 THEN 'crypto' "
                   f"WHEN {no_digit} THEN 'us_equity' WHEN {s} ~ '{_OCC_LIKE}' THEN 'us_option' ELSE 'us_equity' END")
    multiplier = (f"CASE WHEN {blank} THEN NULL WHEN position('/' IN {raw}) > 0 THEN CASE WHEN {raw} ~ '^[^/]+/[^/]+$' "
                  f"THEN 1 END WHEN {no_digit} THEN 1 WHEN {s} ~ '{_OCC_LIKE}' THEN {option_only('100')} ELSE 1 END")
    return {
        "asset_class": (asset_class, "text"),
        "underlying": (option_only(f"left({s}, {n} - 15)"), "text"),
        "expiry": (option_only(f"{first} + ({dd} - 1)"), "date"),
        "right": (option_only(f"CASE substr({s}, {n} - 8, 1) WHEN 'C' THEN 'call' ELSE 'put' END"), "text"),
        "strike": (option_only(f"{strike_milli} / 1000"), "number"),
        "multiplier": (multiplier, "number"),
    }
