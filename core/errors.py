"""Exception taxonomy shared by every package.

Two families drive control flow in the long-running loops (see :func:`workers.errors.classify`):

- :class:`TemporaryError`: expected to clear by itself (network blip, 5xx, rate limit, database
  restarting). Retried with bounded, jittered backoff; the data is kept.
- :class:`OperationalError`: needs a person (credentials rejected, bad configuration). The loop
  stops that destination's work, reports it in the heartbeat and retries only much later.

Anything else that escapes a loop is a bug: it is logged with its traceback and never treated as
expected.
"""

from __future__ import annotations


class ColdHarbourError(Exception):
    """Base of every error this project raises on purpose."""


class TemporaryError(ColdHarbourError):
    """Expected to clear by itself: retry with bounded, jittered backoff."""


class OperationalError(ColdHarbourError):
    """Needs a person: stop that destination's work, report it, retry much later."""


class ConfigError(OperationalError, ValueError):
    """A setting, DSN or destinations file is wrong; the message names what and where."""


class DatabaseUnavailable(TemporaryError):
    """The database cannot be reached; the message names host:port, never the password."""


class InvalidInput(ColdHarbourError, ValueError):
    """Analytics input is malformed; the message names the offending row."""
