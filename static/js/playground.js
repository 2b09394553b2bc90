// The playground's chat: the conversation lives in the page (turns editable, the last answer
// regenerable); each answer streams over /ws/playground/ token by token, Stop cancels it in the
// worker, and its stats (time to first token, tokens/s, inter-token sparkline, target) show under it.
// Model output is untrusted: it is only ever set as text.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const turnsBox = $("turns"), prompt = $("pg-prompt"), errorBox = $("pg-error");
  const send = $("pg-send"), stop = $("pg-stop-button"), regenerate = $("pg-regenerate");
  if (!turnsBox) return;
  const turns = [];  // {role, content, node}
  let socket = null, delay = 1000, counter = 0, running = null;

  function showState(text) { $("socket-state").textContent = text; }

  function connect() {
    socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/playground/`);
    socket.addEventListener("open", () => { delay = 1000; showState("ready"); });
    socket.addEventListener("message", (message) => handle(JSON.parse(message.data)));
    socket.addEventListener("close", (event) => {
      if (running) finish("the connection dropped: the answer was given up");
      if (event.code === 4403) { showState("not allowed: sign in again"); return; }
      showState("reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function addTurn(role, content) {
    $("no-turns")?.remove();
    const node = el("div", `turn ${role}`);
    const text = el("div", "text", content);
    if (role === "user") {
      text.contentEditable = "true";  // edit a turn, then regenerate
      text.title = "Click to edit";
      text.addEventListener("input", () => { turn.content = text.textContent; });
    }
    node.append(el("div", "role", role === "user" ? "you" : "assistant"), text);
    turnsBox.append(node);
    const turn = {role, content, node, text};
    turns.push(turn);
    return turn;
  }

  function settings() {
    const form = new FormData($("chat-settings"));
    const number = (name) => (form.get(name) === "" ? null : Number(form.get(name)));
    const stopList = String(form.get("stop") || "").split(",").map((s) => s.trim()).filter(Boolean);
    const system = String(form.get("system") || "").trim();
    const messages = turns.filter((t) => t.content).map((t) => ({role: t.role, content: t.content}));
    return {model: form.get("model"), messages: system ? [{role: "system", content: system}, ...messages] : messages,
            temperature: number("temperature"), top_p: number("top_p"), max_tokens: number("max_tokens"),
            seed: number("seed"), stop: stopList.length ? stopList : null};
  }

  // The request as curl and as Python with the official openai client, with a placeholder key, never a real one.
  function showCode() {
    const request = settings(), base = `${location.origin}/v1`;
    const body = {model: request.model, messages: request.messages};
    for (const name of ["temperature", "top_p", "max_tokens", "seed", "stop"]) if (request[name] != null) body[name] = request[name];
    $("pg-curl").textContent = `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer $BLAZE_KEY" ` +
      `-H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
    const extras = Object.entries(body).filter(([name]) => !["model", "messages"].includes(name))
      .map(([name, value]) => `,\n    ${name}=${JSON.stringify(value)}`).join("");
    $("pg-python").textContent = `import os\nfrom openai import OpenAI\n\n` +
      `client = OpenAI(base_url="${base}", api_key=os.environ["BLAZE_KEY"])\n` +
      `answer = client.chat.completions.create(\n    model=${JSON.stringify(body.model)},\n` +
      `    messages=${JSON.stringify(body.messages)}${extras},\n)\nprint(answer.choices[0].message.content)`;
  }

  function ask() {
    if (running || !socket || socket.readyState !== WebSocket.OPEN) return;
    errorBox.hidden = true;
    const answer = addTurn("assistant", "");
    answer.stats = el("div", "stats", "waiting for the first token…");
    answer.node.append(answer.stats);
    running = {id: String(++counter), answer};
    socket.send(JSON.stringify({type: "chat", id: running.id, ...settings()}));
    send.disabled = regenerate.disabled = true;
    stop.disabled = false;
  }

  function finish(note) {
    if (note && running) running.answer.stats.textContent = note;
    running = null;
    send.disabled = false;
    stop.disabled = true;
    regenerate.disabled = !turns.some((t) => t.role === "assistant");
  }

  function showStats(turn, stats, finishReason) {
    const parts = [
      `first token ${stats.ttft_ms == null ? "—" : `${Math.round(stats.ttft_ms)} ms`}`,
      `${stats.tokens_per_second == null ? "—" : stats.tokens_per_second} tok/s`,
      `${stats.tokens} tokens${finishReason ? ` (${finishReason})` : ""}`,
      `served by ${stats.target}${stats.worker ? ` on ${stats.worker}` : ""}`,
    ];
    const skipped = Object.entries(stats.skipped || {}).map(([target, why]) => `${target}: ${why}`);
    if (skipped.length) parts.push(`skipped ${skipped.join("; ")}`);
    turn.stats.replaceChildren(...parts.map((part) => el("span", "", part)));
    if (stats.itl_ms.length > 1 && window.Plotly) {
      const spark = el("div", "spark");
      spark.title = "time between tokens (ms)";
      turn.stats.append(spark);
      Plotly.newPlot(spark, [{y: stats.itl_ms, type: "scatter", mode: "lines", line: {width: 1, color: "#1c7ed6"},
                              hovertemplate: "%{y} ms<extra></extra>"}],
                     {margin: {l: 0, r: 0, t: 0, b: 0}, height: 28, width: 160, xaxis: {visible: false},
                      yaxis: {visible: false}, showlegend: false}, {displayModeBar: false, staticPlot: false});
    }
  }

  function handle(message) {
    if (!running || message.id !== running.id) return;
    const turn = running.answer;
    if (message.type === "token") {
      if (!turn.content) turn.stats.textContent = "streaming…";
      turn.content += message.text;
      turn.text.textContent = turn.content;
    } else if (message.type === "done") {
      showStats(turn, message.stats, message.finish_reason);
      finish();
    } else if (message.type === "stopped") {
      finish("stopped: the worker gave the rest up");
    } else if (message.type === "error") {
      turns.pop().node.remove();  // no answer: the turn goes
      errorBox.textContent = message.message;
      errorBox.hidden = false;
      finish();
    }
  }

  $("composer").addEventListener("submit", function (event) {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) { errorBox.textContent = "Write a message first."; errorBox.hidden = false; return; }
    addTurn("user", text);
    prompt.value = "";
    ask();
  });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  stop.addEventListener("click", () => running && socket.send(JSON.stringify({type: "stop", id: running.id})));
  regenerate.addEventListener("click", function () {
    if (running) return;
    while (turns.length && turns[turns.length - 1].role === "assistant") turns.pop().node.remove();
    if (turns.length) ask();
  });
  $("pg-clear").addEventListener("click", function () {
    if (running) return;
    while (turns.length) turns.pop().node.remove();
    regenerate.disabled = true;
  });
  $("pg-code").addEventListener("toggle", showCode);
  $("chat-settings").addEventListener("input", () => $("pg-code").open && showCode());
  connect();
})();
