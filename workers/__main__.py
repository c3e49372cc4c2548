"""``python -m workers [all|ingester|manager|alerts|backfill|rebuild-equity|refill-snapshots|reconcile|migrate]``.

Configuration is validated (settings, destinations file) before the database is touched; bad input
exits with status 2 and a message naming the file, entry and field.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from core.db import connect, migrate, resolve_dsn, stop_embedded
from core.destinations import Destination, load_destinations
from core.errors import ColdHarbourError, ConfigError, DatabaseUnavailable
from core.settings import Settings, load_settings

log = logging.getLogger("workers")


def _parse_since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since: expected an ISO date like 2026-01-31, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _select(destinations: list[Destination], name: str | None) -> list[Destination]:
    if name is None:
        return [d for d in destinations if d.enabled]
    chosen = [d for d in destinations if name in (d.name, d.slug)]
    if not chosen:
        raise ConfigError(f"--destination: no destination named {name!r} (known: {', '.join(d.name for d in destinations)})")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("command", nargs="?", default="all",
                        choices=["all", "ingester", "manager", "alerts", "backfill", "rebuild-equity", "refill-snapshots", "reconcile",
                                 "migrate"])
    parser.add_argument("--destination", help="destination name or slug (default: every enabled one)")
    parser.add_argument("--since", type=_parse_since, help="ISO date/time (UTC when no offset)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


async def _run_services(settings: Settings, dests: list[Destination], command: str,
                        since: datetime | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    jobs: list[Awaitable[None]] = []
    if command in {"all", "ingester"}:
        from workers.ingester import run_ingester

        jobs.append(run_ingester(settings, dests, stop_event=stop, since=since))
    if command in {"all", "manager"}:
        from workers.manager import run_manager

        jobs.append(run_manager(settings, dests, stop_event=stop))
    if command in {"all", "alerts"}:
        from workers.alerts import run_alerts

        jobs.append(run_alerts(settings, dests, stop_event=stop))
    if settings.worker_metrics_port:
        from workers.alerts.metrics import serve_metrics

        jobs.append(serve_metrics(settings, stop))
    await asyncio.gather(*jobs)


async def _run_one_off(settings: Settings, dests: list[Destination], args: argparse.Namespace) -> None:
    progress = not args.no_progress
    import importlib

    module_name, func_name = {
        "backfill": ("workers.ingester", "run_backfill"),
        "rebuild-equity": ("workers.manager", "rebuild_equity"),
        "refill-snapshots": ("workers.manager", "refill_snapshots"),
        "reconcile": ("workers.manager.tieout", "reconcile"),
    }[args.command]
    runner: Callable[..., Awaitable[None]] = getattr(importlib.import_module(module_name), func_name)
    for dest in dests:
        await runner(settings, dest, since=args.since, progress=progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        destinations = load_destinations(settings.destinations_file, settings.destinations_local_file)
        dests = _select(destinations, args.destination)
        if args.command in {"all", "alerts"}:
            from core.alert_rules import load_alert_config

            load_alert_config(settings.alert_rules_file, destinations)  # a bad rule stops us here
        if args.command == "backfill" and args.since is None:
            raise ConfigError("backfill: --since is required")
    except ColdHarbourError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        conn = connect(resolve_dsn(settings), timeout_s=settings.db_connect_timeout_s)
        try:
            migrate(conn, settings, destinations)
        finally:
            conn.close()
        if args.command == "migrate":
            return 0
        if args.command in {"all", "ingester", "manager", "alerts"}:
            asyncio.run(_run_services(settings, dests, args.command, args.since))
        else:
            asyncio.run(_run_one_off(settings, dests, args))
        return 0
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        stop_embedded()


if __name__ == "__main__":
    sys.exit(main())
