"""The broker's truth, read over its wire, and an independent cash ledger written for these tests.

Nothing here imports the product (``core``, ``workers``, ``dashboard``): the ledger is computed from
``/v2/account/activities`` alone, with the rules Alpaca documents and the simulator follows:

* a FILL moves cash by ``-signed qty × price × multiplier`` (100 for an OCC option symbol);
* an executed non-trade line moves cash by its ``net_amount`` (a canceled one moves nothing);
* realized trading P&L of a family of symbols (those one event ties together: old and new symbol,
  parent and spinoff, target and acquirer, contract and underlying) is the identity
  ``realized = Σ trading cash + cost basis still held`` (what was paid and not yet sold is still at
  cost), where trading cash leaves out fees, income and transfers;
* a coin fee taken in the asset (``CFEE`` with a ``qty``) removes units at their cost: that cost is a
  fee of the round trip, not trading P&L, so it is added back
  (``docs/core_analytics.md``: "Buy 1 ETH @ 2000, 0.0025 ETH fee, sell 0.9975 @ 2100: gross 99.75,
  fees 5, net 94.75 = the cash").
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

OCC_RE = re.compile(r"^[A-Z]{1,6}\d{6}[CP]\d{8}$")
CRYPTO_QUOTES = ("USDT", "USDC", "USD")
INCOME_TYPES = frozenset({"DIV", "DIVCGL", "DIVCGS", "DIVROC", "DIVTXEX", "DIVNRA", "DIVWH", "DIVTW", "DIVFT",
                          "INT", "INTNRA", "INTTW", "WH"})
FEE_TYPES = frozenset({"FEE", "CFEE", "PTC", "PTR", "DIVFEE"})
# Non-trade lines whose cash is the price of shares or contracts changing hands.
TRADING_CASH_TYPES = frozenset({"CIL", "MA", "REORG", "OPTRD", "OPCSH", "OPEXP", "OPEXC", "OPASN", "SPLIT", "NC",
                                "SPIN"})
CENT = Decimal("0.01")


def multiplier(symbol: str) -> Decimal:
    return Decimal(100) if OCC_RE.match(symbol) else Decimal(1)


def canonical(symbol: str, asset_class: str | None = None) -> str:
    """One spelling per instrument: ``BTCUSD`` (positions, fee lines) and ``BTC/USD`` (orders) → ``BTC/USD``."""
    s = symbol.upper()
    if "/" in s:
        return s
    if asset_class == "crypto":
        for quote in CRYPTO_QUOTES:
            if s.endswith(quote) and len(s) > len(quote):
                return f"{s[: -len(quote)]}/{quote}"
    return s


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    symbol: str  # canonical
    qty: Decimal
    cost_basis: Decimal
    avg_entry_price: Decimal
    market_value: Decimal
    current_price: Decimal


class Broker:
    """One account of the simulator, read as a client reads Alpaca (REST with the account's keys)."""

    def __init__(self, rest_url: str, key_id: str, secret_key: str) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        resp = requests.get(f"{self.rest_url}{path}", params=params, headers=self.headers, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def activities(self) -> list[dict[str, Any]]:
        """Every activity, oldest first (``page_token`` paging as Alpaca documents it)."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params = {"direction": "asc", "page_size": "100", **({"page_token": token} if token else {})}
            page = self.get("/v2/account/activities", params)
            if not page:
                return out
            out.extend(page)
            token = page[-1]["id"]

    def positions(self) -> dict[str, BrokerPosition]:
        out = {}
        for p in self.get("/v2/positions"):
            sym = canonical(p["symbol"], p.get("asset_class"))
            out[sym] = BrokerPosition(sym, Decimal(p["qty"]), Decimal(p["cost_basis"]), Decimal(p["avg_entry_price"]),
                                      Decimal(p["market_value"]), Decimal(p["current_price"]))
        return out

    def account(self) -> dict[str, Any]:
        return dict(self.get("/v2/account"))


@dataclass(slots=True)
class SymbolLedger:
    trading_cash: Decimal = Decimal(0)
    fee_cash: Decimal = Decimal(0)
    income_cash: Decimal = Decimal(0)
    asset_fee_cost: Decimal = Decimal(0)  # coin fees taken in the asset, at the cost of what was bought
    bought_qty: Decimal = Decimal(0)
    bought_cost: Decimal = Decimal(0)


def _line_symbol(act: dict[str, Any]) -> str | None:
    sym = act.get("symbol")
    if not sym:
        return None
    return canonical(str(sym), "crypto" if act.get("activity_type") == "CFEE" else None)


def build_ledger(activities: Iterable[dict[str, Any]]) -> dict[str, SymbolLedger]:
    """Per canonical symbol: trading cash, fees, income and coin fees at cost (rules in the docstring)."""
    out: dict[str, SymbolLedger] = defaultdict(SymbolLedger)
    coin_fees: list[tuple[str, Decimal]] = []
    for act in activities:
        if act.get("status", "executed") not in ("executed", "correct"):
            continue
        kind = str(act["activity_type"])
        sym = _line_symbol(act)
        if kind == "FILL":
            assert sym is not None
            qty, price = Decimal(act["qty"]), Decimal(act["price"])
            signed = qty if act["side"] == "buy" else -qty
            led = out[sym]
            led.trading_cash -= signed * price * multiplier(sym)
            if signed > 0:
                led.bought_qty += qty
                led.bought_cost += qty * price * multiplier(sym)
            continue
        if sym is None:
            continue
        amount = Decimal(act.get("net_amount") or "0")
        led = out[sym]
        if kind in FEE_TYPES:
            led.fee_cash += amount
            if kind == "CFEE" and act.get("qty"):
                coin_fees.append((sym, abs(Decimal(act["qty"]))))
        elif kind in INCOME_TYPES:
            led.income_cash += amount
        elif kind in TRADING_CASH_TYPES:
            led.trading_cash += amount
    # A date-only fee line sorts before the day's fills (its id is that midnight): cost it afterwards,
    # at the average price paid (the tests buy each coin once, so that is the lot's cost).
    for sym, units in coin_fees:
        led = out[sym]
        if led.bought_qty:
            led.asset_fee_cost += units * led.bought_cost / led.bought_qty
    return out


def realized(ledger: dict[str, SymbolLedger], family: Iterable[str], positions: dict[str, BrokerPosition]) -> Decimal:
    """Gross realized trading P&L of a family: trading cash + cost basis still held + coin fees at cost."""
    total = Decimal(0)
    for sym in family:
        led = ledger.get(sym, SymbolLedger())
        held = positions.get(sym)
        total += led.trading_cash + led.asset_fee_cost + (held.cost_basis if held is not None else Decimal(0))
    return total


def value_of_lines(lines: Iterable[dict[str, Any]], positions: dict[str, BrokerPosition]) -> Decimal:
    """What a set of non-trade lines is worth to equity now: their cash plus the units they moved at
    today's mark (to tell how much of an equity difference lines that never reached the book explain)."""
    total = Decimal(0)
    for line in lines:
        if line["activity_type"] == "FILL" or line.get("status", "executed") != "executed":
            continue
        total += Decimal(line.get("net_amount") or "0")
        sym = _line_symbol(line)
        if line.get("qty") and sym in positions and line["activity_type"] not in INCOME_TYPES:
            total += Decimal(line["qty"]) * positions[sym].current_price * multiplier(sym)
    return total


def fee_lines(activities: Iterable[dict[str, Any]], kind: str = "FEE") -> list[dict[str, Any]]:
    return [a for a in activities if a["activity_type"] == kind and a.get("status", "executed") == "executed"]


def executed_deposits(activities: Iterable[dict[str, Any]]) -> Decimal:
    return sum((Decimal(a["net_amount"]) for a in activities
                if a["activity_type"] in ("CSD", "CSW", "JNLC") and a.get("status", "executed") == "executed"),
               Decimal(0))
