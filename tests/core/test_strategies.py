"""core.strategies: rules, inheritance along legs and replacements, round trips, configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.strategies import (
    UNATTRIBUTED,
    OrderLink,
    StrategyRule,
    attribute_orders,
    load_strategies,
    parse_strategies,
    strategy_of,
    trip_strategy,
)

RULES = (
    StrategyRule("momo_breakout", prefix="momo-brk-"),
    StrategyRule("momo", prefix="momo-"),
    StrategyRule("mr_{1}", pattern=r"^mr_(\w+?)-"),
    StrategyRule("crypto_only", prefix="cx_", destinations=frozenset({"crypto_24_7"})),
    StrategyRule("aapl_hold", prefix="hold-", symbols=frozenset({"AAPL"})),
)


@pytest.mark.parametrize(("cid", "dest", "symbol", "expected"), [
    ("momo-abc", "momentum", "MSFT", "momo"),
    ("momo-brk-abc", "momentum", "MSFT", "momo_breakout"),
    ("mr_swing-123", "mean_reversion", "JPM", "mr_swing"),
    ("mr_fade-123", "mean_reversion", "JPM", "mr_fade"),
    ("cx_trend-1", "crypto_24_7", "BTC/USD", "crypto_only"),
    ("cx_trend-1", "momentum", "BTC/USD", UNATTRIBUTED),  # wrong destination
    ("hold-1", "momentum", "aapl", "aapl_hold"),
    ("hold-1", "momentum", "MSFT", UNATTRIBUTED),  # wrong symbol
    ("manual-1", "momentum", "MSFT", UNATTRIBUTED),
    (None, "momentum", "MSFT", UNATTRIBUTED),
    ("xmomo-1", "momentum", "MSFT", UNATTRIBUTED),  # a prefix is anchored
])
def test_rules(cid: str | None, dest: str, symbol: str, expected: str) -> None:
    assert strategy_of(RULES, cid, dest, symbol) == expected


def test_bracket_legs_and_oco_siblings_inherit_the_parent() -> None:
    orders = [
        OrderLink("p", "momo-brk-1", "AAPL"),
        OrderLink("tp", "mr_swing-ignored", "AAPL", parent_order_id="p"),  # Alpaca's own leg id: ignored
        OrderLink("sl", None, "AAPL", parent_order_id="p"),
        OrderLink("oco", "momo-2", "MSFT"),
        OrderLink("oco-stop", "whatever", "MSFT", parent_order_id="oco"),
    ]
    got = attribute_orders(RULES, "momentum", orders)
    assert got == {"p": "momo_breakout", "tp": "momo_breakout", "sl": "momo_breakout",
                   "oco": "momo", "oco-stop": "momo"}


def test_replaced_chains_inherit_the_first_order() -> None:
    orders = [
        OrderLink("a", "mr_swing-1", "JPM"),
        OrderLink("b", "momo-new-id", "JPM", replaces="a"),
        OrderLink("c", None, "JPM", replaces="b"),
        OrderLink("leg", None, "JPM", parent_order_id="c"),  # a leg of a replacement
    ]
    got = attribute_orders(RULES, "mean_reversion", orders)
    assert set(got.values()) == {"mr_swing"}


def test_a_cycle_or_a_missing_parent_ends_the_walk() -> None:
    orders = [OrderLink("x", "momo-1", "A", replaces="y"), OrderLink("y", "mr_a-1", "A", replaces="x"),
              OrderLink("z", "momo-2", "A", parent_order_id="not-ingested")]
    got = attribute_orders(RULES, "d", orders)
    assert got["z"] == "momo"
    assert got["x"] == got["y"]  # one chain, one strategy, whichever end the cycle broke at


def test_round_trip_is_attributed_by_its_opening_order() -> None:
    orders = [OrderLink("open", "momo-1", "AAPL"), OrderLink("close", "mr_swing-9", "AAPL")]
    by_order = attribute_orders(RULES, "momentum", orders)
    # closed by another strategy's order: still the opener's
    assert trip_strategy(by_order, "open") == "momo"
    assert trip_strategy(by_order, None) == UNATTRIBUTED
    assert trip_strategy(by_order, "never-seen") == UNATTRIBUTED


def test_config_file(tmp_path: Path) -> None:
    main = tmp_path / "destinations.toml"
    main.write_text(
        '[[destinations]]\nname = "Momentum"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\nbenchmark = "qqq"\n'
        '[[strategies]]\nname = "momo"\nprefix = "momo-"\ndestinations = ["Momentum"]\ncapital = 25000\n'
        '[[strategies]]\nname = "mr_{1}"\npattern = "^mr_(\\\\w+)-"\nsymbols = ["jpm"]\n'
    )
    local = tmp_path / "destinations.local.toml"
    local.write_text('[[strategies]]\nname = "momo"\nprefix = "m-"\n')
    rules = load_strategies(main, local)
    assert [r.name for r in rules] == ["momo", "mr_{1}"]
    assert rules[0].prefix == "m-"  # the local file's entry replaced the main one
    assert rules[1].symbols == frozenset({"JPM"})
    main_only = load_strategies(main)
    assert main_only[0].destinations == frozenset({"momentum"})
    assert str(main_only[0].capital_usd) == "25000"
    from core.destinations import load_destinations

    dest = load_destinations(main)[0]  # the destinations loader accepts the table and reads the benchmark
    assert dest.benchmark == "QQQ"


@pytest.mark.parametrize(("entries", "message"), [
    ([{"name": "a"}], "exactly one of prefix or pattern"),
    ([{"name": "a", "prefix": "x", "pattern": "y"}], "exactly one of prefix or pattern"),
    ([{"name": "a", "pattern": "("}], "not a regular expression"),
    ([{"name": "a", "prefix": "x", "colour": "red"}], "unknown field"),
    ([{"name": UNATTRIBUTED, "prefix": "x"}], "no rule matches"),
    ([{"name": "a", "prefix": "x", "capital": -5}], "positive number"),
    ([{"name": "a", "prefix": "momo-"}, {"name": "b", "prefix": "momo-brk-"}], "can never match"),
    ("nope", "array of tables"),
])
def test_bad_config_is_refused(entries: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_strategies(entries, "strategies.toml")


def test_json_round_trip() -> None:
    for rule in RULES:
        assert StrategyRule.from_json(rule.as_json()) == rule
