// The playground's compare mode: one message sent to two to four engines or routes at once. Their
// parameters and seed are the settings form's for every pane, or (unticking "the same parameters")
// each pane's own; each pane streams on its own and shows its own stats.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const {el, parameters, showStats} = window.playground;
  const OWN = [["temperature", "Temperature", {min: 0, max: 2, step: 0.1}], ["top_p", "Top p", {min: 0.01, max: 1, step: 0.01}],
               ["max_tokens", "Max tokens", {min: 1}], ["seed", "Seed", {min: 0, placeholder: "random"}]];
  const panes = new Map();  // model -> {node, text, stats, form, id (while streaming), content}
  let counter = 0;
  const socket = window.playground.connect(handle, (text) => { $("socket-state").textContent = text; });

  const chosen = () => [...document.querySelectorAll("input[name=compare]:checked")].map((box) => box.value);
  const streaming = () => [...panes.values()].filter((pane) => pane.id);

  function ownParameters(shared) {
    const form = el("form", "grid2");
    for (const [name, label, attributes] of OWN) {
      const input = Object.assign(el("input"), {type: "number", name, ...attributes});
      input.value = shared[name] == null ? "" : String(shared[name]);
      const cell = el("div");
      cell.append(el("label", "", label), input);
      form.append(cell);
    }
    return form;
  }

  // One pane per chosen model, in the order chosen; a pane kept keeps its text and its own parameters.
  function layout() {
    const models = chosen(), shared = parameters($("chat-settings"));
    for (const [model, pane] of panes) if (!models.includes(model) && !pane.id) { pane.node.remove(); panes.delete(model); }
    for (const model of models) {
      if (panes.has(model)) continue;
      const pane = {content: "", text: el("div", "text"), stats: el("div", "stats"), form: ownParameters(shared)};
      const own = el("details", "pane-params");
      own.append(el("summary", "", "this pane's parameters"), pane.form);
      pane.node = el("div", "pane");
      pane.node.dataset.model = model;
      pane.node.append(el("div", "role", model), own, pane.text, pane.stats);
      panes.set(model, pane);
    }
    $("panes").replaceChildren(...models.map((model) => panes.get(model).node));
    const synced = $("cmp-sync").checked;
    for (const details of document.querySelectorAll(".pane-params")) details.hidden = synced;
  }

  function paneParameters(pane, shared) {
    if ($("cmp-sync").checked) return shared;
    const own = parameters(pane.form);
    return {...shared, temperature: own.temperature, top_p: own.top_p, max_tokens: own.max_tokens, seed: own.seed};
  }

  function handle(message) {
    const pane = streaming().find((p) => p.id === message.id);
    if (!pane) return;
    if (message.type === "loading") {
      pane.stats.textContent = `${message.message}…`;
    } else if (message.type === "token") {
      pane.content += message.text;
      pane.text.textContent = pane.content;
      pane.stats.textContent = "streaming…";
    } else if (message.type === "done") {
      showStats(pane.stats, message.stats, message.finish_reason);
      pane.id = null;
    } else if (message.type === "stopped" || message.type === "error") {
      pane.stats.textContent = message.type === "stopped" ? "stopped" : message.message;
      pane.stats.classList.toggle("field-error", message.type === "error");
      pane.id = null;
    }
    $("cmp-stop").disabled = streaming().length === 0;
  }

  $("cmp-composer").addEventListener("submit", function (event) {
    event.preventDefault();
    const models = chosen();
    const text = $("cmp-prompt").value.trim(), error = $("cmp-error");
    const problem = !text ? "Write a message first." : models.length < 2 || models.length > 4
      ? "Choose two to four models." : !socket.ready() ? "Not connected yet."
        : streaming().length ? "Wait for the answers, or stop them." : "";
    error.textContent = problem;
    error.hidden = !problem;
    if (problem) return;
    const {system, ...shared} = parameters($("chat-settings"));
    const messages = [...(system ? [{role: "system", content: system}] : []), {role: "user", content: text}];
    layout();
    for (const model of models) {
      const pane = panes.get(model);
      Object.assign(pane, {id: `pane-${++counter}`, content: ""});
      pane.text.textContent = "";
      pane.stats.textContent = "waiting for the first token…";
      pane.stats.classList.remove("field-error");
      socket.send({type: "chat", id: pane.id, model, messages, ...paneParameters(pane, shared)});
    }
    $("cmp-stop").disabled = false;
  });
  $("cmp-stop").addEventListener("click", () => { for (const pane of streaming()) socket.send({type: "stop", id: pane.id}); });
  for (const box of document.querySelectorAll("input[name=compare]")) box.addEventListener("change", layout);
  $("cmp-sync").addEventListener("change", function () {
    if (!this.checked) {  // each pane starts from the shared settings
      const shared = parameters($("chat-settings"));
      for (const pane of panes.values()) {
        for (const [name] of OWN) pane.form.elements[name].value = shared[name] == null ? "" : String(shared[name]);
      }
    }
    layout();
  });

  // Copy as code: the message as one request per pane, with that pane's parameters.
  window.playground.offerCode(() => {
    const {system, ...shared} = parameters($("chat-settings"));
    const messages = [...(system ? [{role: "system", content: system}] : []),
                      {role: "user", content: $("cmp-prompt").value.trim()}];
    return {kind: "chat", bodies: chosen().map((model) => ({model, messages, ...paneParameters(panes.get(model), shared)}))};
  }, $("chat-settings"), $("cmp-composer"), $("panes"));
  layout();
})();
