"""The report's HTML: one page, its style and its scripts, around sections built elsewhere.

Figures travel as Plotly JSON in one ``<script type="application/json">`` block and are drawn by
a few lines of script with the plotly.js file that sits beside the page; the shared Plotly
template is written once instead of once per figure.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any, Protocol


class SectionLike(Protocol):
    id: str
    title: str
    state: str
    body: str
    note: str
    badge: str
    badge_class: str


STYLE = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --card: #fff; --accent: #1f5fbf;
  --done: #1a7f37; --pending: #9a6700; --failed: #c62828; --fixed: #5b4bb7; --unavailable: #667085; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--fg); background: var(--bg); }
header { background: #17202e; color: #fff; padding: 20px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #b8c1cf; font-size: 13px; word-break: break-all; }
nav { position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line);
  padding: 8px 32px; display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 14px; }
nav a { color: var(--fg); text-decoration: none; white-space: nowrap; }
nav a:hover { color: var(--accent); }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 60px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin: 0 0 22px;
  padding: 18px 24px 22px; }
section > h2 { margin: 0; font-size: 20px; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
section > .note { color: var(--muted); font-size: 13px; margin: 2px 0 10px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
h4 { font-size: 14px; margin: 16px 0 6px; font-weight: 600; }
.badge { font-size: 12px; font-weight: 600; border-radius: 999px; padding: 2px 10px; color: #fff;
  text-transform: uppercase; letter-spacing: .04em; }
.badge.done { background: var(--done); } .badge.pending { background: var(--pending); }
.badge.failed { background: var(--failed); } .badge.fixed { background: var(--fixed); }
.badge.unavailable { background: var(--unavailable); }
nav .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; }
.dot.done { background: var(--done); } .dot.pending { background: var(--pending); }
.dot.failed { background: var(--failed); } .dot.fixed { background: var(--fixed); }
.dot.unavailable { background: var(--unavailable); }
section[data-state="pending"] { border-style: dashed; }
.lead, .muted { color: var(--muted); }
.lead { margin: 6px 0 12px; }
.decision { background: #eef4ff; border-left: 4px solid var(--accent); padding: 8px 12px;
  border-radius: 4px; }
.error { color: var(--failed); } .ok { color: var(--done); }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f1f3f6;
  padding: 1px 4px; border-radius: 4px; word-break: break-all; }
.table-wrap { overflow-x: auto; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f8f9fb; font-weight: 600; white-space: nowrap; }
table.narrow { width: auto; min-width: 320px; }
.strip.base { margin-bottom: 8px; }
tr.chosen td { background: #fff4e5; font-weight: 600; }
tr.collapsed td { color: var(--failed); }
.candidates { display: flex; gap: 18px; overflow-x: auto; align-items: flex-start; padding-bottom: 8px; }
.candidate { flex: 0 0 auto; width: 300px; border: 1px solid var(--line); border-radius: 8px;
  padding: 6px 10px; }
.candidate h4 { margin: 4px 0; font-size: 13px; } .candidate .row-name { font-size: 12px; margin-top: 6px; }
.candidate .strip { grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 2px; }
.candidate .caption { font-size: 12px; color: var(--muted); margin: 6px 0 0; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; font-size: 14px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.figure { width: 100%; min-height: 200px; margin: 8px 0 16px; }
.strip { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 112px)); gap: 4px; }
.strip figure, .panels figure { margin: 0; text-align: center; }
.strip img, .panels img { width: 100%; image-rendering: pixelated; display: block; border-radius: 3px; }
.strip figcaption { font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
.strip.diff { margin-top: 4px; }
.neg { color: #2166ac; font-weight: 600; } .pos { color: #b2182b; font-weight: 600; }
.movie .controls { display: flex; align-items: center; gap: 12px; margin: 8px 0 12px; }
.movie .controls input { width: 260px; }
.movie .step-label { color: var(--muted); font-variant-numeric: tabular-nums; font-size: 13px; }
.movie button { font: inherit; padding: 3px 14px; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; cursor: pointer; }
.panels { display: flex; flex-wrap: wrap; gap: 12px; }
.panels figure { width: 176px; }
.panels figcaption { font-size: 13px; margin-top: 4px; }
#no-plotly { display: none; background: #fdecea; color: var(--failed); padding: 10px 32px; }
"""

SCRIPT = """
(function () {
  if (typeof Plotly === "undefined") {
    document.getElementById("no-plotly").style.display = "block";
  } else {
    const template = JSON.parse(document.getElementById("plotly-template").textContent);
    const figs = JSON.parse(document.getElementById("figures").textContent);
    for (const [id, fig] of Object.entries(figs)) {
      fig.layout.template = template;
      Plotly.newPlot(id, fig.data, fig.layout, {responsive: true, displaylogo: false});
    }
  }
  for (const movie of document.querySelectorAll(".movie")) {
    const panels = JSON.parse(movie.querySelector(".movie-data").textContent);
    const images = movie.querySelectorAll("img.movie-frame");
    const slider = movie.querySelector("input.step");
    const label = movie.querySelector(".step-label");
    const button = movie.querySelector("button.play");
    const n = panels[0].length;
    let step = 0, timer = null;
    function show(i) {
      step = i % n;
      images.forEach((img, d) => { img.src = panels[d][step]; });
      slider.value = step; label.textContent = (step + 1) + " / " + n;
    }
    function play() {
      timer = setInterval(() => show(step + 1), +movie.dataset.interval);
      button.textContent = "Pause";
    }
    function pause() { clearInterval(timer); timer = null; button.textContent = "Play"; }
    button.addEventListener("click", () => (timer ? pause() : play()));
    slider.addEventListener("input", () => { pause(); show(+slider.value); });
    play();
  }
  window.reportReady = true;
})();
"""


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _figures_json(figures: dict[str, Any]) -> tuple[str, str]:
    """The figures without their (shared) template, and the template once."""
    import plotly.io as pio

    template: Any = None
    out = {}
    for fig_id, fig in figures.items():
        data = json.loads(pio.to_json(fig, validate=False))
        template = data["layout"].pop("template", template)
        out[fig_id] = data
    return _script_json(out), _script_json(template or {})


def render_page(
    title: str, subtitle: str, sections: Sequence[SectionLike], figures: dict[str, Any], plotly_js: str
) -> str:
    esc = html.escape
    nav = "".join(
        f'<a href="#{esc(s.id)}"><span class="dot {esc(s.state)}"></span>{esc(s.title)}</a>' for s in sections
    )
    body = "".join(
        f'<section id="{esc(s.id)}" data-state="{esc(s.state)}">'
        f'<h2>{esc(s.title)} <span class="badge {esc(s.badge_class or s.state)}">'
        f"{esc(s.badge or s.state)}</span></h2>"
        + (f'<p class="note">{esc(s.note)}</p>' if s.note else "")
        + f"{s.body}</section>"
        for s in sections
    )
    figures_json, template_json = _figures_json(figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{STYLE}</style>
<script src="{esc(plotly_js)}"></script>
</head><body>
<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>
<div id="no-plotly">{esc(plotly_js)} did not load: keep it beside this page to see the figures.</div>
<nav>{nav}</nav>
<main>{body}</main>
<script type="application/json" id="plotly-template">{template_json}</script>
<script type="application/json" id="figures">{figures_json}</script>
<script>{SCRIPT}</script>
</body></html>
"""
