// stoic operator page: refresh the parts marked data-refresh="URL" without reloading.
// Every ui.refresh_s seconds (the body's data-refresh-s) each part is fetched again
// from the daemon and its HTML swapped in. The page works without this script; it only
// saves the reload. A 401 (the login expired) reloads the page, which shows the login
// form; a part whose refresh fails is marked stale until the next success. Nothing is
// refreshed while the tab is hidden. A part whose new HTML holds an element marked
// data-final (a finished batch) stops refreshing.
(function () {
  "use strict";
  var period = 1000 * Math.max(1, Number(document.body.dataset.refreshS) || 5);

  function refresh(part) {
    return fetch(part.dataset.refresh, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Stoic-Fragment": "1" },
    }).then(function (response) {
      if (response.status === 401) {
        window.location.reload();
        return;
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.text().then(function (html) {
        part.innerHTML = html;
        part.classList.remove("stale");
        if (part.querySelector("[data-final]")) {
          delete part.dataset.refresh;
        }
      });
    }).catch(function () {
      part.classList.add("stale");
    });
  }

  function tick() {
    if (document.hidden) {
      return;
    }
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  }

  window.setInterval(tick, period);
  document.addEventListener("visibilitychange", tick);
})();
