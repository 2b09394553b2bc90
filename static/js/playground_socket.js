// What the playground's modes share: the /ws/playground/ socket (reconnecting with backoff), a text-only
// element builder, and the stats line under an answer. Model output is only ever set as text.
window.playground = (function () {
  "use strict";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // connect(onMessage, onState) → {send(obj), open()}; onState("ready" | "reconnecting…" | …)
  function connect(onMessage, onState) {
    let socket = null, delay = 1000;
    function open() {
      socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/playground/`);
      socket.addEventListener("open", () => { delay = 1000; onState("ready"); });
      socket.addEventListener("message", (message) => onMessage(JSON.parse(message.data)));
      socket.addEventListener("close", (event) => {
        onState(event.code === 4403 ? "not allowed: sign in again" : "reconnecting…", true);
        if (event.code === 4403) return;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      });
    }
    open();
    return {
      send: (message) => socket.send(JSON.stringify(message)),
      ready: () => socket && socket.readyState === WebSocket.OPEN,
    };
  }

  function showStats(box, stats, finishReason) {
    const parts = [
      `first token ${stats.ttft_ms == null ? "—" : `${Math.round(stats.ttft_ms)} ms`}`,
      `${stats.tokens_per_second == null ? "—" : stats.tokens_per_second} tok/s`,
      `${stats.tokens} tokens${finishReason ? ` (${finishReason})` : ""}`,
      `served by ${stats.target}${stats.worker ? ` on ${stats.worker}` : ""}`,
    ];
    const skipped = Object.entries(stats.skipped || {}).map(([target, why]) => `${target}: ${why}`);
    if (skipped.length) parts.push(`skipped ${skipped.join("; ")}`);
    box.replaceChildren(...parts.map((part) => el("span", "", part)));
    if (stats.itl_ms.length > 1 && window.Plotly) {
      const spark = el("div", "spark");
      spark.title = "time between tokens (ms)";
      box.append(spark);
      Plotly.newPlot(spark, [{y: stats.itl_ms, type: "scatter", mode: "lines", line: {width: 1, color: "#1c7ed6"},
                              hovertemplate: "%{y} ms<extra></extra>"}],
                     {margin: {l: 0, r: 0, t: 0, b: 0}, height: 28, width: 160, xaxis: {visible: false},
                      yaxis: {visible: false}, showlegend: false}, {displayModeBar: false});
    }
  }

  // The shared settings form's generation parameters (and its system prompt, as a first message).
  function parameters(form) {
    const data = new FormData(form);
    const number = (name) => (data.get(name) === "" || data.get(name) == null ? null : Number(data.get(name)));
    const stop = String(data.get("stop") || "").split(",").map((s) => s.trim()).filter(Boolean);
    return {system: String(data.get("system") || "").trim(), temperature: number("temperature"),
            top_p: number("top_p"), max_tokens: number("max_tokens"), seed: number("seed"),
            stop: stop.length ? stop : null};
  }

  return {el, connect, showStats, parameters};
})();
