"""What a person sees on a dashboard page, read from the DOM of a real browser, and what is wrong with it.

Shared by ``make look`` (:mod:`scripts.look`, which prints the problems next to its screenshots) and
the visual tests on the live stack (``tests/e2e_stack/test_visual.py``, which assert there are none).

:func:`settle` waits until a page has drawn (the app mounted, every chart plotted, the sizes
steady); :func:`probe` reads charts, boxes and texts in one script; :func:`problems` turns that into
sentences, one per defect:

- every chart has data (an empty-state figure has no trace with points);
- every time axis (titled ``Time, …``/``Date, …``, or of type ``date``) is a date axis whose range lies
  within its data's dates, and those dates are plausible (not nanoseconds read as milliseconds);
- no card overlaps another card and every chart is drawn inside its own card;
- no text of a chart (ticks, cell texts, legend, annotations) is drawn over another, or under 8 px, and
  no axis repeats a tick label (``7%, 7%, 7%``: too few decimals for its range), and neither the legend nor
  the range buttons cover the plot area or each other, nor does plotly's mode bar cover either;
- no visible text reads ``NaN``, ``Infinity``, ``undefined``, ``None`` or a number in scientific notation;
- every money figure has the page's one format: sign, ``$``, thousands separators (``−$1,000.00``);
- every grid column drawn has its header label in full (not empty, not cut to an ellipsis).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SETTLE_TIMEOUT_S = 240.0  # liveness bound for a page to draw (not a timing assertion)
STEADY_S = 1.0  # sizes unchanged for this long count as drawn

# Dash's "Loading..." placeholder goes once the app has mounted. Loading markers of parts of a page are
# not waited for: a live page re-asks its parts whenever the workers write, so they come and go.
READY_JS = """
const busy = document.querySelector('._dash-loading');
const plots = [...document.querySelectorAll('.js-plotly-plot')];
// a figure has arrived: traces, or an empty state's message (Dash's placeholder figure has neither)
const drawn = plots.every(p => p._fullLayout && p.querySelector('.main-svg')
                               && ((p.data || []).length > 0 || ((p.layout || {}).annotations || []).length > 0));
const sizes = plots.map(p => { const r = p.getBoundingClientRect(); return [r.width, r.height].join('x'); });
return {ready: document.readyState === 'complete' && !busy && drawn,
        signature: sizes.join(',') + '|' + document.body.scrollHeight + '|' + plots.length};
"""

PROBE_JS = """
const box = e => { const r = e.getBoundingClientRect();
                   return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
const visible = e => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
                       return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
const label = e => (e.id || (e.querySelector('h6, .ch-kpi-label, .card-header') || {}).innerText || e.className)
                   .toString().trim().slice(0, 60);
const cards = [...document.querySelectorAll('.card')].filter(visible)
    .filter(e => !e.parentElement.closest('.card'))
    .map(e => ({label: label(e), box: box(e)}));
const values = v => (v == null ? [] : (Array.isArray(v) ? v : (ArrayBuffer.isView(v) ? [...v] : [])));
const charts = [...document.querySelectorAll('.js-plotly-plot')].filter(visible).map(p => {
  const graph = p.closest('[id]');
  const card = p.closest('.card');
  const svg = p.querySelector('.main-svg');
  const data = p.data || [];
  const layout = p._fullLayout || {};
  const axes = Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k)).map(k => {
    const ax = layout[k];
    const xs = data.filter(t => (t.xaxis || 'x') === ax._id).flatMap(t => values(t.x));
    return {name: k, type: ax.type, title: ((ax.title || {}).text || ''), range: ax.range || null,
            visible: ax.visible !== false, first: xs.length ? xs[0] : null, xs: ax.type === 'date' ? xs : []};
  });
  // every axis's tick labels as plotly computed them (the same text twice reads as a wrong scale)
  const ticks = Object.keys(layout).filter(k => /^[xy]axis\\d*$/.test(k)).filter(k => layout[k].visible !== false)
      .map(k => ({name: k, texts: (layout[k]._vals || []).map(v => v.text).filter(t => t != null && t !== '')}));
  // the legend and the range buttons sit around the plot area, never on it (nor on each other)
  // (plotly's mode bar too: on a phone it shows on a tap, and sat on the range buttons)
  const overlays = [['legend', p.querySelector('.legend')], ['range buttons', p.querySelector('.rangeselector')],
                    ['mode bar', p.querySelector('.modebar')]]
      .filter(([, e]) => e && visible(e)).map(([name, e]) => ({name: name, box: box(e)}));
  const plotAreas = [...p.querySelectorAll('.nsewdrag')].filter(visible).map(box);
  // the texts plotly drew (ticks, cell texts, legend, annotations), not the hover layer's
  const texts = [...p.querySelectorAll('svg text')].filter(visible).filter(t => !t.closest('.hoverlayer'))
      .filter(t => t.textContent.trim()).slice(0, 400)
      .map(t => ({text: t.textContent.trim().slice(0, 40), box: box(t), px: parseFloat(getComputedStyle(t).fontSize)}));
  return {id: graph ? graph.id : '', card: card ? label(card) : null, texts: texts, ticks: ticks, overlays: overlays, plot_areas: plotAreas,
          card_box: card ? box(card) : null, svg_box: svg ? box(svg) : null,
          points: data.reduce((n, t) => n + values(t.x).length + values(t.y).length + values(t.z).length, 0),
          traces: data.length, axes: axes};
});
const svgText = [...document.querySelectorAll('.js-plotly-plot svg text')].filter(visible)
    .map(t => t.textContent);
// the broker's own words (an activity's description) are shown as they came: not the page's formats
const verbatim = [...document.querySelectorAll('.ag-cell[col-id="description"]')].map(e => e.innerText)
    .filter(t => t);
// every grid column's header label as drawn: an empty one, or one cut to an ellipsis, names nothing
const headers = [...document.querySelectorAll('.ag-header-cell:not(.ag-floating-filter)')].filter(visible).map(c => {
  const t = c.querySelector('.ag-header-cell-text');
  return {grid: (c.closest('[id]') || {}).id || '', col: c.getAttribute('col-id') || '',
          text: t ? t.innerText.trim() : '', cut: t ? t.scrollWidth > t.clientWidth + 1 : false};
});
return {url: location.pathname, cards: cards, charts: charts, text: document.body.innerText, svg_text: svgText,
        verbatim: verbatim, headers: headers};
"""

BAD_WORDS = re.compile(r"\b(NaN|Infinity|undefined|None)\b")
# a number token in e-notation or plotly's 1.78×10^18. Python and JavaScript always write the exponent's sign
# (1.2e+18, 5e-07), so a signless "5e0931" is a truncated hex id, not a number; nor is "-8e57-" inside a UUID.
SCIENTIFIC = re.compile(r"(?<![\w.])(?<!\w-)[+\-\u2212]?\d+(?:\.\d+)?(?:[eE][+\-\u2212]\d+(?![\w.\-])|\s?×\s?10)")
MONEY_TOKEN = re.compile(r"[+\-\u2212]?\$[+\-\u2212]?[\d.,]*\d[\d.,]*[kKMBT]?")
MONEY_FORMAT = re.compile(r"^[+\u2212]?\$\d{1,3}(,\d{3})*(\.\d+)?$")
PLAUSIBLE = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
OVERLAP_TOLERANCE_PX = 1.0
MIN_CHART_TEXT_PX = 8.0  # plotly shrinks heatmap cell texts to fit their cells: 4 px on a phone is unreadable
MAX_TEXT_PROBLEMS_PER_CHART = 3


@dataclass(frozen=True, slots=True)
class Page:
    """One probed page: its path and what the DOM held."""

    path: str
    data: dict[str, Any]


def settle(driver: Any, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the page has drawn: the app mounted, every chart plotted, sizes steady."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        state = driver.execute_script(READY_JS)
        if state["ready"] and state["signature"] == last:
            if time.monotonic() - since >= STEADY_S:
                return
        else:
            last, since = (state["signature"] if state["ready"] else None), time.monotonic()
        time.sleep(0.2)
    raise TimeoutError(f"{driver.current_url}: the page did not settle within {timeout_s:.0f} s")


def probe(driver: Any) -> Page:
    data = driver.execute_script(PROBE_JS)
    return Page(str(data["url"]), data)


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _axis_problems(chart: dict[str, Any]) -> list[str]:
    out = []
    for ax in chart["axes"]:
        timed = ax["title"].startswith(("Time", "Date")) or ax["type"] == "date"
        if not timed or not ax["visible"]:
            continue
        where = f"chart #{chart['id']} {ax['name']}"
        if ax["type"] != "date":
            out.append(f"{where} ({ax['title']!r}) is a {ax['type']} axis, not a date axis (first x: {ax['first']!r})")
            continue
        dates = [d for d in (_parse_date(x) for x in ax["xs"]) if d is not None]
        if len(dates) != len(ax["xs"]):
            out.append(f"{where}: {len(ax['xs']) - len(dates)} x values are not dates (first: {ax['first']!r})")
        if not dates:
            continue
        low, high = min(dates), max(dates)
        if low < PLAUSIBLE[0] or high > PLAUSIBLE[1]:
            out.append(f"{where}: data dates {low:%Y-%m-%d}..{high:%Y-%m-%d} are implausible")
        start, end = (_parse_date(r) for r in (list(ax["range"] or []) + [None, None])[:2])
        if start is None or end is None:
            out.append(f"{where}: range {ax['range']!r} is not a date range")
            continue
        slack = (high - low) * 0.1 + timedelta(days=1)  # plotly pads markers a little
        if start < low - slack or end > high + slack:
            out.append(f"{where}: range {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} is outside the data's "
                       f"dates {low:%Y-%m-%d %H:%M}..{high:%Y-%m-%d %H:%M}")
    return out


def _intersects(a: dict[str, float], b: dict[str, float]) -> bool:
    tol = OVERLAP_TOLERANCE_PX
    return (a["x"] + tol < b["x"] + b["w"] and b["x"] + tol < a["x"] + a["w"]
            and a["y"] + tol < b["y"] + b["h"] and b["y"] + tol < a["y"] + a["h"])


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    tol = OVERLAP_TOLERANCE_PX
    return (inner["x"] + tol >= outer["x"] and inner["y"] + tol >= outer["y"]
            and inner["x"] + inner["w"] <= outer["x"] + outer["w"] + tol
            and inner["y"] + inner["h"] <= outer["y"] + outer["h"] + tol)


def _layout_problems(data: dict[str, Any]) -> list[str]:
    out = []
    cards = data["cards"]
    for i, a in enumerate(cards):
        for b in cards[i + 1:]:
            if _intersects(a["box"], b["box"]):
                out.append(f"card {a['label']!r} {_fmt_box(a['box'])} overlaps card {b['label']!r} {_fmt_box(b['box'])}")
    for chart in data["charts"]:
        if chart["svg_box"] and chart["card_box"] and not _inside(chart["svg_box"], chart["card_box"]):
            out.append(f"chart #{chart['id']} {_fmt_box(chart['svg_box'])} is drawn outside its card "
                       f"{chart['card']!r} {_fmt_box(chart['card_box'])}")
        out += _chart_text_problems(chart)
    return out


def _chart_text_problems(chart: dict[str, Any]) -> list[str]:
    """Texts of one chart drawn over each other (ticks, cell texts, labels) or too small to read."""
    out: list[str] = []
    texts = chart.get("texts") or []
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if _intersects(a["box"], b["box"]):
                out.append(f"chart #{chart['id']}: text {a['text']!r} {_fmt_box(a['box'])} overlaps "
                           f"{b['text']!r} {_fmt_box(b['box'])}")
    out = out[:MAX_TEXT_PROBLEMS_PER_CHART]
    overlays = chart.get("overlays") or []
    for k, overlay in enumerate(overlays):
        # the mode bar floats over a plot's corner on hover by design: only its cover of the buttons counts
        if overlay["name"] != "mode bar" and any(_intersects(overlay["box"], area) for area in chart.get("plot_areas") or []):
            out.append(f"chart #{chart['id']}: {overlay['name']} {_fmt_box(overlay['box'])} drawn over the plot area")
        out += [f"chart #{chart['id']}: {overlay['name']} drawn over the {other['name']}"
                for other in overlays[k + 1:] if _intersects(overlay["box"], other["box"])]
    for axis in chart.get("ticks") or []:
        labels = [str(t) for t in axis["texts"]]
        repeated = sorted({a for a, b in zip(labels, labels[1:], strict=False) if a == b})
        if repeated:
            out.append(f"chart #{chart['id']} {axis['name']} repeats tick labels {repeated} "
                       f"(ticks: {', '.join(labels)[:120]})")
    small = [t for t in texts if t["px"] and t["px"] < MIN_CHART_TEXT_PX]
    if small:
        out.append(f"chart #{chart['id']}: {len(small)} texts smaller than {MIN_CHART_TEXT_PX:.0f} px "
                   f"(first {small[0]['text']!r} at {small[0]['px']:.1f} px)")
    return out


def _header_problems(data: dict[str, Any]) -> list[str]:
    """Grid column headers that read as nothing: empty, or cut short (``Wei…``) by a column too narrow
    for its label beside the header's filter and sort icons."""
    out = []
    for h in data.get("headers") or []:
        if not h["text"]:
            out.append(f"grid #{h['grid']}: column {h['col']!r} has an empty header")
        elif h["cut"]:
            out.append(f"grid #{h['grid']}: the header {h['text']!r} of column {h['col']!r} is cut short")
    return out


def _fmt_box(b: dict[str, float]) -> str:
    return f"[x {b['x']:.0f}, y {b['y']:.0f}, {b['w']:.0f}×{b['h']:.0f}]"


def _text_problems(data: dict[str, Any]) -> list[str]:
    out = []
    page_text = str(data["text"])
    for quoted in data.get("verbatim") or []:
        page_text = page_text.replace(quoted, "")
    texts = [("page text", page_text)] + [("chart text", t) for t in data["svg_text"]]
    seen: set[str] = set()
    for where, text in texts:
        for pattern, what in ((BAD_WORDS, "reads"), (SCIENTIFIC, "has scientific notation")):
            for match in pattern.finditer(text):
                line = _line_of(text, match.start())
                key = f"{what}:{line}"
                if key not in seen:
                    seen.add(key)
                    out.append(f"{where} {what} {match.group(0)!r}: {line!r}")
        for match in MONEY_TOKEN.finditer(text):
            token = match.group(0)
            if not MONEY_FORMAT.match(token) and f"money:{token}" not in seen:
                seen.add(f"money:{token}")
                out.append(f"{where}: money {token!r} is not in the page's format (−$1,000.00): "
                           f"{_line_of(text, match.start())!r}")
    return out


def _line_of(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start:end if end >= 0 else len(text)].strip()[:120]


def problems(page: Page, *, charts_need_data: bool = True) -> list[str]:
    """Everything wrong with ``page`` that a person would see, one sentence each (empty when fine)."""
    data = page.data
    out = []
    if charts_need_data:
        out += [f"chart #{c['id']} has no data" for c in data["charts"] if c["points"] == 0]
    for chart in data["charts"]:
        out += _axis_problems(chart)
    out += _layout_problems(data)
    out += _header_problems(data)
    out += _text_problems(data)
    return [f"{page.path}: {p}" for p in out]


def console_errors(driver: Any) -> list[str]:
    """SEVERE browser console entries since the last call (the log is drained by reading it)."""
    entries = [str(e.get("message", ""))[:300] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return [m for m in entries if not _sse_cap_refusal(m)]


def _sse_cap_refusal(message: str) -> bool:
    """The SSE stream cap's 503 is a designed refusal (the page falls back to polling), not a page error.

    Chromium logs it as SEVERE when a page opened right after another one in the same browser finds the
    previous page's stream not yet released.
    """
    return "/stream/events" in message and "status of 503" in message
