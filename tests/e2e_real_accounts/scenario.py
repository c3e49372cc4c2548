"""Two trading days that meet every event kind a real Alpaca account produces, on two accounts.

The simulator's clock starts a day behind (``--clock-offset-s``): positions are opened "yesterday",
then the clock jumps to now (the broker posts yesterday's fees at that midnight) and today's corporate
actions meet positions held overnight, as they do at Alpaca (which applies them before the open and
dates them with the day only). Contracts bought yesterday expire today.

Account A (``Bench 000``) ends flat in every event family, so its realized P&L is all in round trips;
account B (``Bench 001``) holds through the same events, so its open positions show the broker's
quantities and cost after them, and it trades the options and the crypto. Every price is pinned, so
marks do not move between the broker's and the product's reads. Orders go through alpaca-py; the
events through the simulator's admin API (what the broker would do on its own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from bench.stack import Stack

NY = ZoneInfo("America/New_York")
CLOCK_OFFSET_S = -86_400.0  # the simulator starts yesterday
ORDER_DEADLINE_S = 30.0  # liveness bound for one batch of market orders to fill (they fill on the next tick)

PRICES: dict[str, str] = {
    "NVDA": "1000", "REV": "2.10", "OLDN": "50", "PAR": "100", "TGT1": "40", "ACQ": "80", "TGT2": "30", "TGT3": "60",
    "ACQB": "100", "ROLD": "25", "DEAD": "1.50", "DIVY": "50", "SHRT": "20", "SENT": "10", "OPU": "100", "OPV": "50",
    "XSP": "500", "BTC/USD": "60000", "ETH/USD": "3000",
}
SYMBOLS_ARG = ",".join(f"{s}={p}" for s, p in PRICES.items())
DUST_FEE = "0.0000000004"  # a coin fee finer than an order's 9 decimals
ETH_BUY, ETH_SELL = "0.5", "0.498749999"  # 0.5 - 0.00125 (25 bps fee) - dust fee, cut to 9 decimals


@dataclass(slots=True)
class Contracts:
    expiring_otm_call: str = ""  # OPU 110 call, expires worthless
    exercised_call: str = ""  # OPU 90 call, exercised: 100 OPU at 90
    assigned_call: str = ""  # OPV 45 call written against 100 OPV, assigned
    cash_settled_put: str = ""  # XSP 510 put, settles in cash


@dataclass(slots=True)
class Scenario:
    """What was done, for the tests to look up."""

    contracts: Contracts = field(default_factory=Contracts)
    applied: list[dict[str, Any]] = field(default_factory=list)


def _client(stack: Stack, index: int) -> TradingClient:
    return TradingClient(f"PKBENCH{index:011d}", f"bench-secret-{index:06d}", paper=True, url_override=stack.rest_url)


def _orders(client: TradingClient, legs: list[tuple[str, str, str]]) -> None:
    """Submit market orders (``symbol, qty, buy|sell``) and wait until each is filled."""
    ids = []
    for symbol, qty, side in legs:
        tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
        order = client.submit_order(MarketOrderRequest(symbol=symbol, qty=float(qty), side=OrderSide(side),
                                                       time_in_force=tif))
        ids.append((order.id, symbol))  # type: ignore[union-attr]
    deadline = time.monotonic() + ORDER_DEADLINE_S
    for oid, symbol in ids:
        while (status := client.get_order_by_id(oid).status) != "filled":  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{symbol} order {oid} not filled ({status})")
            time.sleep(0.05)


def _pin(stack: Stack, prices: dict[str, str]) -> None:
    for symbol, price in prices.items():
        stack.admin("/price", {"symbol": symbol, "price": price})


def _action(stack: Stack, scenario: Scenario, kind: str, **params: Any) -> None:
    scenario.applied.append(stack.admin("/corporate-action", {"type": kind, **params}))


def _option_chain(stack: Stack) -> Contracts:
    today = datetime.now(NY).date().isoformat()  # the wall clock's today: "tomorrow" for the simulator now
    opu = stack.admin("/option-chain", {"underlying": "OPU", "expiry": today, "strikes": ["90", "110"]})["contracts"]
    opv = stack.admin("/option-chain", {"underlying": "OPV", "expiry": today, "strikes": ["45"]})["contracts"]
    xsp = stack.admin("/option-chain", {"underlying": "XSP", "expiry": today, "strikes": ["510"]})["contracts"]
    calls = {c[-9:]: c for c in opu}  # "C00090000"...
    return Contracts(expiring_otm_call=calls["C00110000"], exercised_call=calls["C00090000"],
                     assigned_call=next(c for c in opv if "C" in c[-9:]), cash_settled_put=next(c for c in xsp if "P" in c[-9:]))


def _open_books(stack: Stack, a: TradingClient, b: TradingClient, c: Contracts) -> None:
    """Positions that the day's events will meet."""
    _orders(a, [("NVDA", "10", "buy"), ("REV", "45", "buy"), ("OLDN", "20", "buy"), ("PAR", "10", "buy"),
                ("TGT1", "10", "buy"), ("TGT2", "10", "buy"), ("TGT3", "10", "buy"), ("ROLD", "20", "buy"),
                ("DEAD", "100", "buy"), ("DIVY", "10", "buy"), ("SHRT", "10", "sell")])
    _orders(b, [("NVDA", "10", "buy"), ("REV", "50", "buy"), ("OLDN", "20", "buy"), ("PAR", "10", "buy"),
                ("TGT1", "10", "buy"), ("TGT3", "10", "buy"), ("ROLD", "20", "buy"), ("SHRT", "6", "sell"),
                ("OPV", "100", "buy"), ("BTC/USD", "0.01", "buy"), ("ETH/USD", ETH_BUY, "buy")])
    _pin(stack, {c.expiring_otm_call: "0.50", c.exercised_call: "10.50", c.assigned_call: "5.50",
                 c.cash_settled_put: "10.50"})
    _orders(b, [(c.expiring_otm_call, "2", "buy"), (c.exercised_call, "1", "buy"), (c.assigned_call, "1", "sell"),
                (c.cash_settled_put, "1", "buy")])


def _corporate_actions(stack: Stack, s: Scenario) -> None:
    _action(stack, s, "split", symbol="NVDA", new_rate=10, old_rate=1)
    _action(stack, s, "split", symbol="REV", new_rate=1, old_rate=10)  # A's 45 → 4.5: 0.5 as cash in lieu
    _action(stack, s, "name_change", old="OLDN", new="NEWN")
    _action(stack, s, "spinoff", parent="PAR", new="CHILD", ratio="0.5", price="20")
    _action(stack, s, "merger", target="TGT1", acquirer="ACQ", ratio="0.5")
    _action(stack, s, "merger", target="TGT2", acquirer="ACQ", ratio="0", cash="33")
    _action(stack, s, "merger", target="TGT3", acquirer="ACQB", ratio="0.5", cash="10")
    _action(stack, s, "reorg", symbol="ROLD", new="RNEW", ratio="2")
    _action(stack, s, "worthless", symbol="DEAD")
    _action(stack, s, "dividend", symbol="DIVY", per_share="0.5", withholding="0.3", withholding_type="DIVNRA")


def run(stack: Stack) -> Scenario:
    """The whole day, in the order a broker would post it; returns what was done."""
    s = Scenario()
    a, b = _client(stack, 0), _client(stack, 1)
    _pin(stack, PRICES)
    s.contracts = c = _option_chain(stack)
    _open_books(stack, a, b, c)
    stack.admin("/clock", {"to": "wall"})  # overnight: yesterday's FEEs and CFEEs are posted at midnight
    deadline = time.monotonic() + ORDER_DEADLINE_S
    while any(acct["accrued"] for acct in stack.admin("/ground-truth")["accounts"].values()):
        if time.monotonic() > deadline:
            raise TimeoutError("the simulator did not post yesterday's fees after the clock moved")
        time.sleep(0.05)
    _corporate_actions(stack, s)
    _pin(stack, {"NVDA": "110", "REV": "21.50", "NEWN": "55", "PAR": "92", "CHILD": "22", "ACQ": "82", "ACQB": "101",
                 "RNEW": "13"})
    # A closes every family; B holds
    _orders(a, [("NVDA", "100", "sell"), ("REV", "4", "sell"), ("NEWN", "20", "sell"), ("PAR", "10", "sell"),
                ("CHILD", "5", "sell"), ("ACQ", "5", "sell"), ("ACQB", "5", "sell"), ("RNEW", "40", "sell"),
                ("SHRT", "10", "buy")])
    name_a, name_b = stack.names
    stack.admin("/activity", {"account": name_a, "type": "CSD", "amount": "5000", "status": "canceled",
                              "description": "deposit canceled by the bank"})
    stack.admin("/activity", {"account": name_a, "type": "ZZNEW", "amount": "-12.34", "allow_unknown": True,
                              "description": "an activity type Alpaca adds one day"})
    stack.admin("/end-of-day", {})  # regulatory FEEs of the sales, ORF of the contracts, CFEE of the coin buys
    _action(stack, s, "crypto_dust", account=name_b, symbol="ETHUSD", qty=DUST_FEE)
    _orders(b, [("ETH/USD", ETH_SELL, "sell")])
    stack.admin("/session-close", {})  # today's contracts: OPEXP, OPEXC + OPTRD, OPASN + OPTRD, OPCSH
    stack.admin("/end-of-day", {})  # the USD CFEE of the coin sale
    # a last fill on each account: its trade update makes the ingester read the activities at once
    _orders(a, [("SENT", "1", "buy")])
    _orders(b, [("SENT", "1", "buy")])
    return s


def family_prices() -> dict[str, Decimal]:
    return {s: Decimal(p) for s, p in PRICES.items()}
