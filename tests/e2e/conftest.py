"""Browser tests: Debian's chromium + chromedriver through dash[testing]'s ``dash_duo``, headless.

``pytest_setup_options`` is dash.testing's hook for webdriver options: we always run headless (no
``--headless`` flag needed), without the sandbox (root in containers) and at a desktop size.
Tests skip when chromium/chromedriver are missing (``make system-deps`` installs them).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selenium.webdriver.chrome.options import Options

from core.db import connect
from core.dsn import parse_dsn
from core.settings import Settings
from tests.dashboard.seed import SeedSpec, seed

E2E_SPECS = (
    SeedSpec("Alpha Paper", closed_trades=400, equity_points=6000),
    SeedSpec("Beta Momentum", closed_trades=150, equity_points=3000, open_positions=2,
             initial_deposit=__import__("decimal").Decimal("50000"), drift=0.00002, vol=0.0018),
    SeedSpec("Gamma Live", closed_trades=80, equity_points=2000, open_positions=3,
             initial_deposit=__import__("decimal").Decimal("25000"), drift=-0.00001),
)


@pytest.fixture(scope="session", autouse=True)
def _ignore_thread_system_exit() -> None:
    """Ignore ``SystemExit`` in threads, as Python's own ``threading.excepthook`` does.

    dash.testing stops its threaded server by raising ``SystemExit`` asynchronously in the server's
    threads (``PyThreadState_SetAsyncExc``), including a browser's open ``/stream/events``; pytest's
    thread-exception hook would report that (a warning, so an error here) in whichever test runs next.
    Installed from a fixture: it must wrap pytest's hook, which is set after initial conftests load.
    """
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        previous(args)

    threading.excepthook = hook


def pytest_setup_options() -> Options:
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    return options  # pluggy collects hook results into the list dash.testing expects


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # No silent skip: `make test` installs Debian's chromium and chromium-driver (make system-deps).
    if any("tests/e2e" in str(item.fspath) for item in items) and not (
        shutil.which("chromium") and shutil.which("chromedriver")
    ):
        raise pytest.UsageError("browser tests need chromium and chromedriver: run `make system-deps`")


@dataclass(frozen=True, slots=True)
class E2EData:
    dsn: str
    settings: Settings
    slugs: list[str]


@pytest.fixture(scope="module")
def e2e_db(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EData]:
    """One seeded database per test module (the tests only add rows with unique symbols)."""
    name = f"ch_e2e_{uuid.uuid4().hex[:10]}"
    admin = connect(pg_server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = parse_dsn(pg_server_dsn).with_dbname(name).uri()
    settings = Settings(postgresql_live_conn_string=dsn, ui_snapshot_sec=1.0, heartbeat_sec=3600.0,
                        data_dir=str(tmp_path_factory.mktemp("e2e-data")))
    try:
        yield E2EData(dsn, settings, seed(dsn, settings, E2E_SPECS))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
