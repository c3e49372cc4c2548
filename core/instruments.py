"""Instruments: what a symbol is, how it is spelled, and how many units one quantity stands for.

Alpaca trades three asset classes through one API, and spells some of them two ways:

- **US equities** (``AAPL``, ``BRK.B``): one share per unit of quantity.
- **US equity options**, named by their OCC symbol ``<root><YYMMDD><C|P><strike × 1000, 8 digits>``
  (``AAPL230721C00150000`` = AAPL call, 2023-07-21, strike 150). Prices are per share and one
  contract is 100 shares, so every price × quantity is multiplied by :data:`OPTION_MULTIPLIER`.
- **Crypto pairs**: ``BTC/USD`` on orders, ``BTCUSD`` on positions and on fee (``CFEE``)
  activities. :func:`canonical_symbol` maps both to one spelling, ``BTC/USD`` (the current one in
  Alpaca's asset list), so a pair's fills, fees and positions meet under one key.

Pure and cheap: :func:`instrument_for` is cached per (symbol, asset class hint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

from core.errors import InvalidInput

OPTION_MULTIPLIER = Decimal(100)
"""Shares per standard US equity option contract."""
EQUITY_MIN_INCREMENT = Decimal("0.000000001")
"""Alpaca's fractional-share precision (9 decimals): anything smaller is rounding dust."""

# Alpaca's crypto pairs are quoted in these (longest first, so USDT is not read as USD + "T").
CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC")
_OCC_RE = re.compile(r"^(?P<root>[A-Z][A-Z0-9.]{0,5})(?P<date>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")
# A string that looks like an attempt at an OCC symbol (digits after a root): checked strictly.
_OCC_LIKE_RE = re.compile(r"^[A-Z][A-Z0-9.]{0,5}\d{6}[A-Z]\d+$")


class AssetClass(StrEnum):
    """Alpaca's ``asset_class`` values."""

    US_EQUITY = "us_equity"
    """A listed US stock or ETF (one share per unit)."""
    US_OPTION = "us_option"
    """A US equity option contract (100 shares per contract)."""
    CRYPTO = "crypto"
    """A crypto pair, traded around the clock."""

    @classmethod
    def parse(cls, value: object, row: str = "instrument") -> AssetClass:
        text = str(value or "").strip().lower()
        aliases = {"equity": cls.US_EQUITY, "stock": cls.US_EQUITY, "option": cls.US_OPTION, "options": cls.US_OPTION}
        if text in aliases:
            return aliases[text]
        try:
            return cls(text)
        except ValueError:
            raise InvalidInput(f"{row}: unknown asset class {value!r} (expected us_equity, us_option or crypto)") from None


class OptionRight(StrEnum):
    """Call or put."""

    CALL = "call"
    PUT = "put"


@dataclass(frozen=True, slots=True)
class OptionContract:
    """The terms an OCC symbol spells out."""

    underlying: str
    expiry: date
    right: OptionRight
    strike: Decimal
    """Per share, in dollars."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable thing under its canonical symbol."""

    symbol: str
    """Canonical spelling: ``BTC/USD`` for a crypto pair, the OCC symbol for an option."""
    asset_class: AssetClass
    multiplier: Decimal = Decimal(1)
    """Units of the underlying per unit of quantity (100 for an option contract)."""
    min_increment: Decimal = EQUITY_MIN_INCREMENT
    """Smallest quantity the broker holds; a remainder below it is dust, not a position."""
    option: OptionContract | None = None

    @property
    def is_option(self) -> bool:
        return self.asset_class is AssetClass.US_OPTION

    @property
    def trades_around_the_clock(self) -> bool:
        """Crypto trades 24/7; equities and options follow NYSE sessions."""
        return self.asset_class is AssetClass.CRYPTO


def parse_occ(symbol: str) -> OptionContract:
    """The contract an OCC option symbol names; :class:`InvalidInput` saying what is wrong otherwise."""
    text = symbol.strip().upper().replace(" ", "")
    m = _OCC_RE.match(text)
    if m is None:
        raise InvalidInput(
            f"option symbol {symbol!r}: not an OCC symbol (expected ROOT + YYMMDD + C/P + 8-digit strike x 1000, "
            "e.g. AAPL230721C00150000)"
        )
    d = m["date"]
    try:
        expiry = date(2000 + int(d[:2]), int(d[2:4]), int(d[4:]))
    except ValueError:
        raise InvalidInput(f"option symbol {symbol!r}: expiry {d!r} is not a date (YYMMDD)") from None
    strike = Decimal(int(m["strike"])) / 1000
    if strike <= 0:
        raise InvalidInput(f"option symbol {symbol!r}: strike must be positive")
    right = OptionRight.CALL if m["right"] == "C" else OptionRight.PUT
    return OptionContract(underlying=m["root"], expiry=expiry, right=right, strike=strike)


def crypto_pair(symbol: str) -> tuple[str, str]:
    """``(base, quote)`` of a crypto pair spelled ``BTC/USD``, ``BTC-USD`` or ``BTCUSD``."""
    text = symbol.strip().upper()
    for sep in ("/", "-"):
        if sep in text:
            base, _, quote = text.partition(sep)
            if base and quote and sep not in quote:
                return base, quote
            raise InvalidInput(f"crypto symbol {symbol!r}: expected BASE/QUOTE")
    for quote in CRYPTO_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return text[: -len(quote)], quote
    raise InvalidInput(f"crypto symbol {symbol!r}: no known quote currency ({', '.join(CRYPTO_QUOTES)})")


def _guess_class(text: str) -> AssetClass:
    if "/" in text:
        return AssetClass.CRYPTO
    if _OCC_RE.match(text) or _OCC_LIKE_RE.match(text):
        return AssetClass.US_OPTION  # a malformed OCC symbol must fail loudly, not pass as a stock
    return AssetClass.US_EQUITY


@lru_cache(maxsize=65536)
def _instrument(text: str, asset_class: AssetClass | None) -> Instrument:
    cls = asset_class or _guess_class(text)
    if cls is AssetClass.CRYPTO:
        base, quote = crypto_pair(text)
        return Instrument(f"{base}/{quote}", cls, Decimal(1), EQUITY_MIN_INCREMENT)
    if cls is AssetClass.US_OPTION:
        contract = parse_occ(text)
        return Instrument(text, cls, OPTION_MULTIPLIER, Decimal(1), contract)
    return Instrument(text, cls)


def instrument_for(symbol: str, asset_class: AssetClass | str | None = None) -> Instrument:
    """The instrument a broker symbol names, under its canonical spelling.

    Without ``asset_class`` the class is read from the symbol: a ``/`` is a crypto pair, an OCC
    pattern is an option (a malformed one raises), anything else is an equity. ``BTCUSD`` is only
    read as crypto when the caller says so (positions and ``CFEE`` activities carry the class), since
    nothing in the letters alone tells a pair from a ticker.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidInput(f"instrument: symbol must be a non-empty string, got {symbol!r}")
    hint = None if asset_class is None else AssetClass.parse(asset_class, f"instrument {symbol!r}")
    return _instrument(symbol.strip().upper(), hint)


def canonical_symbol(symbol: str, asset_class: AssetClass | str | None = None) -> str:
    """One spelling per instrument (``BTCUSD`` and ``BTC/USD`` → ``BTC/USD``)."""
    return instrument_for(symbol, asset_class).symbol


def multiplier_for(symbol: str) -> Decimal:
    """Units per quantity of a symbol as the lot engine sees it (100 for an OCC option symbol)."""
    return instrument_for(symbol).multiplier
