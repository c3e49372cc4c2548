/* Cold Harbour: server-sent changes -> the page.
 *
 * The server pushes {"slug", "kind", "v"} when the manager NOTIFYs pos_channel_<slug> /
 * closed_channel_<slug>. Two ways in:
 *
 * - A hint sets the "sse-hint" store: the page's own callbacks then ask ch_versions what changed
 *   and re-query. Bursts are coalesced: pos hints for POS_HINT_MS, others for HINT_MS. A page
 *   that takes its rows from the stream (below) drops other destinations' events: it shows none of
 *   them, and with ten destinations trading their hints alone would keep its poll busy.
 * - The destination page asks for its destination's rows (chSSE.want(slug, tz): the stream is
 *   reopened with ?slug=&tz=); a pos event of that destination then carries the positions grid's rows
 *   ("rows", "status", "v", "tz") and goes to the page's "dest-sse-pos" store at once, where a
 *   clientside callback sets the grid: no server round trip. Only the newest such event is kept.
 *
 * Whatever may have lost an event makes the page re-read everything (a hint with "reset"): the
 * server's "reset" event (its queue for us overflowed, or its LISTEN connection came back), and every
 * (re)open of the stream (events sent while it was closed are gone). EventSource reconnects by
 * itself; polling (dcc.Interval) keeps working when the stream is down or disabled.
 */
(function () {
  "use strict";
  var HINT_MS = 150;
  var POS_HINT_MS = 100;
  var source = null;
  var baseUrl = "/stream/events";
  var wanted = { slug: null, tz: null };
  var pending = null;
  var timer = null;
  var pushed = null;
  var pushTimer = null;
  var seq = 0;
  var stats = { opened: 0, pushed: 0, hinted: 0, resets: 0, openUrl: null };
  // the last pushed events' timings, for the freshness benchmark (bench/e2e): [arrived ms, applied ms,
  // the hub's NOTIFY time s, the server's drawing done s, version]; a ring, so it stays small
  var PUSH_LOG_MAX = 1000;
  var pushLog = [];

  function setProps(id, props) {
    if (!window.dash_clientside || !window.dash_clientside.set_props) { return false; }
    window.dash_clientside.set_props(id, props);
    return true;
  }

  function flush() {
    timer = null;
    if (!pending) { return; }
    seq += 1;
    pending.seq = seq;
    if (setProps("sse-hint", { data: pending })) { stats.hinted += 1; }
    pending = null;
  }

  function hint(event, delayMs) {
    pending = event;
    if (delayMs <= 0) {
      if (timer) { clearTimeout(timer); }
      flush();
    } else if (!timer) {
      timer = setTimeout(flush, delayMs);
    }
  }

  function refresh(why) {
    stats.resets += 1;
    hint({ slug: null, kind: "reset", v: null, why: why }, 0);
  }

  function flushPush() {
    pushTimer = null;
    if (!pushed) { return; }
    var ev = pushed;
    pushed = null;
    if (document.getElementById("dest-positions") && setProps("dest-sse-pos", { data: ev })) {
      stats.pushed += 1;
      if (ev.arrived) {
        pushLog.push([ev.arrived, Date.now(), ev.t || null, ev.drawn || null, ev.v]);
        if (pushLog.length > PUSH_LOG_MAX) { pushLog.shift(); }
      }
    } else {
      hint(ev, POS_HINT_MS);  // the page that asked for the rows is gone: a hint for whoever is here
    }
  }

  function onMessage(ev) {
    var event;
    try { event = JSON.parse(ev.data); } catch (e) { return; }
    if (!event || typeof event !== "object") { return; }
    if (event.kind === "reset") { refresh("server"); return; }
    if (event.kind === "pos" && event.rows && event.slug === wanted.slug && event.tz === wanted.tz) {
      event.arrived = Date.now();
      pushed = event;  // a whole grid: only the newest one matters
      if (!pushTimer) { pushTimer = setTimeout(flushPush, 0); }
      return;
    }
    if (wanted.slug && event.slug !== wanted.slug && document.getElementById("dest-positions")) {
      return;  // the destination page shows only its own destination
    }
    hint(event, event.kind === "pos" ? POS_HINT_MS : HINT_MS);
  }

  function url() {
    if (!wanted.slug || !wanted.tz) { return baseUrl; }
    var sep = baseUrl.indexOf("?") < 0 ? "?" : "&";
    return baseUrl + sep + "slug=" + encodeURIComponent(wanted.slug) + "&tz=" + encodeURIComponent(wanted.tz);
  }

  function open() {
    if (source) { source.close(); }
    source = new EventSource(url());
    source.onmessage = onMessage;
    // every open, the browser's own reconnects included: what happened while closed was not sent
    source.onopen = function () { stats.opened += 1; stats.openUrl = source.url; refresh("open"); };
    source.onerror = function () { /* the browser retries; polling covers the gap */ };
  }

  function start(startUrl) {
    if (!window.EventSource) { return; }
    if (startUrl) { baseUrl = startUrl; }
    if (!source) { open(); }
  }

  function want(slug, tz) {
    if (wanted.slug === (slug || null) && wanted.tz === (tz || null)) { return; }
    wanted = { slug: slug || null, tz: tz || null };
    if (source) { open(); }  // not started (SSE disabled, or not yet): start() opens with these
  }

  window.chSSE = {
    start: start,
    want: want,
    refresh: refresh,
    stats: stats,
    drainPushLog: function () { var out = pushLog; pushLog = []; return out; },
    stop: function () { if (source) { source.close(); source = null; } },
  };
})();
