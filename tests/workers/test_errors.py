"""classify(): one table of what each exception means for a loop."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from core.errors import (
    ColdHarbourError,
    ConfigError,
    DatabaseUnavailable,
    InvalidInput,
    OperationalError,
    TemporaryError,
)
from workers.errors import ErrorKind, classify, describe, is_temporary

CASES = [
    # project taxonomy
    (TemporaryError("x"), ErrorKind.TEMPORARY),
    (DatabaseUnavailable("cannot reach PostgreSQL at h:5432/db"), ErrorKind.TEMPORARY),
    (OperationalError("x"), ErrorKind.OPERATIONAL),
    (ConfigError("bad setting"), ErrorKind.OPERATIONAL),
    (InvalidInput("fill 'x': qty must be positive"), ErrorKind.OPERATIONAL),
    (ColdHarbourError("raised on purpose"), ErrorKind.OPERATIONAL),
    # the database restarting, overloaded, or the connection gone
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), ErrorKind.TEMPORARY),
    (asyncpg.exceptions.CannotConnectNowError("starting up"), ErrorKind.TEMPORARY),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), ErrorKind.TEMPORARY),
    (asyncpg.exceptions.TooManyConnectionsError("too many"), ErrorKind.TEMPORARY),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock"), ErrorKind.TEMPORARY),
    (asyncpg.InterfaceError("connection is closed"), ErrorKind.TEMPORARY),
    (asyncpg.exceptions.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
     ErrorKind.TEMPORARY),
    (asyncpg.exceptions.OutdatedSchemaCacheError("cache lookup failed"), ErrorKind.TEMPORARY),
    # the server refused the statement: schema or privileges need a person
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), ErrorKind.OPERATIONAL),
    (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), ErrorKind.OPERATIONAL),
    # network
    (TimeoutError(), ErrorKind.TEMPORARY),
    (ConnectionResetError(), ErrorKind.TEMPORARY),
    (OSError("network unreachable"), ErrorKind.TEMPORARY),
    (aiohttp.ClientConnectionError("reset"), ErrorKind.TEMPORARY),
    (FileNotFoundError("destinations.toml"), ErrorKind.OPERATIONAL),
    (PermissionError("data dir"), ErrorKind.OPERATIONAL),
    # bugs are never expected
    (ValueError("x"), ErrorKind.BUG),
    (TypeError("x"), ErrorKind.BUG),
    (KeyError("x"), ErrorKind.BUG),
    (AttributeError("x"), ErrorKind.BUG),
    (AssertionError(), ErrorKind.BUG),
    (ZeroDivisionError(), ErrorKind.BUG),
    (RuntimeError("x"), ErrorKind.BUG),
]


@pytest.mark.parametrize(("exc", "kind"), CASES, ids=[f"{type(e).__name__}" for e, _ in CASES])
def test_classify(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc) is kind
    assert is_temporary(exc) is (kind is ErrorKind.TEMPORARY)


def test_broker_errors_follow_the_taxonomy() -> None:
    from workers.alpaca.errors import (
        BrokerAuthError,
        BrokerProtocolError,
        BrokerRequestError,
        BrokerTemporaryError,
        StreamStale,
    )

    assert classify(BrokerTemporaryError("429", status=429)) is ErrorKind.TEMPORARY
    assert classify(BrokerProtocolError("bad JSON")) is ErrorKind.TEMPORARY
    assert classify(StreamStale("silent")) is ErrorKind.TEMPORARY
    assert classify(BrokerAuthError("401", status=401)) is ErrorKind.OPERATIONAL
    assert classify(BrokerRequestError("422", status=422)) is ErrorKind.OPERATIONAL


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ValueError("a\n  b"), "ValueError: a b"),
        (TimeoutError(), "TimeoutError"),
        (KeyError("k"), "KeyError: 'k'"),
    ],
)
def test_describe_is_one_bounded_line(exc: BaseException, text: str) -> None:
    assert describe(exc) == text
    assert len(describe(ValueError("x" * 1000))) == 300
