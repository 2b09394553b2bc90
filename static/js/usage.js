// The Usage page's chart: tokens per period, one stacked bar series per group (the page's json_script data).
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("usage-data").textContent);
  const plot = document.getElementById("usage-chart");
  if (!data.series.length) return; // the page says so; the empty plot stays hidden (blaze.css)
  const groups = new Map();
  for (const row of data.series) {
    if (!groups.has(row.label)) groups.set(row.label, {x: [], y: [], text: []});
    const trace = groups.get(row.label);
    trace.x.push(row.start);
    trace.y.push(row.tokens);
    trace.text.push(`${row.requests} requests, cost ${row.cost}`);
  }
  const traces = [...groups].map(([label, trace]) => ({
    type: "bar", name: label, x: trace.x, y: trace.y, text: trace.text, textposition: "none",
    hovertemplate: "%{y} tokens, %{text}",
  }));
  plot.closest("figure").classList.add("has-data");
  Plotly.react(plot, traces, {
    barmode: "stack", margin: {t: 10, r: 10, b: 40, l: 60},
    xaxis: {type: "date"}, yaxis: {title: {text: "tokens"}, rangemode: "tozero"},
    legend: {orientation: "h"},
  }, {displayModeBar: false, responsive: true});
})();
