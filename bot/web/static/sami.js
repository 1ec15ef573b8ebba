// Sami's status page, live: listens to /events and refreshes the part of the page a change touches.
// The page works without this file; it only saves the reload.
(function () {
  "use strict";
  var body = document.body;
  var status = document.getElementById("live-status");
  var pending = null;

  function say(text) { if (status) { status.textContent = text; } }

  function visible(names) {
    if (document.querySelector(".deployments") || document.querySelector(".empty")) {
      if (location.pathname === "/") { return true; }  // a change may add a row to this list
    }
    return names.some(function (name) { return document.querySelector('[data-deployment="' + CSS.escape(name) + '"]'); });
  }

  function refresh() {
    pending = null;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live-region");
        var here = document.getElementById("live-region");
        if (!fresh || !here) { return; }
        var active = document.activeElement && document.activeElement.id;
        var typing = active && here.contains(document.activeElement) && /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
        if (typing) { return; }  // never pull a field from under someone typing
        here.innerHTML = fresh.innerHTML;
        if (active && document.getElementById(active)) { document.getElementById(active).focus(); }
        tailLog();
        say("Updated " + new Date().toLocaleTimeString());
      })
      .catch(function () {});
  }

  function connect() {
    if (!window.EventSource || !body.dataset.live) { return; }
    var source = new EventSource(body.dataset.live);
    source.addEventListener("hello", function () { say("Live"); });
    source.addEventListener("change", function (event) {
      var data = JSON.parse(event.data);
      var names = (data.deployments || []).map(function (d) { return d.name; });
      if (visible(names) && !pending) { pending = setTimeout(refresh, 200); }
    });
    source.onerror = function () { say("Reconnecting…"); };
  }

  var logTimer = null;
  function tailLog() {
    var log = document.getElementById("log");
    if (logTimer) { clearTimeout(logTimer); logTimer = null; }
    if (!log || log.dataset.running !== "yes") { return; }
    var url = log.dataset.logUrl + "&offset=" + log.dataset.offset;
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (data) {
      if (!data) { return; }
      if (data.log) {
        var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.textContent += data.log;
        if (atEnd) { log.scrollTop = log.scrollHeight; }
      }
      log.dataset.offset = data.offset;
      if (!data.finished) { logTimer = setTimeout(tailLog, 1500); }
    }).catch(function () { logTimer = setTimeout(tailLog, 5000); });
  }

  function onceLink() {
    var form = document.getElementById("once-form");
    if (!form || location.hash.length < 2) { return; }
    form.elements.code.value = decodeURIComponent(location.hash.slice(1));
    history.replaceState(null, "", location.pathname);  // the code leaves the address bar at once
    form.submit();
  }

  document.addEventListener("DOMContentLoaded", function () { onceLink(); connect(); tailLog(); });
})();
