"""The reconciliation_drift rule: what the tie-out calls drift fires, per account-day or per position."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from core.alert_rules import RuleKind, load_alert_config
from core.alerts import DestinationSnapshot, TieoutState, evaluate, fired_text
from core.errors import ConfigError
from core.tieout_records import Cause, Difference, Scope, Tolerances
from tests.core.test_alert_rules import DESTS
from tests.core.test_alerts import NOW, rule

D = Decimal
TOL = Tolerances(position_usd=D("0.01"), account_day_usd=D("1"))


def diff(scope: Scope, amount: str, *, subject: str = "", cause: Cause = Cause.UNEXPLAINED, day: date | None = None,
         is_open: bool = True) -> Difference:
    return Difference(scope=scope, subject=subject, amount_usd=D(amount), cause=cause, book=D("100"),
                      broker=D("100") + D(amount), day=day, open=is_open, detail="")


def snap(*diffs: Difference) -> DestinationSnapshot:
    return DestinationSnapshot(slug="a", now=NOW, heartbeat_sec=10.0,
                               tieout=TieoutState(checked_at=NOW, differences=diffs, tolerances=TOL))


DAY = date(2026, 3, 1)
POS = diff(Scope.POSITION_QTY, "500", subject="AAPL")
CASH = diff(Scope.CASH, "-25")
PAST = diff(Scope.DAY_EQUITY, "40", day=DAY)


@pytest.mark.parametrize(("label", "params", "diffs", "subjects"), [
    ("no tie-out yet", {}, None, []),
    ("tied out", {}, (), []),
    ("position and account now", {}, (POS, CASH), ["", "AAPL"]),
    ("a past day is its own subject", {}, (PAST,), ["2026-03-01"]),
    ("explained differences never drift", {}, (diff(Scope.CASH, "50", cause=Cause.POSTED_LATER),
                                              diff(Scope.POSITION_VALUE, "9", subject="X", cause=Cause.PRICE)), []),
    ("a settled (closed) difference is a note", {}, (diff(Scope.CASH, "50", is_open=False),), []),
    ("at the account tolerance is agreement", {}, (diff(Scope.EQUITY, "1"),), []),
    ("a position's tolerance is a cent", {}, (diff(Scope.POSITION_COST, "0.02", subject="MSFT"),), ["MSFT"]),
    ("scope account", {"scope": "account"}, (POS, CASH, PAST), ["", "2026-03-01"]),
    ("scope position", {"scope": "position"}, (POS, CASH, PAST), ["AAPL"]),
    ("min_usd floor", {"min_usd": 30.0}, (POS, CASH, PAST), ["2026-03-01", "AAPL"]),
])
def test_reconciliation_drift(label: str, params: dict[str, object], diffs: tuple[Difference, ...] | None,
                              subjects: list[str]) -> None:
    the_rule = rule(RuleKind.RECONCILIATION_DRIFT, **params)
    the_snap = DestinationSnapshot(slug="a", now=NOW, heartbeat_sec=10.0) if diffs is None else snap(*diffs)

    findings = evaluate(the_rule, the_snap)

    assert sorted(f.subject for f in findings) == sorted(subjects)


def test_one_finding_per_subject_names_the_largest_figure() -> None:
    cash, equity = diff(Scope.CASH, "-25"), diff(Scope.EQUITY, "-80")

    findings = evaluate(rule(RuleKind.RECONCILIATION_DRIFT), snap(cash, equity))

    assert len(findings) == 1
    text = fired_text(rule(RuleKind.RECONCILIATION_DRIFT), "a", findings[0])
    assert "the account now: equity differs by -$80.00 unexplained" in text
    assert "broker $20.00, book $100.00" in text
    assert "1 more figure(s)" in text
    assert findings[0].value == 80.0


@pytest.mark.parametrize(("body", "expected"), [
    ('scope = "day"\n', "field 'scope': must be one of any, account, position"),
    ("min_usd = -1\n", "field 'min_usd': must be >= 0"),
    ("tolerance_usd = 1\n", "field 'tolerance_usd': unknown field"),
])
def test_bad_drift_rules_name_the_field(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text('[[rules]]\nname = "drift"\nkind = "reconciliation_drift"\n' + body)

    with pytest.raises(ConfigError, match=expected):
        load_alert_config(path, DESTS, {})


def test_defaults(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text('[[rules]]\nname = "drift"\nkind = "reconciliation_drift"\n')

    (only,) = load_alert_config(path, DESTS, {}).rules

    assert (only.text("scope"), only.number("min_usd")) == ("any", 0.0)
