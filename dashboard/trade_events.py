"""The corporate-action and option events that touched one round trip, from the raw activities.

A trip's lots say little about why they changed: a split rewrites them in place (same fill ids, new
quantity and price), a name change or a merger moves them under a new symbol, an expiry or an
exercise closes them with an implied fill named after the event (``<activity id>`` or
``<activity id>:<fill id>``, see :mod:`core.lot_events`). So the events of a trip are the
activities with a lot effect (:data:`EVENT_CODES`, from :mod:`core.activity_types`) that

- are named by one of the trip's fill or lot ids (or their ``<activity id>:`` prefix), or
- concern one of its symbols during the holding time, both ends included (an expiry is booked at
  the end of its day, the moment the trip closes). Its symbols are the trip's, the other spelling of
  a crypto pair (``BTCUSD`` beside ``BTC/USD``), an option's underlying, and the old and new symbols
  of a name change, merger or spinoff found on the way (the other line of the same action: same
  type, same time), followed for :data:`MAX_SYMBOL_ROUNDS` rounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.activity_types import ACTIVITY_EFFECTS, LotEffect, effect_of
from core.schema import quote_ident
from dashboard.db import f8
from dashboard.instrument_cols import instrument_fields

if TYPE_CHECKING:
    from dashboard.queries import ReadModel

EVENT_CODES = tuple(sorted(
    code for code, e in ACTIVITY_EFFECTS.items()
    if e.lots not in (LotEffect.NONE, LotEffect.FILL) or code in ("OPTRD", "OPCA")
))
"""Activity types that change lots (corporate actions, option events, fees in the asset, stock
journals), plus the share legs of an exercise (``OPTRD``) and contract adjustments (``OPCA``)."""
# the actions booked as two lines under two symbols (old and new, parent and child)
PAIRED_CODES = tuple(code for code, e in ACTIVITY_EFFECTS.items()
                     if e.lots in (LotEffect.SYMBOL_CHANGE, LotEffect.MERGER, LotEffect.SPINOFF))
MAX_SYMBOL_ROUNDS = 3
MAX_EVENTS = 200  # a trip held through more events than this shows the first ones (and says so)

EVENT_LABELS = {
    LotEffect.SPLIT: "Split", LotEffect.CASH_IN_LIEU: "Cash in lieu", LotEffect.SYMBOL_CHANGE: "Name change",
    LotEffect.MERGER: "Merger", LotEffect.SPINOFF: "Spinoff", LotEffect.OPTION_EXPIRY: "Option expiry",
    LotEffect.OPTION_EXERCISE: "Option exercise", LotEffect.OPTION_ASSIGNMENT: "Option assignment",
    LotEffect.OPTION_CASH_SETTLEMENT: "Option cash settlement", LotEffect.ASSET_FEE: "Fee in the asset",
    LotEffect.STOCK_TRANSFER: "Stock transfer",
}


def event_label(code: str) -> str:
    """A short name for an event's activity type (``SPLIT`` → ``Split``, ``OPTRD`` → ``Option shares``)."""
    upper = (code or "").upper()
    if upper == "OPTRD":
        return "Option shares"
    if upper == "OPCA":
        return "Contract adjustment"
    return EVENT_LABELS.get(effect_of(upper).lots, upper or "?")


def _as_list(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    return [x for x in value or [] if isinstance(x, Mapping)]


def trip_ids(trade: Mapping[str, Any]) -> list[str]:
    """Every fill and lot id of the trip, with the activity id an implied fill is named after."""
    ids: set[str] = set()
    for item in (*_as_list(trade.get("fills")), *_as_list(trade.get("lots"))):
        for key in ("fill_id", "open_fill_id", "close_fill_id"):
            value = item.get(key)
            if isinstance(value, str) and value:
                ids |= {value, value.split(":", 1)[0]}
    return sorted(ids)


def related_symbols(symbol: str) -> set[str]:
    """The symbol, the other spelling of a crypto pair, and an option's underlying."""
    out = {symbol}
    info = instrument_fields(symbol)
    if info["asset_class"] == "crypto":
        out.add(symbol.replace("/", ""))
    if info["underlying"]:
        out.add(str(info["underlying"]))
    return out


def _query(schema: str) -> str:
    return f"""SELECT activity_id, ts, upper(activity_type) AS activity_type, symbol, {f8('qty')} AS qty,
                      {f8('price')} AS price, {f8('net_amount')} AS net_amount, description,
                      raw ->> 'status' AS status
               FROM {schema}.activities
               WHERE destination = :d AND upper(activity_type) = ANY(:codes)
                 AND (activity_id = ANY(:ids)
                      OR (upper(symbol) = ANY(:symbols) AND ts >= :start AND ts <= :end))
               ORDER BY ts, activity_id LIMIT :n"""


def _partners(model: ReadModel, schema: str, slug: str, rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """The symbols of the other lines of the two-line actions among ``rows``."""
    times: list[datetime] = [r["ts"] for r in rows if r["activity_type"] in PAIRED_CODES]
    if not times:
        return set()
    found = model.rows(
        f"""SELECT DISTINCT upper(symbol) AS symbol FROM {schema}.activities
            WHERE destination = :d AND upper(activity_type) = ANY(:codes) AND ts = ANY(:times)
              AND symbol IS NOT NULL""",
        {"d": slug, "codes": list(PAIRED_CODES), "times": times},
    )
    return {str(r["symbol"]) for r in found}


def trade_events(model: ReadModel, slug: str, trade: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events of one closed trade (rules in the module docstring), oldest first, each with an
    ``event`` label; at most :data:`MAX_EVENTS`."""
    schema = quote_ident(model.account_schema)
    symbols = {s.upper() for s in related_symbols(str(trade["symbol"]))}
    params: dict[str, Any] = {"d": slug, "codes": list(EVENT_CODES), "ids": trip_ids(trade),
                              "start": trade["entry_time"], "end": trade["exit_time"], "n": MAX_EVENTS}
    rows: list[dict[str, Any]] = []
    for _ in range(MAX_SYMBOL_ROUNDS):
        rows = model.rows(_query(schema), {**params, "symbols": sorted(symbols)})
        grown = symbols | _partners(model, schema, slug, rows)
        if grown == symbols:
            break
        symbols = grown
    return [{"event": event_label(str(r["activity_type"])), **r} for r in rows]
