"""Cold Harbour workers: asyncio services that ingest broker data and derive the dashboard's tables.

Embeddable: ``workers.run_manager(settings)`` and ``workers.run_ingester(settings)`` are the one-call
forms; ``AccountManager`` / ``Ingester`` can be constructed and run inside a user's own program.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # lazy: importing workers must not import every service
    if name in {"run_manager", "AccountManager"}:
        from workers import manager

        return getattr(manager, name)
    if name in {"run_ingester", "Ingester"}:
        from workers import ingester

        return getattr(ingester, name)
    raise AttributeError(name)
