"""The manager's checkpoint is encoded in a thread while the event loop goes on booking: the document is
the state as of the moment it was asked for, never a mix, and never a crash (``dictionary changed size
during iteration`` stopped a checkpoint in the tie-out soak before the copy was taken on the loop)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from core.fifo import FifoBook
from core.ledger import CashLedger, fill_entry
from core.records import Fill, Side
from workers.manager import checkpoint

T = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def _fills(start: int, n: int) -> list[Fill]:
    return [Fill(fill_id=f"f{i:06d}", ts=T + timedelta(seconds=i), symbol=f"S{i % 7}",
                 side=Side.BUY if i % 2 == 0 else Side.SELL, qty=D(1), price=D(100 + i % 5)) for i in range(start, start + n)]


def _book(fills: list[Fill]) -> tuple[FifoBook, CashLedger]:
    book, ledger = FifoBook(), CashLedger()
    book.apply(fills)
    for f in fills:
        ledger.book(fill_entry(f), f.ts)
    return book, ledger


def test_the_document_is_the_state_when_it_was_asked_for() -> None:
    first = _fills(0, 2_000)
    book, ledger = _book(first)
    text = checkpoint.encoder(book, ledger, D("1.5"))
    more = _fills(2_000, 500)  # booked while the document is being built
    book.apply(more)
    for f in more:
        ledger.book(fill_entry(f), f.ts)
    saved = checkpoint.decode(text())
    expected, expected_ledger = _book(first)
    assert saved.book.round_trips() == expected.round_trips()
    assert saved.book.fill_count == 2_000
    assert (saved.ledger.cash, len(saved.ledger.applied)) == (expected_ledger.cash, 2_000)
    assert saved.cash_offset == D("1.5")


def test_encoding_in_a_thread_while_the_book_changes_does_not_fail() -> None:
    book, ledger = _book(_fills(0, 20_000))
    text = checkpoint.encoder(book, ledger, D(0))
    errors: list[BaseException] = []
    out: list[str] = []

    def encode() -> None:
        try:
            out.append(text())
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    worker = threading.Thread(target=encode)
    worker.start()
    for i in range(20):  # the event loop's side: the book and the ledger keep growing meanwhile
        batch = _fills(20_000 + i * 100, 100)
        book.apply(batch)
        for f in batch:
            ledger.book(fill_entry(f), f.ts)
    worker.join()
    assert errors == []
    assert checkpoint.decode(out[0]).book.fill_count == 20_000
