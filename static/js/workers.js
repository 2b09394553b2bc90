// The workers page, kept live by the feed (live.js): each worker's cache bar and loaded models, its
// state, and a load in progress ("loading tiny on w1@host"), without a reload. Set as text, never as HTML.
(function () {
  "use strict";
  const size = window.blaze.bytes;

  function line(worker, loading) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.min(100, (100 * worker.cache_used_bytes) / (worker.cache_budget_bytes || 1)).toFixed(1)}%`;
    bar.append(fill);
    const models = worker.models.map((m) => `${m.engine} (${size(m.bytes)})`).join(", ") || "no model loaded";
    const text = document.createElement("small");
    text.textContent = `${worker.lost ? "lost · " : ""}${models} · ${worker.in_flight} in flight` +
      (loading.length ? ` · loading ${loading.join(", ")}…` : "");
    text.className = loading.length ? "" : "muted";
    return [bar, text];
  }

  document.addEventListener("blaze:snapshot", function (event) {
    const snapshot = event.detail;
    for (const card of document.querySelectorAll("[data-worker]")) {
      const worker = snapshot.workers.find((w) => w.id === card.dataset.worker);
      const cell = card.querySelector("[data-live-cache]");
      if (!worker || !cell) continue;
      const loading = snapshot.engines.filter((e) => e.status === "initializing" && (e.status_detail || "").endsWith(worker.id))
        .map((e) => e.name);
      cell.replaceChildren(...line(worker, loading));
    }
  });
})();
