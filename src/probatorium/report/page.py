"""The self-contained page: inline CSS, inline JS (view tabs, drill-down, severity filter), the views.

Nothing is fetched: no external stylesheet, script, font or image, so the file opens offline
and from file://. Each view is a ``<section class="view" data-view="...">``; one is shown at a
time, chosen by its tab or by ``#<view id>`` in the address.
"""

from __future__ import annotations

from html import escape

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fff}
header{background:#1f2933;color:#fff;padding:10px 16px}header h1{font-size:18px;margin:0}
header p{margin:2px 0 0;color:#cbd2d9;font-size:12px}
nav{display:flex;flex-wrap:wrap;gap:4px;padding:8px 16px;background:#e4e7eb}
nav button{border:1px solid #9aa5b1;background:#fff;padding:4px 10px;cursor:pointer;border-radius:3px}
nav button.active{background:#1f2933;color:#fff}
main{padding:8px 16px 40px}section.view[hidden]{display:none}
table{border-collapse:collapse;margin:6px 0 12px;font-size:12px}
th,td{border:1px solid #cbd2d9;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f7fa}td code{font-size:11px;word-break:break-all}
table.matrix td{padding:2px}table.matrix td.empty{color:#9aa5b1;text-align:center}
.gridcell{min-width:130px;min-height:44px;border:0;border-radius:4px;cursor:pointer;font:inherit}
.gridcell.selected{outline:3px solid #1f2933}
.ok{background:#c6f6d5}.bad{background:#fed7d7}.warn{background:#feebc8}.low{background:#e2e8f0}.na{background:#edf2f7}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;margin:1px}
.sev{font-size:11px;margin:0 2px}.sev.HIGH{color:#9b2c2c}.sev.MED{color:#975a16}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:1px 12px;font-size:12px}dl.kv dt{color:#52606d}
dl.kv dd{margin:0;word-break:break-all}.muted{color:#7b8794}
svg.chart{display:block;max-width:100%;height:auto;margin:6px 0;background:#fff;border:1px solid #e4e7eb}
svg.chart text{font-size:10px;fill:#323f4b}svg.chart .ctitle{font-size:12px;font-weight:600}svg.chart .axis{font-size:11px}
svg.chart .grid{stroke:#e4e7eb}svg.chart .ref{stroke:#9aa5b1;stroke-dasharray:4 3}
section.celldetail{border-left:4px solid #1f2933;padding:4px 12px;margin:8px 0;background:#fafbfc}
details{margin:4px 0}summary{cursor:pointer;font-weight:600}
"""

JS = """
(function () {
  'use strict';
  var tabs = document.querySelectorAll('nav button[data-view]');
  function show(id) {
    var found = false;
    document.querySelectorAll('section.view').forEach(function (s) {
      var on = s.id === id; s.hidden = !on; found = found || on;
    });
    tabs.forEach(function (b) { b.classList.toggle('active', b.getAttribute('data-view') === id); });
    return found;
  }
  tabs.forEach(function (b) {
    b.addEventListener('click', function () {
      var id = b.getAttribute('data-view');
      show(id); history.replaceState(null, '', '#' + id);
    });
  });
  if (!(location.hash && show(location.hash.slice(1))) && tabs.length) {
    show(tabs[0].getAttribute('data-view'));
  }
  document.querySelectorAll('button.gridcell').forEach(function (b) {
    b.addEventListener('click', function () {
      var view = b.closest('section.view');
      var target = document.getElementById(b.getAttribute('data-detail'));
      var wasOpen = target && !target.hidden;
      view.querySelectorAll('section.celldetail').forEach(function (d) { d.hidden = true; });
      view.querySelectorAll('button.gridcell').forEach(function (g) { g.classList.remove('selected'); });
      if (target && !wasOpen) { target.hidden = false; b.classList.add('selected'); }
    });
  });
  document.querySelectorAll('input.sevfilter').forEach(function (box) {
    box.addEventListener('change', function () {
      var view = box.closest('section.view');
      var sev = box.getAttribute('data-sev');
      view.querySelectorAll('table.diff tbody tr').forEach(function (tr) {
        if (tr.cells[0].textContent.trim() === sev) { tr.hidden = !box.checked; }
      });
    });
  });
})();
"""


def page(title: str, subtitle: str, views: list[tuple[str, str, str]]) -> str:
    """The HTML document; ``views`` are (id, tab label, body HTML)."""
    nav = "".join(f'<button type="button" data-view="{escape(vid)}">{escape(label)}</button>'
                  for vid, label, _ in views)
    body = "".join(f'<section class="view" id="{escape(vid)}" data-view="{escape(vid)}">{html}</section>'
                   for vid, _, html in views)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f'<title>{escape(title)}</title><style>{CSS}</style></head><body>'
            f'<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>'
            f'<nav>{nav}</nav><main>{body}</main><script>{JS}</script></body></html>\n')
