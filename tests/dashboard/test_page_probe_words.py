"""The visual tests' text checks (:mod:`scripts.page_probe`) flag what a reader would see as a broken number,
and nothing a correct page shows: identifiers that happen to look like e-notation are not numbers."""

from __future__ import annotations

import pytest

from scripts.page_probe import BAD_WORDS, SCIENTIFIC


@pytest.mark.parametrize("text", ["1.2e+18", "5e-07", "equity 1.78×10^18", "−3E+05 shares", "x 1.796 × 10"])
def test_numbers_in_e_notation_are_flagged(text: str) -> None:
    assert SCIENTIFIC.search(text), text


@pytest.mark.parametrize("text", ["stream::5e0931…", "id 3fa85f64-5717-4562-8e57-2c963f66afa6", "AAPL 5e3",
                                  "$1,234.56", "0.0066 ETH", "2026-12-03 09:30"])
def test_identifiers_and_plain_numbers_are_not_flagged(text: str) -> None:
    assert not SCIENTIFIC.search(text), text


@pytest.mark.parametrize(("text", "flagged"), [("NaN", True), ("P&L None", True), ("Nonexistent", False),
                                               ("undefined", True), ("Infinity", True), ("NaNo", False)])
def test_placeholder_words(text: str, flagged: bool) -> None:
    assert bool(BAD_WORDS.search(text)) is flagged
