"""Moved to :mod:`workers.alpaca` (the broker adapter package); this shim goes once nothing imports it."""

from __future__ import annotations

from workers.alpaca import *  # noqa: F403
from workers.alpaca import __all__ as _all
from workers.alpaca.parse import parse_activity, parse_order, parse_timestamp, parse_trade_update
from workers.alpaca.wire import EPOCH
from workers.logs import DestinationLog, destination_log

__all__ = [*_all, "EPOCH", "DestinationLog", "destination_log", "parse_activity", "parse_order",  # noqa: PLE0604
           "parse_timestamp", "parse_trade_update"]
