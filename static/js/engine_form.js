// The engine form shows the config fields of the chosen kind, and the remote fields for a remote backend.
(function () {
  const kind = document.getElementById("id_kind"), backend = document.getElementById("id_backend");
  function sync() {
    document.querySelectorAll("fieldset[data-kind]").forEach(function (set) {
      const on = set.dataset.kind === kind.value; set.hidden = !on; set.disabled = !on;
    });
    document.querySelectorAll("[data-backend]").forEach(function (el) { el.hidden = backend.value !== el.dataset.backend; });
  }
  kind.addEventListener("change", sync); backend.addEventListener("change", sync); sync();
})();

// "Check on the workers": what the live workers find at the model (as saving checks it), shown before saving.
(function () {
  const button = document.getElementById("model-check"), out = document.getElementById("model-findings");
  if (!button) return;
  const model = document.getElementById("id_model"), kind = document.getElementById("id_kind");
  const backend = document.getElementById("id_backend"), row = document.getElementById("model-check-row");
  const token = document.querySelector("#engine-form [name=csrfmiddlewaretoken]").value;
  function bytes(n) {
    const units = ["bytes", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function show(text, bad) {
    out.textContent = text; out.hidden = false; out.classList.toggle("field-error", !!bad);
  }
  function sync() { row.hidden = out.hidden = backend.value === "remote"; }
  backend.addEventListener("change", sync); sync();
  button.addEventListener("click", async function () {
    if (!model.value.trim()) { show("Write the model's path or hub id first.", true); return; }
    button.disabled = true; show("Asking the workers…");
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token},
        body: JSON.stringify({model: model.value.trim(), kind: kind.value}),
      });
      const body = await response.json();
      if (!response.ok) {
        const fields = body.fields || {};
        const first = Object.keys(fields)[0];
        show(first ? fields[first][0] : (body.error && body.error.message) || `The check failed (${response.status}).`, true);
      } else if (body.warning) {
        show(body.warning, false);
      } else {
        const parts = [body.architecture || body.runtime, body.parameters ? `${body.parameters.toLocaleString()} parameters` : null,
          body.dtype, `about ${bytes(body.memory_bytes)} in memory`, body.context_length ? `context ${body.context_length}` : null,
          body.chat_template ? "chat template" : null];
        const where = body.workers.map(function (w) { return w.fits ? w.id : `${w.id} (too large)`; }).join(", ");
        show(`${body.kind === "llm" ? "LLM" : body.kind} model: ${parts.filter(Boolean).join(", ")}. On ${where}.`, false);
      }
    } catch (error) {
      show(`The check failed: ${error.message}.`, true);
    } finally {
      button.disabled = false;
    }
  });
})();
