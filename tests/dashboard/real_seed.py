"""Rows a real Alpaca account produces beside plain equity trades, written the way the workers write them.

:func:`seed_real` adds to one seeded destination: an option round trip closed by its expiry, a crypto
round trip with a fee taken in the coin (Alpaca spells the pair ``BTCUSD`` on the fee), and a share
round trip held through a 10-for-1 split and a name change (opened as ``OLDCO``, closed as
``NEWCO``), with the activities behind them, decoys the trade page must not show, open positions in
an option and a crypto pair, and income and fee activities. :data:`EXPECTED_INCOME` is what the
"Income & fees" card must add up to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from core.db import connect
from core.destinations import closed_trades_table
from core.schema import quote_ident
from core.settings import Settings
from tests.dashboard.seed import insert_open_position

OPTION = "AAPL240719C00150000"
CRYPTO = "BTC/USD"
OLD, NEW = "OLDCO", "NEWCO"
T0 = datetime(2024, 7, 1, 14, 0, tzinfo=UTC)
OPTION_TRIP, CRYPTO_TRIP, SPLIT_TRIP = "R-OPT-1", "R-BTC-1", "R-SPLIT-1"
OPEXP_ID = "20240719000000000::opexp-1"
EXPIRY_TS = datetime(2024, 7, 20, 3, 59, 59, 999999, tzinfo=UTC)  # 23:59:59.999999 New York, 2024-07-19

EXPECTED_INCOME = {  # line -> (amount, activities)
    "dividends": (50.0, 1),
    "withholding": (-7.5, 1),
    "interest": (3.2, 1),
    "regulatory_fees": (-0.19, 2),
    "other_fees": (-2.0, 1),
    "crypto_fees": (-31.25, 2),  # 0.0005 BTC at 60,000 taken in the coin, and a 1.25 USD fee
    "stock_journals": (200.0, 1),
}
EXPECTED_NET = 50.0 - 7.5 + 3.2 - 0.19 - 2.0 - 31.25


def _lot(open_id: str, close_id: str, qty: str, entry: datetime, exit_: datetime, entry_px: str, exit_px: str,
         gross: str) -> dict[str, Any]:
    return {"open_fill_id": open_id, "close_fill_id": close_id, "qty": qty, "entry_time": entry.isoformat(),
            "exit_time": exit_.isoformat(), "entry_price": entry_px, "exit_price": exit_px, "gross_pl": gross,
            "price_known": True}


TRIPS: list[dict[str, Any]] = [
    {"trade_id": OPTION_TRIP, "symbol": OPTION, "qty": 2, "entry_time": T0, "exit_time": EXPIRY_TS,
     "entry_price": 3.10, "exit_price": 0, "gross_pl": -620, "fees": 0.04, "net_pl": -620.04, "return_pct": -100.0,
     "exit_reason": "expired",
     "fills": [{"fill_id": "F-OPT-BUY", "qty": "2", "role": "open"}, {"fill_id": OPEXP_ID, "qty": "2", "role": "close"}],
     "lots": [_lot("F-OPT-BUY", OPEXP_ID, "2", T0, EXPIRY_TS, "3.10", "0", "-620")]},
    {"trade_id": CRYPTO_TRIP, "symbol": CRYPTO, "qty": 0.4995, "entry_time": T0 + timedelta(hours=1),
     "exit_time": T0 + timedelta(days=2), "entry_price": 60000, "exit_price": 61000, "gross_pl": 499.5,
     "fees": 31.25, "net_pl": 468.25, "return_pct": 1.6, "exit_reason": "manual",
     "fills": [{"fill_id": "F-BTC-BUY", "qty": "0.5", "role": "open"}, {"fill_id": "F-BTC-SELL", "qty": "0.4995",
                                                                        "role": "close"}],
     "lots": [_lot("F-BTC-BUY", "F-BTC-SELL", "0.4995", T0 + timedelta(hours=1), T0 + timedelta(days=2),
                   "60000", "61000", "499.5")]},
    {"trade_id": SPLIT_TRIP, "symbol": NEW, "qty": 100, "entry_time": T0, "exit_time": T0 + timedelta(days=20),
     "entry_price": 100, "exit_price": 110, "gross_pl": 1000, "fees": 0, "net_pl": 1000, "return_pct": 10.0,
     "exit_reason": "manual",
     "fills": [{"fill_id": "F-OLD-BUY", "qty": "10", "role": "open"}, {"fill_id": "F-NEW-SELL", "qty": "100",
                                                                       "role": "close"}],
     "lots": [_lot("NC-1:F-OLD-BUY", "F-NEW-SELL", "100", T0, T0 + timedelta(days=20), "100", "110", "1000")]},
]

# (activity_id, ts, type, symbol, qty, price, net_amount, description, status)
ACTIVITIES: list[tuple[Any, ...]] = [
    (OPEXP_ID, EXPIRY_TS, "OPEXP", OPTION, -2, None, 0, "Option Expiry", "executed"),
    ("CFEE-1", T0 + timedelta(hours=10), "CFEE", "BTCUSD", -0.0005, 60000, 0, "Coin Pair Transaction Fee (Non USD)",
     "executed"),
    ("CFEE-2", T0 + timedelta(days=2, hours=10), "CFEE", "BTCUSD", None, None, -1.25,
     "Coin Pair Transaction Fee (USD)", "executed"),
    ("SPLIT-1", T0 + timedelta(days=5), "SPLIT", OLD, 90, None, 0, "10-for-1 forward split", "executed"),
    ("NC-1", T0 + timedelta(days=10), "NC", OLD, -100, None, 0, "Name change OLDCO to NEWCO", "executed"),
    ("NC-2", T0 + timedelta(days=10), "NC", NEW, 100, None, 0, "Name change OLDCO to NEWCO", "executed"),
    # decoys: the same symbol outside the holding time, another symbol inside it
    ("SPLIT-OLD-EARLY", T0 - timedelta(days=30), "SPLIT", OLD, 5, None, 0, "2-for-1 forward split", "executed"),
    ("SPLIT-OTHER", T0 + timedelta(days=5), "SPLIT", "ZZZZ", 10, None, 0, "2-for-1 forward split", "executed"),
    # income and fees
    ("DIV-1", T0 + timedelta(days=3), "DIV", "MSFT", None, None, 50, "Cash DIV @ 0.75", "executed"),
    ("DIVWH-1", T0 + timedelta(days=3), "DIVWH", "MSFT", None, None, -7.5, "Withholding", "executed"),
    ("DIV-CANCELED", T0 + timedelta(days=4), "DIV", "MSFT", None, None, 1000, "Cash DIV", "canceled"),
    ("INT-1", T0 + timedelta(days=6), "INT", None, None, None, 3.2, "Interest credit", "executed"),
    ("FEE-REG", T0 + timedelta(days=2), "FEE", "AAPL", None, None, -0.02, "REG fee for proceed of $1000", "executed"),
    ("FEE-TAF", T0 + timedelta(days=2), "FEE", "AAPL", None, None, -0.17, "TAF fee for 100 shares", "executed"),
    ("FEE-DATA", T0 + timedelta(days=8), "FEE", None, None, None, -2.0, "monthly data fee", None),
    ("JNLS-1", T0 + timedelta(days=9), "JNLS", "SPY", 10, 20, 0, "Stock journal in", "executed"),
]


def seed_real(dsn: str, settings: Settings, slug: str) -> None:
    """Add the rows of the module docstring to ``slug`` (and bump its versions)."""
    schema = quote_ident(settings.account_schema)
    ct = quote_ident(closed_trades_table(slug))
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for t in TRIPS:
                cur.execute(
                    f"""INSERT INTO public.{ct} (trade_id, symbol, direction, qty, entry_time, exit_time, entry_price,
                            exit_price, gross_pl, fees, net_pl, return_pct, holding_s, exit_reason, fills, lots)
                        VALUES (%(trade_id)s, %(symbol)s, 'long', %(qty)s, %(entry_time)s, %(exit_time)s,
                                %(entry_price)s, %(exit_price)s, %(gross_pl)s, %(fees)s, %(net_pl)s, %(return_pct)s,
                                extract(epoch FROM %(exit_time)s - %(entry_time)s), %(exit_reason)s, %(fills)s::jsonb,
                                %(lots)s::jsonb)""",
                    {**t, "fills": json.dumps(t["fills"]), "lots": json.dumps(t["lots"])},
                )
            for aid, ts, code, symbol, qty, price, net, desc, status in ACTIVITIES:
                raw = {"id": aid, "activity_type": code, **({"status": status} if status else {})}
                cur.execute(
                    f"""INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, symbol, qty,
                            price, net_amount, description, raw)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)""",
                    (slug, aid, ts, code, symbol, qty, price, net, desc, json.dumps(raw)),
                )
            insert_open_position(cur, slug, OPTION, qty=3, entry=2.5, mark=2.75)
            insert_open_position(cur, slug, CRYPTO, qty=0.25, entry=60000, mark=61000)
            cur.execute("""UPDATE public.ch_versions SET pos_version = pos_version + 1,
                               closed_version = closed_version + 1, activity_version = activity_version + 1,
                               equity_version = equity_version + 1 WHERE slug = %s""", (slug,))
    finally:
        conn.close()
