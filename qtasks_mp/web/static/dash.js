// qtasks_mp dashboard: live updates without a reload, by server-sent events.
// The server says "something changed"; this script fetches the same address with
// X-Live: 1 and swaps in the #live part, rendered (and HTML-escaped) by the server.
// No HTML is ever built here from data.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  function say(text, cls) {
    if (state) { state.textContent = text; state.className = "live-state " + cls; }
  }
  document.addEventListener("submit", function (ev) {
    var button = ev.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); }
  });
  if (!live || !window.EventSource) { say("static", "off"); return; }
  if (live.getAttribute("data-live") !== "on") { say("paused", "off"); return; }
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true; again = false;
    fetch(window.location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        live.innerHTML = html;
        live.setAttribute("data-updated", String(Date.now()));
        say("live", "on");
      })
      .catch(function () { say("refresh failed", "bad"); })
      .finally(function () { busy = false; if (again) { refresh(); } });
  }
  var source = new EventSource(live.getAttribute("data-events"));
  source.addEventListener("open", function () { say("live", "on"); });
  source.addEventListener("change", refresh);
  source.addEventListener("error", function () { say("reconnecting…", "bad"); });
})();
