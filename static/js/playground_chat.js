// The playground's chat: the conversation lives in the page (turns editable, the last answer
// regenerable); each answer streams over /ws/playground/ token by token, Stop cancels it in the
// worker, and its stats (time to first token, tokens/s, inter-token sparkline, target) show under it.
// A response format (JSON object or schema) and tools come from the settings' JSON boxes, checked here
// before anything is sent; the answer then shows parsed: pretty-printed JSON, or each tool call with its
// arguments, and a tool's result can be pasted as the next turn. Model output is untrusted: it is only
// ever set as text.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const turnsBox = $("turns");
  if (!turnsBox) return;
  const {el, parameters} = window.playground;
  const prompt = $("pg-prompt"), errorBox = $("pg-error");
  const send = $("pg-send"), stop = $("pg-stop-button"), regenerate = $("pg-regenerate");
  const format = $("pg-format"), schemaBox = $("pg-schema"), toolsBox = $("pg-tools"), toolChoice = $("pg-tool-choice");
  const schemaError = $("pg-schema-error"), toolsError = $("pg-tools-error"), as = $("pg-as");
  const turns = [];  // {role, content, node, text, stats, calls (an answer's tool calls), callId (a tool's result)}
  let counter = 0, running = null;

  function showState(text, closed) {
    $("socket-state").textContent = text;
    if (closed && running) finish("the connection dropped: the answer was given up");
  }
  const socket = window.playground.connect(handle, showState);

  // `call`: for a tool's result, the call it answers.
  function addTurn(role, content, call) {
    $("no-turns")?.remove();
    const node = el("div", `turn ${role}`);
    const text = el("div", "text", content);
    const turn = {role, content, node, text, callId: call?.id};
    if (role !== "assistant") {
      text.contentEditable = "true";  // edit a turn, then regenerate
      text.title = "Click to edit";
      text.addEventListener("input", () => { turn.content = text.textContent; });
    }
    const label = role === "user" ? "you" : role === "tool" ? `result of ${call.name} (${call.id})` : "assistant";
    node.append(el("div", "role", label), text);
    turnsBox.append(node);
    turns.push(turn);
    return turn;
  }

  // A turn as /v1 takes it: an answer that called tools keeps its calls, a tool's result names its call.
  function message(turn) {
    if (turn.calls) {
      return {role: "assistant", content: turn.content || null, tool_calls: turn.calls.map((call) => (
        {id: call.id, type: "function", function: {name: call.name, arguments: call.arguments}}))};
    }
    return turn.callId ? {role: "tool", tool_call_id: turn.callId, content: turn.content}
      : {role: turn.role, content: turn.content};
  }

  function settings() {
    const {system, ...params} = parameters($("chat-settings"));
    const messages = turns.filter((t) => t.content || t.calls).map(message);
    return {model: $("pg-model").value, messages: system ? [{role: "system", content: system}, ...messages] : messages,
            ...params, ...structured().fields};
  }

  // The JSON in a settings box: {} when empty, else {value} or {problem} (a sentence naming the box).
  function parsed(box, label, wrong) {
    const text = box.value.trim();
    if (!text) return {};
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return {problem: `${label} is not valid JSON: ${error.message}.`};
    }
    const problem = wrong(value);
    return problem ? {problem: `${label} ${problem}`} : {value};
  }
  const schemaOf = () => parsed(schemaBox, "JSON schema", (value) => (
    value && typeof value === "object" && !Array.isArray(value) ? ""
      : 'must be a JSON object, such as {"type": "object"}.'));
  const toolsOf = () => parsed(toolsBox, "Tools", (value) => (
    Array.isArray(value) && value.every((tool) => typeof tool?.function?.name === "string") ? ""
      : 'must be a list of tools, each {"type": "function", "function": {"name", "parameters"}}.'));

  // The response format and tools the boxes ask for: {fields (for the request), problems: [[error box, sentence]]}.
  function structured() {
    const fields = {}, problems = [];
    if (format.value === "json_object") fields.response_format = {type: "json_object"};
    if (format.value === "json_schema") {
      const schema = schemaOf();
      const spec = {name: "answer", schema: schema.value, strict: true};
      if (schema.value) fields.response_format = {type: "json_schema", json_schema: spec};
      else problems.push([schemaError, schema.problem || "JSON schema is empty: write the schema the answer must follow, "
                                                         + "or choose JSON object."]);
    }
    const tools = toolsOf();
    if (tools.problem) problems.push([toolsError, tools.problem]);
    if (tools.value?.length) {
      const choice = toolChoice.value;
      fields.tools = tools.value;
      fields.tool_choice = choice.startsWith("call:") ? {type: "function", function: {name: choice.slice(5)}} : choice;
    }
    return {fields, problems};
  }

  // Shows each box's problem under it (and the first by the Send button); true when there is none.
  function checked() {
    const {problems} = structured();
    for (const box of [schemaError, toolsError]) {
      const problem = problems.find(([at]) => at === box);
      box.textContent = problem ? problem[1] : "";
      box.hidden = !problem;
    }
    errorBox.textContent = problems.length ? problems[0][1] : "";
    errorBox.hidden = !problems.length;
    return !problems.length;
  }

  // tool_choice offers auto, required, none, and each tool's name once the tools parse.
  function offerToolNames() {
    const names = [...new Set((toolsOf().value || []).map((tool) => tool.function.name))];
    const chosen = toolChoice.value;
    const option = (value, label) => Object.assign(el("option", "", label), {value});
    toolChoice.replaceChildren(...["auto", "required", "none"].map((mode) => option(mode, mode)),
                               ...names.map((name) => option(`call:${name}`, `call ${name}`)));
    toolChoice.value = [...toolChoice.options].some((o) => o.value === chosen) ? chosen : "auto";
  }

  // The calls of the last answer that no tool turn answers yet: the composer can send a result for each.
  function openCalls() {
    let at = turns.length - 1;
    while (at >= 0 && turns[at].callId) at -= 1;
    const answered = new Set(turns.slice(at + 1).map((turn) => turn.callId));
    return (at >= 0 && turns[at].calls || []).filter((call) => !answered.has(call.id));
  }

  function offerToolAnswer() {
    const calls = openCalls();
    const option = (value, label) => Object.assign(el("option", "", label), {value});
    as.replaceChildren(...calls.map((call) => option(call.id, `the result of ${call.name} (${call.id})`)),
                       option("", "a user message"));
    $("pg-as-box").hidden = !calls.length;
    prompt.placeholder = calls.length ? "Paste what the tool returned (JSON or text), or send it as a user message"
      : "Message (Enter sends, Shift+Enter for a new line)";
  }

  const pretty = (text) => { try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return null; } };
  function verdict(text, state) {
    const line = el("div", "verdict");
    line.append(el("span", `badge ${state}`, text));
    return line;
  }

  // The answer as /v1 gives it: its tool calls with their arguments pretty-printed, or a JSON answer
  // pretty-printed with whether it parsed; plain text stays as it streamed.
  function showAnswer(turn, answer) {
    const cut = answer.finish_reason === "length";
    turn.content = answer.content || "";
    turn.text.textContent = turn.content;
    if (answer.tool_calls.length) {
      turn.calls = answer.tool_calls;
      for (const call of answer.tool_calls) {
        const box = el("div", "call"), name = el("div", "call-name", `call ${call.name}`);
        const shown = pretty(call.arguments);
        name.append(el("code", "", call.id || ""));
        box.append(name, el("pre", "", shown ?? call.arguments));
        if (shown == null) {
          box.append(verdict(cut ? "arguments cut off by max_tokens" : "arguments are not valid JSON", "failed"));
        }
        turn.stats.before(box);
      }
    } else if (answer.json_valid != null) {
      if (answer.json_valid) {
        turn.text.textContent = pretty(turn.content);
        turn.text.classList.add("json");
      }
      turn.stats.before(verdict(answer.json_valid ? "valid JSON" : cut ? "cut off by max_tokens: not valid JSON"
        : "not valid JSON", answer.json_valid ? "ready" : "failed"));
    }
  }

  function ask() {
    if (running || !socket.ready()) return;
    errorBox.hidden = true;
    const answer = addTurn("assistant", "");
    offerToolAnswer();
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
    offerToolAnswer();
  }

  function handle(message) {
    if (!running || message.id !== running.id) return;
    const turn = running.answer;
    if (message.type === "loading") {
      turn.stats.textContent = `${message.message}…`;
    } else if (message.type === "token") {
      if (!turn.content) turn.stats.textContent = "streaming…";
      turn.content += message.text;
      turn.text.textContent = turn.content;
    } else if (message.type === "done") {
      showAnswer(turn, message);
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
    if (running || !checked()) return;
    const call = openCalls().find((open) => open.id === as.value);
    addTurn(call ? "tool" : "user", text, call);
    prompt.value = "";
    ask();
  });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  stop.addEventListener("click", () => running && socket.send({type: "stop", id: running.id}));
  regenerate.addEventListener("click", function () {
    if (running || !checked()) return;
    while (turns.length && turns[turns.length - 1].role === "assistant") turns.pop().node.remove();
    offerToolAnswer();
    if (turns.length) ask();
  });
  $("pg-clear").addEventListener("click", function () {
    if (running) return;
    while (turns.length) turns.pop().node.remove();
    regenerate.disabled = true;
    offerToolAnswer();
  });
  format.addEventListener("change", () => { $("pg-schema-box").hidden = format.value !== "json_schema"; });
  toolsBox.addEventListener("input", offerToolNames);
  // A box is checked when left; while typing, a shown error is checked again, so that a fix clears it.
  for (const box of [schemaBox, toolsBox]) box.addEventListener("change", checked);
  for (const box of [schemaBox, toolsBox, format]) {
    box.addEventListener("input", () => { if (!schemaError.hidden || !toolsError.hidden) checked(); });
  }
  // Copy as code: the conversation so far, as the next request to /v1 would send it.
  const showCode = window.playground.offerCode(() => ({kind: "chat", bodies: [settings()]}), $("chat-settings"), turnsBox);
})();
