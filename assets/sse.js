/* Cold Harbour: server-sent change hints -> the "sse-hint" store.
 *
 * The server pushes {"slug", "kind", "v"} when the manager NOTIFYs pos_channel_<slug> /
 * closed_channel_<slug>. We only set a store: the page's own callbacks then ask ch_versions what
 * changed and re-query. Bursts are coalesced to one update per 150 ms. EventSource reconnects by
 * itself; polling (dcc.Interval) keeps working when the stream is down or disabled.
 */
(function () {
  "use strict";
  var source = null;
  var pending = null;
  var timer = null;
  var seq = 0;

  function flush() {
    timer = null;
    if (!pending || !window.dash_clientside || !window.dash_clientside.set_props) { return; }
    seq += 1;
    pending.seq = seq;
    window.dash_clientside.set_props("sse-hint", { data: pending });
    pending = null;
  }

  function start(url) {
    if (source || !window.EventSource) { return; }
    source = new EventSource(url || "/stream/events");
    source.onmessage = function (ev) {
      try { pending = JSON.parse(ev.data); } catch (e) { return; }
      if (!timer) { timer = setTimeout(flush, 150); }
    };
    source.onerror = function () { /* the browser retries; polling covers the gap */ };
  }

  window.chSSE = { start: start, stop: function () { if (source) { source.close(); source = null; } } };
})();
