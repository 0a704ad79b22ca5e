"""The device's page: the device's own row (the figures `lensops fleet status` shows for it: state,
per source the model version/variant, fps, drops, latency p99; outbox depth, last error), then per
source the annotated project stream, the raw device stream, the model and live stats. Rendered with
the current values on the server; a script refreshes the text every second from `/status.json`."""

from __future__ import annotations

import json
from html import escape
from urllib.parse import quote

from edge.status_view import SHORT_ERROR, number_text, over_budget, short, source_figures

STAT_FIELDS = ("state", "fps", "frames", "drops", "reconnects", "last_error")

_STYLE = """
body { font-family: sans-serif; margin: 16px; background: #f4f4f4; color: #222; }
section { background: #fff; border: 1px solid #ccc; padding: 12px; margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0 0 12px; } h2 { font-size: 16px; margin: 0 0 8px; }
.streams { display: flex; gap: 16px; flex-wrap: wrap; }
figure { margin: 0; width: 480px; } figcaption { font-size: 13px; color: #555; }
img.stream { width: 480px; display: block; background: #222; min-height: 120px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 13px; }
dt { color: #555; } dd { margin: 0; font-family: monospace; }
.state-degraded, .state-stopped { color: #b00; font-weight: bold; } .state-ok { color: #070; }
table.row { border-collapse: collapse; font-size: 13px; margin-bottom: 16px; background: #fff; }
table.row th, table.row td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-family: monospace; }
"""

_SCRIPT = r"""
function shadowText(sh) {
  if (!sh) return 'off';
  const agreement = sh.agreement === null || sh.agreement === undefined ? '-' : sh.agreement.toFixed(3);
  return (sh.alias || '-') + ' version ' + (sh.candidate || '-') + ': ' + sh.frames + ' frames compared, agreement '
         + agreement + ', ' + sh.skipped + ' skipped, ' + sh.failed + ' failed';
}
function show(el, value) { el.textContent = value === null || value === undefined ? '' : String(value); }
async function refresh() {
  let status;
  try { status = await (await fetch('/status.json', {cache: 'no-store'})).json(); } catch (e) { return; }
  for (const section of document.querySelectorAll('section[data-source]')) {
    const s = status.sources[section.dataset.source];
    if (!s) continue;
    const model = s.model || {};
    show(section.querySelector('.model'),
         (model.name || '-') + ' version ' + (model.version || '-') + ' (' + (model.variant || '-') + ')');
    const shadow = section.querySelector('.shadow');
    if (shadow) show(shadow, shadowText((s.stats || {}).shadow));
    for (const el of section.querySelectorAll('[data-stat]')) {
      show(el, (s.stats || {})[el.dataset.stat]);
      if (el.dataset.stat === 'state') el.className = 'state-' + el.textContent;
    }
  }
  show(document.getElementById('device'), JSON.stringify(status.device || {}));
  const device = status.device || {};
  const budget = device.latency_budget_ms;
  for (const el of document.querySelectorAll('[data-device-field]')) {
    const value = device[el.dataset.deviceField];
    const missing = value === null || value === undefined;
    show(el, el.dataset.deviceField === 'last_error' ? shorten(value) : (missing ? '-' : value));
  }
  for (const el of document.querySelectorAll('[data-row]')) {
    const entry = status.sources[el.dataset.row] || {};
    const s = entry.stats || {};
    const model = s.model || entry.model || {};
    const latency = s.latency_ms || {};
    const f = el.dataset.field;
    let value = {model: model.name, version: model.version, variant: model.variant, drops: s.drops}[f];
    if (f === 'fps') value = figure(s.fps);
    const over = typeof latency.p99 === 'number' && typeof budget === 'number' && latency.p99 > budget;
    if (f === 'p99') value = figure(latency.p99) + (over ? ' OVER' : '');
    show(el, value === null || value === undefined ? '-' : value);
  }
}
function figure(v) { return typeof v === 'number' ? v.toFixed(1) : '-'; }
function shorten(v) {
  if (!v) return '';
  const line = String(v).split(/\s+/).filter(Boolean).join(' ');
  return line.length <= SHORT ? line : line.slice(0, SHORT - 3) + '...';
}
setInterval(refresh, 1000);
"""


def model_text(model: dict | None) -> str:
    model = model or {}
    return f"{model.get('name') or '-'} version {model.get('version') or '-'} ({model.get('variant') or '-'})"


def shadow_text(shadow: dict | None) -> str:
    """The shadow figures of a source's status (edge/shadow.py `ShadowRunner.status`), as the page shows them."""
    if not shadow:
        return "off"
    agreement = shadow.get("agreement")
    return (
        f"{shadow.get('alias') or '-'} version {shadow.get('candidate') or '-'}: {shadow.get('frames', 0)} frames "
        f"compared, agreement {'-' if agreement is None else f'{agreement:.3f}'}, {shadow.get('skipped', 0)} skipped, "
        f"{shadow.get('failed', 0)} failed"
    )


def _stream(source_id: str, kind: str, caption: str) -> str:
    src = f"/stream.mjpg?source={quote(source_id, safe='')}&kind={kind}"
    return (
        f'<figure><img class="stream" src="{escape(src)}" alt="{escape(caption)} of {escape(source_id)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _source(source_id: str, entry: dict) -> str:
    stats = entry.get("stats") or {}
    rows = "".join(
        f'<dt>{field}</dt><dd data-stat="{field}"'
        + (f' class="state-{escape(str(stats.get(field)))}"' if field == "state" else "")
        + f">{escape('' if stats.get(field) is None else str(stats.get(field)))}</dd>"
        for field in STAT_FIELDS
    )
    return (
        f'<section data-source="{escape(source_id)}"><h2>{escape(source_id)}</h2>'
        f'<p>model: <span class="model">{escape(model_text(entry.get("model")))}</span></p>'
        + (
            f'<p>shadow: <span class="shadow">{escape(shadow_text(stats.get("shadow")))}</span></p>'
            if "shadow" in stats
            else ""
        )
        + f'<div class="streams">{_stream(source_id, "project", "project stream (annotated)")}'
        f"{_stream(source_id, 'device', 'device stream (raw)')}</div><dl>{rows}</dl></section>"
    )


ROW_COLUMNS = ("DEVICE", "FLEET", "STATE", "SOURCE", "MODEL", "VERSION", "VARIANT", "FPS", "DROPS", "P99 MS")
DEVICE_TAIL = ("OUTBOX", "LAST ERROR")


def _cell(text: str, attributes: str = "") -> str:
    return f"<td{attributes}>{escape(text)}</td>"


def device_row(status: dict) -> str:
    """The device's own row as a table, one line per source (the device's columns on the first line)."""
    device = status.get("device") or {}
    budget = device.get("latency_budget_ms")
    head = "".join(f"<th>{c}</th>" for c in ROW_COLUMNS + DEVICE_TAIL)
    sources = list((status.get("sources") or {}).items()) or [(None, {})]
    lines = []
    for i, (sid, entry) in enumerate(sources):
        first = i == 0
        fig = source_figures(entry.get("stats"))
        frame_model = entry.get("model") or {}  # the last frame's model, until a status names one
        for key, name in (("model", "name"), ("version", "version"), ("variant", "variant")):
            fig[key] = fig[key] or frame_model.get(name)
        cells = [
            _cell(str(device.get("device") or "-") if first else ""),
            _cell(str(device.get("fleet") or "-") if first else ""),
            _cell(str(device.get("state") or "-"), ' data-device-field="state"') if first else _cell(""),
            _cell(sid or "-"),
        ]
        attr = (lambda field: f' data-row="{escape(sid)}" data-field="{field}"') if sid else (lambda field: "")
        cells += [_cell(fig[field] or "-", attr(field)) for field in ("model", "version", "variant")]
        cells += [
            _cell(number_text(fig["fps"]), attr("fps")),
            _cell("-" if fig["drops"] is None else str(fig["drops"]), attr("drops")),
            _cell(
                number_text(fig["latency_p99_ms"]) + (" OVER" if over_budget(fig["latency_p99_ms"], budget) else ""),
                attr("p99"),
            ),
        ]
        if first:
            depth = device.get("outbox_depth")
            cells += [
                _cell("-" if depth is None else str(depth), ' data-device-field="outbox_depth"'),
                _cell(short(device.get("last_error")), ' data-device-field="last_error"'),
            ]
        else:
            cells += [_cell(""), _cell("")]
        lines.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="row" id="device-row"><tr>{head}</tr>{"".join(lines)}</table>'


def render_page(status: dict, title: str = "LensOps device") -> str:
    """The HTML page for a status as served at /status.json."""
    sections = "".join(_source(sid, entry) for sid, entry in status.get("sources", {}).items())
    device = escape(json.dumps(status.get("device") or {}, default=str))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{device_row(status)}"
        f"{sections or '<p>No sources yet.</p>'}<p>device: <code id='device'>{device}</code></p>"
        f"<script>const SHORT = {SHORT_ERROR};{_SCRIPT}</script></body></html>"
    )
