/* Start plotly.js early, without blocking the page: dcc.Graph would only load it once a graph
   mounts, putting its ~0.3 s of start-up on the critical path of a page's first render. Here the
   preloaded bundle runs as an async script as soon as it has arrived, in the gaps while the page
   waits for its other scripts and its layout. Until it has run, window.Plotly is a thenable: dcc's
   loader (`Promise.resolve(window.Plotly || load())`) then waits for this copy instead of loading a
   second one. Only when the app serves plotly.js itself (the <link rel=preload> is present). */
(function () {
  "use strict";
  if (window.Plotly) { return; }
  var link = document.querySelector('link[rel="preload"][href$="/plotly/package_data/plotly.min.js"]');
  if (!link) { return; }
  var waiting = [];
  var pending = {
    then: function (resolve, reject) { waiting.push([resolve, reject]); }
  };
  window.Plotly = pending;
  function settle(ok, value) {
    waiting.splice(0).forEach(function (w) { (ok ? w[0] : w[1])(value); });
  }
  var script = document.createElement("script");
  script.src = link.href;
  script.async = true;
  script.onload = function () {
    if (window.Plotly === pending) {  // loaded but did not define Plotly: fail like dcc would
      delete window.Plotly;
      settle(false, new Error("plotly.js did not define window.Plotly"));
    } else {
      settle(true, window.Plotly);
    }
  };
  script.onerror = function (e) {
    if (window.Plotly === pending) { delete window.Plotly; }
    settle(false, e);
  };
  document.head.appendChild(script);
})();
