// callbridge console: keeps the live part of a page current without reloading it.
// The element #live names the fragment to fetch (data-source) and how often
// (data-refresh-ms). Without JavaScript every page still reads; it only stays still.
(function () {
  "use strict";
  function start() {
    var live = document.getElementById("live");
    if (!live) { return; }
    var source = live.getAttribute("data-source");
    var every = parseInt(live.getAttribute("data-refresh-ms"), 10) || 2000;
    var busy = false;
    function refresh() {
      // Not while hidden, nor while someone is typing in a form inside it.
      if (busy || document.hidden || live.contains(document.activeElement) &&
          document.activeElement.tagName === "INPUT" && document.activeElement.type !== "hidden" &&
          document.activeElement.type !== "submit") { return; }
      busy = true;
      fetch(source, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || response.status === 401) {
            // The session ended: the sign-in page.
            window.location.assign("/login");
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            live.innerHTML = html;
            live.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* the next round tries again */ })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, every);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
