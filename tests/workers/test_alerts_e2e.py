"""Every rule kind end to end: the simulator (driven through its admin API), ``python -m workers ingester``,
``manager`` and ``alerts`` as separate processes, PostgreSQL, and a local webhook receiver.

Each rule must fire once, resolve once, and (for the one with a cool-down) stay quiet when its
condition comes back inside the cool-down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.simulator_fixtures import SimHandle
from tests.workers.test_alerts_support import Receiver, free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RISK, STALE = "risk", "stale"

RULES = """
[[channels]]
name = "hook"
type = "webhook"
url_env = "E2E_HOOK_URL"
secret_env = "E2E_HOOK_SECRET"
timeout_s = 2

[[rules]]
name = "big fill"
kind = "large_fill"
threshold_usd = 20000
window_s = 4
cooldown_s = 3600
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "concentration"
kind = "concentration"
threshold_pct = 20
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "gross"
kind = "gross_exposure"
max_ratio = 0.25
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "drawdown"
kind = "drawdown"
threshold_pct = 8
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "day loss"
kind = "daily_loss"
limit_pct = 8
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "streak"
kind = "losing_streak"
trades = 2
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "canceled"
kind = "order_rejected"
statuses = ["canceled"]
window_s = 3
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "budget"
kind = "rest_budget"
min_429 = 1
window_s = 4
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "stream"
kind = "stream_disconnected"
for_s = 1
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "lag"
kind = "ingest_lag"
max_lag_s = 2
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "manager heartbeat"
kind = "heartbeat_stale"
services = ["manager"]
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "stale"
kind = "price_stale"
destinations = ["Stale"]
channels = ["hook"]
"""


def events(receiver: Receiver, rule: str, event: str) -> list[dict[str, Any]]:
    return [r.json for r in receiver.received if r.json.get("rule") == rule and r.json.get("event") == event]


class Stack:
    def __init__(self, sim: SimHandle, receiver: Receiver, procs: dict[str, subprocess.Popen[bytes]],
                 conn: asyncpg.Connection, equity: Decimal) -> None:
        self.sim, self.receiver, self.procs, self.conn, self.equity = sim, receiver, procs, conn, equity

    async def admin(self, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.sim.admin, path, body)

    async def fill(self, account: str, symbol: str, side: str, **amount: str) -> None:
        await self.admin("/fill", {"account": account, "symbol": symbol, "side": side, **amount})

    async def price(self, symbol: str, price: str) -> None:
        await self.admin("/price", {"symbol": symbol, "price": price})

    async def fired(self, rule: str) -> dict[str, Any]:
        await wait_for(lambda: bool(events(self.receiver, rule, "fired")), what=f"{rule!r} to fire", timeout_s=60)
        return events(self.receiver, rule, "fired")[0]

    async def resolved(self, rule: str) -> dict[str, Any]:
        await wait_for(lambda: bool(events(self.receiver, rule, "resolved")), what=f"{rule!r} to resolve",
                       timeout_s=90)
        return events(self.receiver, rule, "resolved")[0]

    async def position(self, slug: str, symbol: str, present: bool) -> None:
        async def check() -> bool:
            n = await self.conn.fetchval(f"SELECT count(*) FROM public.open_trades_{slug} WHERE symbol = $1", symbol)
            return bool(n) is present
        await wait_for(check, what=f"{symbol} {'open' if present else 'closed'} in {slug}", timeout_s=60)

    async def closed_trips(self, n: int) -> None:
        async def check() -> bool:
            return int(await self.conn.fetchval(f"SELECT count(*) FROM public.closed_trades_{RISK}")) >= n
        await wait_for(check, what=f"{n} closed round trips", timeout_s=60)


def _spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "workers", command], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _env(db_dsn: str, tmp_path: Path, sim: SimHandle, receiver: Receiver) -> dict[str, str]:
    a, b = sim.accounts[0], sim.accounts[1]
    dead_zmq = f"tcp://127.0.0.1:{free_port()}"  # nobody publishes there: Stale's marks go stale
    (tmp_path / "destinations.toml").write_text(
        f'[[destinations]]\nname = "Risk"\nkey_id = "{a["key_id"]}"\nsecret_key = "{a["secret_key"]}"\n'
        f'base_url = "{sim.rest_url}"\n\n'
        f'[[destinations]]\nname = "Stale"\nkey_id = "{b["key_id"]}"\nsecret_key = "{b["secret_key"]}"\n'
        f'base_url = "{sim.rest_url}"\nprice_feed = {{ zmq_endpoints = ["{dead_zmq}"], rest_fallback = false }}\n')
    (tmp_path / "alerts.toml").write_text(RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({
        "COLDHARBOUR_ENV_FILE": str(tmp_path / "no.env"), "POSTGRESQL_LIVE_CONN_STRING": db_dsn,
        "DESTINATIONS_FILE": str(tmp_path / "destinations.toml"), "DESTINATIONS_LOCAL_FILE": str(tmp_path / "x.toml"),
        "ALERT_RULES_FILE": str(tmp_path / "alerts.toml"), "ALERT_EVAL_INTERVAL_S": "0.2",
        "DATA_DIR": str(tmp_path / "data"), "HEARTBEAT_SEC": "1", "SNAPSHOT_SEC": "1", "FLUSH_INTERVAL_S": "0.05",
        "UI_SNAPSHOT_SEC": "0.2", "CLOSED_SYNC_SEC": "1", "EQUITY_UPDATE_INTERVAL_S": "1",
        "ZMQ_PRICE_ENDPOINTS": sim.zmq_url or "", "PRICE_STALE_AFTER_S": "2", "PYTHONUNBUFFERED": "1",
        "E2E_HOOK_URL": f"{receiver.url}/hook", "E2E_HOOK_SECRET": "e2e-secret",
    })
    return env


@pytest.fixture
def processes() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(10)


@pytest.fixture
async def stack(simulator_factory: Callable[..., SimHandle], db_dsn: str, tmp_path: Path,
                processes: dict[str, subprocess.Popen[bytes]]) -> AsyncIterator[Stack]:
    sim = simulator_factory(accounts=2)
    receiver = await Receiver().start()
    env = _env(db_dsn, tmp_path, sim, receiver)
    migrate = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "workers", "migrate"], cwd=ROOT,
                                      env=env, capture_output=True, timeout=120, check=False)
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    for name in ("ingester", "manager", "alerts"):
        processes[name] = _spawn(name, env, tmp_path / f"{name}.log")
    conn = await asyncpg.connect(db_dsn)
    for symbol in ("AAPL", "MSFT"):
        await asyncio.to_thread(sim.admin, "/price", {"symbol": symbol, "price": "100"})
    truth = await asyncio.to_thread(sim.admin, "/ground-truth?account=sim-1")
    account = truth["accounts"]["sim-1"]
    equity = Decimal(str(account.get("equity") or account.get("cash")))

    async def running() -> bool:
        n = await conn.fetchval("SELECT count(*) FROM account_activities.heartbeats WHERE destination = $1 "
                                "AND state = 'running'", RISK)
        return int(n or 0) >= 3
    try:
        await wait_for(running, what="ingester, manager and alerts to run", timeout_s=90)
        yield Stack(sim, receiver, processes, conn, equity)
    finally:
        await conn.close()
        await receiver.stop()
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:] for name in processes}
        print(json.dumps(logs, indent=1))  # shown by pytest when the test failed


async def hold_stream(stack: Stack) -> aiohttp.ClientWebSocketResponse | None:
    """Drop the ingester's stream and take the account's one connection ourselves (the simulator refuses a
    second one, as Alpaca does), so the ingester stays disconnected until we let go."""
    acct = stack.sim.accounts[0]
    session = aiohttp.ClientSession()
    for _ in range(50):
        await stack.admin("/drop-streams", {})
        ws = await session.ws_connect(stack.sim.stream_url)
        await ws.send_str(json.dumps({"action": "authenticate",
                                      "data": {"key_id": acct["key_id"], "secret_key": acct["secret_key"]}}))
        reply = json.loads((await ws.receive(timeout=5)).data)
        if reply["data"]["status"] == "authorized":
            ws._ch_session = session  # type: ignore[attr-defined]  # closed with the socket
            return ws
        await ws.close()
    await session.close()
    return None


async def test_every_rule_fires_resolves_and_respects_its_cool_down(stack: Stack) -> None:
    e = stack.equity
    # Risk: one buy of 30 % of equity is a big fill, a concentrated position and too much gross exposure.
    await stack.fill("sim-1", "AAPL", "buy", notional=str((e * Decimal("0.3")).quantize(Decimal("1"))))
    for rule in ("big fill", "concentration", "gross"):
        await stack.fired(rule)
    assert "of equity" in (await stack.fired("concentration"))["text"]
    await stack.resolved("big fill")  # its 4 s window passed

    # A 40 % fall of that position is a 12 % drawdown and a 12 % daily loss; the recovery resolves both.
    await stack.price("AAPL", "60")
    await stack.fired("drawdown")
    await stack.fired("day loss")
    await stack.price("AAPL", "100")
    await stack.resolved("drawdown")
    await stack.resolved("day loss")

    # Selling is a big fill again, inside the cool-down: no message. The position rules resolve.
    await stack.fill("sim-1", "AAPL", "sell", qty=str(await _qty(stack, "AAPL")))
    await stack.resolved("concentration")
    await stack.resolved("gross")

    # Two losing round trips in a row, then a winner.
    for _ in range(2):
        await stack.price("MSFT", "100")
        await stack.fill("sim-1", "MSFT", "buy", qty="10")
        await stack.position(RISK, "MSFT", True)
        await stack.price("MSFT", "90")
        await stack.fill("sim-1", "MSFT", "sell", qty="10")
        await stack.position(RISK, "MSFT", False)
    await stack.fired("streak")
    await stack.fill("sim-1", "MSFT", "buy", qty="10")
    await stack.position(RISK, "MSFT", True)
    await stack.price("MSFT", "110")
    await stack.fill("sim-1", "MSFT", "sell", qty="10")
    await stack.resolved("streak")

    # A canceled order (placed far from the market through alpaca-py, then canceled).
    await asyncio.to_thread(_place_and_cancel, stack.sim)
    await stack.fired("canceled")
    await stack.resolved("canceled")

    # The REST budget: every /v2 call answers 429 while a fill makes the ingester read activities.
    await stack.admin("/faults", {"rest_error_rate": 1.0, "rest_error_codes": [429], "retry_after_s": 1})
    await stack.fill("sim-1", "MSFT", "buy", qty="1")
    await stack.fired("budget")
    await stack.admin("/faults", {"rest_error_rate": 0.0})
    await stack.resolved("budget")

    # The trade stream held down: disconnected past for_s, and the ingest lag grows.
    ws = await hold_stream(stack)
    assert ws is not None, "could not take the account's stream connection"
    await stack.fired("stream")
    await stack.fired("lag")
    await ws.close()
    await ws._ch_session.close()  # type: ignore[attr-defined]
    await stack.resolved("stream")
    await stack.resolved("lag")

    # A frozen manager: its heartbeat ages past 2 x HEARTBEAT_SEC.
    stack.procs["manager"].send_signal(signal.SIGSTOP)
    await stack.fired("manager heartbeat")
    stack.procs["manager"].send_signal(signal.SIGCONT)
    await stack.resolved("manager heartbeat")

    # Stale: a held symbol with no price source at all.
    await stack.fill("sim-2", "AAPL", "buy", qty="5")
    await stack.fired("stale")
    await stack.fill("sim-2", "AAPL", "sell", qty="5")
    await stack.resolved("stale")

    # Once per episode, never a storm; the cool-down kept the second big fill quiet.
    rules = {"big fill", "concentration", "gross", "drawdown", "day loss", "streak", "canceled", "budget", "stream",
             "lag", "manager heartbeat", "stale"}
    for rule in rules:
        assert len(events(stack.receiver, rule, "fired")) == 1, rule
        assert len(events(stack.receiver, rule, "resolved")) == 1, rule
    rows = await stack.conn.fetch("SELECT rule, state FROM public.ch_alerts")
    assert sorted(r["rule"] for r in rows) == sorted(rules)
    assert {r["state"] for r in rows} == {"resolved"}


async def _qty(stack: Stack, symbol: str) -> Decimal:
    return Decimal(await stack.conn.fetchval(f"SELECT qty FROM public.open_trades_{RISK} WHERE symbol = $1", symbol))


def _place_and_cancel(sim: SimHandle) -> None:
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest

    client = sim.trading_client(0)
    order = client.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=1,
                                                  time_in_force=TimeInForce.DAY))
    client.cancel_order_by_id(order.id)
