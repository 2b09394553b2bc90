// The playground's compare mode: one message sent to two to four engines or routes at once, with the
// same parameters and seed; each pane streams on its own and shows its own stats.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const {el, parameters, showStats} = window.playground;
  const panes = new Map();  // id -> {text, stats, content}
  let counter = 0;
  const socket = window.playground.connect(handle, (text) => { $("socket-state").textContent = text; });

  function handle(message) {
    const pane = panes.get(message.id);
    if (!pane) return;
    if (message.type === "token") {
      pane.content += message.text;
      pane.text.textContent = pane.content;
      pane.stats.textContent = "streaming…";
    } else if (message.type === "done") {
      showStats(pane.stats, message.stats, message.finish_reason);
      panes.delete(message.id);
    } else if (message.type === "stopped" || message.type === "error") {
      pane.stats.textContent = message.type === "stopped" ? "stopped" : message.message;
      pane.stats.classList.toggle("field-error", message.type === "error");
      panes.delete(message.id);
    }
    $("cmp-stop").disabled = panes.size === 0;
  }

  $("cmp-composer").addEventListener("submit", function (event) {
    event.preventDefault();
    const models = [...document.querySelectorAll("input[name=compare]:checked")].map((box) => box.value);
    const text = $("cmp-prompt").value.trim(), error = $("cmp-error");
    const problem = !text ? "Write a message first." : models.length < 2 || models.length > 4
      ? "Choose two to four models." : !socket.ready() ? "Not connected yet." : "";
    error.textContent = problem;
    error.hidden = !problem;
    if (problem) return;
    const {system, ...params} = parameters($("chat-settings"));
    const messages = [...(system ? [{role: "system", content: system}] : []), {role: "user", content: text}];
    const box = $("panes");
    box.replaceChildren();
    panes.clear();
    for (const model of models) {
      const id = `pane-${++counter}`;
      const pane = {content: "", text: el("div", "text"), stats: el("div", "stats", "waiting for the first token…")};
      const node = el("div", "pane");
      node.append(el("div", "role", model), pane.text, pane.stats);
      box.append(node);
      panes.set(id, pane);
      socket.send({type: "chat", id, model, messages, ...params});
    }
    $("cmp-stop").disabled = false;
  });
  $("cmp-stop").addEventListener("click", () => { for (const id of panes.keys()) socket.send({type: "stop", id}); });
})();
