"""``python -m simulator``: run the Alpaca-compatible paper broker (see docs/simulator.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

from core.destinations import load_destinations, mask_secret
from core.errors import ConfigError
from simulator.bot import STYLES
from simulator.faults import STREAM_CONFLICT_MODES, Faults
from simulator.feed import DEFAULT_ZMQ_URL
from simulator.market import DEFAULT_UNIVERSE
from simulator.server import (
    DEFAULT_DEPOSIT,
    AccountSpec,
    SimConfig,
    Simulator,
    generated_accounts,
    host_port_matches,
    write_state,
)

log = logging.getLogger("simulator")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description="Alpaca-compatible paper broker + ZMQ price feed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="REST + websocket port (0 = any free port)")
    p.add_argument("--accounts", type=int, default=2, help="number of generated accounts (ignored with --destinations)")
    p.add_argument("--destinations", type=Path, help="destinations.toml: serve those accounts with their keys")
    p.add_argument("--destinations-local", type=Path, help="local override file for --destinations (destinations.local.toml)")
    p.add_argument("--all-destinations", action="store_true", help="serve every destination, not only those whose base_url is this host:port")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-out", type=Path, help="write URLs and keys as JSON once connections are accepted")
    p.add_argument("--zmq-url", default=DEFAULT_ZMQ_URL, help="PUB endpoint for the price feed ('none' disables it)")
    p.add_argument("--symbols", help="comma list SYMBOL[=PRICE]; default: " + ",".join(DEFAULT_UNIVERSE))
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--clock-offset-s", type=float, default=0.0,
                   help="start the simulated clock this many seconds from the wall clock (negative: in the past); "
                        "POST /admin/clock moves it forward")
    p.add_argument("--history-days", type=int, default=0, help="back-fill this many past NYSE sessions of activity")
    p.add_argument("--bot-rate", type=float, default=0.0, help="live bot orders per second across accounts (0 = off)")
    # The last of --always-open / --nyse-hours wins (a test fixture may default one, a test pass the other).
    p.add_argument("--always-open", dest="always_open", action="store_true", default=False,
                   help="every market tradable at any time (tests)")
    p.add_argument("--nyse-hours", dest="always_open", action="store_false",
                   help="equities and options in NYSE sessions (extended hours for orders that ask), crypto 24/7 (default)")
    p.add_argument("--fees", dest="fees", action="store_true", default=True,
                   help="regulatory FEEs (REG, TAF, ORF) posted at the end of each day (default)")
    p.add_argument("--no-fees", dest="fees", action="store_false", help="no regulatory fees (crypto fees stay)")
    p.add_argument("--admin-token", default=os.environ.get("SIM_ADMIN_TOKEN") or None,
                   help="bearer token for /admin (default: $SIM_ADMIN_TOKEN, else a random one written to --state-out)")
    p.add_argument("--history-events", dest="history_events", action="store_true", default=None,
                   help="corporate actions in the history (default: when --history-days >= 20)")
    p.add_argument("--no-history-events", dest="history_events", action="store_false")
    p.add_argument("--style", action="append", default=[], metavar="NAME=STYLE",
                   help="an account's bot style: day_trader, swing, bracket, crypto, options (default: from the name)")
    p.add_argument("--tick-ms", type=float, default=100.0, help="wall milliseconds between price ticks")
    p.add_argument("--daily-vol", type=float, default=0.016, help="daily price volatility (0.016 = 1.6%%); raise it for livelier demos")
    p.add_argument("--liquidity", type=Decimal, default=Decimal(25_000), help="USD an order can fill per tick (larger orders fill partially)")
    f = p.add_argument_group("faults")
    f.add_argument("--rest-error-rate", type=float, default=0.0)
    f.add_argument("--rest-error-codes", default="429,500,503")
    f.add_argument("--retry-after-s", type=int, default=1)
    f.add_argument("--rest-hang-s", type=float, default=0.0)
    f.add_argument("--rest-hang-rate", type=float, default=1.0)
    f.add_argument("--ws-drop-every-s", type=float, default=0.0)
    f.add_argument("--ws-delay-ms", type=float, default=0.0)
    f.add_argument("--ws-duplicate-rate", type=float, default=0.0)
    f.add_argument("--ws-reorder-rate", type=float, default=0.0)
    f.add_argument("--stream-conflict", choices=STREAM_CONFLICT_MODES, default="reject")
    f.add_argument("--emit-pending-new", action="store_true", help="send pending_new before new")
    p.add_argument("--no-admin", dest="admin", action="store_false", help="do not serve /admin (it exposes keys and ground truth)")
    p.add_argument("--log-level", default="INFO")
    return p


def parse_symbols(text: str | None) -> dict[str, float]:
    if not text:
        return dict(DEFAULT_UNIVERSE)
    out: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        sym, _, price = item.partition("=")
        sym = sym.strip().upper()
        out[sym] = float(price) if price else DEFAULT_UNIVERSE.get(sym, 100.0)
    return out


def config_from_args(args: argparse.Namespace) -> SimConfig:
    faults = Faults()
    faults.update(
        {
            "rest_error_rate": args.rest_error_rate,
            "rest_error_codes": [int(c) for c in args.rest_error_codes.split(",") if c.strip()],
            "retry_after_s": args.retry_after_s,
            "rest_hang_s": args.rest_hang_s,
            "rest_hang_rate": args.rest_hang_rate,
            "ws_drop_every_s": args.ws_drop_every_s,
            "ws_delay_ms": args.ws_delay_ms,
            "ws_duplicate_rate": args.ws_duplicate_rate,
            "ws_reorder_rate": args.ws_reorder_rate,
            "stream_conflict": args.stream_conflict,
            "emit_pending_new": args.emit_pending_new,
        }
    )
    if args.destinations:
        dests = load_destinations(args.destinations, args.destinations_local)
        if not args.all_destinations:
            if args.port == 0:
                raise ConfigError("--destinations needs a fixed --port (or --all-destinations)")
            dests = [d for d in dests if host_port_matches(d.base_url, args.host, args.port)]
        if not dests:
            raise ConfigError(f"{args.destinations}: no destination points at http://{args.host}:{args.port}")
        accounts = [AccountSpec(d.name, d.key_id, d.secret_key, d.initial_deposit or DEFAULT_DEPOSIT) for d in dests]
    else:
        accounts = generated_accounts(args.accounts, args.seed)
    styles = dict(item.partition("=")[::2] for item in args.style)
    for name, style in styles.items():
        if style not in (*STYLES, "crypto", "options"):
            raise ConfigError(f"--style {name}={style}: unknown style (known: {', '.join((*STYLES, 'crypto', 'options'))})")
        matched = [a for a in accounts if a.name == name]
        if not matched:
            raise ConfigError(f"--style {name}={style}: no account named {name!r}")
        matched[0].style = style
    return SimConfig(
        host=args.host,
        port=args.port,
        accounts=accounts,
        seed=args.seed,
        speed=args.speed,
        clock_offset_s=args.clock_offset_s,
        history_days=args.history_days,
        bot_rate=args.bot_rate,
        zmq_url=None if args.zmq_url.lower() == "none" else args.zmq_url,
        symbols=parse_symbols(args.symbols),
        always_open=args.always_open,
        fees=args.fees,
        tick_s=args.tick_ms / 1000,
        liquidity_notional=args.liquidity,
        daily_vol=args.daily_vol,
        admin=args.admin,
        admin_token=args.admin_token,
        history_events=args.history_events,
        faults=faults,
    )


async def run(cfg: SimConfig, state_out: Path | None) -> None:
    sim = Simulator(cfg)
    took = sim.prepare()
    log.info("history: %d days for %d accounts in %.2fs", cfg.history_days, len(cfg.accounts), took)
    await sim.start()
    state = sim.state()
    if state_out is not None:
        write_state(state_out, state)
    log.info("REST %s  stream %s  zmq %s  admin %s (bearer token in the state file)", state["rest_url"],
             state["stream_url"], state["zmq_url"], state["admin_url"])
    for a in state["accounts"]:
        log.info("account %-20s key_id %s secret %s", a["name"], a["key_id"], mask_secret(a["secret_key"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = config_from_args(args)
    except (ConfigError, ValueError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(cfg, args.state_out))
    finally:
        if args.state_out is not None:
            args.state_out.unlink(missing_ok=True)  # a stale file must not look like a running simulator
    return 0


if __name__ == "__main__":
    sys.exit(main())
