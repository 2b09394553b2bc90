// The playground's images mode: text-to-image, or image-to-image from an uploaded file; a progress bar
// fed by the worker's per-step events, and Stop, which makes the worker skip the remaining steps; each
// result kept in this page's gallery with its seed and a button to use that seed again.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const {el} = window.playground;
  let counter = 0, running = null;
  const socket = window.playground.connect(handle, (text) => { $("socket-state").textContent = text; });

  function progress(step, total) {
    const bar = $("img-progress");
    bar.hidden = false;
    bar.firstElementChild.style.width = `${Math.round((100 * step) / total)}%`;
    $("img-status").textContent = `step ${step} of ${total}`;
  }

  function handle(message) {
    if (!running || message.id !== running) return;
    if (message.type === "loading") {
      $("img-status").textContent = `${message.message}…`;
    } else if (message.type === "progress") {
      progress(message.step, message.total);
    } else if (message.type === "images") {
      progress(1, 1);
      $("img-status").textContent = `done in ${Math.round(message.ms)} ms · served by ${window.playground.servedBy(message)} · seed ${message.seed}`;
      if (message.trace_id) $("img-status").append(" · ", window.playground.traceLink(message));
      for (const [index, url] of message.urls.entries()) {
        const seed = message.seed + index;
        const image = el("img");
        image.src = url;
        image.alt = `seed ${seed}`;
        const again = el("button", "secondary", "use this seed again");
        again.type = "button";
        again.addEventListener("click", () => { $("img-seed").value = String(seed); });
        const card = el("figure", "shot");
        card.append(image, el("figcaption", "muted", `seed ${seed}`), again);
        $("gallery").prepend(card);
      }
      idle();
    } else if (message.type === "error") {
      $("img-error").textContent = message.message;
      $("img-error").hidden = false;
      $("img-progress").hidden = true;
      $("img-status").textContent = "";
      idle();
    } else if (message.type === "stopped") {
      $("img-progress").hidden = true;
      $("img-status").textContent = "stopped: the worker skipped the remaining steps";
      idle();
    }
  }

  function idle() {
    running = null;
    $("img-go").disabled = false;
    $("img-stop").disabled = true;
  }

  function fields() {
    const data = new FormData($("img-form"));
    return {model: data.get("model"), prompt: data.get("prompt"), negative_prompt: data.get("negative_prompt"),
            size: data.get("size"), steps: Number(data.get("steps")) || null,
            guidance_scale: Number(data.get("guidance_scale")), seed: data.get("seed") === "" ? null : Number(data.get("seed"))};
  }

  function read(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  $("img-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    if (running || !socket.ready()) return;
    const file = $("img-image").files[0];
    if (file && file.size > 20 * 1024 * 1024) {
      $("img-error").textContent = "image: the file is larger than 20 MB.";
      $("img-error").hidden = false;
      return;
    }
    $("img-error").hidden = true;
    const message = {type: "image", id: `image-${++counter}`, ...fields()};
    if (file) Object.assign(message, {image: await read(file), strength: Number($("img-strength").value)});
    running = message.id;
    $("img-go").disabled = true;
    $("img-stop").disabled = false;
    progress(0, 1);
    $("img-status").textContent = "waiting for the worker…";
    socket.send(message);
  });
  $("img-stop").addEventListener("click", () => running && socket.send({type: "stop", id: running}));
  window.playground.offerCode(() => {
    const upload = $("img-image").files.length > 0;
    const body = {...fields(), ...(upload ? {strength: Number($("img-strength").value)} : {})};
    return {kind: upload ? "image_edit" : "image", bodies: [body]};
  }, $("img-form"));
})();
