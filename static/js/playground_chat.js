// The playground's chat: the conversation lives in the page (turns editable, the last answer
// regenerable); each answer streams over /ws/playground/ token by token, Stop cancels it in the
// worker, and its stats (time to first token, tokens/s, inter-token sparkline, target) show under it.
// Model output is untrusted: it is only ever set as text.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const turnsBox = $("turns");
  if (!turnsBox) return;
  const {el, parameters} = window.playground;
  const prompt = $("pg-prompt"), errorBox = $("pg-error");
  const send = $("pg-send"), stop = $("pg-stop-button"), regenerate = $("pg-regenerate");
  const turns = [];  // {role, content, node, text, stats}
  let counter = 0, running = null;

  function showState(text, closed) {
    $("socket-state").textContent = text;
    if (closed && running) finish("the connection dropped: the answer was given up");
  }
  const socket = window.playground.connect(handle, showState);

  function addTurn(role, content) {
    $("no-turns")?.remove();
    const node = el("div", `turn ${role}`);
    const text = el("div", "text", content);
    const turn = {role, content, node, text};
    if (role === "user") {
      text.contentEditable = "true";  // edit a turn, then regenerate
      text.title = "Click to edit";
      text.addEventListener("input", () => { turn.content = text.textContent; });
    }
    node.append(el("div", "role", role === "user" ? "you" : "assistant"), text);
    turnsBox.append(node);
    turns.push(turn);
    return turn;
  }

  function settings() {
    const {system, ...params} = parameters($("chat-settings"));
    const messages = turns.filter((t) => t.content).map((t) => ({role: t.role, content: t.content}));
    return {model: $("pg-model").value, messages: system ? [{role: "system", content: system}, ...messages] : messages,
            ...params};
  }

  function ask() {
    if (running || !socket.ready()) return;
    errorBox.hidden = true;
    const answer = addTurn("assistant", "");
    answer.stats = el("div", "stats", "waiting for the first token…");
    answer.node.append(answer.stats);
    running = {id: String(++counter), answer};
    socket.send({type: "chat", id: running.id, ...settings()});
    send.disabled = regenerate.disabled = true;
    stop.disabled = false;
  }

  function finish(note) {
    if (note && running) running.answer.stats.textContent = note;
    showCode();
    running = null;
    send.disabled = false;
    stop.disabled = true;
    regenerate.disabled = !turns.some((t) => t.role === "assistant");
  }

  function handle(message) {
    if (!running || message.id !== running.id) return;
    const turn = running.answer;
    if (message.type === "token") {
      if (!turn.content) turn.stats.textContent = "streaming…";
      turn.content += message.text;
      turn.text.textContent = turn.content;
    } else if (message.type === "done") {
      window.playground.showStats(turn.stats, message.stats, message.finish_reason);
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
  stop.addEventListener("click", () => running && socket.send({type: "stop", id: running.id}));
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
  // Copy as code: the conversation so far, as the next request to /v1 would send it.
  const showCode = window.playground.offerCode(() => ({kind: "chat", bodies: [settings()]}), $("chat-settings"), turnsBox);
})();
