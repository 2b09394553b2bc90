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

  // "fallback X (target)" when the route's fallback answered: degradation is shown, never silent.
  function servedBy(answer) {
    return answer.fallback ? `fallback ${answer.fallback} (${answer.target})` : answer.target;
  }

  // The answer's trace: a link to the trace viewer (BLAZE_TRACE_URL), else its id to copy.
  function traceLink(answer) {
    const label = `trace ${answer.trace_id.slice(0, 12)}…`;
    const part = el("span", "trace");
    const node = answer.trace_url ? el("a", "", label) : el("code", "", label);
    if (answer.trace_url) { node.href = answer.trace_url; node.target = "_blank"; node.rel = "noopener"; }
    node.title = answer.trace_id;
    part.append(node);
    return part;
  }

  function showStats(box, stats, finishReason) {
    const parts = [
      `first token ${stats.ttft_ms == null ? "—" : `${Math.round(stats.ttft_ms)} ms`}`,
      `${stats.tokens_per_second == null ? "—" : stats.tokens_per_second} tok/s`,
      `${stats.tokens} tokens${finishReason ? ` (${finishReason})` : ""}`,
      `served by ${servedBy(stats)}${stats.worker ? ` on ${stats.worker}` : ""}`,
    ];
    const skipped = Object.entries(stats.skipped || {}).map(([target, why]) => `${target}: ${why}`);
    if (skipped.length) parts.push(`skipped ${skipped.join("; ")}`);
    box.replaceChildren(...parts.map((part) => el("span", "", part)));
    if (stats.trace_id) box.append(traceLink(stats));
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

  // Copy as code: a request as curl and as Python with the official openai client, always with the
  // placeholder key $BLAZE_KEY, never a real one. Blaze's own fields (diffusion steps, seed…) travel
  // in the client's extra_body.
  const CALLS = {
    chat: {path: "chat/completions", method: "chat.completions.create", fields: ["messages", "temperature", "top_p",
           "max_tokens", "seed", "stop", "response_format", "tools", "tool_choice"],
           show: "print(answer.choices[0].message.tool_calls or answer.choices[0].message.content)"},
    embeddings: {path: "embeddings", method: "embeddings.create", fields: ["input"],
                 show: "print([len(item.embedding) for item in answer.data])"},
    image: {path: "images/generations", method: "images.generate", fields: ["prompt", "n", "size"],
            show: 'open("image.png", "wb").write(base64.b64decode(answer.data[0].b64_json))'},
    image_edit: {path: "images/edits", method: "images.edit", fields: ["prompt", "n", "size"], upload: true,
                 show: 'open("image.png", "wb").write(base64.b64decode(answer.data[0].b64_json))'},
  };
  const shell = (text) => `'${String(text).replaceAll("'", "'\\''")}'`;

  function py(value) {
    if (value === null) return "None";
    if (typeof value === "boolean") return value ? "True" : "False";
    if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
    if (typeof value === "object") return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(", ")}}`;
    return JSON.stringify(value);
  }

  // code(kind, bodies) → {curl, python}: one request per body (compare sends several, one per model).
  function code(kind, bodies) {
    const call = CALLS[kind], base = `${location.origin}/v1`;
    const sent = bodies.map((body) => Object.fromEntries(Object.entries(body).filter(([, v]) => v != null && v !== "")));
    const curl = sent.map((body) => {
      const head = `curl ${base}/${call.path} \\\n  -H "Authorization: Bearer $BLAZE_KEY"`;
      if (call.upload) {
        const forms = Object.entries(body).map(([name, value]) => `-F ${name}=${shell(value)}`);
        return `${head} \\\n  -F image=@input.png ${forms.join(" ")}`;
      }
      return `${head} -H "Content-Type: application/json" \\\n  -d ${shell(JSON.stringify(body))}`;
    }).join("\n\n");
    const unnamed = (body) => Object.fromEntries(Object.entries(body).filter(([name]) => name !== "model"));
    const [first] = sent, rest = unnamed(first);
    const alike = sent.every((body) => JSON.stringify(unnamed(body)) === JSON.stringify(rest));
    const known = Object.entries(rest).filter(([name]) => call.fields.includes(name));
    const extra = Object.fromEntries(Object.entries(rest).filter(([name]) => !call.fields.includes(name)));
    const named = (model) => [`model=${model}`, ...(call.upload ? ['image=open("input.png", "rb")'] : []),
                              ...known.map(([name, value]) => `${name}=${py(value)}`),
                              ...(Object.keys(extra).length ? [`extra_body=${py(extra)}`] : [])];
    const calling = (args) => `answer = client.${call.method}(\n${args.map((a) => `    ${a},`).join("\n")}\n)\n${call.show}`;
    const looped = (head, body) => `${head}\n    ${body.replaceAll("\n", "\n    ")}`;
    const program = sent.length === 1 ? calling(named(py(first.model)))
      : alike ? looped(`for model in ${py(sent.map((body) => body.model))}:\n    print(model)`, calling(named("model")))
        : looped(`for request in ${py(sent)}:\n    print(request["model"])`, calling(["**request"]));
    const python = `${call.show.includes("base64") ? "import base64\n" : ""}import os\n\nfrom openai import OpenAI\n\n` +
      `client = OpenAI(base_url="${base}", api_key=os.environ["BLAZE_KEY"])\n${program}`;
    return {curl, python};
  }

  // Fill the page's "Copy as code" panel (templates/playground/_code.html) with the code of
  // `request()` → {kind, bodies} whenever the panel is open and one of `forms` changes.
  function offerCode(request, ...forms) {
    const panel = document.getElementById("pg-code");
    if (!panel) return;
    const refresh = () => {
      if (!panel.open) return;
      const {kind, bodies} = request();
      const shown = code(kind, bodies);
      document.getElementById("pg-curl").textContent = shown.curl;
      document.getElementById("pg-python").textContent = shown.python;
    };
    panel.addEventListener("toggle", refresh);
    for (const form of forms) { form.addEventListener("input", refresh); form.addEventListener("change", refresh); }
    return refresh;
  }

  return {el, connect, servedBy, showStats, traceLink, parameters, offerCode};
})();
