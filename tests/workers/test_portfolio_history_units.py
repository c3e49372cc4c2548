"""Portfolio-history timestamps in seconds, milliseconds, µs or ns: read right, and never seeded as 1970.

Alpaca's "Portfolio History" reference documents ``timestamp`` as UNIX epoch seconds; one of its own
example responses carries milliseconds. Read as seconds those are past the year
9999, so they became the parser's 1970 stand-in and the manager's seeding wrote them as equity points.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.snapshots import DrawdownTracker
from workers.alpaca.parse import epoch_seconds, parse_portfolio_history
from workers.alpaca.wire import EPOCH
from workers.manager.seed import seed_points

DAY0 = datetime(2020, 2, 4, 14, 30, tzinfo=UTC)  # = S seconds
S = 1_580_826_600


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [
        (S, S),
        (float(S) + 0.5, S + 0.5),
        (str(S), S),
        (S * 1_000, S),  # milliseconds
        (S * 1_000_000, S),
        (S * 1_000_000_000, S),
        (99_999_999_999, 99_999_999_999),  # the largest count read as seconds (the year 5138)
        (100_000_000_000, 100_000_000),  # from here milliseconds (1973)
    ],
)
def test_epoch_seconds_tells_the_unit_by_magnitude(value: object, expected_s: float) -> None:
    assert epoch_seconds(value) == pytest.approx(expected_s, abs=1e-6)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "x", None, True])
def test_epoch_seconds_refuses_what_is_not_an_instant(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        epoch_seconds(value)


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000_000], ids=["seconds", "milliseconds", "nanoseconds"])
def test_a_history_in_any_unit_parses_to_the_same_instants(scale: int) -> None:
    stamps = [(S + day * 86_400) * scale for day in range(3)]
    history = parse_portfolio_history({"timestamp": stamps, "equity": ["100", "101", "102"], "timeframe": "1D"})
    assert history.parse_error is None
    assert history.timestamps == tuple(DAY0 + timedelta(days=day) for day in range(3))


def test_a_millisecond_history_seeds_its_own_dates_and_no_1970_point() -> None:
    history = parse_portfolio_history({"timestamp": [(S + d * 86_400) * 1_000 for d in range(3)] + ["garbage"],
                                       "equity": ["100", "101", "102", "103"], "timeframe": "1D"})
    assert history.parse_error is not None  # the garbage point is flagged ...
    assert history.timestamps[-1] == EPOCH  # ... and stands in as the epoch

    snaps = seed_points(history, now=DAY0 + timedelta(days=10), deposits_until=lambda _ts: Decimal(100),
                        initial_deposit=None, deposit_baseline=Decimal(0), first_seen=None, tracker=DrawdownTracker())

    assert [s.ts for s in snaps] == [DAY0 + timedelta(days=d) for d in range(3)]
    assert all(s.ts.year == 2020 for s in snaps)
