"""The broker adapter: the one place where Alpaca (or simulator) JSON is seen.

Everything else receives typed, frozen records from here.

Usage (inside a running event loop)::

    async with BrokerClient(destination, settings) as broker:
        account = await broker.get_account()                    # BrokerAccount
        positions = await broker.get_positions()                # list[BrokerPosition]
        history = await broker.get_portfolio_history(period="1M", timeframe="1D")  # PortfolioHistory
        page = await broker.get_activities(after=since, page_size=100)            # list[ActivityRow]
        async for page in broker.iter_activities(since):        # pages of ActivityRow, oldest first
            ...
        orders = await broker.get_orders(after=t0, until=t1)    # list[OrderRow], legs flattened
        async for page in broker.iter_orders(after=t0):         # pages of OrderRow, each order once
            ...
        rows = await broker.get_order(order_id)                 # list[OrderRow]: the order, then its legs

Every REST call goes through :meth:`BrokerClient._request`, which

- waits out a spent ``X-RateLimit-Remaining`` budget until ``X-RateLimit-Reset``;
- on 429 waits ``Retry-After`` (or the jittered backoff) and retries;
- on 5xx, timeouts (``request_timeout_s``, hung requests), connection errors or an unreadable body
  retries with bounded, jittered exponential backoff (:mod:`workers.backoff`), at most
  ``retry.max_attempts`` times, then raises :class:`BrokerTemporaryError`;
- raises :class:`BrokerAuthError` at once on 401/403 (stop this destination, report it in the
  heartbeat, retry much later) and :class:`BrokerRequestError` on other 4xx (a bug or bad input).

Parsing never raises: a malformed item comes back as a record with ``parse_error`` set (and the
original payload in ``raw``) so callers can store it and count it.

:class:`TradeUpdatesStream` is the ``trade_updates`` websocket client (aiohttp): connect,
authenticate, listen, then yield :class:`OrderEventRow` records; it raises :class:`StreamStale`
when nothing arrived for ``stale_after_s``. The reconnect loop lives in :mod:`workers.ingester`.

Secrets (key id, secret key) are sent in headers/the auth frame only; they never appear in
reprs, logs or error messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.destinations import Destination
from core.settings import Settings
from workers.alpaca.errors import BrokerAuthError as BrokerAuthError
from workers.alpaca.errors import BrokerError as BrokerError
from workers.alpaca.errors import BrokerNotFound as BrokerNotFound
from workers.alpaca.errors import BrokerProtocolError as BrokerProtocolError
from workers.alpaca.errors import BrokerRequestError as BrokerRequestError
from workers.alpaca.errors import BrokerTemporaryError as BrokerTemporaryError
from workers.alpaca.errors import StreamStale as StreamStale
from workers.backoff import BackoffPolicy, parse_retry_after_s, rate_limit_wait_s, retry_delay_s, should_retry

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ACTIVITIES_PAGE_SIZE = 100
ORDERS_PAGE_LIMIT = 500
_ERROR_BODY_MAX_CHARS = 300
# Bounded: ~0.25+0.5+1+2+4 s of jittered waits (plus any Retry-After) before giving up.
DEFAULT_REST_RETRY = BackoffPolicy(base_s=0.25, cap_s=8.0, jitter=0.5, max_attempts=6)


# --- logging -------------------------------------------------------------------------------------


class DestinationLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger adapter putting ``dest=<slug>`` on every line (and ``destination`` in ``extra``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        slug = (self.extra or {}).get("destination", "?")
        kwargs.setdefault("extra", {}).update(self.extra or {})
        return f"dest={slug} {msg}", kwargs


def destination_log(logger: logging.Logger, slug: str) -> DestinationLog:
    return DestinationLog(logger, {"destination": slug})


# --- errors --------------------------------------------------------------------------------------


# --- records -------------------------------------------------------------------------------------


class ActivityKind(StrEnum):
    """How an activity's ``ts`` was derived."""

    TRADE = "trade"  # FILL: ts = transaction_time
    NON_TRADE = "non_trade"  # everything else: ts = date (midnight UTC) or its full timestamp if given


# Alpaca's documented activity types (alpaca.trading.enums.ActivityType); others are flagged.
KNOWN_ACTIVITY_TYPES = frozenset(
    {
        "FILL", "TRANS", "MISC", "ACATC", "ACATS", "CFEE", "CSD", "CSW", "DIV", "DIVCGL", "DIVCGS",
        "DIVFEE", "DIVFT", "DIVNRA", "DIVROC", "DIVTW", "DIVTXEX", "FEE", "INT", "INTNRA", "INTTW",
        "JNL", "JNLC", "JNLS", "MA", "NC", "OPASN", "OPCA", "OPCSH", "OPEXC", "OPEXP", "OPTRD",
        "PTC", "PTR", "REORG", "SC", "SSO", "SSP", "CIL", "SPIN", "SPLIT", "VOF", "WH",
    }
)  # fmt: skip
FILL_EVENTS = frozenset({"fill", "partial_fill"})
TERMINAL_ORDER_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One ``/v2/account/activities`` item as stored in ``activities`` (key: ``activity_id`` + ``ts``)."""

    activity_id: str
    ts: datetime
    activity_type: str
    raw: Any = field(repr=False)
    fill_type: str | None = None
    symbol: str | None = None
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    net_amount: Decimal | None = None
    leaves_qty: Decimal | None = None
    cum_qty: Decimal | None = None
    order_id: uuid.UUID | None = None
    order_status: str | None = None
    description: str | None = None
    parse_error: str | None = None

    @property
    def is_fill(self) -> bool:
        return self.activity_type == "FILL"


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order's state as stored in ``orders`` (latest ``updated_at`` wins). Legs are separate rows."""

    order_id: uuid.UUID
    raw: Any = field(repr=False)
    client_order_id: str | None = None
    parent_order_id: uuid.UUID | None = None
    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    order_class: str | None = None
    time_in_force: str | None = None
    qty: Decimal | None = None
    notional: Decimal | None = None
    filled_qty: Decimal | None = None
    filled_avg_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    parse_error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_ORDER_STATUSES


@dataclass(frozen=True, slots=True)
class OrderEventRow:
    """One trade update as stored in ``order_events`` (key: ``event_key`` + ``ts``), plus the order it carries."""

    event_key: str
    ts: datetime
    event: str
    raw: Any = field(repr=False)
    order_id: uuid.UUID | None = None
    execution_id: str | None = None
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    parse_error: str | None = None
    orders: tuple[OrderRow, ...] = ()

    @property
    def is_fill(self) -> bool:
        return self.event in FILL_EVENTS


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """``/v2/account``: the money fields as exact decimals."""

    account_id: str | None
    account_number: str | None
    status: str | None
    currency: str | None
    cash: Decimal | None
    equity: Decimal | None
    last_equity: Decimal | None
    portfolio_value: Decimal | None
    buying_power: Decimal | None
    long_market_value: Decimal | None
    short_market_value: Decimal | None
    raw: Any = field(repr=False)
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """One ``/v2/positions`` item. ``qty`` is signed (negative for shorts), as Alpaca sends it."""

    symbol: str
    qty: Decimal | None
    side: str | None
    avg_entry_price: Decimal | None
    market_value: Decimal | None
    cost_basis: Decimal | None
    unrealized_pl: Decimal | None
    unrealized_plpc: Decimal | None
    current_price: Decimal | None
    lastday_price: Decimal | None
    change_today: Decimal | None
    asset_id: str | None
    asset_class: str | None
    raw: Any = field(repr=False)
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class PortfolioHistory:
    """``/v2/account/portfolio/history``: parallel series; unparseable points are ``None``."""

    timestamps: tuple[datetime, ...]
    equity: tuple[Decimal | None, ...]
    profit_loss: tuple[Decimal | None, ...]
    profit_loss_pct: tuple[Decimal | None, ...]
    base_value: Decimal | None
    timeframe: str | None
    raw: Any = field(repr=False)
    parse_error: str | None = None


# --- parsing -------------------------------------------------------------------------------------


class _Fields:
    """Reads typed values out of one JSON object, collecting errors instead of raising."""

    __slots__ = ("data", "errors")

    # Exact-type fast paths: parsing is about half the ingester CPU on a backfill (~8.5 vs ~11.7 µs a row).

    def __init__(self, data: Any) -> None:
        ok = type(data) is dict or isinstance(data, Mapping)
        self.data: Mapping[str, Any] = data if ok else {}
        self.errors: list[str] = [] if ok else [f"expected an object, got {type(data).__name__}"]

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            self.errors.append(f"{key}: missing")
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key, required)
        if type(value) is str:
            return value if "\x00" not in value else value.replace("\x00", "")
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.errors.append(f"{key}: expected a string, got {type(value).__name__}")
        return None

    def decimal(self, key: str, *, required: bool = False) -> Decimal | None:
        value = self._get(key, required)
        if value is None:
            return None
        return self._to_decimal(key, value)

    def _to_decimal(self, key: str, value: Any) -> Decimal | None:
        if type(value) is str:
            try:
                number = Decimal(value)
            except InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                return number
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.errors.append(f"{key}: expected a number, got {type(value).__name__}")
            return None
        try:
            number = Decimal(value) if isinstance(value, str | int) else Decimal(repr(value))
        except InvalidOperation:
            self.errors.append(f"{key}: not a number: {str(value)[:40]!r}")
            return None
        if not number.is_finite():
            self.errors.append(f"{key}: not a finite number: {str(value)[:40]!r}")
            return None
        return number

    def uuid(self, key: str, *, required: bool = False) -> uuid.UUID | None:
        value = self._get(key, required)
        if value is None:
            return None
        try:
            return uuid.UUID(str(value))
        except ValueError:
            self.errors.append(f"{key}: not a UUID: {str(value)[:40]!r}")
            return None

    def timestamp(self, key: str, *, required: bool = False) -> datetime | None:
        value = self._get(key, required)
        if value is None:
            return None
        parsed = parse_timestamp(value)
        if parsed is None:
            self.errors.append(f"{key}: not a timestamp: {str(value)[:40]!r}")
        return parsed

    def error(self) -> str | None:
        return "; ".join(self.errors)[:1000] if self.errors else None


def parse_timestamp(value: Any) -> datetime | None:
    """ISO-8601 text (``Z``, offsets, nanoseconds, bare dates) to an aware UTC datetime; ``None`` if not one."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _stable_hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def parse_activity(item: Any) -> ActivityRow:
    """Turn one activity object into a row. Never raises.

    The key is ``(id, ts)`` with ``ts`` = ``transaction_time`` for trade activities and ``date`` for
    the others. An item without an id gets a stable ``malformed:<hash>`` id; without a usable time,
    the epoch; unknown activity types are kept and flagged.
    """
    f = _Fields(item)
    activity_id = f.text("id", required=True)
    if not activity_id:
        activity_id = "malformed:" + _stable_hash(item)
    activity_type = f.text("activity_type", required=True) or "UNKNOWN"
    if activity_type not in KNOWN_ACTIVITY_TYPES and activity_type != "UNKNOWN":
        f.errors.append(f"activity_type: unknown {activity_type[:40]!r}")
    if activity_type == "FILL":
        ts = f.timestamp("transaction_time", required=True)
        qty = f.decimal("qty", required=True)
        price = f.decimal("price", required=True)
        order_id = f.uuid("order_id", required=True)
        symbol = f.text("symbol", required=True)
        side = f.text("side", required=True)
    else:
        if f.data.get("date") is not None:
            ts = f.timestamp("date")
        elif f.data.get("transaction_time") is not None:
            ts = f.timestamp("transaction_time")
        else:
            ts = None
            f.errors.append("date: missing")
        qty = f.decimal("qty")
        price = f.decimal("price")
        order_id = f.uuid("order_id")
        symbol = f.text("symbol")
        side = f.text("side")
    net_amount = f.decimal("net_amount")
    return ActivityRow(
        activity_id=activity_id,
        ts=ts or EPOCH,
        activity_type=activity_type,
        raw=item,
        fill_type=f.text("type"),
        symbol=symbol,
        side=side,
        qty=qty,
        price=price,
        net_amount=net_amount,
        leaves_qty=f.decimal("leaves_qty"),
        cum_qty=f.decimal("cum_qty"),
        order_id=order_id,
        order_status=f.text("order_status"),
        description=f.text("description"),
        parse_error=f.error(),
    )


def parse_order(item: Any, *, parent_order_id: uuid.UUID | None = None) -> list[OrderRow]:
    """One order object (with nested ``legs``) to rows: the order first, then each leg with
    ``parent_order_id`` set. Never raises; an order without a usable id gets a stable UUID derived
    from its payload and a ``parse_error``."""
    f = _Fields(item)
    order_id = f.uuid("id", required=True)
    if order_id is None:
        order_id = uuid.uuid5(uuid.NAMESPACE_OID, "malformed-order:" + _stable_hash(item))
    legs = f.data.get("legs")
    row = OrderRow(
        order_id=order_id,
        raw=item,
        client_order_id=f.text("client_order_id"),
        parent_order_id=parent_order_id,
        symbol=f.text("symbol"),
        side=f.text("side"),
        order_type=f.text("order_type") or f.text("type"),
        order_class=f.text("order_class"),
        time_in_force=f.text("time_in_force"),
        qty=f.decimal("qty"),
        notional=f.decimal("notional"),
        filled_qty=f.decimal("filled_qty"),
        filled_avg_price=f.decimal("filled_avg_price"),
        limit_price=f.decimal("limit_price"),
        stop_price=f.decimal("stop_price"),
        trail_price=f.decimal("trail_price"),
        trail_percent=f.decimal("trail_percent"),
        status=f.text("status", required=True),
        created_at=f.timestamp("created_at"),
        updated_at=f.timestamp("updated_at", required=True),
        submitted_at=f.timestamp("submitted_at"),
        filled_at=f.timestamp("filled_at"),
        canceled_at=f.timestamp("canceled_at"),
        expired_at=f.timestamp("expired_at"),
        parse_error=None,
    )
    if legs is not None and not isinstance(legs, list):
        f.errors.append(f"legs: expected a list, got {type(legs).__name__}")
        legs = None
    error = f.error()
    rows = [row if error is None else _with_error(row, error)]
    for leg in legs or []:
        rows.extend(parse_order(leg, parent_order_id=order_id))
    return rows


def _with_error(row: OrderRow, error: str) -> OrderRow:
    values = {name: getattr(row, name) for name in OrderRow.__dataclass_fields__}
    values["parse_error"] = error
    return OrderRow(**values)


def parse_trade_update(data: Any) -> OrderEventRow:
    """One ``trade_updates`` ``data`` object to an event row (plus the order rows it carries).

    Key: ``execution_id`` when present, else a stable hash of (order id, event, timestamp), so a
    duplicate delivery maps to the same key. Never raises.
    """
    f = _Fields(data)
    event = f.text("event", required=True) or "unknown"
    ts = f.timestamp("timestamp", required=True)
    execution_id = f.text("execution_id")
    order_raw = f.data.get("order")
    orders: tuple[OrderRow, ...] = ()
    order_id: uuid.UUID | None = None
    if isinstance(order_raw, Mapping):
        orders = tuple(parse_order(order_raw))
        order_id = orders[0].order_id
        if ts is None:
            ts = orders[0].updated_at
    else:
        f.errors.append("order: missing" if order_raw is None else "order: expected an object")
    if execution_id:
        event_key = f"x:{execution_id}"
    else:
        order_key = str(order_raw.get("id")) if isinstance(order_raw, Mapping) else _stable_hash(data)
        event_key = "h:" + _stable_hash(order_key, event, f.data.get("timestamp"))
    return OrderEventRow(
        event_key=event_key,
        ts=ts or EPOCH,
        event=event,
        raw=data,
        order_id=order_id,
        execution_id=execution_id,
        price=f.decimal("price"),
        qty=f.decimal("qty"),
        position_qty=f.decimal("position_qty"),
        parse_error=f.error(),
        orders=orders,
    )


def parse_account(data: Any) -> BrokerAccount:
    f = _Fields(data)
    return BrokerAccount(
        account_id=f.text("id"),
        account_number=f.text("account_number"),
        status=f.text("status"),
        currency=f.text("currency"),
        cash=f.decimal("cash"),
        equity=f.decimal("equity", required=True),
        last_equity=f.decimal("last_equity"),
        portfolio_value=f.decimal("portfolio_value"),
        buying_power=f.decimal("buying_power"),
        long_market_value=f.decimal("long_market_value"),
        short_market_value=f.decimal("short_market_value"),
        raw=data,
        parse_error=f.error(),
    )


def parse_position(data: Any) -> BrokerPosition:
    f = _Fields(data)
    return BrokerPosition(
        symbol=f.text("symbol", required=True) or "",
        qty=f.decimal("qty", required=True),
        side=f.text("side"),
        avg_entry_price=f.decimal("avg_entry_price"),
        market_value=f.decimal("market_value"),
        cost_basis=f.decimal("cost_basis"),
        unrealized_pl=f.decimal("unrealized_pl"),
        unrealized_plpc=f.decimal("unrealized_plpc"),
        current_price=f.decimal("current_price"),
        lastday_price=f.decimal("lastday_price"),
        change_today=f.decimal("change_today"),
        asset_id=f.text("asset_id"),
        asset_class=f.text("asset_class"),
        raw=data,
        parse_error=f.error(),
    )


def parse_portfolio_history(data: Any) -> PortfolioHistory:
    f = _Fields(data)
    raw_ts = f.data.get("timestamp") or []
    stamps: list[datetime] = []
    if not isinstance(raw_ts, list):
        f.errors.append("timestamp: expected a list")
        raw_ts = []
    for value in raw_ts:
        try:
            stamps.append(datetime.fromtimestamp(float(value), tz=UTC))
        except (TypeError, ValueError, OverflowError, OSError):
            f.errors.append(f"timestamp: bad epoch {str(value)[:20]!r}")
            stamps.append(EPOCH)

    def series(key: str) -> tuple[Decimal | None, ...]:
        values = f.data.get(key) or []
        if not isinstance(values, list):
            f.errors.append(f"{key}: expected a list")
            return ()
        return tuple(None if v is None else f._to_decimal(key, v) for v in values)

    equity, pl, pl_pct = series("equity"), series("profit_loss"), series("profit_loss_pct")
    return PortfolioHistory(
        timestamps=tuple(stamps),
        equity=equity,
        profit_loss=pl,
        profit_loss_pct=pl_pct,
        base_value=f.decimal("base_value"),
        timeframe=f.text("timeframe"),
        raw=data,
        parse_error=f.error(),
    )


def _iso(value: datetime | date | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


# --- REST client ---------------------------------------------------------------------------------


@dataclass(slots=True)
class BrokerStats:
    """Counters for the heartbeat's ``details``."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    waited_s: float = 0.0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "server_errors": self.server_errors,
            "timeouts": self.timeouts,
            "waited_s": round(self.waited_s, 3),
        }


class BrokerClient:
    """Async Alpaca trading REST client for one destination (see the module docstring)."""

    def __init__(
        self,
        destination: Destination,
        settings: Settings | None = None,
        *,
        request_timeout_s: float = 10.0,
        retry: BackoffPolicy = DEFAULT_REST_RETRY,
        max_retry_after_s: float = 60.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.destination = destination
        self._settings = settings
        self._base_url = destination.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=min(5.0, request_timeout_s))
        self._retry = retry
        self._max_retry_after_s = max_retry_after_s
        self._session = session
        self._owns_session = session is None
        self._not_before_monotonic = 0.0
        self._random = random.Random()
        self.stats = BrokerStats()
        self.log = destination_log(log, destination.slug)

    def __repr__(self) -> str:
        return f"BrokerClient({self.destination!r})"

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={
                    "APCA-API-KEY-ID": self.destination.key_id,
                    "APCA-API-SECRET-KEY": self.destination.secret_key,
                    "Accept": "application/json",
                    "User-Agent": "coldharbour-ingester",
                },
                timeout=self._timeout,
            )
            self._owns_session = True
        return self._session

    async def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """One REST call with rate limiting, bounded retries and error classification."""
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        url = self._base_url + path
        attempt = 0
        while True:
            attempt += 1
            wait = self._not_before_monotonic - time.monotonic()
            if wait > 0:
                self.stats.waited_s += wait
                await asyncio.sleep(wait)
            retry_after: float | None = None
            self.stats.requests += 1
            try:
                async with self._get_session().request(method, url, params=query) as resp:
                    now = datetime.now(UTC)
                    hold = rate_limit_wait_s(
                        resp.headers.get("X-RateLimit-Remaining"), resp.headers.get("X-RateLimit-Reset"), now
                    )
                    if hold > 0:
                        self._not_before_monotonic = time.monotonic() + min(hold, self._max_retry_after_s)
                    status = resp.status
                    body = await resp.read()
                    if status == 429:
                        self.stats.rate_limited += 1
                        retry_after = parse_retry_after_s(resp.headers.get("Retry-After"), now)
                        raise BrokerTemporaryError(f"{method} {path}: 429 rate limited", status=status)
                    if status >= 500:
                        self.stats.server_errors += 1
                        raise BrokerTemporaryError(f"{method} {path}: {status} {_snippet(body)}", status=status)
                    if status in (401, 403):
                        raise BrokerAuthError(f"{method} {path}: {status} credentials rejected {_snippet(body)}", status=status)
                    if status == 404:
                        raise BrokerNotFound(f"{method} {path}: 404 {_snippet(body)}", status=status)
                    if status >= 400:
                        raise BrokerRequestError(f"{method} {path}: {status} {_snippet(body)}", status=status)
                    try:
                        return json.loads(body) if body else None
                    except ValueError:
                        raise BrokerProtocolError(f"{method} {path}: {status} unreadable JSON body {_snippet(body)}", status=status) from None
            except BrokerTemporaryError as exc:
                error: BrokerTemporaryError = exc
            except TimeoutError:
                self.stats.timeouts += 1
                error = BrokerTemporaryError(f"{method} {path}: no response within {self._timeout.total}s")
            except (aiohttp.ClientError, OSError) as exc:
                error = BrokerTemporaryError(f"{method} {path}: {type(exc).__name__}: {_safe_text(str(exc))}")
            self.stats.last_error = str(error)
            if not should_retry(self._retry, attempt):
                raise error
            delay = retry_delay_s(
                self._retry, attempt, self._random.random(), retry_after_s=retry_after, max_wait_s=self._max_retry_after_s
            )
            self.stats.retries += 1
            self.stats.waited_s += delay
            self.log.warning("%s; retry %d/%s in %.2fs", error, attempt, self._retry.max_attempts, delay)
            await asyncio.sleep(delay)

    # -- account, positions, history (used by the manager) ---------------------------------------

    async def get_account(self) -> BrokerAccount:
        return parse_account(await self._request("GET", "/v2/account"))

    async def get_positions(self) -> list[BrokerPosition]:
        data = await self._request("GET", "/v2/positions")
        if not isinstance(data, list):
            raise BrokerProtocolError(f"/v2/positions: expected a list, got {type(data).__name__}")
        return [parse_position(item) for item in data]

    async def get_portfolio_history(self, **params: Any) -> PortfolioHistory:
        """Query parameters as Alpaca names them (``period``, ``timeframe``, ``start``, ``end``,
        ``date_end``, ``extended_hours``, ``intraday_reporting``, ``pnl_reset``); datetimes are
        rendered as RFC 3339."""
        return parse_portfolio_history(await self._request("GET", "/v2/account/portfolio/history", params))

    # -- activities -------------------------------------------------------------------------------

    async def get_activities(
        self,
        *,
        after: datetime | date | None = None,
        until: datetime | date | None = None,
        page_token: str | None = None,
        direction: str = "asc",
        page_size: int = ACTIVITIES_PAGE_SIZE,
        activity_types: list[str] | None = None,
    ) -> list[ActivityRow]:
        """One page of ``/v2/account/activities`` (all types unless ``activity_types``)."""
        params = {
            "after": after,
            "until": until,
            "page_token": page_token,
            "direction": direction,
            "page_size": page_size,
            "activity_types": ",".join(activity_types) if activity_types else None,
        }
        data = await self._request("GET", "/v2/account/activities", params)
        if not isinstance(data, list):
            raise BrokerProtocolError(f"/v2/account/activities: expected a list, got {type(data).__name__}")
        return [parse_activity(item) for item in data]

    async def iter_activities(
        self,
        since: datetime | date | None = None,
        *,
        until: datetime | date | None = None,
        page_token: str | None = None,
        page_size: int = ACTIVITIES_PAGE_SIZE,
    ) -> AsyncIterator[list[ActivityRow]]:
        """Pages of activities, oldest first (``direction=asc``, ``page_token`` = last id), until a short page."""
        token = page_token
        while True:
            page = await self.get_activities(after=since, until=until, page_token=token, page_size=page_size)
            if page:
                yield page
            ids = [row.activity_id for row in page if not row.activity_id.startswith("malformed:")]
            if len(page) < page_size or not ids or ids[-1] == token:
                return
            token = ids[-1]

    # -- orders -----------------------------------------------------------------------------------

    async def get_orders(
        self,
        *,
        after: datetime | None = None,
        until: datetime | None = None,
        status: str = "all",
        nested: bool = True,
        limit: int = ORDERS_PAGE_LIMIT,
        direction: str = "asc",
        symbols: list[str] | None = None,
    ) -> list[OrderRow]:
        """One ``/v2/orders`` request; nested legs are flattened into rows with ``parent_order_id``."""
        params = {
            "status": status,
            "nested": nested,
            "limit": limit,
            "direction": direction,
            "after": after,
            "until": until,
            "symbols": ",".join(symbols) if symbols else None,
        }
        data = await self._request("GET", "/v2/orders", params)
        if not isinstance(data, list):
            raise BrokerProtocolError(f"/v2/orders: expected a list, got {type(data).__name__}")
        rows: list[OrderRow] = []
        for item in data:
            rows.extend(parse_order(item))
        return rows

    async def iter_orders(
        self,
        *,
        after: datetime | None = None,
        until: datetime | None = None,
        status: str = "all",
        limit: int = ORDERS_PAGE_LIMIT,
    ) -> AsyncIterator[list[OrderRow]]:
        """Pages of orders submitted in ``(after, until]``, oldest first, each order once.

        The next window starts just before the newest ``created_at`` of the page (ids already seen
        are skipped), so orders sharing a timestamp across a page boundary are not lost.
        """
        seen: set[uuid.UUID] = set()
        cursor = after
        while True:
            page = await self.get_orders(after=cursor, until=until, status=status, limit=limit)
            top_level = [row for row in page if row.parent_order_id is None]
            fresh = [row for row in page if row.order_id not in seen]
            seen.update(row.order_id for row in page)
            if fresh:
                yield fresh
            if len(top_level) < limit or not fresh:
                return
            stamps = [row.created_at or row.submitted_at for row in top_level]
            newest = max((s for s in stamps if s is not None), default=None)
            if newest is None:
                return
            cursor = newest - timedelta(milliseconds=1)

    async def get_order(self, order_id: uuid.UUID | str) -> list[OrderRow]:
        """``/v2/orders/{id}?nested=true`` as rows (the order, then its legs)."""
        data = await self._request("GET", f"/v2/orders/{order_id}", {"nested": True})
        return parse_order(data)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return _iso(value) or ""
    return str(value)


def _snippet(body: bytes) -> str:
    return _safe_text(body[:_ERROR_BODY_MAX_CHARS].decode("utf-8", "replace"))


def _safe_text(text: str) -> str:
    return " ".join(text.split())[:_ERROR_BODY_MAX_CHARS]


# --- trade_updates websocket ---------------------------------------------------------------------


def stream_url_for(destination: Destination) -> str:
    """The destination's ``stream_url``, else its REST URL with ``ws(s)://`` and ``/stream``."""
    if destination.stream_url:
        return destination.stream_url
    parts = urlsplit(destination.base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/stream", "", ""))


class TradeUpdatesStream:
    """One ``trade_updates`` websocket session: connect, authenticate, listen, receive.

    Use :meth:`open` once, then iterate :meth:`updates` until it raises; every failure is a
    :class:`BrokerError` (auth, temporary, stale). A new instance (or :meth:`open` again) is a
    reconnect with a fresh authentication.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        stale_after_s: float = 60.0,
        ping_interval_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.destination = destination
        self.url = stream_url_for(destination)
        self._stale_after_s = stale_after_s
        self._ping_interval_s = ping_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages_received = 0

    def __repr__(self) -> str:
        return f"TradeUpdatesStream({self.destination.slug!r}, url={self.url!r})"

    async def open(self) -> None:
        """Connect, authenticate and subscribe to ``trade_updates``."""
        await self.close()
        self._session = aiohttp.ClientSession()
        try:
            # A hung handshake must not stall the reconnect loop: the whole upgrade is bounded.
            self._ws = await asyncio.wait_for(
                self._session.ws_connect(
                    self.url,
                    heartbeat=self._ping_interval_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    max_msg_size=16 * 1024 * 1024,
                    autoping=True,
                ),
                timeout=self._connect_timeout_s,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerTemporaryError(f"websocket connect to {self.url} failed: {type(exc).__name__}: {_safe_text(str(exc))}") from None
        try:
            await self._ws.send_str(
                json.dumps(
                    {
                        "action": "authenticate",
                        "data": {"key_id": self.destination.key_id, "secret_key": self.destination.secret_key},
                    }
                )
            )
            reply = await self._receive_control(self._connect_timeout_s)
            status = (reply.get("data") or {}).get("status") if isinstance(reply.get("data"), Mapping) else None
            if reply.get("stream") != "authorization" or status != "authorized":
                reason = str((reply.get("data") or {}).get("message") or "") if isinstance(reply.get("data"), Mapping) else ""
                if "connection limit" in reason.lower():
                    # Our previous session is not reaped yet (Alpaca allows one per account): transient.
                    raise BrokerTemporaryError(f"websocket: {_safe_text(reason)}")
                if status == "unauthorized":
                    raise BrokerAuthError(f"websocket authentication rejected: {_safe_text(reason) or 'unauthorized'}")
                raise BrokerProtocolError(f"websocket: unexpected auth reply {_safe_text(json.dumps(reply))}")
            await self._ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            reply = await self._receive_control(self._connect_timeout_s)
            if reply.get("stream") != "listening":
                raise BrokerProtocolError(f"websocket: unexpected listen reply {_safe_text(json.dumps(reply))}")
        except BaseException:
            await self.close()
            raise

    async def _receive_control(self, timeout_s: float) -> dict[str, Any]:
        message = await self._receive(timeout_s)
        if not isinstance(message, dict):
            raise BrokerProtocolError("websocket: control reply is not an object")
        return message

    async def _receive(self, timeout_s: float) -> Any:
        """The next decoded JSON message. Raises StreamStale / BrokerTemporaryError / BrokerProtocolError."""
        ws = self._ws
        if ws is None:
            raise BrokerTemporaryError("websocket: not connected")
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout=timeout_s)
        except TimeoutError:
            raise StreamStale(f"websocket: nothing received for {timeout_s:.1f}s") from None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            self.messages_received += 1
            payload = msg.data if isinstance(msg.data, str) else bytes(msg.data).decode("utf-8", "replace")
            try:
                return json.loads(payload)
            except ValueError:
                return _Undecodable(payload)
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise BrokerTemporaryError(f"websocket error: {type(ws.exception()).__name__}")
        raise BrokerTemporaryError(f"websocket closed ({msg.type.name}, code {ws.close_code})")

    async def updates(self) -> AsyncIterator[OrderEventRow]:
        """Trade updates as rows, forever; raises a :class:`BrokerError` when the session ends.

        Messages that are not JSON or carry an unexpected shape are yielded as rows with
        ``parse_error`` (stored raw), never dropped silently.
        """
        while True:
            message = await self._receive(self._stale_after_s)
            if isinstance(message, _Undecodable):
                yield OrderEventRow(
                    event_key="h:" + _stable_hash("undecodable", message.text),
                    ts=EPOCH,
                    event="unknown",
                    raw={"undecodable": message.text[:10_000]},
                    parse_error="not valid JSON",
                )
                continue
            for item in message if isinstance(message, list) else [message]:
                if not isinstance(item, Mapping):
                    continue
                stream = item.get("stream")
                if stream == "trade_updates":
                    yield parse_trade_update(item.get("data"))
                elif stream == "authorization":
                    data = item.get("data")
                    if isinstance(data, Mapping) and data.get("status") == "unauthorized":
                        raise BrokerAuthError("websocket: authorization revoked")
                # "listening" acknowledgements and unknown control frames are ignored.

    async def close(self) -> None:
        ws, session = self._ws, self._session
        self._ws, self._session = None, None
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), timeout=2.0)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        if session is not None:
            await session.close()


@dataclass(frozen=True, slots=True)
class _Undecodable:
    text: str
