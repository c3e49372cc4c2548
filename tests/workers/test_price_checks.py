"""The price-message parser and the sanity band (pure): tables for the rules, hypothesis for "never raises"."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.price_checks import (
    DEFAULT_LIMITS,
    FeedLimits,
    MalformedMessage,
    PriceTick,
    RejectReason,
    SanityBand,
    encode_message,
    parse_message,
)

NOW = 1_780_000_000_000_000_000  # 2026-05-28, a fixed receive time: the window is relative to it
S = 1_000_000_000


def body(**fields: Any) -> bytes:
    return json.dumps({"v": 1, "symbol": "AAPL", **fields}).encode()


def parse(frames: Any, limits: FeedLimits = DEFAULT_LIMITS) -> PriceTick:
    return parse_message(frames, received_wall_ns=NOW, limits=limits)


@pytest.mark.parametrize(
    ("frames", "symbol", "price"),
    [
        (encode_message("AAPL", "187.25", NOW), "AAPL", Decimal("187.25")),
        ([b"MSFT", json.dumps({"symbol": "MSFT", "price": 411.5, "ts_ns": NOW}).encode()], "MSFT", Decimal("411.5")),
        ([b"SPY", msgpack.packb({"v": 1, "symbol": "SPY", "price": 500.01, "bid": 500, "ask": 500.02, "size": 0.5,
                                 "ts_ns": NOW - 5 * S})], "SPY", Decimal("500.01")),
        ([b"BTC/USD", body(symbol="BTC/USD", price=97_000.5, ts_ns=NOW + 30 * S)], "BTC/USD", Decimal("97000.5")),
        ([b"SHIB/USD", body(symbol="SHIB/USD", price=1.2e-05)], "SHIB/USD", Decimal("0.000012")),
        ([b"AAPL", body(price=190, ts_ns=0)], "AAPL", Decimal(190)),  # ts 0: unknown exchange time
    ],
)
def test_parse_accepts_json_and_msgpack(frames: list[bytes], symbol: str, price: Decimal) -> None:
    tick = parse(frames)

    assert (tick.symbol, tick.price) == (symbol, price)


def test_encode_message_writes_numbers() -> None:
    _, raw = encode_message("AAPL", Decimal("101.50"), NOW, size=3)

    assert json.loads(raw) == {"v": 1, "symbol": "AAPL", "price": 101.5, "ts_ns": NOW, "size": 3}


DEEP_JSON = b'{"price":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # ~200 KB, as in the finding
R = RejectReason
MALFORMED = [
    ("one-frame", [b"AAPL"], R.FRAMES),
    ("three-frames", [b"AAPL", b"{}", b"extra"], R.FRAMES),
    ("not-bytes", [b"AAPL", "text"], R.FRAMES),
    ("not-a-list", b"AAPL", R.FRAMES),
    ("deep-200kb", [b"AAPL", DEEP_JSON], R.OVERSIZED),
    ("deep-small", [b"AAPL", b'{"price":1,"x":' + b"[" * 1000 + b"]" * 1000 + b"}"], R.OVERSIZED),
    ("deep-msgpack", [b"AAPL", b"\x82\xa5price\x01\xa1x" + b"\x91" * 4000 + b"\x01"], R.UNDECODABLE),
    ("long-topic", [b"A" * 65, body(price=1)], R.OVERSIZED),
    ("bad-json", [b"AAPL", b"{not json"], R.UNDECODABLE),
    ("bad-msgpack", [b"AAPL", b"\xc1\xc1"], R.UNDECODABLE),
    ("not-utf8", [b"AAPL", b'{"price": "\xff"}'], R.UNDECODABLE),
    ("array", [b"AAPL", json.dumps([1, 2]).encode()], R.UNDECODABLE),
    ("nan-literal", [b"AAPL", b'{"symbol":"AAPL","price":NaN}'], R.UNDECODABLE),
    ("inf-literal", [b"AAPL", b'{"symbol":"AAPL","price":Infinity}'], R.UNDECODABLE),
    ("no-price", [b"AAPL", body()], R.SCHEMA),
    ("string-price", [b"AAPL", body(price="190.12")], R.SCHEMA),
    ("string-nan", [b"AAPL", body(price="NaN")], R.SCHEMA),
    ("bool-price", [b"AAPL", body(price=True)], R.SCHEMA),
    ("string-size", [b"AAPL", body(price=1, size="100")], R.SCHEMA),
    ("string-bid", [b"AAPL", body(price=1, bid="1")], R.SCHEMA),
    ("msgpack-string-price", [b"AAPL", msgpack.packb({"symbol": "AAPL", "price": "1"})], R.SCHEMA),
    ("symbol-mismatch", [b"AAPL", body(symbol="MSFT", price=1)], R.SCHEMA),
    ("version", [b"AAPL", body(v=99, price=1)], R.SCHEMA),
    ("version-0", [b"AAPL", body(v=0, price=1)], R.SCHEMA),
    ("ts-string", [b"AAPL", body(price=1, ts_ns="soon")], R.SCHEMA),
    ("ts-float", [b"AAPL", body(price=1, ts_ns=1.78e18)], R.SCHEMA),
    ("topic-not-ascii", [b"\xff\xfe", json.dumps({"price": 1}).encode()], R.SCHEMA),
    ("negative", [b"AAPL", body(price=-1)], R.PRICE),
    ("zero", [b"AAPL", body(price=0)], R.PRICE),
    ("huge", [b"AAPL", body(price=1.7e308)], R.PRICE),
    ("overflow", [b"AAPL", b'{"symbol":"AAPL","price":1e999}'], R.PRICE),
    ("1e100", [b"AAPL", body(price=1e100)], R.PRICE),
    ("1e-30", [b"AAPL", body(price=1e-30)], R.PRICE),
    ("big-int", [b"AAPL", body(price=10**400)], R.PRICE),
    ("zero-size", [b"AAPL", body(price=1, size=0)], R.PRICE),
    ("ask-huge", [b"AAPL", body(price=1, ask=1e300)], R.PRICE),
    ("ts-3e20", [b"AAPL", body(price=1, ts_ns=3 * 10**20)], R.TIMESTAMP),
    ("ts-2100", [b"AAPL", body(price=1, ts_ns=4_102_444_800 * S)], R.TIMESTAMP),
    ("ts-ms", [b"AAPL", body(price=1, ts_ns=NOW // 1_000_000)], R.TIMESTAMP),
    ("ts-lead", [b"AAPL", body(price=1, ts_ns=NOW + 61 * S)], R.TIMESTAMP),
    ("ts-old", [b"AAPL", body(price=1, ts_ns=NOW - 86_401 * S)], R.TIMESTAMP),
    ("ts-negative", [b"AAPL", body(price=1, ts_ns=-1)], R.TIMESTAMP),
]


@pytest.mark.parametrize(("frames", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_parse_refuses_malformed_with_a_reason(frames: Any, reason: RejectReason) -> None:
    with pytest.raises(MalformedMessage) as err:
        parse(frames)

    assert err.value.reason is reason


def test_oversized_body_is_refused_before_decoding() -> None:
    frames = [b"AAPL", body(price=1, note="x" * 5000)]

    with pytest.raises(MalformedMessage) as err:
        parse(frames)

    assert err.value.reason is RejectReason.OVERSIZED
    assert parse(frames, FeedLimits(max_body_bytes=8192)).price == 1


# ----------------------------------------------------------------------------- fuzz: never raises

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)
near_now = st.integers(NOW - 2 * 86_400 * S, NOW + 120 * S)
field_values = {
    "v": st.sampled_from([1, 2, 0, True, "1"]) | json_values,
    "symbol": st.sampled_from(["AAPL", "MSFT", ""]) | json_values,
    "price": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | json_values,
    "bid": st.floats(min_value=1e-9, max_value=1e8) | json_values,
    "ask": st.floats(min_value=1e-9, max_value=1e8) | json_values,
    "size": st.floats() | st.integers() | json_values,
    "ts_ns": near_now | st.integers() | json_values,
}
bodies = st.fixed_dictionaries({}, optional=field_values)


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    data = draw(bodies)
    kind = draw(st.sampled_from(["json", "msgpack", "bytes"]))
    if kind == "json":
        raw = json.dumps(data, allow_nan=True).encode()
    elif kind == "msgpack":
        try:
            raw = msgpack.packb(data)
        except OverflowError:  # an int beyond 64 bits has no msgpack form: send it as JSON instead
            raw = json.dumps(data, allow_nan=True).encode()
    else:
        raw = draw(st.binary(max_size=300))
    topic = draw(st.sampled_from([b"AAPL", b"MSFT", b""]) | st.binary(max_size=70))
    extra = draw(st.lists(st.binary(max_size=20), max_size=1))
    return [topic, raw, *extra]


def check_one(frames: Any) -> None:
    try:
        tick = parse(frames)
    except MalformedMessage as exc:
        reason = exc.reason
        assert isinstance(reason, RejectReason)
        return
    assert tick.symbol == bytes(frames[0]).decode("ascii").strip()
    assert DEFAULT_LIMITS.min_price <= tick.price <= DEFAULT_LIMITS.max_price
    assert tick.ts_event_ns == 0 or NOW - 86_400 * S <= tick.ts_event_ns <= NOW + 60 * S
    for extra in (tick.bid, tick.ask, tick.size):
        assert extra is None or (extra.is_finite() and extra > 0)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_any_structured_message_parses_or_is_a_counted_rejection(frames: list[bytes]) -> None:
    check_one(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=5000), max_size=3))
def test_any_bytes_parse_or_are_a_counted_rejection(frames: list[bytes]) -> None:
    check_one(frames)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([b"[", b"{\"a\":"]), st.sampled_from([b"", b"x", b"]}" * 3]))
def test_nesting_of_any_depth_is_refused_without_recursion(depth: int, opener: bytes, tail: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    check_one([b"AAPL", b'{"price":1,"x":' + opener * depth + b"1" + closer * depth + tail + b"}"])


# ----------------------------------------------------------------------------- sanity band

def tick(price: str | int, symbol: str = "AAPL") -> PriceTick:
    return PriceTick(symbol, Decimal(price), 0, 0, 0)


def prices(ticks: list[PriceTick]) -> list[Decimal]:
    return [t.price for t in ticks]


def test_band_accepts_moves_within_it_and_holds_a_jump() -> None:
    band = SanityBand(band_pct=50, confirm_ticks=3)

    assert prices(band.screen(tick(100))) == [100]  # first tick: nothing to compare with
    assert prices(band.screen(tick(149))) == [149]  # +49 %
    assert prices(band.screen(tick(100))) == [100]  # 149 / 100 = 1.49, inside
    assert band.screen(tick(151)) == []  # 1.51 x: suspect
    assert band.screen(tick(66)) == []  # 100 / 66 > 1.5: suspect too, a different jump

    assert (band.counts.suspect, band.counts.discarded) == (2, 1)
    assert band.held() == {"AAPL": Decimal(66)}
    assert band.reference("AAPL") == Decimal(100)


def test_band_drops_an_isolated_outlier() -> None:
    band = SanityBand(band_pct=50, confirm_ticks=3)
    band.screen(tick(100))

    assert band.screen(tick("1e6")) == []
    assert prices(band.screen(tick(101))) == [101]

    assert (band.counts.suspect, band.counts.discarded, band.counts.confirmed) == (1, 1, 0)
    assert band.held() == {}
    assert band.reference("AAPL") == Decimal(101)


def test_band_accepts_a_confirmed_gap_with_every_held_tick() -> None:
    band = SanityBand(band_pct=50, confirm_ticks=3)
    band.screen(tick(100))

    assert band.screen(tick(300)) == []
    assert band.screen(tick(310)) == []
    assert prices(band.screen(tick(305))) == [300, 310, 305]  # the run, in arrival order
    assert prices(band.screen(tick(306))) == [306]  # the new level is the reference now

    assert (band.counts.suspect, band.counts.confirmed, band.counts.discarded) == (3, 3, 0)


@pytest.mark.parametrize("confirm", [1, 2, 5])
def test_band_confirmation_length_is_configurable(confirm: int) -> None:
    band = SanityBand(band_pct=10, confirm_ticks=confirm)
    band.screen(tick(100))

    results = [band.screen(tick(200)) for _ in range(confirm)]

    assert all(r == [] for r in results[:-1])
    assert len(results[-1]) == confirm


def test_band_reference_can_be_seeded_and_is_per_symbol() -> None:
    band = SanityBand(band_pct=50, confirm_ticks=3)
    band.set_reference("AAPL", Decimal(190))
    band.screen(tick(10, "MSFT"))

    assert band.screen(tick(1)) == []  # judged against the seeded 190
    assert prices(band.screen(tick(11, "MSFT"))) == [11]
    band.forget("AAPL")
    assert prices(band.screen(tick(1))) == [1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e6"), places=2), min_size=1, max_size=60),
       st.floats(1, 500), st.integers(1, 5))
def test_band_never_accepts_an_unconfirmed_jump(series: list[Decimal], band_pct: float, confirm: int) -> None:
    band = SanityBand(band_pct=band_pct, confirm_ticks=confirm)
    ratio = 1 + Decimal(repr(band_pct)) / 100
    accepted: list[Decimal] = []
    for p in series:
        ref = band.reference("AAPL")
        out = prices(band.screen(tick(str(p))))
        if len(out) == 1 and ref is not None and confirm > 1:
            assert max(p / ref, ref / p) <= ratio  # a single accepted tick is within the band of the last good one
        assert len(out) in (0, 1, confirm)
        accepted += out
        assert len(band.held()) <= 1
    c = band.counts
    held = len(series) - len(accepted) - c.discarded
    assert 0 <= held < confirm
    assert c.suspect == c.confirmed + c.discarded + held
    assert not math.isnan(float(sum(accepted, Decimal(0))))


def test_limits_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="max_lead_s"):
        FeedLimits(max_lead_s=300)
    with pytest.raises(ValueError, match="band_pct"):
        FeedLimits(band_pct=float("nan"))
    with pytest.raises(ValueError, match="min_price"):
        FeedLimits(min_price=Decimal(0))

