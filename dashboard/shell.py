"""The shell around every page: the navigation bar, the shared stores and their clientside callbacks.

The navigation is :data:`NAV_LINKS`; a page that wants a link adds one entry there (``badge_id``: a
live badge next to it, which that page's callback fills).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html

from core.settings import Settings
from dashboard.context import view_prefs


@dataclass(frozen=True, slots=True)
class NavLink:
    """One link of the navigation bar."""

    label: str
    href: str
    active: str = "exact"  # dbc.NavLink's matching: "exact" or "partial"
    badge_id: str | None = None  # an empty badge next to the label, for a page's callback to fill


NAV_LINKS: tuple[NavLink, ...] = (
    NavLink("Overview", "/"),
    NavLink("Strategies", "/strategies", "partial"),
    NavLink("Compare", "/compare"),
    NavLink("Activities", "/activities", "partial"),
    NavLink("Alerts", "/alerts", badge_id="alerts-badge"),
    NavLink("Reconciliation", "/reconciliation"),
    NavLink("Health", "/health"),
)


def _nav_item(link: NavLink) -> Any:
    label: Any = link.label
    if link.badge_id:
        label = [link.label, dbc.Badge("", id=link.badge_id, color="danger", pill=True, className="ms-1"),
                 dcc.Interval(id=f"{link.badge_id}-tick", interval=5000)]  # the page's callback refreshes it
    return dbc.NavItem(dbc.NavLink(label, href=link.href, active=link.active))


def _controls(settings: Settings) -> Any:
    return html.Div(
        [
            dbc.Select(
                id="tz-choice",
                options=[
                    {"label": f"Exchange ({settings.display_timezone})", "value": "exchange"},
                    {"label": "UTC", "value": "utc"},
                    {"label": "Local (browser)", "value": "local"},
                ],
                value="exchange",
                size="sm",
                persistence=True,
                persistence_type="local",
                className="tz-select",
            ),
            dbc.Switch(id="theme-switch", label="Dark", value=False, persistence=True,
                       persistence_type="local", className="mb-0 ms-3 text-nowrap"),
        ],
        className="d-flex align-items-center gap-2 py-2 py-lg-0",
    )


def shell(settings: Settings, page_container: Any = None) -> Any:
    _choice, browser_tz, theme = view_prefs()
    nav = dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand([html.Span("⚓", className="me-2"), "Cold Harbour"], href="/", className="fw-semibold"),
                dbc.NavbarToggler(id="nav-toggler"),
                dbc.Collapse(
                    [dbc.Nav([_nav_item(link) for link in NAV_LINKS], navbar=True, className="me-auto"),
                     _controls(settings)],
                    id="nav-collapse",
                    navbar=True,
                ),
            ],
            fluid=True,
        ),
        color="body",
        dark=False,
        className="ch-navbar border-bottom mb-3",
    )
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            # seeded from the cookies assets/theme.js sets: the clientside callbacks below then find
            # nothing to change on load, so no figure or time callback fires a second time
            dcc.Store(id="theme-store", data=theme),
            dcc.Store(id="browser-tz", data=browser_tz or None),
            dcc.Store(id="sse-hint"),
            dcc.Store(id="sse-config", data={"enabled": not settings.disable_sse, "url": "/stream/events"}),
            nav,
            dbc.Container(page_container or dash.page_container, fluid=True, className="pb-5 ch-main"),
        ]
    )


def register_shell_callbacks(app: Dash) -> None:
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(dark, current) {
            const theme = dark ? 'dark' : 'light';
            document.documentElement.setAttribute('data-bs-theme', theme);
            document.body.setAttribute('data-ag-theme-mode', theme);
            if (window.chSetCookie) { window.chSetCookie('ch_theme', theme); }
            return theme === current ? window.dash_clientside.no_update : theme;
        }""",
        Output("theme-store", "data"),
        Input("theme-switch", "value"),
        State("theme-store", "data"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(_, current) {
            let tz = null;
            try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || null; } catch (e) { tz = null; }
            return tz === current ? window.dash_clientside.no_update : tz;
        }""",
        Output("browser-tz", "data"),
        Input("url", "pathname"),
        State("browser-tz", "data"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(choice) {
            if (window.chSetCookie && choice) { window.chSetCookie('ch_tz', choice); }
            return window.dash_clientside.no_update;
        }""",
        Output("tz-choice", "name"),
        Input("tz-choice", "value"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(config) {
            if (config && config.enabled && window.chSSE) { window.chSSE.start(config.url); }
            return window.dash_clientside.no_update;
        }""",
        Output("sse-hint", "id"),
        Input("sse-config", "data"),
    )
    app.callback(
        Output("nav-collapse", "is_open"),
        Input("nav-toggler", "n_clicks"),
        State("nav-collapse", "is_open"),
        prevent_initial_call=True,
    )(lambda n, is_open: not is_open)
