"""The destination page's positions grid set straight from the stream (``assets/sse.js``).

The page asks the stream for its destination's rows in the zone it shows (``chSSE.want``, again
whenever ``dest-pos-key`` changes: a new zone reopens the stream). A ``pos`` event then carries the
rows drawn by the server exactly as the ``positions`` callback draws them (:mod:`dashboard.sse_rows`);
``sse.js`` puts it in ``dest-sse-pos`` and the clientside callback here sets the grid, its status line
and ``dest-pos-key`` (what is shown: ``[version, zone]``) without a server round trip.

The newest version wins: an event older than what is shown is dropped (a callback's answer may have
drawn a newer one). An event in another zone than the grid's asks for a full re-read instead. Polling
(``dest-tick``) goes on as before and converges on its own: its ``positions`` callback finds
``dest-pos-key`` equal to the version it would draw and answers 204.
"""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc

APPLY_JS = """function(push, slug, key) {
    const nu = window.dash_clientside.no_update;
    if (!push || !push.rows || !slug || push.slug !== slug) { return [nu, nu, nu]; }
    if (!key || key[1] !== push.tz) {
        // the grid shows another zone (or nothing yet): ask for that zone, and re-read meanwhile
        if (window.chSSE) {
            if (key) { window.chSSE.want(slug, key[1]); }
            window.chSSE.refresh('zone');
        }
        return [nu, nu, nu];
    }
    if (typeof key[0] === 'number' && !(push.v > key[0])) { return [nu, nu, nu]; }
    return [push.rows, push.status, [push.v, push.tz]];
}"""

WANT_JS = """function(key, slug) {
    if (window.chSSE && slug && key) { window.chSSE.want(slug, key[1]); }
    return window.dash_clientside.no_update;
}"""


def push_stores() -> list[Any]:
    """The stores the push path needs in the page's layout."""
    return [dcc.Store(id="dest-sse-pos"), dcc.Store(id="dest-sse-want")]


def register_push(app: Dash) -> None:
    app.clientside_callback(  # type: ignore[no-untyped-call]
        APPLY_JS,
        Output("dest-positions", "rowData", allow_duplicate=True),
        Output("dest-pos-status", "children", allow_duplicate=True),
        Output("dest-pos-key", "data", allow_duplicate=True),
        Input("dest-sse-pos", "data"),
        State("dest-slug", "data"),
        State("dest-pos-key", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        WANT_JS,
        Output("dest-sse-want", "data"),
        Input("dest-pos-key", "data"),
        State("dest-slug", "data"),
    )
