"""Fixtures for the dashboard tests: a seeded database and an app built on it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dash import Dash

from core.settings import Settings
from dashboard.app import create_app
from tests.dashboard.seed import SeedSpec, seed

SMALL = (
    SeedSpec("Alpha Paper", closed_trades=200, equity_points=2000),
    SeedSpec("Beta Momentum", closed_trades=50, equity_points=600, open_positions=2),
)


@dataclass(frozen=True, slots=True)
class Seeded:
    dsn: str
    settings: Settings
    slugs: list[str]


@pytest.fixture
def seeded(db_dsn: str, settings: Settings) -> Seeded:
    """A migrated database with two small destinations."""
    return Seeded(db_dsn, settings, seed(db_dsn, settings, SMALL))


@pytest.fixture
def app(seeded: Seeded) -> Iterator[Dash]:
    """The dashboard on the seeded database (no LISTEN thread: tests that need it start their own)."""
    dash_app = create_app(seeded.settings, start_listener=False)
    yield dash_app
    dash_app.server.extensions["coldharbour"].model.dispose()
