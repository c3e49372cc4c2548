"""The account manager: raw activities + live prices -> open trades, closed trades and equity.

For every destination it owns (one PostgreSQL advisory lock per destination, :mod:`workers.locks`),
the manager keeps a :class:`core.fifo.FifoBook` fed incrementally from
``<ACCOUNT_SCHEMA>.activities`` and writes three tables the dashboard reads:

- ``open_trades_<slug>``: one row per open position, re-valued from the ZMQ feed at every flush
  (``FLUSH_INTERVAL_S``), NOTIFY ``pos_channel_<slug>`` at most once per ``UI_SNAPSHOT_SEC``;
- ``closed_trades_<slug>``: round trips, upserted on ``trade_id`` as fills arrive (NOTIFY from the
  ingester, or a poll every ``CLOSED_SYNC_SEC``), NOTIFY ``closed_channel_<slug>`` per new trade;
- ``equity_full_<slug>``: one row per ``SNAPSHOT_SEC`` grid instant in market hours (15 times sparser
  outside), epoch-aligned so replicas never write two rows for one instant.

Every ``CLOSED_SYNC_SEC`` the broker's ``/v2/positions`` is compared with the book; every
``EQUITY_UPDATE_INTERVAL_S`` the broker's ``/v2/account`` is read to calibrate the ledger's cash
(it does not write equity rows: ``SNAPSHOT_SEC`` does).

The modules, in reading order: :mod:`.service` (the process: ownership, feeds, shared loops),
:mod:`.runner` (one destination), the pure decisions :mod:`.book`, :mod:`.marks`, :mod:`.reconcile`,
:mod:`.seed`, :mod:`.health`, :mod:`.throttle`, then :mod:`.store` (SQL), :mod:`.checkpoint`,
:mod:`.port` (the typed broker port), :mod:`.context`, :mod:`.options` and :mod:`.history` (the
offline commands).

Embedding::

    manager = AccountManager(settings, destinations)
    await manager.run(stop_event)          # or: await run_manager(settings)
"""

from __future__ import annotations

from workers.manager.history import rebuild_equity, refill_snapshots
from workers.manager.port import BrokerPort, always_open
from workers.manager.runner import DestinationRunner
from workers.manager.service import AccountManager, run_manager

__all__ = ["AccountManager", "BrokerPort", "DestinationRunner", "always_open", "rebuild_equity",
           "refill_snapshots", "run_manager"]
