// Sami's status page, live: listens to /events and refreshes the part of the page a change touches.
// The page works without this file; it only saves the reload.
(function () {
  "use strict";
  var body = document.body;
  var status = document.getElementById("live-status");
  var pending = null;

  function say(text) { if (status) { status.textContent = text; } }

  function row(name) { return document.querySelector('tr[data-deployment="' + CSS.escape(name) + '"]'); }

  // A list row takes the change in place; the event carries what the row shows.
  function updateRow(tr, d) {
    var badge = tr.querySelector(".state");
    if (badge) {  // the words of _macros.html's deployment_state, sent with the event
      badge.textContent = d.words || d.state;
      if (d.reason) {
        var small = document.createElement("small");
        small.textContent = "(" + d.reason + ")";
        badge.appendChild(document.createTextNode(" "));
        badge.appendChild(small);
      }
      badge.className = "state " + d.tone;
      badge.dataset.state = d.state;
      badge.title = d.state;
      var note = badge.parentNode.querySelector(".last-deploy");
      if (note && !d.last_deploy) { note.remove(); }
      if (d.last_deploy) {
        if (!note) {
          note = document.createElement("span");
          note.className = "last-deploy bad";
          badge.parentNode.appendChild(document.createTextNode(" "));
          badge.parentNode.appendChild(note);
        }
        note.textContent = d.last_deploy;
      }
    }
    var tag = tr.querySelector('[data-label="Tag"] code');
    if (tag) {
      tag.textContent = d.tag || "\u2014";
      tag.parentNode.classList.toggle("absent", !d.tag);  // a phone's card leaves out what is not there
    }
    var when = tr.querySelector('[data-label="Updated"] time');
    if (when) { when.dateTime = d.updated_at; when.title = d.updated_exact; when.textContent = "just now"; }
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
      var onList = !!document.querySelector("table.deployments, .empty") && location.pathname === "/";
      var missing = false;
      (data.deployments || []).forEach(function (d) {
        var tr = row(d.name);
        if (tr) { updateRow(tr, d); } else if (onList) { missing = true; }
        // the open deployment's page fetches itself again: its history and log have news too
        if (document.querySelector('.head[data-deployment="' + CSS.escape(d.name) + '"]') && !pending) {
          pending = setTimeout(refresh, 200);
        }
      });
      var notice = document.getElementById("live-notice");
      if (missing && notice) { notice.hidden = false; }  // a link, not a fetch: 500 open lists stay quiet
      say("Updated " + new Date().toLocaleTimeString());
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

  // "2 min ago" counts up on an open page; the words match the server's (bot/web/pages.py `ago`),
  // the datetime attribute is the truth and the server-rendered text stays for pages without this file.
  function round(x) {  // Python's round: halves go to the even number
    var r = Math.round(x);
    return (x % 1 === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }

  function ago(then, now) {
    var seconds = Math.trunc((now - then) / 1000);
    if (seconds < 45) { return "just now"; }
    if (seconds < 3600) { return Math.max(1, round(seconds / 60)) + " min ago"; }
    if (seconds < 86400 * 2) { return round(seconds / 3600) + " h ago"; }
    return round(seconds / 86400) + " days ago";
  }

  function refreshTimes() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var then = Date.parse(el.dateTime);
      if (!isNaN(then)) { el.textContent = ago(then, now); }
    });
  }
  window.samiRefreshTimes = refreshTimes;

  function onceLink() {
    var form = document.getElementById("once-form");
    if (!form || location.hash.length < 2) { return; }
    form.elements.code.value = decodeURIComponent(location.hash.slice(1));
    history.replaceState(null, "", location.pathname);  // the code leaves the address bar at once
    form.submit();
  }

  document.addEventListener("DOMContentLoaded", function () { onceLink(); connect(); tailLog(); setInterval(refreshTimes, 30000); });
})();
