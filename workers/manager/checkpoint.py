"""The ``ch_fifo_state`` document: the book, the ledger and the cash offset as of ``last_seq`` (pure).

A cache of what the activities imply: a document that cannot be read is ignored (full replay).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.errors import InvalidInput
from core.fifo import FifoBook
from core.ledger import CashLedger
from core.records import OrderMeta

STATE_FORMAT = 1
"""Version of the document; another version is ignored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    book: FifoBook
    ledger: CashLedger
    orders: dict[str, OrderMeta]
    cash_offset: Decimal


def encode(book: FifoBook, ledger: CashLedger, cash_offset: Decimal) -> str:
    return encoder(book, ledger, cash_offset)()


def encoder(book: FifoBook, ledger: CashLedger, cash_offset: Decimal) -> Callable[[], str]:
    """The document as of now, encoded when called: call this on the event loop (it copies only the
    containers, so no await can change the state half-way) and the result in a thread (the costly part),
    while the book goes on changing."""
    book_doc, ledger_doc = book.snapshot(), ledger.snapshot()

    def text() -> str:
        state = {"format": STATE_FORMAT, "book": book_doc(), "ledger": ledger_doc(), "cash_offset": str(cash_offset)}
        return json.dumps(state, separators=(",", ":"))

    return text


def decode(text: str) -> Checkpoint:
    """The checkpoint in ``text``; :class:`InvalidInput` naming the problem when it cannot be used."""
    try:
        state: Any = json.loads(text)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InvalidInput(f"format {state.get('format') if isinstance(state, dict) else None!r}")
        return Checkpoint(book=FifoBook.from_dict(state["book"]), ledger=CashLedger.from_dict(state["ledger"]),
                          orders={o["order_id"]: OrderMeta.from_dict(o) for o in state["book"].get("orders", [])},
                          cash_offset=Decimal(state.get("cash_offset", "0")))
    except (InvalidInput, KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        raise InvalidInput(f"checkpoint unusable: {type(exc).__name__}: {exc}") from None
