"""The device's page: per source the annotated project stream, the raw device stream, the model and
live stats. Rendered with the current values on the server; a script refreshes the text every second
from `/status.json`."""

from __future__ import annotations

import json
from html import escape
from urllib.parse import quote

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
"""

_SCRIPT = """
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


def render_page(status: dict, title: str = "LensOps device") -> str:
    """The HTML page for a status as served at /status.json."""
    sections = "".join(_source(sid, entry) for sid, entry in status.get("sources", {}).items())
    device = escape(json.dumps(status.get("device") or {}, default=str))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"{sections or '<p>No sources yet.</p>'}<p>device: <code id='device'>{device}</code></p>"
        f"<script>{_SCRIPT}</script></body></html>"
    )
