"""The Alpaca adapter (the simulator speaks the same protocol): the one place broker JSON is seen.

- :mod:`~workers.alpaca.errors`: broker failures in the project's error taxonomy.
- :mod:`~workers.alpaca.wire`: what the protocol means (terminal statuses, fill events, activity
  types, activity-id times, the malformed-id sentinel, the epoch stand-in).
- :mod:`~workers.alpaca.parse`: JSON → typed records (never raises; bad items carry ``parse_error``).
- :mod:`~workers.alpaca.records`: the adapter's own records (orders, order events, account,
  positions, portfolio history); activities are :class:`core.records.ActivityRecord`.
- :mod:`~workers.alpaca.rest`: the REST client (rate limits, bounded jittered retries).
- :mod:`~workers.alpaca.stream`: the ``trade_updates`` websocket session.
"""

from workers.alpaca.errors import (
    BrokerAuthError,
    BrokerError,
    BrokerNotFound,
    BrokerProtocolError,
    BrokerRequestError,
    BrokerTemporaryError,
    StreamStale,
)
from workers.alpaca.records import BrokerAccount, BrokerPosition, OrderEventRow, OrderRow, PortfolioHistory
from workers.alpaca.rest import BrokerClient, BrokerStats
from workers.alpaca.stream import TradeUpdatesStream, stream_url_for
from workers.alpaca.wire import FILL_EVENTS, KNOWN_ACTIVITY_TYPES, TERMINAL_ORDER_STATUSES

__all__ = [
    "FILL_EVENTS",
    "KNOWN_ACTIVITY_TYPES",
    "TERMINAL_ORDER_STATUSES",
    "BrokerAccount",
    "BrokerAuthError",
    "BrokerClient",
    "BrokerError",
    "BrokerNotFound",
    "BrokerPosition",
    "BrokerProtocolError",
    "BrokerRequestError",
    "BrokerStats",
    "BrokerTemporaryError",
    "OrderEventRow",
    "OrderRow",
    "PortfolioHistory",
    "StreamStale",
    "TradeUpdatesStream",
    "stream_url_for",
]
