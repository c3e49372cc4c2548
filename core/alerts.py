"""Alert evaluation: pure functions over plain records (no clock, no I/O).

The alerts worker loads a :class:`DestinationSnapshot` per destination from the tables, calls
:func:`evaluate` per rule (which conditions hold, and for which subject: a symbol, a service, or the
whole destination) and :func:`decide` per episode key (fire, resolve, or nothing), then stores the
outcome. Rules:

- An *episode* is a stretch of time during which a rule's condition holds for one
  ``(rule, destination, subject)``. It fires once when it opens and sends its resolved message once
  when the condition clears: a condition that stays true never notifies twice (no storm).
- ``for_s``: the condition must have held continuously that long before the episode opens.
- ``cooldown_s``: after an episode resolves, the same key stays quiet that long; a condition that
  comes back inside the cool-down opens its episode only when the cool-down has passed and it still holds.
- Money is compared exactly (``Decimal``); ratios are floats (they are thresholds, not ledgers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from core.alert_rules import AlertRule, RuleKind
from core.tieout_records import POSITION_SCOPES, Cause, Difference, Tolerances, tolerance_of

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class AccountState:
    """The destination's equity now and the reference points its risk rules compare against.

    ``*_excess`` values are ``equity - net_deposits`` (flow-adjusted, as ``equity_full_<slug>.drawdown``),
    so deposits and withdrawals are never gains or losses.
    """

    equity: Decimal
    net_deposits: Decimal
    peak_excess: Decimal | None  # max(equity - net_deposits) over the whole history
    day_start_equity: Decimal | None  # the last point before today's start in the display zone
    day_start_deposits: Decimal | None
    day_high_excess: Decimal | None  # max(equity - net_deposits) since today's start


@dataclass(frozen=True, slots=True)
class PositionRecord:
    symbol: str
    qty: Decimal
    market_value: Decimal | None
    price_stale: bool = False


@dataclass(frozen=True, slots=True)
class FillRecord:
    fill_id: str
    ts: datetime
    symbol: str
    side: str
    qty: Decimal
    price: Decimal

    @property
    def notional_usd(self) -> Decimal:
        return abs(self.qty * self.price)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order_id: str
    symbol: str
    status: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    service: str
    state: str
    updated_at: datetime
    lag_s: float | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class TieoutState:
    """The destination's latest tie-out pass (``public.ch_tieout`` rows sharing its ``checked_at``)."""

    checked_at: datetime
    differences: tuple[Difference, ...]  # "now" and every past day of that pass (past days' carry ``day``)
    tolerances: Tolerances  # the TIEOUT_*_TOLERANCE_USD the manager judged them by


@dataclass(frozen=True, slots=True)
class DestinationSnapshot:
    """What the rules of one destination read at one instant ``now`` (tz-aware UTC)."""

    slug: str
    now: datetime
    heartbeat_sec: float
    account: AccountState | None = None
    positions: tuple[PositionRecord, ...] = ()
    fills: tuple[FillRecord, ...] = ()  # recent fills (the longest rule window)
    orders: tuple[OrderRecord, ...] = ()  # recently ended orders (terminal statuses)
    closed_pl_newest_first: tuple[Decimal, ...] = ()  # net P&L of the latest round trips
    heartbeats: tuple[HeartbeatRecord, ...] = ()
    rate_limited_in_window: Mapping[float, int] = field(default_factory=lambda: MappingProxyType({}))
    """429 answers counted in the last ``window_s`` seconds, keyed by ``window_s``."""
    tieout: TieoutState | None = None  # None: no tie-out stored yet (or no rule reads it)


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now: ``subject`` is a symbol, a service, or ``""`` for the destination."""

    subject: str
    detail: str
    value: float | None = None


class Action(StrEnum):
    """What :func:`decide` asks the worker to do for one episode key."""

    NONE = "none"  # nothing to store or send
    FIRE = "fire"  # open the episode and send it
    RESOLVE = "resolve"  # close the episode and send the resolved message


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    pending_since: datetime | None  # when the condition was first seen holding (None: it does not)


def decide(rule: AlertRule, *, holds: bool, is_open: bool, pending_since: datetime | None,
           last_resolved_at: datetime | None, now: datetime) -> Decision:
    """The next step of one episode key (see the module rules)."""
    if is_open:
        return Decision(Action.NONE if holds else Action.RESOLVE, pending_since if holds else None)
    if not holds:
        return Decision(Action.NONE, None)
    since = pending_since or now
    if (now - since).total_seconds() < rule.for_s:
        return Decision(Action.NONE, since)
    if last_resolved_at is not None and (now - last_resolved_at).total_seconds() < rule.cooldown_s:
        return Decision(Action.NONE, since)
    return Decision(Action.FIRE, since)


# --- formatting ----------------------------------------------------------------------------------

def usd(value: Decimal) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value).quantize(Decimal('0.01')):,}"


def pct(value: float) -> str:
    return f"{value:.2f}%"


def fired_text(rule: AlertRule, slug: str, finding: Finding) -> str:
    head = f"[{rule.severity}] {rule.name} · {slug}" + (f" · {finding.subject}" if finding.subject else "")
    return f"{head}: {rule.message + ' — ' if rule.message else ''}{finding.detail}"


def resolved_text(rule: AlertRule, slug: str, subject: str) -> str:
    head = f"[resolved] {rule.name} · {slug}" + (f" · {subject}" if subject else "")
    return f"{head}: {rule.resolved_message or 'the condition has cleared'}"


# --- risk rules ----------------------------------------------------------------------------------

def _excess(acct: AccountState) -> Decimal:
    return acct.equity - acct.net_deposits


def _drawdown(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    acct = snap.account
    if acct is None:
        return []
    basis = rule.text("basis")
    reference = acct.peak_excess if basis == "peak" else acct.day_high_excess
    high = max(reference, _excess(acct)) if reference is not None else _excess(acct)
    peak = high + acct.net_deposits
    if peak <= 0:
        return []
    drawdown_pct = float(HUNDRED - acct.equity / peak * HUNDRED)
    if drawdown_pct <= rule.number("threshold_pct"):
        return []
    where = "peak" if basis == "peak" else "today's high"
    return [Finding("", f"equity {usd(acct.equity)} is {pct(drawdown_pct)} below its {where} {usd(peak)} "
                        f"(limit {pct(rule.number('threshold_pct'))})", drawdown_pct)]


def _daily_loss(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    acct = snap.account
    if acct is None or acct.day_start_equity is None:
        return []
    start_excess = acct.day_start_equity - (acct.day_start_deposits or ZERO)
    day_pl = _excess(acct) - start_excess
    loss = -day_pl
    limit_usd = Decimal(str(rule.number("limit_usd")))
    limit_pct = rule.number("limit_pct")
    loss_pct = float(loss / acct.day_start_equity * HUNDRED) if acct.day_start_equity > 0 else 0.0
    over_usd = limit_usd > 0 and loss > limit_usd
    over_pct = limit_pct > 0 and loss_pct > limit_pct
    if not (over_usd or over_pct):
        return []
    limits = " / ".join(x for x in (usd(limit_usd) if limit_usd > 0 else "", pct(limit_pct) if limit_pct > 0 else "") if x)
    return [Finding("", f"today's P&L {usd(day_pl)} ({pct(-loss_pct)}) is past the daily loss limit {limits}",
                    float(day_pl))]


def _concentration(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    acct = snap.account
    if acct is None or acct.equity <= 0:
        return []
    limit = rule.number("threshold_pct")
    out = []
    for p in snap.positions:
        if p.market_value is None:
            continue
        share = float(abs(p.market_value) / acct.equity * HUNDRED)
        if share > limit:
            out.append(Finding(p.symbol, f"{p.symbol} is {pct(share)} of equity ({usd(abs(p.market_value))} of "
                                         f"{usd(acct.equity)}; limit {pct(limit)})", share))
    return out


def _gross_exposure(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    acct = snap.account
    if acct is None or acct.equity <= 0:
        return []
    gross = sum((abs(p.market_value) for p in snap.positions if p.market_value is not None), ZERO)
    ratio = float(gross / acct.equity)
    if ratio <= rule.number("max_ratio"):
        return []
    return [Finding("", f"gross exposure {usd(gross)} is {ratio:.2f}× equity {usd(acct.equity)} "
                        f"(limit {rule.number('max_ratio'):g}×)", ratio)]


def _in_window(ts: datetime, snap: DestinationSnapshot, window_s: float) -> bool:
    return ts >= snap.now - timedelta(seconds=window_s)


def _large_fill(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    limit = Decimal(str(rule.number("threshold_usd")))
    big = [f for f in snap.fills if _in_window(f.ts, snap, rule.number("window_s")) and f.notional_usd > limit]
    if not big:
        return []
    top = max(big, key=lambda f: f.notional_usd)
    more = f" ({len(big)} fills above the limit in {rule.number('window_s'):g}s)" if len(big) > 1 else ""
    return [Finding("", f"{top.side} {top.qty.normalize():f} {top.symbol} at {usd(top.price)} = "
                        f"{usd(top.notional_usd)} (limit {usd(limit)}){more}", float(top.notional_usd))]


def _losing_streak(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    streak = 0
    for pl in snap.closed_pl_newest_first:
        if pl >= 0:
            break
        streak += 1
    needed = int(rule.number("trades"))
    if streak < needed:
        return []
    lost = sum(snap.closed_pl_newest_first[:streak], ZERO)
    counted = f"{streak}+" if streak == len(snap.closed_pl_newest_first) else str(streak)
    return [Finding("", f"{counted} losing round trips in a row ({usd(lost)}; limit {needed})", float(streak))]


# --- operations rules ----------------------------------------------------------------------------

def _heartbeat(snap: DestinationSnapshot, service: str) -> HeartbeatRecord | None:
    return next((h for h in snap.heartbeats if h.service == service), None)


def _heartbeat_stale(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    limit_s = rule.number("factor") * snap.heartbeat_sec
    out = []
    for service in rule.strings("services"):
        hb = _heartbeat(snap, service)
        if hb is None:
            continue  # never reported: not running here by design, nothing went stale
        age_s = (snap.now - hb.updated_at).total_seconds()
        if age_s > limit_s:
            out.append(Finding(service, f"the {service} heartbeat is {age_s:.0f}s old (state {hb.state}; "
                                        f"limit {limit_s:g}s)", age_s))
    return out


def _price_stale(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    stale = sorted(p.symbol for p in snap.positions if p.price_stale)
    if not stale:
        return []
    return [Finding("", f"no fresh price for held {', '.join(stale[:10])}" + (" …" if len(stale) > 10 else ""),
                    float(len(stale)))]


def _stream_disconnected(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    hb = _heartbeat(snap, "ingester")
    if hb is None or hb.state == "stopped" or hb.details.get("stream_connected") is not False:
        return []
    return [Finding("", f"the trade_updates stream is disconnected (ingester state {hb.state})")]


def _ingest_lag(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    hb = _heartbeat(snap, "ingester")
    if hb is None or hb.lag_s is None or hb.lag_s <= rule.number("max_lag_s"):
        return []
    return [Finding("", f"ingest lag {hb.lag_s:.0f}s (limit {rule.number('max_lag_s'):g}s)", hb.lag_s)]


def _order_rejected(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    statuses = set(rule.strings("statuses"))
    hits = [o for o in snap.orders if o.status in statuses and _in_window(o.updated_at, snap, rule.number("window_s"))]
    if not hits:
        return []
    latest = max(hits, key=lambda o: o.updated_at)
    return [Finding("", f"{len(hits)} order(s) {'/'.join(sorted({o.status for o in hits}))} in the last "
                        f"{rule.number('window_s'):g}s (latest: {latest.symbol} {latest.status})", float(len(hits)))]


def _rest_budget(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    window_s = rule.number("window_s")
    count = snap.rate_limited_in_window.get(window_s, 0)
    if count < rule.number("min_429"):
        return []
    return [Finding("", f"the broker answered 429 (REST budget spent) {count} time(s) in the last {window_s:g}s",
                    float(count))]


def _drift_subject(d: Difference) -> str:
    """A position's instrument, a past account-day's date, or ``""`` for the account now (cash, equity)."""
    if d.scope in POSITION_SCOPES:
        return d.subject
    return d.day.isoformat() if d.day is not None else ""


def _reconciliation_drift(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    tie = snap.tieout
    if tie is None:
        return []
    scope = rule.text("scope")
    floor = Decimal(str(rule.number("min_usd")))
    by_subject: dict[str, list[Difference]] = {}
    for d in tie.differences:
        # only what the tie-out itself calls drift: open, unexplained, past its tolerance (and the rule's floor)
        if not d.open or d.cause is not Cause.UNEXPLAINED or abs(d.amount_usd) <= max(tolerance_of(d, tie.tolerances), floor):
            continue
        is_position = d.scope in POSITION_SCOPES
        if (scope == "account" and is_position) or (scope == "position" and not is_position):
            continue
        by_subject.setdefault(_drift_subject(d), []).append(d)
    out = []
    for subject, diffs in sorted(by_subject.items()):
        top = max(diffs, key=lambda d: abs(d.amount_usd))
        where = (f"position {subject}" if top.scope in POSITION_SCOPES
                 else f"account-day {subject}" if subject else "the account now")
        sides = f" (broker {usd(top.broker)}, book {usd(top.book)})" if top.broker is not None and top.book is not None else ""
        limit = max(tolerance_of(top, tie.tolerances), floor)
        more = f"; {len(diffs) - 1} more figure(s)" if len(diffs) > 1 else ""
        out.append(Finding(subject, f"{where}: {top.scope.value.replace('_', ' ')} differs by {usd(top.amount_usd)} "
                                    f"unexplained{sides}, tolerance {usd(limit)}{more} (tie-out checked "
                                    f"{tie.checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)", float(abs(top.amount_usd))))
    return out


Evaluator = Callable[[AlertRule, DestinationSnapshot], list[Finding]]
EVALUATORS: Mapping[RuleKind, Evaluator] = MappingProxyType({
    RuleKind.DRAWDOWN: _drawdown,
    RuleKind.DAILY_LOSS: _daily_loss,
    RuleKind.CONCENTRATION: _concentration,
    RuleKind.GROSS_EXPOSURE: _gross_exposure,
    RuleKind.LARGE_FILL: _large_fill,
    RuleKind.LOSING_STREAK: _losing_streak,
    RuleKind.HEARTBEAT_STALE: _heartbeat_stale,
    RuleKind.PRICE_STALE: _price_stale,
    RuleKind.STREAM_DISCONNECTED: _stream_disconnected,
    RuleKind.INGEST_LAG: _ingest_lag,
    RuleKind.ORDER_REJECTED: _order_rejected,
    RuleKind.REST_BUDGET: _rest_budget,
    RuleKind.RECONCILIATION_DRIFT: _reconciliation_drift,
})


def evaluate(rule: AlertRule, snap: DestinationSnapshot) -> list[Finding]:
    """The findings of ``rule`` that hold at ``snap.now`` (one per subject; none when it is quiet)."""
    return EVALUATORS[rule.kind](rule, snap)


def counter_increase(samples: Sequence[tuple[datetime, int]], now: datetime, window_s: float) -> int:
    """How much a cumulative counter rose in the last ``window_s`` seconds, from ``(ts, total)`` samples
    in time order. A drop means the process restarted (counters start at zero again)."""
    start = now - timedelta(seconds=window_s)
    rise = 0
    previous: int | None = None
    for ts, total in samples:
        if previous is not None and ts >= start:
            rise += total - previous if total >= previous else total
        previous = total
    return rise


def longest_window_s(rules: Sequence[AlertRule], kinds: set[RuleKind]) -> float:
    """The longest ``window_s`` among ``rules`` of ``kinds`` (0 when none): how far back to load."""
    return max((r.number("window_s") for r in rules if r.kind in kinds), default=0.0)
