"""Every account-activity type Alpaca documents, and what each does to the books.

One table (:data:`ACTIVITY_EFFECTS`), one rule for unknown codes (:func:`effect_of`), one rule for
status (:func:`status_effect`) and one for the time a date-only activity happens
(:func:`activity_time`). The broker adapter parses; the manager, the cash ledger and the replay
ask this module what a parsed activity means, so no caller special-cases a code.

Sources: Alpaca "Account Activities" (trading API list), alpaca-py ``ActivityType``, the Broker
API changelog of 2026-11-06 (types the listing can return), "Non-Trade Activities for Option
Events", "Crypto Spot Trading Fees", "Mandatory Corporate Actions" and "Regulatory Fees". The
choices where they are silent or disagree are written down in ``docs/core_analytics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


class LotEffect(StrEnum):
    """What an activity does to lots (``core.corporate_actions`` names the event it becomes)."""

    NONE = "none"
    FILL = "fill"
    SPLIT = "split"
    CASH_IN_LIEU = "cash_in_lieu"
    SYMBOL_CHANGE = "symbol_change"
    MERGER = "merger"
    SPINOFF = "spinoff"
    OPTION_EXPIRY = "option_expiry"
    OPTION_EXERCISE = "option_exercise"
    OPTION_ASSIGNMENT = "option_assignment"
    OPTION_CASH_SETTLEMENT = "option_cash_settlement"
    ASSET_FEE = "asset_fee"
    STOCK_TRANSFER = "stock_transfer"


class PnlLine(StrEnum):
    """Where an activity's cash shows in the P&L breakdown (``NONE``: not P&L, e.g. a deposit)."""

    NONE = "none"
    TRADING = "trading"
    """Realized through lots (fills, cash in lieu, cash mergers, option share legs)."""
    DIVIDEND = "dividend"
    WITHHOLDING = "withholding"
    INTEREST = "interest"
    FEE = "fee"
    OTHER = "other"
    """Cash the table cannot place more precisely (FX, corrections, unknown codes)."""


class Timing(StrEnum):
    """When in its day a date-only activity happens (New York time)."""

    START_OF_DAY = "start_of_day"
    """00:00 New York: corporate actions are effective before that day's trading."""
    END_OF_DAY = "end_of_day"
    """23:59:59.999999 New York: expiries, exercises and fees posted for that day's trades."""


@dataclass(frozen=True, slots=True)
class ActivityEffect:
    """The effect of one activity type on lots, cash, P&L, deposits and the equity series."""

    code: str
    description: str
    lots: LotEffect
    books_cash: bool
    """``net_amount`` moves cash (a fill's cash is ``qty × price`` instead)."""
    line: PnlLine
    external_flow: bool = False
    """A deposit or withdrawal (of cash, or of securities at their value): excluded from returns."""
    timing: Timing = Timing.START_OF_DAY
    known: bool = True
    """``False`` for a code not in Alpaca's documentation (stored, flagged, cash still booked)."""
    filter_only: bool = False
    """A query alias Alpaca documents as never returned (TRANS, MISC, SWP, TRD)."""

    @property
    def moves_equity(self) -> bool:
        """The account's equity changes by this activity's cash (positions aside)."""
        return self.books_cash


def _e(code: str, description: str, lots: LotEffect, books_cash: bool, line: PnlLine, *,
       external: bool = False, timing: Timing = Timing.START_OF_DAY, filter_only: bool = False) -> ActivityEffect:
    return ActivityEffect(code, description, lots, books_cash, line, external, timing, True, filter_only)


L, P, EOD = LotEffect, PnlLine, Timing.END_OF_DAY
ACTIVITY_EFFECTS: dict[str, ActivityEffect] = {e.code: e for e in (
    _e("FILL", "Order fill (partial or full)", L.FILL, True, P.TRADING),
    _e("EXTRD", "External trade booked to the account", L.FILL, True, P.TRADING),
    _e("CSD", "Cash deposit (+), including returned withdrawals", L.NONE, True, P.NONE, external=True),
    _e("CSW", "Cash withdrawal (-), including returned deposits", L.NONE, True, P.NONE, external=True),
    _e("CSR", "Cash receipt (undocumented direction)", L.NONE, True, P.OTHER),
    _e("JNL", "Journal entry", L.NONE, True, P.NONE, external=True),
    _e("JNLC", "Journal entry (cash)", L.NONE, True, P.NONE, external=True),
    _e("JNLS", "Journal entry (stock)", L.STOCK_TRANSFER, False, P.NONE, external=True),
    _e("ACATC", "ACATS in/out (cash)", L.NONE, True, P.NONE, external=True),
    _e("ACATS", "ACATS in/out (securities)", L.STOCK_TRANSFER, False, P.NONE, external=True),
    _e("DIV", "Dividend", L.NONE, True, P.DIVIDEND),
    _e("DIVCGL", "Dividend (capital gain, long term)", L.NONE, True, P.DIVIDEND),
    _e("DIVCGS", "Dividend (capital gain, short term)", L.NONE, True, P.DIVIDEND),
    _e("DIVROC", "Dividend return of capital", L.NONE, True, P.DIVIDEND),
    _e("DIVTXEX", "Dividend (tax exempt)", L.NONE, True, P.DIVIDEND),
    _e("DIVFEE", "Dividend fee", L.NONE, True, P.FEE),
    _e("DIVFT", "Dividend adjusted (foreign tax withheld)", L.NONE, True, P.WITHHOLDING),
    _e("DIVNRA", "Dividend adjusted (NRA withheld)", L.NONE, True, P.WITHHOLDING),
    _e("DIVTW", "Dividend adjusted (Tefra withheld)", L.NONE, True, P.WITHHOLDING),
    _e("DIVWH", "Dividend withholding", L.NONE, True, P.WITHHOLDING),
    _e("WH", "Tax withholding", L.NONE, True, P.WITHHOLDING),
    _e("INT", "Interest (credit/margin)", L.NONE, True, P.INTEREST),
    _e("INTNRA", "Interest adjusted (NRA withheld)", L.NONE, True, P.WITHHOLDING),
    _e("INTTW", "Interest adjusted (Tefra withheld)", L.NONE, True, P.WITHHOLDING),
    _e("INTPNL", "Interest profit and loss", L.NONE, True, P.INTEREST),
    _e("FEE", "Fee denominated in USD (regulatory fees: TAF, REG/SEC, ORF, CAT)", L.NONE, True, P.FEE, timing=EOD),
    _e("CFEE", "Crypto fee, in the asset received", L.ASSET_FEE, True, P.FEE, timing=EOD),
    _e("PTC", "Pass-thru charge", L.NONE, True, P.FEE, timing=EOD),
    _e("PTR", "Pass-thru rebate", L.NONE, True, P.FEE, timing=EOD),
    _e("SPLIT", "Stock split (forward FSPLIT or reverse RSPLIT)", L.SPLIT, True, P.TRADING),
    _e("SSP", "Stock split (former code)", L.SPLIT, True, P.TRADING),
    _e("CIL", "Cash in lieu of fractional shares", L.CASH_IN_LIEU, True, P.TRADING),
    _e("NC", "Name change", L.SYMBOL_CHANGE, True, P.TRADING),
    _e("SC", "Symbol change", L.SYMBOL_CHANGE, True, P.TRADING),
    _e("MA", "Merger/acquisition (stock, cash, or both)", L.MERGER, True, P.TRADING),
    _e("REORG", "Reorganisation", L.MERGER, True, P.TRADING),
    _e("VOF", "Voluntary offering (tender/exchange)", L.MERGER, True, P.TRADING),
    _e("FIMAT", "Fixed income maturity", L.MERGER, True, P.TRADING),
    _e("SPIN", "Spinoff", L.SPINOFF, True, P.TRADING),
    _e("SSO", "Stock spinoff (former code)", L.SPINOFF, True, P.TRADING),
    _e("OPEXP", "Option expiration", L.OPTION_EXPIRY, True, P.TRADING, timing=EOD),
    _e("OPEXC", "Option exercise", L.OPTION_EXERCISE, True, P.TRADING, timing=EOD),
    _e("OPXRC", "Option exercise (former code)", L.OPTION_EXERCISE, True, P.TRADING, timing=EOD),
    _e("OPASN", "Option assignment", L.OPTION_ASSIGNMENT, True, P.TRADING, timing=EOD),
    _e("OPTRD", "Option trade: the underlying shares of an exercise/assignment", L.NONE, True, P.TRADING,
       timing=EOD),
    _e("OPCSH", "Option cash settlement", L.OPTION_CASH_SETTLEMENT, True, P.TRADING, timing=EOD),
    _e("OPCA", "Option contract adjustment (corporate action)", L.NONE, True, P.OTHER),
    _e("FXTRD", "Foreign exchange trade", L.NONE, True, P.OTHER),
    _e("FXCNV", "Foreign exchange conversion", L.NONE, True, P.OTHER),
    _e("INVPNL", "Inventory profit and loss", L.NONE, True, P.OTHER),
    _e("CORR", "Correction entry", L.NONE, True, P.OTHER),
    _e("OCT", "Other cash transaction", L.NONE, True, P.OTHER),
    _e("ALLOC", "Allocation", L.NONE, True, P.OTHER),
    _e("DTCS", "DTC settlement", L.NONE, True, P.OTHER),
    _e("DVF", "DVP flip", L.NONE, True, P.OTHER),
    _e("ECEXP", "Expiry of an entitlement", L.NONE, True, P.OTHER),
    _e("SEG", "Segregation entry", L.NONE, True, P.OTHER),
    _e("SUB", "Subscription", L.NONE, True, P.OTHER),
    _e("MEM", "Memo (informational)", L.NONE, False, P.NONE),
    _e("SWP", "Cash sweep (filter only)", L.NONE, False, P.NONE, filter_only=True),
    _e("TRANS", "Cash transactions: CSD and CSW (filter only)", L.NONE, False, P.NONE, filter_only=True),
    _e("MISC", "Miscellaneous types (filter only)", L.NONE, False, P.NONE, filter_only=True),
    _e("TRD", "Trades (filter only)", L.NONE, False, P.NONE, filter_only=True),
)}
del L, P, EOD


def effect_of(activity_type: str) -> ActivityEffect:
    """The effect of a code; an unknown code is flagged (``known=False``) and still books its
    ``net_amount`` as cash on the "other" line, never as a deposit."""
    code = (activity_type or "").strip().upper()
    effect = ACTIVITY_EFFECTS.get(code)
    if effect is not None:
        return effect
    return ActivityEffect(code or "UNKNOWN", "Not in Alpaca's documentation", LotEffect.NONE, True, PnlLine.OTHER,
                          known=False)


class StatusEffect(StrEnum):
    """What an activity's ``status`` means for the books."""

    BOOK = "book"
    """``executed`` (or no status): applied."""
    REPLACE = "replace"
    """``correct``/``corrected``: applied in place of any earlier version with the same id."""
    IGNORE = "ignore"
    """``canceled``, ``pending``, ``rejected``…: changes nothing (and removes an earlier version)."""


def status_effect(status: str | None) -> StatusEffect:
    text = (status or "").strip().lower()
    if text in ("", "executed", "filled", "settled"):
        return StatusEffect.BOOK
    if text in ("correct", "corrected", "correction"):
        return StatusEffect.REPLACE
    return StatusEffect.IGNORE


def activity_time(activity_type: str, day: date) -> datetime:
    """The UTC instant a date-only activity of this type happens on ``day`` (New York calendar).

    Corporate actions and cash land at the start of the day, before its trading; expiries,
    exercises, assignments and fees posted for the day's trades at its end, after them.
    """
    if effect_of(activity_type).timing is Timing.END_OF_DAY:
        local = datetime.combine(day + timedelta(days=1), time(0), NEW_YORK) - timedelta(microseconds=1)
    else:
        local = datetime.combine(day, time(0), NEW_YORK)
    return local.astimezone(UTC)
