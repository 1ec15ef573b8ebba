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
      tag.textContent = d.tag ? shortTag(d.tag) : "\u2014";
      if (d.tag) { tag.title = d.tag; } else { tag.removeAttribute("title"); }
      tag.parentNode.classList.toggle("absent", !d.tag);  // a phone's card leaves out what is not there
      var copy = tr.querySelector("button.copy");
      if (copy) { copy.dataset.copy = d.tag || ""; copy.hidden = !d.tag; }
    }
    // a deployment that stops serving loses its app links, as the server renders it (SERVING_STATES)
    var links = tr.querySelector('[data-label="Links"]');
    if (links && d.serving === false && links.querySelector("a")) {
      var off = document.createElement("span");
      off.className = "not-serving";
      off.title = "Not serving while " + (d.words || d.state);
      off.textContent = "not serving";
      links.replaceChildren(off);
    }
    var when = tr.querySelector('[data-label="Updated"] time');
    if (when) { when.dateTime = d.updated_at; when.title = d.updated_exact; when.textContent = "just now"; }
  }

  // The list's tag cell shows a commit sha in a tag cut to 7 characters, as the server does (pages.short_tag).
  function shortTag(tag) { return tag.replace(/[0-9a-f]{16,}/g, function (sha) { return sha.slice(0, 7) + "\u2026"; }); }

  // Would this change move the row under the list's sort? Then the list says so, with a button to re-sort.
  function reorders(tr, d, table) {
    var sort = table.dataset.sort;
    var before = tr.querySelector(".state") ? tr.querySelector(".state").dataset.state : null;
    if (sort === "name") { return false; }
    if (sort === "state") { return before !== d.state; }
    if (sort === "-updated") { return tr.parentNode.firstElementChild !== tr; }
    var attention = (table.dataset.attention || "").split(" ");
    return (attention.indexOf(before) >= 0) !== (attention.indexOf(d.state) >= 0);
  }

  var moved = [];
  function sayOrderChanged(names) {
    var notice = document.getElementById("order-notice");
    if (!notice) { return; }
    names.forEach(function (name) { if (moved.indexOf(name) < 0) { moved.push(name); } });
    notice.querySelector("span").textContent = "The order changed: " + moved.join(", ") +
      (moved.length === 1 ? " belongs" : " belong") + " elsewhere in this list.";
    notice.hidden = false;
  }

  function resort() {
    var first = moved[0];
    moved = [];
    refresh(function () {
      var link = first && row(first) && row(first).querySelector('[data-label="Name"] a');
      if (link) { link.focus(); link.scrollIntoView({ block: "nearest" }); }
    });
  }

  function refresh(then) {
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
        var oldLog = document.getElementById("log");
        var opened = [].map.call(here.querySelectorAll("details[open]"), function (d) { return d.closest("[data-action]"); })
          .filter(Boolean).map(function (el) { return el.dataset.action; });
        here.innerHTML = fresh.innerHTML;
        // the log being read keeps its text, its scroll and whether it follows: the tail brings what is new
        var newLog = document.getElementById("log");
        if (oldLog && newLog && oldLog.dataset.action === newLog.dataset.action) {
          oldLog.dataset.running = newLog.dataset.running;
          newLog.replaceWith(oldLog);
        }
        opened.forEach(function (id) {
          var d = here.querySelector('[data-action="' + CSS.escape(id) + '"] details');
          if (d) { d.open = true; }
        });
        if (active && document.getElementById(active)) { document.getElementById(active).focus(); }
        setUpLog();
        enhance();
        if (typeof then === "function") { then(); }
        tailLog();
        tick();
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
      var table = document.querySelector("table.deployments");
      var reordered = [];
      (data.deployments || []).forEach(function (d) {
        var tr = row(d.name);
        if (tr && table && table.contains(tr) && reorders(tr, d, table)) { reordered.push(d.name); }
        if (tr) { updateRow(tr, d); } else if (onList) { missing = true; }
        // the open deployment's page fetches itself again: its history and log have news too
        if (document.querySelector('[data-live-deployment="' + CSS.escape(d.name) + '"]') && !pending) {
          pending = setTimeout(refresh, 200);
        }
      });
      var notice = document.getElementById("live-notice");
      if (missing && notice) { notice.hidden = false; }  // a link, not a fetch: 500 open lists stay quiet
      if (reordered.length) { sayOrderChanged(reordered); }
      say("Updated " + new Date().toLocaleTimeString());
    });
    source.onerror = function () { say("Reconnecting…"); };
  }

  // A log opens at its end, where the outcome is, and follows what is added until its reader scrolls up;
  // scrolling back to the end follows again.
  function atEnd(log) { return log.scrollTop + log.clientHeight >= log.scrollHeight - 4; }

  function setUpLog() {
    var log = document.getElementById("log");
    if (!log || log.dataset.ready) { return; }
    log.dataset.ready = "yes";
    log.dataset.follow = "yes";
    log.scrollTop = log.scrollHeight;
    log.addEventListener("scroll", function () { log.dataset.follow = atEnd(log) ? "yes" : "no"; });
  }

  var logTimer = null;
  function tailLog() {
    var log = document.getElementById("log");
    if (logTimer) { clearTimeout(logTimer); logTimer = null; }
    if (!log || log.dataset.running !== "yes") { return; }
    var url = log.dataset.logUrl + "&offset=" + log.dataset.offset;
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (data) {
      if (!data || document.getElementById("log") !== log) { return; }
      if (data.log) {
        if (log.dataset.empty !== "no") { log.dataset.empty = "no"; if (log.dataset.offset === "0") { log.textContent = ""; } }
        log.appendChild(document.createTextNode(data.log));
        if (log.dataset.follow !== "no") { log.scrollTop = log.scrollHeight; }
      }
      log.dataset.offset = data.offset;
      if (data.finished) { log.dataset.running = "no"; } else { logTimer = setTimeout(tailLog, 1500); }
    }).catch(function () { logTimer = setTimeout(tailLog, 5000); });
  }

  // The action in progress counts its time; the words match the server's (bot/web/pages.py `elapsed`).
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function elapsed(seconds) {
    if (seconds < 60) { return seconds + " s"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + pad(seconds % 60) + " s"; }
    return Math.floor(seconds / 3600) + " h " + pad(Math.floor(seconds % 3600 / 60)) + " min";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".elapsed[data-since]").forEach(function (el) {
      var since = Date.parse(el.dataset.since);
      if (!isNaN(since)) { el.textContent = elapsed(Math.max(0, Math.floor((now - since) / 1000))); }
    });
  }
  window.samiTick = tick;

  // A link to #action-N (the pull request's comment has them) opens that action's steps.
  function openTarget() {
    var m = /^#action-(\d+)$/.exec(location.hash);
    var el = m && document.getElementById("action-" + m[1]);
    var details = el && el.querySelector("details");
    if (details) { details.open = true; }
  }

  // Typing the name arms the button; the server compares it again (the form works without this file).
  function typedName() {
    var input = document.querySelector("input[data-must-be]");
    var button = input && input.form.querySelector("button[type=submit]");
    if (!button) { return; }
    var check = function () { button.disabled = input.value.trim() !== input.dataset.mustBe; };
    input.addEventListener("input", check);
    check();
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

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) { return navigator.clipboard.writeText(text); }
    var area = document.createElement("textarea");  // http on another host: the older way
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var done = document.execCommand("copy");
    document.body.removeChild(area);
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  // What needs this file to work shows only with it: the copy buttons, the phone's collapsed list controls.
  function enhance() {
    document.querySelectorAll("button.copy").forEach(function (button) { button.hidden = !button.dataset.copy; });
    var controls = document.querySelector("details.controls");
    if (controls && narrow.matches) { controls.open = false; }
  }

  var narrow = window.matchMedia("(max-width: 700px)");

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy");
    if (button) {
      copyText(button.dataset.copy).then(function () {
        button.textContent = "Copied";
        button.classList.add("done");
        say("Copied " + button.dataset.copy);
        setTimeout(function () { button.textContent = "Copy"; button.classList.remove("done"); }, 2000);
      }).catch(function () { say("Copying was refused: select the tag by hand"); });
    }
    if (event.target.id === "resort") { resort(); }
  });

  narrow.addEventListener("change", function () {
    var controls = document.querySelector("details.controls");
    if (controls) { controls.open = !narrow.matches; }  // the desktop has no summary to open them with
  });

  document.addEventListener("DOMContentLoaded", function () {
    enhance(); onceLink(); connect(); setUpLog(); tailLog(); openTarget(); typedName();
    setInterval(refreshTimes, 30000);
    setInterval(tick, 1000);
  });
  window.addEventListener("hashchange", openTarget);
})();
