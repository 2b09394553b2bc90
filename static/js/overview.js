// The overview page: health tables and live charts. It draws the last snapshot embedded in the page,
// loads the last hour of each chart's series (/api/metrics/history/), then extends the charts with each
// snapshot of the live feed (live.js). Everything from the server is set as text, never as HTML.
(function () {
  "use strict";
  const HOUR = 3600, MAX_POINTS = 3600, LEAST_SPAN = 120;
  let earliest = Date.now() / 1000;  // the oldest point drawn: the time axis spans from it (2 min at least) to now

  function timeRange() {
    const now = Date.now() / 1000, from = Math.max(now - HOUR, Math.min(earliest, now - LEAST_SPAN));
    return [new Date(from * 1000), new Date(now * 1000)];
  }
  const charts = [...document.querySelectorAll("figure.chart[data-series]")].map(function (figure) {
    return {figure, plot: figure.querySelector(".plot"), series: figure.dataset.series,
            label: figure.dataset.label, unit: figure.dataset.unit, traces: new Map(), drawn: false};
  });
  const historyUrl = document.getElementById("charts").dataset.historyUrl;
  const config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  // Units: seconds are drawn in milliseconds, bytes in MiB.
  const scale = {s: [1000, "ms"], bytes: [1 / 1048576, "MiB"]};
  const factor = (unit) => (scale[unit] || [1, unit])[0];
  const unitLabel = (unit) => (scale[unit] || [1, unit])[1];

  const size = window.blaze.bytes;  // sizes as the pages' filesizeformat writes them
  function ms(seconds) { return seconds == null ? "—" : `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`; }
  function number(value, digits) { return value == null ? "—" : Number(value).toFixed(digits); }
  function ago(t) {
    const seconds = Math.max(0, Date.now() / 1000 - t);
    return seconds < 60 ? `${Math.round(seconds)} s ago` : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
      : `${(seconds / 3600).toFixed(1)} h ago`;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
    return node;
  }
  const link = (href, text) => el("a", {href}, text);
  const badge = (text, kind) => el("span", {class: `badge ${kind}`}, text);

  function fill(tableId, rows, emptyText) {
    const body = document.querySelector(`#${tableId} tbody`);
    if (!rows.length) {
      if (emptyText) body.replaceChildren(el("tr", {}, el("td", {colspan: "9", class: "empty"}, emptyText)));
      return;
    }
    body.replaceChildren(...rows);
  }

  function bar(used, budget) {
    const node = el("div", {class: "bar", title: `${size(used)} of ${size(budget)}`}, el("span", {class: "bar-fill"}));
    node.firstChild.style.width = `${Math.min(100, (100 * used) / (budget || 1)).toFixed(1)}%`;
    return node;
  }

  function cacheBar(worker) {
    const models = worker.models.map((m) => `${m.engine} (${size(m.bytes)})`).join(", ");
    return el("div", {}, bar(worker.cache_used_bytes || 0, worker.cache_budget_bytes),
              el("small", {class: "muted"}, models || "no model loaded"));
  }

  // Each live worker's loaded LLMs that keep a prefix cache (their heartbeat's counts since the model loaded).
  function prefixCacheRows(workers) {
    return workers.filter((w) => !w.lost).flatMap((w) => w.models.filter((m) => m.prefix_cache).map((m) => {
      const p = m.prefix_cache, lookups = p.hits + p.misses;
      return el("tr", {"data-engine": m.engine, "data-worker": w.id},
        el("td", {}, link(`/engines/${encodeURIComponent(m.engine)}/`, m.engine)),
        el("td", {}, w.id),
        el("td", {}, `${p.hits} of ${lookups}`, el("small", {class: "muted"},
           lookups ? ` (${Math.round((100 * p.hits) / lookups)}%)` : "")),
        el("td", {}, `${p.saved_tokens}`),
        el("td", {}, bar(p.bytes, p.budget_bytes), el("small", {class: "muted"},
           `${size(p.bytes)} of ${size(p.budget_bytes)} · ${p.entries} ${p.entries === 1 ? "prefix" : "prefixes"}`)));
    }));
  }

  function drawTables(snapshot) {
    const live = snapshot.workers.filter((w) => !w.lost), lost = snapshot.workers.length - live.length;
    document.getElementById("tile-workers").textContent = `${live.length}`;
    document.getElementById("tile-workers-lost").textContent = lost ? `${lost} lost` : "none lost";
    const failed = snapshot.engines.filter((e) => e.status === "failed").length;
    const degraded = snapshot.engines.filter((e) => e.status === "degraded").length;
    document.getElementById("tile-engines").textContent = `${snapshot.engines.length - failed - degraded} / ${snapshot.engines.length}`;
    document.getElementById("tile-engines-failed").textContent =
      failed || degraded ? `${failed} failed, ${degraded} degraded` : "none failed or degraded";
    const routes = snapshot.routes.filter((r) => r.kind === "route");
    const usable = routes.filter((r) => r.targets_total && r.targets_available === r.targets_total).length;
    const open = snapshot.breakers.filter((b) => b.state === "open").length;
    document.getElementById("tile-routes").textContent = `${usable} / ${routes.length}`;
    document.getElementById("tile-breakers").textContent = open ? `${open} breakers open` : "no breaker open";
    const alerts = snapshot.alerts || [];
    const firing = alerts.filter((a) => a.state === "firing");
    document.getElementById("tile-alerts").textContent = `${firing.length}`;
    document.getElementById("tile-alerts-pending").textContent = `${alerts.length - firing.length} pending`;
    for (const [id, bad] of [["tile-workers", lost > 0 || !live.length], ["tile-engines", failed > 0],
                             ["tile-routes", usable < routes.length || open > 0], ["tile-alerts", firing.length > 0]]) {
      document.getElementById(id).parentElement.classList.toggle("bad", bad);
    }

    fill("workers-table", snapshot.workers.map((w) => el("tr", {},
      el("td", {}, link(`/engines/workers/#worker-${w.id}`, w.id), el("br"), el("small", {class: "muted"},
         w.device.startsWith("cuda") ? `${w.device} · ${size(w.total_bytes - w.free_bytes)} of ${size(w.total_bytes)}` +
           (w.gpu_utilization_percent == null ? "" : ` · ${w.gpu_utilization_percent}% busy`) : w.device)),
      el("td", {}, w.lost ? badge("lost", "failed") : badge("live", "ready")),
      el("td", {}, w.cpu_percent == null ? "—" : `${Math.round(w.cpu_percent)}%`),
      el("td", {}, size(w.memory_bytes)),
      el("td", {}, cacheBar(w)))),
    "No worker has reported yet: start one with celery -A blaze_site worker.");

    fill("routes-table", routes.map((r) => el("tr", {},
      el("td", {}, link(`/engines/routes/${encodeURIComponent(r.name)}/`, r.name), r.enabled ? "" : " (disabled)"),
      el("td", {}, badge(`${r.targets_available} / ${r.targets_total}`,
                         r.targets_available === r.targets_total && r.targets_total ? "ready" : r.targets_available ? "degraded" : "failed")),
      el("td", {}, r.open_breakers ? badge(`${r.open_breakers}`, "open") : "0"),
      el("td", {}, number(r.requests_per_second, 2)),
      el("td", {}, ms(r.latency_p95_seconds)))),
    "No route yet: add one on the Routes page to spread a model over replicas.");

    fill("engines-table", snapshot.engines.map((e) => el("tr", {},
      el("td", {}, link(`/engines/${encodeURIComponent(e.name)}/`, e.name)),
      el("td", {}, e.kind, e.backend === "remote" ? " · remote" : ""),
      el("td", {title: e.status_detail || ""}, badge(e.enabled ? e.status : "disabled", e.enabled ? e.status : "off")),
      el("td", {}, number(e.tokens_per_second, 1)),
      el("td", {}, number(e.queue_depth, 0)),
      el("td", {}, ms(e.queue_wait_p95_seconds)),
      el("td", {}, e.cold_starts ? `${e.cold_starts} · ${number(e.cold_start_mean_seconds, 1)} s mean` : "0"))),
    "No engine yet: register one on the Engines page.");

    fill("prefix-cache-table", prefixCacheRows(snapshot.workers), "No loaded LLM keeps a prefix cache.");

    fill("alerts-table", alerts.map((a) => el("tr", {},
      el("td", {}, link("/alerts/", a.labels.alertname || a.rule || "alert"), el("br"),
         el("small", {class: "muted"}, (a.annotations && a.annotations.summary) || "")),
      el("td", {}, badge(a.state, a.state === "firing" ? "open" : "half_open")),
      el("td", {}, a.labels.severity || ""),
      el("td", {}, a.startsAt || a.activeAt ? ago(Date.parse(a.startsAt || a.activeAt) / 1000) : ""))),
    "Nothing is firing.");
    if (!alerts.length) fill("alerts-table", [], "Nothing is firing.");
  }

  function layout(chart, events) {
    return {
      margin: {l: 56, r: 12, t: 8, b: 36}, height: 230, showlegend: true,
      legend: {orientation: "h", y: -0.25, font: {size: 11}},
      xaxis: {type: "date", range: timeRange(), gridcolor: "#eef0f4"},
      yaxis: {title: {text: unitLabel(chart.unit), font: {size: 11}}, rangemode: "tozero", gridcolor: "#eef0f4"},
      shapes: events.map((e) => ({type: "line", xref: "x", yref: "paper", x0: new Date(e.t * 1000), x1: new Date(e.t * 1000),
                                  y0: 0, y1: 1, line: {color: "#adb5bd", width: 1, dash: "dot"}})),
      font: {family: "system-ui, sans-serif", size: 12}, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    };
  }

  function markerTrace(events) {
    return {x: events.map((e) => new Date(e.t * 1000)), y: events.map(() => 1), yaxis: "y2", mode: "markers",
            type: "scatter", name: "configuration change", marker: {symbol: "diamond", size: 9, color: "#e8590c"},
            text: events.map((e) => `${e.action} ${e.target} (${e.actor})`), hoverinfo: "text+x",
            customdata: events.map((e) => e.url), showlegend: false};
  }

  function showData(chart) {
    const any = [...chart.traces.keys()].length > 0;
    chart.figure.classList.toggle("has-data", any);
  }

  async function loadHistory() {
    const query = new URLSearchParams();
    for (const chart of charts) query.append("series", chart.series);
    query.set("seconds", String(HOUR));
    let body;
    try {
      const response = await fetch(`${historyUrl}?${query}`, {credentials: "same-origin", headers: {Accept: "application/json"}});
      body = await response.json();
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    } catch (error) {
      for (const chart of charts) chart.figure.dataset.error = `History unavailable (${error.message}).`;
      return;
    }
    for (const s of body.series) if (s.points.length) earliest = Math.min(earliest, s.points[0][0]);
    for (const chart of charts) {
      const series = body.series.filter((s) => s.name === chart.series);
      const traces = series.map((s) => ({
        x: s.points.map((p) => new Date(p[0] * 1000)), y: s.points.map((p) => p[1] * factor(chart.unit)),
        name: s.labels[chart.label], type: "scatter", mode: "lines+markers", line: {width: 2}, marker: {size: 3, maxdisplayed: 60},
        hovertemplate: `%{y:.3~f} ${unitLabel(chart.unit)}<extra>${s.labels[chart.label]}</extra>`,
      }));
      chart.traces = new Map(series.map((s, index) => [s.labels[chart.label], index]));
      const lay = layout(chart, body.events);
      lay.yaxis2 = {overlaying: "y", range: [0, 1.05], visible: false, fixedrange: true};
      Plotly.react(chart.plot, [...traces, markerTrace(body.events)], lay, config);
      if (!chart.drawn) {
        chart.plot.on("plotly_click", function (data) {
          const url = data.points[0] && data.points[0].customdata;
          if (typeof url === "string" && url.startsWith("/")) window.location.href = url;
        });
        chart.drawn = true;
      }
      showData(chart);
    }
  }

  function rowsFor(snapshot, label) { return snapshot[`${label}s`] || []; }

  // The snapshots since the last draw, all their points at once: one extend and one relayout per chart.
  function extend(snapshots) {
    for (const chart of charts) {
      if (!chart.drawn) continue;
      const field = chart.series.slice(chart.label.length + 1);
      const known = new Map(), fresh = new Map();  // trace index, or new line's name → its points
      for (const snapshot of snapshots) {
        const when = new Date(snapshot.t * 1000);
        for (const row of rowsFor(snapshot, chart.label)) {
          const name = row.name ?? row.id, value = row[field];
          if (value == null) continue;
          const index = chart.traces.get(name);
          const points = index === undefined ? fresh : known, key = index === undefined ? name : index;
          if (!points.has(key)) points.set(key, {x: [], y: []});
          points.get(key).x.push(when);
          points.get(key).y.push(value * factor(chart.unit));
        }
      }
      if (known.size) {
        const indices = [...known.keys()], lines = [...known.values()];
        Plotly.extendTraces(chart.plot, {x: lines.map((l) => l.x), y: lines.map((l) => l.y)}, indices, MAX_POINTS);
      }
      if (fresh.size) {
        // New lines go before the markers' trace, which stays last.
        const at = chart.plot.data.length - 1;
        const traces = [...fresh].map(([name, points]) => ({
          ...points, name, type: "scatter", mode: "lines+markers", line: {width: 2}, marker: {size: 3, maxdisplayed: 60},
          hovertemplate: `%{y:.3~f} ${unitLabel(chart.unit)}<extra>${name}</extra>`}));
        Plotly.addTraces(chart.plot, traces, traces.map((_, i) => at + i));
        const names = chart.plot.data.slice(0, -1).map((trace) => trace.name);
        chart.traces = new Map(names.map((name, index) => [name, index]));
      }
      Plotly.relayout(chart.plot, {"xaxis.range": timeRange()});
      showData(chart);
    }
    const latest = snapshots[snapshots.length - 1];
    drawHistogram(latest);
    drawCache(latest);
  }

  function drawHistogram(snapshot) {
    const figure = document.querySelector("figure[data-kind=histogram]");
    const bars = (snapshot.latency_histogram || []).filter((bar) => bar.count > 0 || bar.le !== null);
    const total = bars.reduce((sum, bar) => sum + bar.count, 0);
    figure.classList.toggle("has-data", total > 0);
    if (!total) return;
    Plotly.react(figure.querySelector(".plot"), [{
      x: bars.map((bar) => (bar.le === null ? "slower" : `≤ ${bar.le < 1 ? `${Math.round(bar.le * 1000)} ms` : `${bar.le} s`}`)),
      y: bars.map((bar) => bar.count), type: "bar", marker: {color: "#1c7ed6"}, hovertemplate: "%{y} requests<extra>%{x}</extra>",
    }], {margin: {l: 48, r: 12, t: 8, b: 48}, height: 230, yaxis: {title: {text: "requests"}}, font: {size: 12}}, config);
  }

  function drawCache(snapshot) {
    const figure = document.querySelector("figure[data-kind=cache]");
    const workers = snapshot.workers.filter((w) => !w.lost);
    const models = [...new Set(workers.flatMap((w) => w.models.map((m) => m.engine)))].sort();
    figure.classList.toggle("has-data", models.length > 0);
    if (!models.length) return;
    const traces = models.map((model) => ({
      name: model, type: "bar", x: workers.map((w) => w.id),
      y: workers.map((w) => ((w.models.find((m) => m.engine === model) || {}).bytes || 0) / 1048576),
      hovertemplate: `%{y:.1f} MiB<extra>${model}</extra>`,
    }));
    traces.push({name: "budget", type: "scatter", mode: "markers", x: workers.map((w) => w.id),
                 y: workers.map((w) => w.cache_budget_bytes / 1048576), marker: {symbol: "line-ew-open", size: 30, color: "#c92a2a"},
                 hovertemplate: "budget %{y:.0f} MiB<extra></extra>"});
    Plotly.react(figure.querySelector(".plot"), traces, {
      barmode: "stack", margin: {l: 56, r: 12, t: 8, b: 36}, height: 230, yaxis: {title: {text: "MiB"}, rangemode: "tozero"},
      legend: {orientation: "h", y: -0.25}, font: {size: 12},
    }, config);
  }

  // Drawn once per frame the browser paints, whatever the feed's pace: a busy or slow machine draws
  // less often, several snapshots at a time, instead of falling behind (and starving the page).
  let waiting = [];
  function draw() {
    const snapshots = waiting;
    waiting = [];
    drawTables(snapshots[snapshots.length - 1]);
    extend(snapshots);
  }
  function apply(snapshot) {
    if (document.hidden) return;  // a hidden tab paints nothing: it catches up from the history when shown
    waiting.push(snapshot);
    if (waiting.length === 1) requestAnimationFrame(draw);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loadHistory(); });

  const embedded = JSON.parse(document.getElementById("latest-snapshot").textContent);
  if (embedded) drawTables(embedded);
  loadHistory().then(function () { if (embedded) { drawHistogram(embedded); drawCache(embedded); } });
  document.addEventListener("blaze:snapshot", (event) => apply(event.detail));
  document.addEventListener("blaze:feed-open", () => loadHistory());  // catch up on what a lost connection missed
})();
