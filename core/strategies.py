"""Strategies: which trading strategy an order, and so a round trip, belongs to.

Rules (the full text, with the reasons, is in ``docs/strategies.md``):

- A strategy is named by a ``client_order_id`` **prefix** or a **pattern** (a Python regular
  expression searched in the id), optionally restricted to some destinations and some symbols.
  Rules are tried in configuration order; the first that matches names the strategy. An order that
  no rule matches belongs to :data:`UNATTRIBUTED`.
- A pattern's name may use its groups: ``name = "mr_{1}"`` with ``pattern = "^mr_(\\w+)-"`` names
  ``mr_swing`` for ``mr_swing-7f3a``.
- Alpaca ignores a leg's own client order id, so **legs inherit**: a bracket's take-profit and
  stop-loss legs, an OTO's child and an OCO's sibling (``parent_order_id``) belong to the parent's
  strategy, and an order that **replaces** another (``replaces``) belongs to the strategy of the order
  it replaced, whatever ids either carries. The order at the root of those links (no parent, replaces
  nothing) is the one the rules are matched against, with its own symbol and destination.
- A round trip belongs to the strategy of its **opening** order (``entry_order_id``). A round trip
  closed by another strategy's order stays with the strategy that opened it: its whole P&L and fees
  are that strategy's, the closing strategy gets nothing from it.

Pure: no I/O but :func:`load_strategies` reading the configuration file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from core.destinations import DESTINATIONS_FILE_MAX_BYTES, slugify
from core.errors import ConfigError

UNATTRIBUTED = "unattributed"
"""The strategy of an order no rule matches (and of a round trip without an opening order)."""

MAX_CHAIN_LINKS = 1_000
"""Parent/replaces links followed from one order before the chain is called broken (a cycle in bad data)."""

_KNOWN_FIELDS = {"name", "prefix", "pattern", "destinations", "symbols", "capital", "description"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .\-/]{0,63}$")
_GROUP_RE = re.compile(r"\{(\d)\}")


@dataclass(frozen=True, slots=True)
class StrategyRule:
    """One ``[[strategies]]`` entry: how to recognise a strategy's orders."""

    name: str
    prefix: str | None = None
    pattern: str | None = None
    destinations: frozenset[str] = frozenset()
    """Destination slugs the rule applies to (empty: every destination)."""
    symbols: frozenset[str] = frozenset()
    """Symbols the rule applies to, upper case (empty: every symbol)."""
    capital_usd: Decimal | None = None
    """Allocated notional; ``None``: the strategy's capital is its gross exposure (docs/strategies.md)."""
    description: str = ""

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.pattern is None):
            raise ConfigError(f"strategy {self.name!r}: give exactly one of prefix or pattern")
        if self.pattern is not None:
            _compiled(self.pattern)

    def match_name(self, client_order_id: str | None, destination: str, symbol: str | None) -> str | None:
        """The strategy name when this rule claims the order, else ``None``."""
        if not client_order_id:
            return None
        if self.destinations and destination not in self.destinations:
            return None
        if self.symbols and (symbol or "").upper() not in self.symbols:
            return None
        if self.prefix is not None:
            return self.name if client_order_id.startswith(self.prefix) else None
        m = _compiled(self.pattern or "").search(client_order_id)
        if m is None:
            return None
        return _GROUP_RE.sub(lambda g: _group(m, int(g.group(1))), self.name)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "pattern": self.pattern,
                "destinations": sorted(self.destinations), "symbols": sorted(self.symbols),
                "capital_usd": str(self.capital_usd) if self.capital_usd is not None else None,
                "description": self.description}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StrategyRule:
        capital = raw.get("capital_usd")
        return cls(name=raw["name"], prefix=raw.get("prefix"), pattern=raw.get("pattern"),
                   destinations=frozenset(raw.get("destinations") or ()), symbols=frozenset(raw.get("symbols") or ()),
                   capital_usd=Decimal(capital) if capital is not None else None,
                   description=raw.get("description") or "")


def _group(m: re.Match[str], index: int) -> str:
    try:
        return m.group(index) or ""
    except IndexError:
        return ""


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    hit = _PATTERNS.get(pattern)
    if hit is None:
        try:
            hit = _PATTERNS[pattern] = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"strategy pattern {pattern!r}: not a regular expression: {exc}") from None
    return hit


def strategy_of(rules: Sequence[StrategyRule], client_order_id: str | None, destination: str,
                symbol: str | None) -> str:
    """The first rule's strategy that claims this order, else :data:`UNATTRIBUTED`."""
    for rule in rules:
        name = rule.match_name(client_order_id, destination, symbol)
        if name:
            return name
    return UNATTRIBUTED


# ----------------------------------------------------------------------------- orders and chains


@dataclass(frozen=True, slots=True)
class OrderLink:
    """What attribution needs of an order: its ids and the order it hangs from."""

    order_id: str
    client_order_id: str | None
    symbol: str | None = None
    parent_order_id: str | None = None
    """A bracket/OTO/OCO leg's parent (Alpaca ignores the leg's own client order id)."""
    replaces: str | None = None
    """The order this one replaced (PATCH /v2/orders/{id})."""


def root_order(orders: Mapping[str, OrderLink], order_id: str) -> str:
    """The order at the top of ``order_id``'s parent/replaces links (itself without any).

    A link to an order that is not in ``orders`` ends the walk there (that order's own id is then
    matched, as if it had no parent). A cycle (bad data) ends at its smallest order id, so every
    member of it gets the same root; a chain longer than :data:`MAX_CHAIN_LINKS` ends where it is.
    """
    path = [order_id]
    where = {order_id: 0}
    for _ in range(MAX_CHAIN_LINKS):
        link = orders.get(path[-1])
        up = link and (link.parent_order_id or link.replaces)
        if not up or up not in orders:
            return path[-1]
        if up in where:
            return min(path[where[up]:])
        where[up] = len(path)
        path.append(up)
    return path[-1]


def attribute_orders(rules: Sequence[StrategyRule], destination: str,
                     orders: Iterable[OrderLink]) -> dict[str, str]:
    """``order_id -> strategy`` for every order of one destination (legs and replacements inherit)."""
    by_id = {o.order_id: o for o in orders}
    roots: dict[str, str] = {}
    out: dict[str, str] = {}
    for oid in by_id:
        root = root_order(by_id, oid)
        name = roots.get(root)
        if name is None:
            top = by_id[root]
            name = roots[root] = strategy_of(rules, top.client_order_id, destination, top.symbol)
        out[oid] = name
    return out


def trip_strategy(order_strategy: Mapping[str, str], entry_order_id: str | None) -> str:
    """A round trip's strategy: its opening order's (see the module docstring for one closed by another)."""
    if not entry_order_id:
        return UNATTRIBUTED
    return order_strategy.get(entry_order_id, UNATTRIBUTED)


def strategy_names(rules: Sequence[StrategyRule]) -> list[str]:
    """The configured names in order (a pattern's templated name as written), without duplicates."""
    return list(dict.fromkeys(r.name for r in rules))


# ----------------------------------------------------------------------------- configuration


def _err(source: str, entry: str, field_name: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: strategy {entry}: field {field_name!r}: {message}")


def _str_list(raw: Any, source: str, entry: str, field_name: str) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise _err(source, entry, field_name, "must be a list of non-empty strings")
    return [x.strip() for x in raw]


def parse_strategy(raw: Any, source: str, index: int) -> StrategyRule:
    """Validate one ``[[strategies]]`` entry; errors name ``source``, the entry and the field."""
    entry = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: strategy {entry}: must be a table")
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        entry = f"#{index + 1} ({name.strip()!r})"
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise _err(source, entry, unknown[0], f"unknown field (known: {', '.join(sorted(_KNOWN_FIELDS))})")
    if not isinstance(name, str) or not _NAME_RE.match(name.strip().replace("{", "").replace("}", "")):
        raise _err(source, entry, "name", "missing, or not 1-64 letters, digits, space, _ . - /")
    if name.strip() == UNATTRIBUTED:
        raise _err(source, entry, "name", f"{UNATTRIBUTED!r} is the name of orders no rule matches")
    prefix, pattern = raw.get("prefix"), raw.get("pattern")
    if (prefix is None) == (pattern is None):
        raise _err(source, entry, "prefix", "give exactly one of prefix or pattern")
    for field_name, value in (("prefix", prefix), ("pattern", pattern)):
        if value is not None and (not isinstance(value, str) or not value):
            raise _err(source, entry, field_name, "must be a non-empty string")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _err(source, entry, "pattern", f"not a regular expression: {exc}") from None
    dests = frozenset(slugify(d) for d in _str_list(raw.get("destinations", []), source, entry, "destinations"))
    symbols = frozenset(s.upper() for s in _str_list(raw.get("symbols", []), source, entry, "symbols"))
    capital: Decimal | None = None
    if raw.get("capital") is not None:
        value = raw["capital"]
        try:
            capital = None if isinstance(value, bool) else Decimal(str(value))
        except InvalidOperation:
            capital = None
        if capital is None or not capital.is_finite() or capital <= 0:
            raise _err(source, entry, "capital", f"must be a positive number of dollars, got {value!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _err(source, entry, "description", "must be a string")
    return StrategyRule(name=name.strip(), prefix=prefix, pattern=pattern, destinations=dests, symbols=symbols,
                        capital_usd=capital, description=description)


def _shadowed(rules: Sequence[StrategyRule], source: str) -> None:
    """Refuse a prefix rule an earlier, unrestricted prefix rule always wins over (``momo-`` before ``momo-brk-``)."""
    for i, later in enumerate(rules):
        for earlier in rules[:i]:
            if (later.prefix is not None and earlier.prefix is not None and later.prefix.startswith(earlier.prefix)
                    and not earlier.destinations and not earlier.symbols and earlier.name != later.name):
                raise ConfigError(
                    f"{source}: strategy {later.name!r}: prefix {later.prefix!r} can never match: the earlier "
                    f"strategy {earlier.name!r} (prefix {earlier.prefix!r}) claims its orders first; list it first")


def parse_strategies(items: Any, source: str) -> tuple[StrategyRule, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: 'strategies' must be an array of tables ([[strategies]])")
    rules = tuple(parse_strategy(raw, source, i) for i, raw in enumerate(items))
    _shadowed(rules, source)
    return rules


def load_strategies(path: str | Path, local_path: str | Path | None = None) -> tuple[StrategyRule, ...]:
    """The ``[[strategies]]`` of the destinations file (and of the local override file, whose entries
    replace same-named ones and come first). No file, or no table: no rules (everything unattributed)."""
    by_file: list[tuple[StrategyRule, ...]] = []
    for p in (Path(path), Path(local_path) if local_path else None):
        if p is None or not p.exists():
            continue
        if p.stat().st_size > DESTINATIONS_FILE_MAX_BYTES:
            raise ConfigError(f"{p}: larger than {DESTINATIONS_FILE_MAX_BYTES} bytes")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{p}: not readable TOML: {exc}") from None
        by_file.append(parse_strategies(data.get("strategies", []), str(p)))
    if len(by_file) < 2:
        return by_file[0] if by_file else ()
    main, local = by_file
    names = {r.name for r in local}
    merged = local + tuple(r for r in main if r.name not in names)
    _shadowed(merged, str(local_path))
    return merged
