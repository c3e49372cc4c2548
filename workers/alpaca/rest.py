"""The REST client for one destination: account, positions, portfolio history, activities, orders.

Every call goes through :meth:`BrokerClient._request`, which

- takes a slot of the destination's :class:`workers.alpaca.budget.RequestBudget` (with settings:
  the process-wide one for that destination, at the task's :data:`~workers.alpaca.budget.request_priority`,
  counted across processes in the primary store's ledger when a DSN is configured);
  a retry is a call too and takes its own slot;
- waits out a spent ``X-RateLimit-Remaining`` budget until ``X-RateLimit-Reset``;
- on 429 waits ``Retry-After`` (or the jittered backoff) and retries;
- on 5xx, timeouts (``request_timeout_s``, hung requests), connection errors or an unreadable body
  retries with bounded, jittered exponential backoff (:mod:`workers.backoff`), at most
  ``retry.max_attempts`` times, then raises :class:`BrokerTemporaryError`;
- raises :class:`BrokerAuthError` at once on 401/403 and :class:`BrokerRequestError` on other 4xx.

The key id and secret travel in headers only; they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any

import aiohttp

from core.destinations import Destination
from core.records import ActivityRecord
from core.settings import Settings
from workers.alpaca.budget import RequestBudget, shared_budget
from workers.alpaca.errors import (
    BrokerAuthError,
    BrokerNotFound,
    BrokerProtocolError,
    BrokerRequestError,
    BrokerTemporaryError,
)
from workers.alpaca.parse import (
    iso,
    parse_account,
    parse_activity,
    parse_order,
    parse_portfolio_history,
    parse_position,
)
from workers.alpaca.records import BrokerAccount, BrokerPosition, OrderRow, PortfolioHistory
from workers.alpaca.wire import ACTIVITIES_PAGE_SIZE, ORDERS_PAGE_LIMIT, is_malformed_id
from workers.backoff import BackoffPolicy, parse_retry_after_s, rate_limit_wait_s, retry_delay_s, should_retry
from workers.logs import destination_log
from workers.stats import Counters

log = logging.getLogger(__name__)

ERROR_BODY_MAX_CHARS = 300
# Bounded: ~0.25+0.5+1+2+4 s of jittered waits (plus any Retry-After) before giving up.
DEFAULT_REST_RETRY = BackoffPolicy(base_s=0.25, cap_s=8.0, jitter=0.5, max_attempts=6)


@dataclass(slots=True)
class BrokerStats(Counters):
    """REST counters since start (heartbeat ``details.broker``)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    waited_s: float = 0.0
    last_error: str | None = None


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
        budget: RequestBudget | None = None,
    ) -> None:
        self.destination = destination
        if budget is None and settings is not None:
            budget = shared_budget(destination.slug, destination.base_url,
                                   budget_per_min=settings.rest_budget_calls_per_min,
                                   catchup_per_min=settings.rest_catchup_calls_per_min,
                                   dsn=settings.primary_dsn)
        self.budget = budget
        """``None``: unbudgeted (a client built without settings: tools and tests)."""
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
        if self.budget is not None:
            await self.budget.aclose()  # the budget ledger's connection (re-opened by the next call)

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
            if self.budget is not None:
                await self.budget.acquire()
            self.stats.requests += 1
            try:
                async with self._get_session().request(method, url, params=query) as resp:
                    now = datetime.now(UTC)
                    if self.budget is not None:
                        self.budget.observe(resp.status, resp.headers)
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
                error = BrokerTemporaryError(f"{method} {path}: {type(exc).__name__}: {safe_text(str(exc))}")
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

    async def get_positions(self) -> Sequence[BrokerPosition]:
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
        category: str | None = None,
    ) -> list[ActivityRecord]:
        """One page of ``/v2/account/activities`` (all types unless ``activity_types`` or ``category``,
        Alpaca's ``trade_activity`` / ``non_trade_activity``)."""
        params = {
            "after": after,
            "until": until,
            "page_token": page_token,
            "direction": direction,
            "page_size": page_size,
            "activity_types": ",".join(activity_types) if activity_types else None,
            "category": category,
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
        category: str | None = None,
    ) -> AsyncIterator[list[ActivityRecord]]:
        """Pages of activities, oldest first (``direction=asc``, ``page_token`` = last id), until a short page."""
        token = page_token
        while True:
            page = await self.get_activities(after=since, until=until, page_token=token, page_size=page_size,
                                             category=category)
            if page:
                yield page
            ids = [row.activity_id for row in page if not is_malformed_id(row.activity_id)]
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
        return iso(value) or ""
    return str(value)


def _snippet(body: bytes) -> str:
    return safe_text(body[:ERROR_BODY_MAX_CHARS].decode("utf-8", "replace"))


def safe_text(text: str) -> str:
    return " ".join(text.split())[:ERROR_BODY_MAX_CHARS]
