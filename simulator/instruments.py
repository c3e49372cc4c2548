"""What the simulator trades: US equities, crypto pairs and equity options, and when each trades.

* Equities (``AAPL``) trade in NYSE regular sessions; an order with ``extended_hours`` (a limit day
  order, as Alpaca requires) also trades pre-market (04:00–09:30 New York) and after hours
  (16:00–20:00) on session days.
* Options (OCC symbols, ``AAPL261218C00200000``: root, expiry YYMMDD, C/P, strike × 1000) trade in
  regular sessions; one contract is 100 shares, prices are per share. Index options (``XSP``,
  ``SPX``…) are cash-settled: in the money at expiry they pay 100 × intrinsic value (``OPCSH``).
* Crypto pairs (``BTC/USD`` on orders, ``BTCUSD`` on positions and fee activities, as Alpaca spells
  them) trade around the clock, seven days a week.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import StrEnum

from simulator.wire import NY

OCC_RE = re.compile(r"^([A-Z]{1,6})(\d{2})(\d{2})(\d{2})([CP])(\d{8})$")
OPTION_MULTIPLIER = 100
PRE_MARKET_OPEN = time(4, 0)
AFTER_HOURS_CLOSE = time(20, 0)
OPTION_VOL = 0.35  # annualised volatility of the simple option pricer below
# Index options settle in cash (``OPCSH``), European style; equity options deliver shares.
CASH_SETTLED_ROOTS = frozenset({"SPX", "SPXW", "XSP", "NDX", "NDXP", "RUT", "RUTW", "MRUT", "VIX", "VIXW", "DJX", "OEX",
                                "XEO"})


class AssetClass(StrEnum):
    US_EQUITY = "us_equity"
    """A listed US stock or ETF."""
    US_OPTION = "us_option"
    """An equity option contract (100 shares)."""
    CRYPTO = "crypto"
    """A crypto pair quoted in USD."""


class Right(StrEnum):
    CALL = "call"
    PUT = "put"


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable symbol as orders spell it, with the facts the books need."""

    symbol: str
    asset_class: AssetClass
    multiplier: int = 1
    underlying: str | None = None
    expiry: date | None = None
    right: Right | None = None
    strike: Decimal | None = None

    @property
    def position_symbol(self) -> str:
        """How positions and fee activities spell it: ``BTCUSD`` for the order symbol ``BTC/USD``."""
        return self.symbol.replace("/", "")

    @property
    def cash_settled(self) -> bool:
        """An index option: exercise, assignment and expiry in the money pay the intrinsic value in cash."""
        return self.asset_class is AssetClass.US_OPTION and self.underlying in CASH_SETTLED_ROOTS

    @property
    def is_equity(self) -> bool:
        return self.asset_class is AssetClass.US_EQUITY

    @property
    def exchange(self) -> str:
        # Alpaca's option positions leave the exchange empty (alpaca-py's AssetExchange has no OPRA).
        return {AssetClass.US_EQUITY: "NASDAQ", AssetClass.US_OPTION: "", AssetClass.CRYPTO: "CRYPTO"}[self.asset_class]

    def intrinsic(self, underlying_price: Decimal) -> Decimal:
        assert self.strike is not None
        if self.right is Right.CALL:
            return max(Decimal(0), underlying_price - self.strike)
        return max(Decimal(0), self.strike - underlying_price)


def parse_instrument(symbol: str) -> Instrument:
    """The instrument an order symbol names (crypto has a ``/``, options are OCC symbols)."""
    if "/" in symbol:
        return Instrument(symbol, AssetClass.CRYPTO)
    m = OCC_RE.match(symbol)
    if m:
        root, yy, mm, dd, cp, strike = m.groups()
        return Instrument(
            symbol,
            AssetClass.US_OPTION,
            OPTION_MULTIPLIER,
            underlying=root,
            expiry=date(2000 + int(yy), int(mm), int(dd)),
            right=Right.CALL if cp == "C" else Right.PUT,
            strike=Decimal(strike) / 1000,
        )
    return Instrument(symbol, AssetClass.US_EQUITY)


def occ_symbol(underlying: str, expiry: date, right: Right, strike: Decimal) -> str:
    return f"{underlying}{expiry:%y%m%d}{'C' if right is Right.CALL else 'P'}{int(strike * 1000):08d}"


def option_price(inst: Instrument, underlying_price: Decimal, now: datetime) -> float:
    """A smooth, deterministic premium: intrinsic value plus a time value that decays to 0 at expiry
    (an at-the-money Black-Scholes approximation, 0.4·S·σ·√T, damped away from the strike)."""
    assert inst.expiry is not None
    assert inst.strike is not None
    s = float(underlying_price)
    expiry_close = datetime.combine(inst.expiry, time(16, 0), NY)
    years = max((expiry_close - now).total_seconds(), 0.0) / (365 * 86400)
    spread = OPTION_VOL * math.sqrt(years) * s
    intrinsic = float(inst.intrinsic(underlying_price))
    if spread <= 0:
        return intrinsic
    moneyness = abs(s - float(inst.strike)) / spread
    return intrinsic + 0.4 * spread * math.exp(-0.5 * moneyness * moneyness)
