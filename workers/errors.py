"""One answer to "what does this exception mean for the loop that caught it?" (:func:`classify`).

Every long-running loop in the workers asks :func:`classify` instead of keeping its own tuple of
"expected" exceptions, so a database restart, a broker outage and a bug are told apart the same
way everywhere:

- ``TEMPORARY``: retry with bounded, jittered backoff; keep the data.
- ``OPERATIONAL``: a person must act (credentials, schema, privileges, configuration); report it and
  retry only much later.
- ``BUG``: anything else (``ValueError``, ``KeyError``, ``TypeError``…): logged with its traceback
  and re-raised by :func:`workers.supervise.supervise`, never counted as expected.
"""

from __future__ import annotations

from enum import StrEnum

import aiohttp
import asyncpg

from core.errors import ColdHarbourError, OperationalError, TemporaryError


class ErrorKind(StrEnum):
    """What a loop should do about an exception."""

    TEMPORARY = "temporary"
    """Clears by itself: retry with backoff."""
    OPERATIONAL = "operational"
    """Needs a person: report, stop that work, retry much later."""
    BUG = "bug"
    """Unexpected: log the traceback and let it propagate."""


# The server is restarting, overloaded, or the connection dropped: the same statement later succeeds.
_TEMPORARY_DB: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # client side: "connection is closed", pool closing
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.InvalidCachedStatementError,  # a migration changed a table under a prepared statement
    # A pooled connection left mid-operation when the server went away ("cannot switch to state …;
    # another operation is in progress"), a protocol desync, a stale schema cache: the pool replaces it.
    asyncpg.exceptions.InternalClientError,
)
# A local file the process needs is missing or unreadable: retrying does not help.
_OPERATIONAL_OS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError,
                                                    NotADirectoryError)


def classify(exc: BaseException) -> ErrorKind:
    """The :class:`ErrorKind` of ``exc``; the project's own taxonomy first, then the libraries'."""
    if isinstance(exc, TemporaryError):
        return ErrorKind.TEMPORARY
    if isinstance(exc, OperationalError):
        return ErrorKind.OPERATIONAL
    if isinstance(exc, _TEMPORARY_DB):
        return ErrorKind.TEMPORARY
    if isinstance(exc, asyncpg.PostgresError):
        # The server refused the statement itself (missing table, privileges, constraint): a person looks.
        return ErrorKind.OPERATIONAL
    if isinstance(exc, _OPERATIONAL_OS):
        return ErrorKind.OPERATIONAL
    if isinstance(exc, TimeoutError | OSError | aiohttp.ClientError):
        return ErrorKind.TEMPORARY
    if isinstance(exc, ColdHarbourError):
        # Raised on purpose with a message naming what is wrong (e.g. InvalidInput): report it.
        return ErrorKind.OPERATIONAL
    return ErrorKind.BUG


def is_temporary(exc: BaseException) -> bool:
    """Shorthand for ``classify(exc) is ErrorKind.TEMPORARY``."""
    return classify(exc) is ErrorKind.TEMPORARY


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, bounded (for heartbeats and logs; messages never carry secrets)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__
