"""DSN parsing and normalisation.

Accepts a SQLAlchemy URL (``postgresql+psycopg2://…``), a URI (``postgresql://…?sslmode=require``)
or a libpq keyword DSN (``host=… port=… dbname=…``) and renders whatever each client needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from core.errors import ConfigError

_SCHEMES = {"postgresql", "postgres"}
_KEYWORD_RE = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """A parsed connection description; ``password`` never appears in ``repr`` or :meth:`safe`."""

    host: str = "localhost"
    port: int = 5432
    dbname: str = "postgres"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()

    def safe(self) -> str:
        """Where this points, for logs and errors: ``user@host:port/db``, no password."""
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}:{self.port}/{self.dbname}"

    def _netloc(self) -> str:
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{auth}{host}:{self.port}"

    def uri(self, scheme: str = "postgresql") -> str:
        query = urlencode(self.options) if self.options else ""
        return f"{scheme}://{self._netloc()}/{quote(self.dbname, safe='')}" + (f"?{query}" if query else "")

    def sqlalchemy_url(self, driver: str = "psycopg2") -> str:
        """URL for SQLAlchemy (dashboard: psycopg2)."""
        return self.uri(f"postgresql+{driver}")

    def asyncpg_dsn(self) -> str:
        """URI for ``asyncpg.connect``/``create_pool`` (workers)."""
        return self.uri("postgresql")

    def keyword_dsn(self) -> str:
        parts = {"host": self.host, "port": str(self.port), "dbname": self.dbname}
        if self.user is not None:
            parts["user"] = self.user
        if self.password is not None:
            parts["password"] = self.password
        parts.update(dict(self.options))

        def q(value: str) -> str:
            if value and not re.search(r"[\s'\\]", value):
                return value
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        return " ".join(f"{k}={q(v)}" for k, v in parts.items())

    def psycopg2_kwargs(self) -> dict[str, str | int]:
        kwargs: dict[str, str | int] = {"host": self.host, "port": self.port, "dbname": self.dbname}
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.update(dict(self.options))
        return kwargs

    def with_dbname(self, dbname: str) -> ConnInfo:
        return ConnInfo(self.host, self.port, dbname, self.user, self.password, self.options)


def parse_dsn(dsn: str) -> ConnInfo:
    """Parse any supported DSN form. Raises :class:`ConfigError` without echoing the password."""
    text = dsn.strip()
    if not text:
        raise ConfigError("DSN is empty")
    if "://" in text:
        return _parse_url(text)
    return _parse_keywords(text)


def _parse_url(text: str) -> ConnInfo:
    scheme, _, rest = text.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if base not in _SCHEMES:
        raise ConfigError(f"DSN scheme {scheme!r} is not PostgreSQL (expected postgresql:// or postgresql+driver://)")
    # urlsplit mishandles '@' in passwords; split on the last '@' before the path ourselves.
    netloc_and_path, _, query = rest.partition("?")
    at = netloc_and_path.rfind("@", 0, _path_start(netloc_and_path))
    auth, hostpart = (netloc_and_path[:at], netloc_and_path[at + 1 :]) if at >= 0 else ("", netloc_and_path)
    user: str | None = None
    password: str | None = None
    if at >= 0:
        u, sep, p = auth.partition(":")
        user = unquote(u)
        password = unquote(p) if sep else None
    parsed = urlsplit("//" + hostpart)
    try:
        port = parsed.port or 5432
    except ValueError:
        raise ConfigError(f"DSN has an invalid port in {parsed.netloc!r}") from None
    host = unquote(parsed.hostname or "localhost")
    dbname = unquote(parsed.path.lstrip("/")) or "postgres"
    options = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)]
    opts_dict = dict(options)
    host = opts_dict.pop("host", host)
    if "port" in opts_dict:
        port = _port(opts_dict.pop("port"))
    user = opts_dict.pop("user", user)
    password = opts_dict.pop("password", password)
    dbname = opts_dict.pop("dbname", dbname)
    return ConnInfo(host, port, dbname, user, password, tuple(opts_dict.items()))


def _path_start(netloc_and_path: str) -> int:
    # The path starts at the first '/' after the last '@' (passwords may contain '/').
    last_at = netloc_and_path.rfind("@")
    slash = netloc_and_path.find("/", last_at + 1)
    return slash if slash >= 0 else len(netloc_and_path)


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"DSN port must be an integer, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"DSN port out of range: {port}")
    return port


def _parse_keywords(text: str) -> ConnInfo:
    pos = 0
    values: dict[str, str] = {}
    while pos < len(text):
        match = _KEYWORD_RE.match(text, pos)
        if not match or match.end() == pos:
            if text[pos:].strip():
                raise ConfigError(f"DSN is not a URL nor 'key=value' pairs near position {pos}")
            break
        key, raw = match.group(1), match.group(2)
        if raw.startswith("'"):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        values[key] = raw
        pos = match.end()
    if not values:
        raise ConfigError("DSN has no key=value pairs")
    host = values.pop("host", values.pop("hostaddr", "localhost"))
    port = _port(values.pop("port", "5432"))
    dbname = values.pop("dbname", "postgres")
    user = values.pop("user", None)
    password = values.pop("password", None)
    return ConnInfo(host, port, dbname, user, password, tuple(values.items()))


def same_database(a: str, b: str) -> bool:
    """Whether two DSNs name the same database (host, port and database name; the user may differ)."""
    left, right = parse_dsn(a), parse_dsn(b)
    return (left.host.lower(), left.port, left.dbname) == (right.host.lower(), right.port, right.dbname)
