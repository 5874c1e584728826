"""The dashboard's one page: the report's style and table sorting, plotly.js from the server, the state embedded
for the first drawing, then polling ``api/state`` with the version as ETag and ``Plotly.react`` for each change."""

from __future__ import annotations

import html
import json

from ..report.html import CONFIG, SORT_JS, STYLE
from .state import Snapshot

PLOTLY_PATH = "plotly.min.js"
STATE_PATH = "api/state"

EXTRA_STYLE = """
.live{font-size:.85em;color:#666;margin:.3em 0 .8em}.live .dot{display:inline-block;width:.6em;height:.6em;
border-radius:50%;background:#2e7d32;margin-right:.4em}.live.stale .dot{background:#b00020}
.error{background:#fdecea;border-left:4px solid #b00020;padding:6px 12px;font-size:.9em}
"""

LIVE_JS = """
(function () {
  var CONFIG = %(config)s, INTERVAL = %(interval)d, STATE_URL = %(state_url)s;
  var state = JSON.parse(document.getElementById('kubetune-state').textContent);
  var sortState = null;
  var live = window.kubetuneDashboard = {version: null, updates: 0, polls: 0, failures: 0};

  function makeSortable() {
%(sort_js)s
  }

  function text(id, value) { document.getElementById(id).textContent = value; }

  function drawPlots(figures) {
    var box = document.getElementById('plots'), wanted = {};
    figures.forEach(function (f) {
      wanted['plot-' + f.id] = true;
      var div = document.getElementById('plot-' + f.id), wrap;
      if (div === null) {
        wrap = document.createElement('div');
        wrap.className = 'plot';
        div = document.createElement('div');
        div.id = 'plot-' + f.id;
        wrap.appendChild(div);
      } else {
        wrap = div.parentNode;
      }
      box.appendChild(wrap);  /* the server's order */
      Plotly.react(div, f.figure.data, f.figure.layout, CONFIG);
    });
    Array.prototype.slice.call(box.querySelectorAll('div[id^=plot-]')).forEach(function (div) {
      if (!wanted[div.id]) { Plotly.purge(div); box.removeChild(div.parentNode); }
    });
  }

  function drawTable(tableHtml) {
    var box = document.getElementById('table');
    box.innerHTML = tableHtml;
    makeSortable();
    if (sortState !== null) {
      var th = box.querySelectorAll('thead th')[sortState.col];
      if (th) {
        if (sortState.asc) { th.removeAttribute('aria-sort'); } else { th.setAttribute('aria-sort', 'ascending'); }
        th.click();
      }
    }
  }

  function draw(s) {
    document.getElementById('summary').innerHTML = s.summary;
    document.getElementById('importance').innerHTML = s.importance;
    var notes = document.getElementById('notes'), list = document.createElement('ul');
    s.notes.forEach(function (n) { var li = document.createElement('li'); li.textContent = n; list.appendChild(li); });
    notes.replaceChildren(list);
    notes.hidden = s.notes.length === 0;
    var err = document.getElementById('error');
    err.textContent = s.error ? 'cannot read the source now (showing the last state): ' + s.error : '';
    err.hidden = !s.error;
    drawPlots(s.figures);
    drawTable(s.table);
    live.version = s.version;
    live.updates += 1;
    document.body.setAttribute('data-version', s.version);
    document.body.setAttribute('data-trials', String(s.trials));
    text('live-text', s.trials + ' trials' + (s.finished ? ', experiment finished' : '') + '; updated ' +
         s.updated.replace('T', ' ').replace('Z', ' UTC') + '; checking every ' + INTERVAL / 1000 + ' s');
  }

  function status(ok, message) {
    var box = document.getElementById('live');
    box.className = ok ? 'live' : 'live stale';
    if (!ok) { text('live-text', message); }
  }

  function poll() {
    live.polls += 1;
    fetch(STATE_URL, {cache: 'no-store', headers: {'If-None-Match': '"' + live.version + '"'}})
      .then(function (r) {
        if (r.status === 304) { return null; }
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(function (s) {
        if (s !== null && s.version !== live.version) { draw(s); }
        status(true);
      })
      .catch(function (e) {
        live.failures += 1;
        status(false, 'the dashboard server does not answer (' + e.message + '); retrying');
      })
      .then(function () { setTimeout(poll, INTERVAL); });
  }

  document.getElementById('table').addEventListener('click', function (ev) {
    var th = ev.target.closest('th');
    if (th === null) { return; }
    sortState = {col: Array.prototype.indexOf.call(th.parentNode.children, th),
                 asc: th.getAttribute('aria-sort') === 'ascending'};
  });
  draw(state);
  setTimeout(poll, INTERVAL);
})();
"""


def _script_json(body: bytes) -> str:
    """JSON safe inside a ``<script>`` element: no ``<`` (so no ``</script>`` or ``<!--``) in its text."""
    return body.decode().replace("<", "\\u003c")


def render(snap: Snapshot, interval: float) -> bytes:
    """The page for ``snap``, polling every ``interval`` seconds."""
    e = html.escape
    title = f"kubetune: {snap.name}"
    script = LIVE_JS % {
        "config": json.dumps(CONFIG), "interval": max(100, round(interval * 1000)),
        "state_url": json.dumps(STATE_PATH), "sort_js": SORT_JS,
    }
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} (live)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>{STYLE}{EXTRA_STYLE}</style>
<script src="{PLOTLY_PATH}"></script>
</head><body>
<h1>{e(title)}</h1>
<p style="color:#666;font-size:.85em">from {e(snap.source)}</p>
<div id="live" class="live"><span class="dot"></span><span id="live-text"></span></div>
<div id="error" class="error" hidden></div>
<div id="summary"></div>
<div id="notes" class="notes" hidden></div>
<div id="importance"></div>
<div id="plots"></div>
<h2>Trials</h2>
<p style="font-size:.85em;color:#666">Click a column header to sort.</p>
<div id="table"></div>
<script type="application/json" id="kubetune-state">{_script_json(snap.body)}</script>
<script>{script}</script>
</body></html>
"""
    return doc.encode()
