"""Broker failures, placed in the project's taxonomy (:mod:`core.errors`) so every loop's
:func:`workers.errors.classify` knows what to do with them."""

from __future__ import annotations

from core.errors import ColdHarbourError, OperationalError, TemporaryError


class BrokerError(ColdHarbourError):
    """Base of broker failures. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BrokerTemporaryError(BrokerError, TemporaryError):
    """Retryable: 429, 5xx, timeouts, connection resets, dropped or stale websocket."""


class BrokerProtocolError(BrokerTemporaryError):
    """The broker sent something unreadable (bad JSON body, unexpected frame); retried."""


class StreamStale(BrokerTemporaryError):
    """The websocket delivered nothing for longer than the staleness limit."""


class BrokerAuthError(BrokerError, OperationalError):
    """Credentials rejected (401/403 or websocket ``unauthorized``): stop this destination and report."""


class BrokerRequestError(BrokerError, OperationalError):
    """A non-retryable 4xx (bad request, unknown id): our request or the account needs a look."""


class BrokerNotFound(BrokerRequestError):
    """404."""
