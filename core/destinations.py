"""Destinations (broker accounts) and the names derived from them.

Loaded from ``destinations.toml`` plus an optional local override file. Every table and channel
name comes from :func:`slugify` of the destination name, exactly as the original system names them:
``open_trades_<slug>``, ``closed_trades_<slug>``, ``equity_full_<slug>``, ``pos_channel_<slug>``,
``closed_channel_<slug>``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigError

PG_IDENTIFIER_MAX_BYTES = 63
_LONGEST_PREFIX = "closed_channel_"
SLUG_MAX_LEN = PG_IDENTIFIER_MAX_BYTES - len(_LONGEST_PREFIX)  # 48
_SLUG_RE = re.compile(r"^[a-z0-9_]+$")

LIVE_URL = "https://api.alpaca.markets"
PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_HOST = "api.alpaca.markets"
_URL_ALIASES = {"live": LIVE_URL, "paper": PAPER_URL}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
DESTINATIONS_FILE_MAX_BYTES = 1 << 20
MAX_STALE_AFTER_S = 86_400.0
MAX_INITIAL_DEPOSIT = Decimal("1e15")
"""Beyond a quadrillion dollars a deposit is a typo, and equity maths in float64 loses its cents."""

_KNOWN_FIELDS = {
    "name",
    "key_id",
    "secret_key",
    "key_id_env",
    "secret_key_env",
    "base_url",
    "stream_url",
    "initial_deposit",
    "enabled",
    "price_feed",
    "description",
    "benchmark",
}
_BENCHMARK_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-/]{0,20}$")
DEFAULT_BENCHMARK = "SPY"
_PRICE_FEED_FIELDS = {"zmq_endpoints", "stale_after_s", "rest_fallback"}


def mask_secret(value: str | None) -> str:
    """``PKAB…1234``-style mask: enough to tell keys apart, never enough to use one."""
    if not value:
        return "<unset>"
    if len(value) <= 8:
        return "…" + value[-2:]
    return f"{value[:2]}…{value[-4:]}"


def slugify(name: str) -> str:
    """Stable ``[a-z0-9_]`` slug; long names keep a readable prefix plus a hash so they stay unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if len(slug) > SLUG_MAX_LEN:
        digest = hashlib.blake2b(slug.encode(), digest_size=4).hexdigest()[:8]
        slug = slug[: SLUG_MAX_LEN - 9].rstrip("_") + "_" + digest
    return slug


def open_trades_table(slug: str) -> str:
    return f"open_trades_{_checked(slug)}"


def closed_trades_table(slug: str) -> str:
    return f"closed_trades_{_checked(slug)}"


def equity_table(slug: str) -> str:
    return f"equity_full_{_checked(slug)}"


def pos_channel(slug: str) -> str:
    return f"pos_channel_{_checked(slug)}"


def closed_channel(slug: str) -> str:
    return f"closed_channel_{_checked(slug)}"


def _checked(slug: str) -> str:
    if not _SLUG_RE.match(slug) or len(slug) > SLUG_MAX_LEN:
        raise ConfigError(f"invalid slug {slug!r}: must be [a-z0-9_]{{1,{SLUG_MAX_LEN}}}")
    return slug


@dataclass(frozen=True, slots=True)
class PriceFeed:
    """Where the manager gets live prices for this destination."""

    zmq_endpoints: tuple[str, ...] = ()
    stale_after_s: float | None = None
    rest_fallback: bool = True


@dataclass(frozen=True, slots=True)
class Destination:
    """One broker account. Secrets are kept out of ``repr`` and every rendering."""

    name: str
    slug: str
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    base_url: str
    stream_url: str | None = None
    initial_deposit: Decimal | None = None
    enabled: bool = True
    price_feed: PriceFeed = PriceFeed()
    description: str = ""
    benchmark: str | None = DEFAULT_BENCHMARK
    """Symbol the account is measured against (core.benchmark); ``None``: no benchmark."""

    def __post_init__(self) -> None:
        # The last line of defence: a Destination built in code (not parsed) must not carry
        # credentials either, since base_url is logged, stored and shown.
        for name, url in (("base_url", self.base_url), ("stream_url", self.stream_url)):
            if url is not None and url_has_credentials(url):
                raise ConfigError(f"destination {self.name!r}: {name} must not carry credentials")

    @property
    def is_live(self) -> bool:
        """The URL points at Alpaca's live trading host (by parsed host, any case or port)."""
        return is_live_url(self.base_url)

    @property
    def masked_key(self) -> str:
        return mask_secret(self.key_id)

    def __repr__(self) -> str:
        return f"Destination(name={self.name!r}, slug={self.slug!r}, key_id={self.masked_key!r}, base_url={self.base_url!r})"

    __str__ = __repr__


def _err(source: str, entry: str, field_name: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: destination {entry}: field {field_name!r}: {message}")


def _env_or_value(
    raw: dict[str, Any], key: str, source: str, entry: str, environ: dict[str, str]
) -> str:
    env_key = f"{key}_env"
    value = raw.get(key)
    if value is None and env_key in raw:
        var = raw[env_key]
        if not isinstance(var, str) or not var:
            raise _err(source, entry, env_key, "must be the name of an environment variable")
        value = environ.get(var)
        if not value:
            raise _err(source, entry, env_key, f"environment variable {var} is not set")
    if value is None:
        raise _err(source, entry, key, f"missing (give {key} or {env_key})")
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        var = value[2:-1]
        resolved = environ.get(var)
        if not resolved:
            raise _err(source, entry, key, f"environment variable {var} is not set")
        value = resolved
    if not isinstance(value, str) or not value.strip():
        raise _err(source, entry, key, "must be a non-empty string")
    return value.strip()


def url_has_credentials(url: str) -> bool:
    """``user[:password]@`` in the authority part of ``url`` (a malformed URL counts as carrying them)."""
    try:
        parts = urlsplit(url.strip())
        return parts.username is not None or parts.password is not None or "@" in parts.netloc
    except ValueError:
        return True


def is_live_url(url: str) -> bool:
    """Alpaca's live host, compared on the parsed host name: case, trailing dot and port do not matter."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return False
    return host.rstrip(".").lower() == LIVE_HOST


def _parse_url(value: Any, source: str, entry: str, field_name: str) -> str:
    """A normalised URL: lower-case scheme and host, default port dropped, no trailing slash.

    Errors never echo the value: a URL may carry a password.
    """
    if not isinstance(value, str):
        raise _err(source, entry, field_name, "must be a string")
    url = _URL_ALIASES.get(value.strip().lower(), value.strip())
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise _err(source, entry, field_name, "invalid URL (contains whitespace or control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _err(source, entry, field_name, "invalid port in URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise _err(source, entry, field_name, "invalid URL (expected http(s)://host[:port], 'live' or 'paper')")
    if url_has_credentials(url):
        raise _err(source, entry, field_name,
                   "credentials in the URL are not allowed (the URL is logged, stored and shown; "
                   "give key_id/secret_key or their *_env names)")
    if parts.query or parts.fragment:
        raise _err(source, entry, field_name, "must not carry a query string or fragment")
    host = parts.hostname.rstrip(".").lower()
    host = f"[{host}]" if ":" in host else host
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path}".rstrip("/")


def parse_destination(
    raw: Any, source: str, index: int, environ: dict[str, str] | None = None
) -> Destination:
    """Validate one entry; errors name ``source``, the entry and the field."""
    env = dict(os.environ if environ is None else environ)
    entry = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: destination {entry}: must be a table")
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        entry = f"#{index + 1} ({name.strip()!r})"
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise _err(source, entry, unknown[0], f"unknown field (known: {', '.join(sorted(_KNOWN_FIELDS))})")
    if not isinstance(name, str) or not name.strip():
        raise _err(source, entry, "name", "missing or empty")
    slug = slugify(name)
    if not slug:
        raise _err(source, entry, "name", "slugs to nothing (use at least one letter or digit)")
    key_id = _env_or_value(raw, "key_id", source, entry, env)
    secret_key = _env_or_value(raw, "secret_key", source, entry, env)
    if "base_url" not in raw:
        raise _err(source, entry, "base_url", "missing (an URL, 'live' or 'paper')")
    base_url = _parse_url(raw["base_url"], source, entry, "base_url")
    stream_url = _parse_url(raw["stream_url"], source, entry, "stream_url") if "stream_url" in raw else None

    deposit: Decimal | None = None
    if raw.get("initial_deposit") is not None:
        value = raw["initial_deposit"]
        if isinstance(value, bool):
            raise _err(source, entry, "initial_deposit", "must be a number")
        try:
            deposit = Decimal(str(value))
        except InvalidOperation:
            raise _err(source, entry, "initial_deposit", f"not a number: {value!r}") from None
        if not deposit.is_finite() or deposit < 0 or deposit > MAX_INITIAL_DEPOSIT:
            raise _err(source, entry, "initial_deposit",
                       f"must be a finite number >= 0 and <= {MAX_INITIAL_DEPOSIT:,.0f}, got {value!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(source, entry, "enabled", "must be true or false")
    feed = _parse_price_feed(raw.get("price_feed", {}), source, entry)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _err(source, entry, "description", "must be a string")
    benchmark = _parse_benchmark(raw.get("benchmark", DEFAULT_BENCHMARK), source, entry)
    return Destination(
        name=name.strip(),
        slug=slug,
        key_id=key_id,
        secret_key=secret_key,
        base_url=base_url,
        stream_url=stream_url,
        initial_deposit=deposit,
        enabled=enabled,
        price_feed=feed,
        description=description,
        benchmark=benchmark,
    )


def _parse_benchmark(raw: Any, source: str, entry: str) -> str | None:
    """A symbol (upper-cased), or ``None`` for ``"none"``/``""``."""
    if not isinstance(raw, str):
        raise _err(source, entry, "benchmark", 'must be a symbol such as "SPY", or "none"')
    symbol = raw.strip().upper()
    if symbol in ("", "NONE"):
        return None
    if not _BENCHMARK_RE.match(symbol):
        raise _err(source, entry, "benchmark", f"not a symbol: {raw[:30]!r}")
    return symbol


def _parse_price_feed(raw: Any, source: str, entry: str) -> PriceFeed:
    if not isinstance(raw, dict):
        raise _err(source, entry, "price_feed", "must be a table")
    unknown = sorted(set(raw) - _PRICE_FEED_FIELDS)
    if unknown:
        raise _err(source, entry, f"price_feed.{unknown[0]}", "unknown field")
    endpoints = raw.get("zmq_endpoints", [])
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list) or not all(isinstance(e, str) and "://" in e for e in endpoints):
        raise _err(source, entry, "price_feed.zmq_endpoints", "must be a list of ZMQ endpoints like tcp://host:port")
    stale = raw.get("stale_after_s")
    # TOML has nan and inf literals; NaN compares false with everything, so test finiteness first.
    if stale is not None and (
        isinstance(stale, bool) or not isinstance(stale, int | float)
        or not math.isfinite(stale) or not 0 < stale <= MAX_STALE_AFTER_S
    ):
        raise _err(source, entry, "price_feed.stale_after_s",
                   f"must be a finite number of seconds > 0 and <= {MAX_STALE_AFTER_S:g}, got {stale!r}")
    fallback = raw.get("rest_fallback", True)
    if not isinstance(fallback, bool):
        raise _err(source, entry, "price_feed.rest_fallback", "must be true or false")
    return PriceFeed(tuple(endpoints), float(stale) if stale is not None else None, fallback)


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse one destinations file; every failure is a :class:`ConfigError` naming it."""
    if path.stat().st_size > DESTINATIONS_FILE_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {DESTINATIONS_FILE_MAX_BYTES} bytes; not a destinations file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        # tomllib recurses once per nested array/inline table; no valid entry nests beyond three.
        raise ConfigError(f"{path}: nested too deeply (arrays or inline tables inside each other)") from None


def load_destinations(
    path: str | Path,
    local_path: str | Path | None = None,
    environ: dict[str, str] | None = None,
) -> list[Destination]:
    """Load and validate destinations. The local file's entries replace same-named ones and add new ones.

    Raises :class:`ConfigError` naming the file, the entry and the field.
    """
    main = Path(path)
    entries: list[tuple[str, int, Any]] = []
    for file_path in [main, Path(local_path) if local_path else None]:
        if file_path is None or not file_path.exists():
            if file_path is main:
                raise ConfigError(f"{main}: destinations file not found")
            continue
        data = _read_toml(file_path)
        # [[strategies]] belong to core.strategies, which reads the same files
        unknown_top = sorted(set(data) - {"destinations", "strategies"})
        if unknown_top:
            raise ConfigError(f"{file_path}: unknown top-level key {unknown_top[0]!r} (expected [[destinations]])")
        items = data.get("destinations", [])
        if not isinstance(items, list):
            raise ConfigError(f"{file_path}: 'destinations' must be an array of tables ([[destinations]])")
        entries.extend((str(file_path), i, item) for i, item in enumerate(items))

    by_slug: dict[str, tuple[str, Destination]] = {}
    order: list[str] = []
    for source, index, raw in entries:
        dest = parse_destination(raw, source, index, environ)
        if dest.slug in by_slug:
            prev_source, prev = by_slug[dest.slug]
            if prev_source != source and prev.name == dest.name:
                by_slug[dest.slug] = (source, dest)  # local override of the same destination
                continue
            raise ConfigError(
                f"{source}: destination #{index + 1} ({dest.name!r}): field 'name': slug {dest.slug!r} "
                f"collides with {prev.name!r} from {prev_source}"
            )
        by_slug[dest.slug] = (source, dest)
        order.append(dest.slug)
    return [by_slug[s][1] for s in order]
