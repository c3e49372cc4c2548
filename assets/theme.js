/* Apply the persisted theme before Dash renders, so a dark page does not flash white. */
(function () {
  "use strict";
  try {
    var raw = window.localStorage.getItem("_dash_persistence.theme-switch.value.true");
    var dark = raw ? JSON.parse(raw)[0] === true : false;
    var theme = dark ? "dark" : "light";
    document.documentElement.setAttribute("data-bs-theme", theme);
    document.addEventListener("DOMContentLoaded", function () {
      document.body.setAttribute("data-ag-theme-mode", theme);
    });
  } catch (e) { /* no storage: light theme */ }
})();
