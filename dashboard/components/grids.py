"""AG Grid column definitions (``field`` = the ``colId`` whitelisted in :mod:`dashboard.grid_sql`)."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag

MONEY = {"function": "params.value == null ? '' : d3.format('$,.2f')(params.value)"}
PRICE = {"function": "params.value == null ? '' : d3.format(',.2f')(params.value)"}
QTY = {"function": "params.value == null ? '' : d3.format(',.4~f')(params.value)"}
# ``*_pct`` / ``*_plpc`` columns hold percentage points (core.fifo, workers.equity: 1.5 means 1.5 %).
PCT_POINTS = {"function": "params.value == null ? '' : d3.format('+.2f')(params.value) + '%'"}
WEIGHT = {"function": "params.value == null ? '' : d3.format('.1%')(params.value)"}
DURATION = {
    "function": "params.value == null ? '' : (params.value < 3600 ? Math.round(params.value / 60) + 'm' : "
    "(params.value < 86400 ? (params.value / 3600).toFixed(1) + 'h' : (params.value / 86400).toFixed(1) + 'd'))"
}
# A header longer than its column (``Entry (America/New_York (EST))``: the zone is the visitor's) wraps onto
# a second line instead of being cut to ``Entry (America/N…``; the header row grows only when one does.
HEADER_WRAP = {"wrapHeaderText": True, "autoHeaderHeight": True}
ZONED_TIME_WIDTH_PX = 195  # "2026-11-23 09:45:00", and "(America/New_York" of its header on one line beside the sort arrow
OCC_WIDTH_PX = 150  # an option's OCC symbol (AAPL240719C00150000) in full
# labels that are substrings of the stored values, so the server-side text filter finds what the cell shows
ASSET_CLASS = {"function": "params.value == null ? '' : ({us_equity: 'Equity', us_option: 'Option', "
                           "crypto: 'Crypto'}[params.value] || params.value)"}
MULTIPLIER = {"function": "params.value == null ? '' : '×' + d3.format(',~f')(params.value)"}
RIGHT = {"function": "params.value == null ? '' : params.value.charAt(0).toUpperCase() + params.value.slice(1)"}
# A row resting on fills only the live stream has reported (``provisional_fills`` > 0, docs/freshness.md):
# its symbol cell carries the "provisional" tag (assets/coldharbour.css) and says why on hover.
PROVISIONAL_CLASS = {"ch-provisional": "params.data != null && params.data.provisional_fills > 0"}
PROVISIONAL_TOOLTIP = {
    "function": "params.data != null && params.data.provisional_fills > 0 ? params.value + ' · provisional: ' + "
    "params.data.provisional_fills + ' fill' + (params.data.provisional_fills == 1 ? '' : 's') + "
    "' seen on the live stream, not yet confirmed by the broker\\'s activities' : params.value"
}
PL_STYLE = {
    "styleConditions": [
        {"condition": "params.value > 0", "style": {"color": "var(--ch-up)", "fontWeight": "600"}},
        {"condition": "params.value < 0", "style": {"color": "var(--ch-down)", "fontWeight": "600"}},
    ]
}

_TEXT = {"filter": "agTextColumnFilter", "filterParams": {"buttons": ["reset"], "debounceMs": 400,
                                                          "maxNumConditions": 1}}
_NUM = {"filter": "agNumberColumnFilter", "type": "rightAligned",
        "filterParams": {"buttons": ["reset"], "debounceMs": 400, "maxNumConditions": 1}}
_DATE = {"filter": "agDateColumnFilter", "filterParams": {"buttons": ["reset"], "maxNumConditions": 1}}


def _col(field: str, header: str, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, **base, **extra}


def contract_columns(base: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None
                     ) -> list[dict[str, Any]]:
    """The option contract parsed from the OCC symbol (``dashboard.instrument_cols``); blank otherwise.

    ``base``: the (text, number, date) filter settings of a server-side grid; none for a client one.
    """
    text, number, day = base or ({}, {"type": "rightAligned"}, {})
    pad = 0 if base else 25  # a client grid's headers carry a filter icon beside the name
    return [
        _col("underlying", "Underlying", text, width=105 + pad),
        _col("expiry", "Expiry", day, width=115),
        _col("right", "Right", text, valueFormatter=RIGHT, width=80 + pad),
        _col("strike", "Strike", number, valueFormatter=PRICE, width=95),
        _col("multiplier", "Mult.", number, valueFormatter=MULTIPLIER, width=80,
             headerTooltip="Units of the underlying per contract (100 for an option)"),
    ]


def closed_columns(tz_label: str) -> list[dict[str, Any]]:
    return [
        _col("trade_id", "Trade", _TEXT, cellClass="ch-link", pinned="left", width=120),
        _col("symbol", "Symbol", _TEXT, width=OCC_WIDTH_PX, tooltipValueGetter=PROVISIONAL_TOOLTIP,
             cellClassRules=PROVISIONAL_CLASS),
        _col("asset_class", "Class", _TEXT, valueFormatter=ASSET_CLASS, width=90),
        _col("direction", "Dir", _TEXT, width=85),
        _col("qty", "Qty", _NUM, valueFormatter=QTY, width=95),
        _col("entry_time", f"Entry ({tz_label})", _DATE, width=ZONED_TIME_WIDTH_PX),
        _col("exit_time", f"Exit ({tz_label})", _DATE, width=ZONED_TIME_WIDTH_PX, sort="desc"),
        _col("entry_price", "Entry px", _NUM, valueFormatter=PRICE, width=105),
        _col("exit_price", "Exit px", _NUM, valueFormatter=PRICE, width=105),
        _col("net_pl", "Net P&L", _NUM, valueFormatter=MONEY, cellStyle=PL_STYLE, width=120),
        _col("return_pct", "Return", _NUM, valueFormatter=PCT_POINTS, cellStyle=PL_STYLE, width=100),
        _col("fees", "Fees", _NUM, valueFormatter=MONEY, width=90),
        _col("holding_s", "Held", _NUM, valueFormatter=DURATION, width=90),
        _col("exit_reason", "Exit reason", _TEXT, width=130),
        *contract_columns((_TEXT, _NUM, _DATE)),
    ]


def open_columns(tz_label: str) -> list[dict[str, Any]]:
    stale = {
        "styleConditions": [
            {"condition": "params.data && params.data.price_stale",
             "style": {"color": "var(--ch-warn)", "fontStyle": "italic"}},
        ]
    }
    return [
        {"field": "symbol", "headerName": "Symbol", "pinned": "left", "width": OCC_WIDTH_PX,
         "tooltipValueGetter": PROVISIONAL_TOOLTIP, "cellClassRules": PROVISIONAL_CLASS},
        {"field": "asset_class", "headerName": "Class", "valueFormatter": ASSET_CLASS, "width": 90},
        {"field": "side", "headerName": "Side", "width": 80},
        {"field": "qty", "headerName": "Qty", "type": "rightAligned", "valueFormatter": QTY, "width": 90},
        {"field": "avg_entry_price", "headerName": "Avg entry", "type": "rightAligned", "valueFormatter": PRICE,
         "width": 110},
        {"field": "mark_price", "headerName": "Mark", "type": "rightAligned", "width": 110, "cellStyle": stale,
         "valueFormatter": {"function": "params.value == null ? '' : d3.format(',.2f')(params.value) + "
                                        "(params.data && params.data.price_stale ? ' ⚠ stale' : '')"},
         "tooltipField": "mark_ts"},
        {"field": "market_value", "headerName": "Value", "type": "rightAligned", "valueFormatter": MONEY,
         "width": 120},
        {"field": "unrealized_pl", "headerName": "Unrealized", "type": "rightAligned", "valueFormatter": MONEY,
         "cellStyle": PL_STYLE, "width": 120},
        {"field": "unrealized_plpc", "headerName": "Unr. %", "type": "rightAligned", "valueFormatter": PCT_POINTS,
         "cellStyle": PL_STYLE, "width": 95},
        {"field": "day_change", "headerName": "Day", "type": "rightAligned", "valueFormatter": MONEY,
         "cellStyle": PL_STYLE, "width": 110},
        {"field": "weight", "headerName": "Weight", "type": "rightAligned", "valueFormatter": WEIGHT, "width": 90},
        {"field": "stop_price", "headerName": "Stop", "type": "rightAligned", "valueFormatter": PRICE, "width": 95},
        {"field": "take_profit_price", "headerName": "Target", "type": "rightAligned", "valueFormatter": PRICE,
         "width": 95},
        *contract_columns(),
        {"field": "updated_at", "headerName": f"Updated ({tz_label})", "width": ZONED_TIME_WIDTH_PX},
    ]


def activity_columns(tz_label: str) -> list[dict[str, Any]]:
    return [
        _col("ts", f"Time ({tz_label})", _DATE, width=ZONED_TIME_WIDTH_PX, sort="desc"),
        _col("activity_type", "Type", _TEXT, width=100),
        _col("symbol", "Symbol", _TEXT, width=100),
        _col("side", "Side", _TEXT, width=80),
        _col("qty", "Qty", _NUM, valueFormatter=QTY, width=90),
        _col("price", "Price", _NUM, valueFormatter=PRICE, width=100),
        _col("net_amount", "Net amount", _NUM, valueFormatter=MONEY, cellStyle=PL_STYLE, width=125),
        _col("order_status", "Status", _TEXT, width=100),
        _col("description", "Description", _TEXT, width=180),
        _col("activity_id", "Activity id", _TEXT, width=140),
        _col("order_id", "Order id", _TEXT, width=280),
    ]


def infinite_grid(grid_id: str, columns: list[dict[str, Any]], *, height: str = "460px",
                  block_size: int = 100) -> dag.AgGrid:
    """A server-side grid: AG Grid's infinite row model, every block a callback round trip."""
    return dag.AgGrid(
        id=grid_id,
        rowModelType="infinite",
        columnDefs=columns,
        defaultColDef={"sortable": True, "resizable": True, "floatingFilter": True, "minWidth": 70, **HEADER_WRAP},
        dashGridOptions={
            "cacheBlockSize": block_size,
            "maxBlocksInCache": 20,
            "infiniteInitialRowCount": 1,
            "rowBuffer": 10,
            "animateRows": False,
            "suppressCellFocus": True,
        },
        style={"height": height, "width": "100%"},
        className="ch-grid",
    )


def client_grid(grid_id: str, columns: list[dict[str, Any]], *, row_id: str, height: str = "300px",
                row_data: list[dict[str, Any]] | None = None) -> dag.AgGrid:
    return dag.AgGrid(
        id=grid_id,
        rowData=row_data or [],
        columnDefs=columns,
        getRowId=f"params.data.{row_id}",
        defaultColDef={"sortable": True, "resizable": True, "filter": True, "minWidth": 70, **HEADER_WRAP},
        dashGridOptions={"animateRows": True, "suppressCellFocus": True, "domLayout": "normal",
                         "localeText": {"noRowsToShow": "No open positions"}},
        style={"height": height, "width": "100%"},
        className="ch-grid",
    )
