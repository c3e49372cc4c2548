"""Exception taxonomy shared by every package."""

from __future__ import annotations


class ColdHarbourError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ColdHarbourError, ValueError):
    """A setting, DSN or destinations file is wrong; the message names what and where."""


class DatabaseUnavailable(ColdHarbourError):
    """The database cannot be reached; the message names host:port, never the password."""


class InvalidInput(ColdHarbourError, ValueError):
    """Analytics input is malformed; the message names the offending row."""
