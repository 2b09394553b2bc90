// The Models page's downloads, kept live from /api/models/downloads/: each download's bytes, rate, ETA
// and state, every second while one is under way (every 5 s otherwise). A row is made once and then
// updated in place; everything is set as text, never as HTML.
(function () {
  "use strict";
  const table = document.getElementById("downloads");
  if (!table) return;
  const body = table.tBodies[0];
  const token = document.querySelector("#download-form [name=csrfmiddlewaretoken]");
  const BADGES = {queued: "initializing", running: "initializing", done: "ready", failed: "failed", cancelled: "offline"};

  // Sizes as the page's filesizeformat writes them, durations as its `duration` filter does.
  function bytes(count) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let unit = 0;
    while (count >= 1024 && unit < units.length - 1) { count /= 1024; unit += 1; }
    return unit ? `${count.toFixed(1)} ${units[unit]}` : `${count} bytes`;
  }
  function duration(seconds) {
    if (seconds == null) return "—";
    const whole = Math.round(seconds);
    if (whole < 60) return `${whole} s`;
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
    return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  }

  function element(tag, className) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    return made;
  }

  function cancelForm(download) {
    const form = element("form", "inline");
    form.method = "post";
    form.action = table.dataset.cancelUrl.replace("DOWNLOAD", encodeURIComponent(download.id));
    form.dataset.confirm = `Cancel the download of ${download.repo}?`;
    const csrf = element("input");
    csrf.type = "hidden";
    csrf.name = "csrfmiddlewaretoken";
    csrf.value = token.value;
    const button = element("button", "secondary");
    button.textContent = "Cancel";
    form.append(csrf, button);
    return form;
  }

  // A row as the template writes it, its parts kept for `update`.
  function made(download) {
    const row = element("tr");
    row.dataset.download = download.id;
    row.dataset.live = "";  // made here (the template's rows are not)
    const cells = Array.from({length: 7}, () => row.insertCell());
    const parts = {
      repo: element("b"), where: element("div", "help"), progress: element("progress"), size: element("div", "help"),
      badge: element("span", "badge"), note: element("span"), lost: element("div", "help"), error: element("div", "field-error"),
      cells: cells,
    };
    cells[0].append(parts.repo, parts.where);
    cells[2].append(parts.progress, parts.size);
    cells[5].append(parts.badge, parts.note, parts.lost, parts.error);
    row.parts = parts;
    return row;
  }

  function update(row, download) {
    const parts = row.parts, running = download.state === "running";
    const active = running || download.state === "queued";
    parts.repo.textContent = download.repo;
    parts.where.textContent = download.revision + (download.target ? ` → ${download.target}` : "");
    parts.cells[1].textContent = download.worker;
    parts.progress.max = download.bytes_total || 1;
    if (download.bytes_total == null && active) parts.progress.removeAttribute("value");  // under way, size unknown
    else parts.progress.value = download.bytes_total == null ? 0 : download.bytes_done;
    parts.size.textContent = `${bytes(download.bytes_done)} of ${download.bytes_total == null ? "?" : bytes(download.bytes_total)}`;
    parts.cells[3].textContent = running ? `${bytes(download.rate)}/s` : "—";
    parts.cells[4].textContent = running ? duration(download.eta) : "—";
    parts.badge.className = `badge ${BADGES[download.state] || ""}`;
    parts.badge.textContent = download.state;
    // A model finished while the page was open is listed above only once it is loaded again.
    row.sawActive = row.sawActive || active;
    parts.note.textContent = download.cancelling ? " cancelling…"
      : download.state === "done" && row.sawActive ? " reload the page to see it listed above" : "";
    parts.lost.textContent = download.worker_lost ? `waiting for ${download.worker}, which is not running` : "";
    parts.error.textContent = download.error;
    const cancellable = active && !download.cancelling && table.dataset.cancelUrl && token;
    const form = parts.cells[6].querySelector("form");
    if (cancellable && !form) parts.cells[6].append(cancelForm(download));
    if (!cancellable && form) form.remove();
  }

  function show(downloads) {
    const rows = {};
    for (const row of body.querySelectorAll("tr[data-download]")) rows[row.dataset.download] = row;
    if (!downloads.length) return;  // the template's "No downloads." stays
    body.replaceChildren(...downloads.map(function (download) {
      let row = rows[download.id];
      if (!row || !row.parts) row = made(download);  // the template's rows are made again, once
      update(row, download);
      return row;
    }));
  }

  async function poll() {
    let wait = 5000;
    try {
      const response = await fetch(table.dataset.url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (response.ok) {
        const downloads = await response.json();
        show(downloads);
        if (downloads.some((download) => download.state === "queued" || download.state === "running")) wait = 1000;
      }
    } catch (error) {
      // The server is restarting or the network dropped: the next poll tries again.
    }
    setTimeout(poll, wait);
  }
  poll();
})();
