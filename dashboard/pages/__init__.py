"""Dash pages. Each module has ``PATH`` or ``PATH_TEMPLATE``, ``TITLE``, ``layout(**kwargs)`` and
``register(app)`` (callbacks are bound to the app explicitly, so several apps can share a process)."""

from __future__ import annotations

import dash
from dash import Dash

from dashboard.pages import (
    activities,
    alerts,
    compare,
    destination,
    health,
    overview,
    reconciliation,
    strategies,
    strategy,
    trade,
)

# the trade page first: Dash matches path templates in registry order and "/destination/<slug>"
# would otherwise swallow "/destination/<slug>/trade/<id>"
PAGES = (trade, overview, destination, strategies, strategy, compare, activities, alerts, reconciliation, health)


def register_all(app: Dash) -> None:
    for order, page in enumerate(PAGES):
        path = getattr(page, "PATH", None)
        template = getattr(page, "PATH_TEMPLATE", None)
        dash.register_page(  # type: ignore[no-untyped-call]
            page.__name__,
            path=path,
            path_template=template,
            name=page.TITLE,
            title=f"{page.TITLE} · Cold Harbour",
            layout=page.layout,
            order=order,
        )
        page.register(app)
