// The playground's embeddings mode: two or more texts → their cosine-similarity matrix as a heatmap,
// with the vector size, the time taken and the target that answered.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let counter = 0;
  const socket = window.playground.connect(handle, (text) => { $("socket-state").textContent = text; });

  function handle(message) {
    if (message.type === "error") {
      $("em-error").textContent = message.message;
      $("em-error").hidden = false;
      return;
    }
    if (message.type !== "similarity") return;
    $("em-meta").textContent = `${message.dimension} dimensions · ${Math.round(message.ms)} ms · served by ${window.playground.servedBy(message)}`;
    if (message.trace_id) $("em-meta").append(" · ", window.playground.traceLink(message));
    const labels = message.texts.map((text, i) => `${i + 1}. ${text.length > 24 ? `${text.slice(0, 24)}…` : text}`);
    Plotly.react($("em-heatmap"), [{
      z: message.matrix, x: labels, y: labels, type: "heatmap", zmin: -1, zmax: 1, colorscale: "RdBu", reversescale: true,
      text: message.matrix.map((row) => row.map((v) => v.toFixed(2))), texttemplate: "%{text}",
      hovertemplate: "%{y} · %{x}: %{z:.3f}<extra></extra>",
    }], {margin: {l: 140, r: 20, t: 10, b: 100}, height: 140 + 48 * labels.length, yaxis: {autorange: "reversed"},
         font: {size: 12}}, {displaylogo: false, responsive: true});
  }

  const texts = () => $("em-texts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  $("em-go").addEventListener("click", function () {
    $("em-error").hidden = true;
    if (!socket.ready()) return;
    socket.send({type: "embed", id: `embed-${++counter}`, model: $("em-model").value, texts: texts()});
  });
  window.playground.offerCode(() => ({kind: "embeddings", bodies: [{model: $("em-model").value, input: texts()}]}),
                              $("embed"));
})();
