// The engine form shows the config fields of the chosen kind, and the remote fields for a remote backend.
(function () {
  const kind = document.getElementById("id_kind"), backend = document.getElementById("id_backend");
  function sync() {
    document.querySelectorAll("fieldset[data-kind]").forEach(function (set) {
      const on = set.dataset.kind === kind.value; set.hidden = !on; set.disabled = !on;
    });
    document.querySelectorAll("[data-backend=remote]").forEach(function (el) { el.hidden = backend.value !== "remote"; });
  }
  kind.addEventListener("change", sync); backend.addEventListener("change", sync); sync();
})();
