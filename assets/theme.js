/* Apply the persisted theme before Dash renders, so a dark page does not flash white; and copy the
   visitor's persisted view choices (theme, time zone, the browser's zone) into cookies, so the server
   draws a page's first layout for them instead of a placeholder that a later callback replaces. */
(function () {
  "use strict";
  function persisted(id, fallback) {
    try {
      var raw = window.localStorage.getItem("_dash_persistence." + id + ".value.true");
      return raw ? JSON.parse(raw)[0] : fallback;
    } catch (e) { return fallback; }
  }
  window.chSetCookie = function (name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; SameSite=Lax";
  };
  var theme = persisted("theme-switch", false) === true ? "dark" : "light";
  document.documentElement.setAttribute("data-bs-theme", theme);
  document.addEventListener("DOMContentLoaded", function () {
    document.body.setAttribute("data-ag-theme-mode", theme);
  });
  window.chSetCookie("ch_theme", theme);
  var tz = persisted("tz-choice", "exchange");
  window.chSetCookie("ch_tz", typeof tz === "string" ? tz : "exchange");
  try { window.chSetCookie("ch_btz", Intl.DateTimeFormat().resolvedOptions().timeZone || ""); } catch (e) { /* old browser */ }
})();
