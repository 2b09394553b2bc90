// The route page's table of targets, kept live by the feed (live.js): each snapshot carries every
// route's targets as the status API shows them. Values are formatted as the page's own filters do.
(function () {
  "use strict";
  const table = document.getElementById("targets");
  if (!table) return;
  const ms = (v) => v == null ? "—" : (v * 1000 < 10 ? (v * 1000).toFixed(1) : Math.round(v * 1000)) + " ms";
  const percent = (v) => v == null ? "—" : Math.round(v * 100) + "%";
  const formats = {
    in_flight: (v) => v == null ? "—" : String(v), p50: ms, p95: ms, share: percent, error_rate: percent,
    cached_on: (v) => v.length ? v.join(", ") : "—",
  };

  function show(target) {
    const row = table.querySelector(`tr[data-target="${target.id}"]`);
    if (!row) return;
    for (const cell of row.querySelectorAll("[data-field]")) {
      const field = cell.dataset.field, badge = cell.querySelector(".badge");
      if (field === "available") {
        cell.textContent = target.available ? "yes" : target.reason;
        cell.classList.toggle("muted", !target.available);
      } else if (badge) {  // breaker and health states
        badge.textContent = target[field] ?? "—";
        badge.className = `badge ${target[field] ?? ""}`;
      } else if (field in target) {
        cell.textContent = (formats[field] || String)(target[field]);
      }
    }
  }

  document.addEventListener("blaze:snapshot", function (event) {
    const route = event.detail.routes.find((r) => r.kind === "route" && r.name === table.dataset.route);
    if (route) route.targets.forEach(show);
  });
})();
