// The live feed: one WebSocket per page (/ws/dashboard/), reconnecting by itself with backoff after a
// server restart. Each snapshot is dispatched on `document` as a "blaze:snapshot" event, each (re)connection
// as "blaze:feed-open" (pages catch up from the history then); [data-feed-state] elements show the state.
// Also `blaze.bytes(n)`: sizes as the pages' own filesizeformat writes them ("538.5 KB", "11.8 GB").
window.blaze = {
  bytes: function (count) {
    if (count == null) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let unit = 0;
    while (count >= 1024 && unit < units.length - 1) { count /= 1024; unit += 1; }
    return unit ? `${count.toFixed(1)} ${units[unit]}` : `${count} bytes`;
  },
};

(function () {
  "use strict";
  const REFUSED = 4403;  // dashboard/consumers.py: not signed in, or no role that sees engines
  let delay = 1000;

  function showState(text, state) {
    for (const element of document.querySelectorAll("[data-feed-state]")) {
      element.textContent = text;
      element.dataset.feedState = state;
    }
  }

  function connect() {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/dashboard/`);
    socket.addEventListener("open", function () {
      delay = 1000;
      showState("live", "live");
      document.dispatchEvent(new CustomEvent("blaze:feed-open"));
    });
    socket.addEventListener("message", function (message) {
      const snapshot = JSON.parse(message.data);
      showState(`live · ${new Date(snapshot.t * 1000).toLocaleTimeString()}`, "live");
      document.dispatchEvent(new CustomEvent("blaze:snapshot", {detail: snapshot}));
    });
    socket.addEventListener("close", function (event) {
      if (event.code === REFUSED) {
        showState("not allowed: sign in again", "refused");
        return;
      }
      const wait = delay + Math.random() * delay * 0.3;  // jitter: pages of a restarted server do not return at once
      showState(`reconnecting in ${Math.round(wait / 1000)} s…`, "reconnecting");
      setTimeout(connect, wait);
      delay = Math.min(delay * 2, 30000);
    });
  }

  connect();
})();
