"""Folded stacks and SVG flame graphs from stack counts.

``counts`` maps a root-first tuple of frame names to how often that stack was
seen. ``fold`` writes stackcollapse-perf.pl's format (``root;child;leaf COUNT``,
one line a stack), which flamegraph.pl reads; ``svg`` draws the flame graph
itself, in the shape flamegraph.pl gives it (root at the bottom, click a frame
to zoom, Ctrl-F or "Search" to highlight frames by regular expression, and
``?s=REGEX`` in the URL searches on load).

No packaged flame graph library fits (Debian has no flamegraph.pl; the PyPI and
npm ones want a web server or d3), so this is a small generator. Frame names
are user-controlled (a symbol in a traced binary): every name reaches the SVG
through ``xml.sax.saxutils``-style escaping and the script reads them back with
``textContent`` only, so no name can become markup or script.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

WIDTH = 1200
FRAME = 16  # pixels per stack level
TOP = 36  # title and search line
BOTTOM = 24  # the details line
MIN_WIDTH = 0.1  # pixels: narrower frames are left out, as flamegraph.pl's --minwidth
CHAR = 7.0  # pixels per character of the 12px monospace font, to fit a name in a frame

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


def clean(name: str) -> str:
    """A frame name as one folded field: ';' separates frames and a newline ends the stack."""
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ") or "[unknown]"


def fold(counts: Mapping[tuple[str, ...], int]) -> str:
    """stackcollapse-perf.pl's folded text, stacks merged by their folded line, sorted."""
    merged: dict[str, int] = {}
    for stack, n in counts.items():
        if n > 0 and stack:
            line = ";".join(map(clean, stack))
            merged[line] = merged.get(line, 0) + n
    return "".join(f"{line} {n}\n" for line, n in sorted(merged.items()))


def parse_folded(text: str) -> dict[tuple[str, ...], int]:
    """The reverse of ``fold``: what flamegraph.pl reads from a folded file."""
    out: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        stack, sep, n = line.rpartition(" ")
        if sep and stack and n.isdigit():
            key = tuple(stack.split(";"))
            out[key] = out.get(key, 0) + int(n)
    return out


class _Node:
    __slots__ = ("children", "name", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.children: dict[str, _Node] = {}


def tree(counts: Mapping[tuple[str, ...], int]) -> _Node:
    root = _Node("all")
    for stack, n in counts.items():
        if n <= 0:
            continue
        root.total += n
        node = root
        for name in stack:
            node = node.children.setdefault(name, _Node(name))
            node.total += n
    return root


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def _color(name: str) -> str:
    """flamegraph.pl's warm palette, fixed per name so two graphs of one program agree."""
    h = zlib.crc32(name.encode("utf-8", "surrogateescape"))
    return f"rgb({205 + h % 50},{(h >> 8) % 230},{(h >> 16) % 55})"


def _label(name: str, width: float) -> str:
    fits = int((width - 6) / CHAR)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def _layout(root: _Node) -> list[tuple[_Node, float, float, int]]:
    """(node, x, width, depth) of every frame wide enough to see, parents before children."""
    out = []
    scale = (WIDTH - 20) / root.total if root.total else 0.0
    todo = [(root, 0.0, 0)]
    while todo:
        node, x, depth = todo.pop()
        w = node.total * scale
        if w < MIN_WIDTH:
            continue
        out.append((node, x, w, depth))
        for child in sorted(node.children.values(), key=lambda c: c.name):
            todo.append((child, x, depth + 1))
            x += child.total * scale
    return out


def _frame(node: _Node, x: float, w: float, depth: int, y: int, total: int) -> str:
    name = _escape(node.name)
    pct = 100.0 * node.total / total
    tip = f"{name} ({node.total} samples, {pct:.2f}%)"
    label = _escape(_label(node.name, w))
    return (
        f'<g class="f" data-d="{depth}" data-n="{node.total}"><title>{tip}</title>'
        f'<rect x="{10 + x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME - 1}" fill="{_color(node.name)}" rx="2"/>'
        f'<text x="{13 + x:.2f}" y="{y + FRAME - 4}">{label}</text></g>'
    )


def svg(counts: Mapping[tuple[str, ...], int], title: str) -> str:
    """A standalone SVG flame graph; opens in a browser, searchable, ``title`` on top."""
    root = tree(counts)
    frames = _layout(root)
    deepest = max((depth for *_, depth in frames), default=0)
    height = TOP + (deepest + 1) * FRAME + BOTTOM
    base = height - BOTTOM - FRAME  # the root's y; each level sits one FRAME higher
    body = "\n".join(_frame(n, x, w, d, base - d * FRAME, root.total) for n, x, w, d in frames)
    return _DOCUMENT.format(
        width=WIDTH,
        height=height,
        title=_escape(title),
        mid=WIDTH / 2,
        detail_y=height - 8,
        search_x=WIDTH - 110,
        frames=body,
        script=_SCRIPT,
        char=CHAR,
    )


_DOCUMENT = """<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" \
xmlns="http://www.w3.org/2000/svg" data-char="{char}">
<style>
text {{ font-family: monospace; font-size: 12px; fill: #000; }}
#title {{ font-size: 17px; text-anchor: middle; }}
.f {{ cursor: pointer; }}
.f:hover rect {{ stroke: #000; stroke-width: 0.5; }}
#search, #reset {{ cursor: pointer; fill: #555; }}
</style>
<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f8f0"/>
<text id="title" x="{mid}" y="24">{title}</text>
<text id="reset" x="10" y="24" visibility="hidden">Reset Zoom</text>
<text id="search" x="{search_x}" y="24">Search</text>
<text id="matched" x="{search_x}" y="{detail_y}"></text>
<text id="details" x="10" y="{detail_y}"> </text>
<g id="frames">
{frames}
</g>
<script type="text/ecmascript"><![CDATA[
{script}
]]></script>
</svg>
"""

# Zoom keeps each frame's original x/width in data-x/data-w; names are read from
# <title> with textContent and written back with textContent, never as markup.
_SCRIPT = r"""
"use strict";
var svgRoot = document.documentElement, CH = parseFloat(svgRoot.getAttribute("data-char"));
var frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
var W = parseFloat(svgRoot.getAttribute("width")) - 20, HI = "rgb(230,0,230)";
function nameOf(g) { var t = g.querySelector("title").textContent; return t.slice(0, t.lastIndexOf(" (")); }
frames.forEach(function (g) {
  var r = g.querySelector("rect");
  g.setAttribute("data-x", r.getAttribute("x")); g.setAttribute("data-w", r.getAttribute("width"));
  g.setAttribute("data-fill", r.getAttribute("fill"));
  g.addEventListener("click", function () { zoom(g); });
  g.addEventListener("mouseover", function () {
    document.getElementById("details").textContent = g.querySelector("title").textContent; });
});
function label(g, w) {
  var n = nameOf(g), fits = Math.floor((w - 6) / CH), t = g.querySelector("text");
  t.textContent = fits < 3 ? "" : (n.length <= fits ? n : n.slice(0, fits - 2) + "..");
}
function place(g, x, w) {
  var r = g.querySelector("rect"), t = g.querySelector("text");
  r.setAttribute("x", x.toFixed(2)); r.setAttribute("width", w.toFixed(2));
  t.setAttribute("x", (x + 3).toFixed(2)); label(g, w);
}
function zoom(target) {
  var x0 = parseFloat(target.getAttribute("data-x")), w0 = parseFloat(target.getAttribute("data-w"));
  var d0 = parseInt(target.getAttribute("data-d"), 10), k = W / w0;
  frames.forEach(function (g) {
    var x = parseFloat(g.getAttribute("data-x")), w = parseFloat(g.getAttribute("data-w"));
    var d = parseInt(g.getAttribute("data-d"), 10);
    var inside = x >= x0 - 0.01 && x + w <= x0 + w0 + 0.01;
    var below = d < d0 && x <= x0 + 0.01 && x + w >= x0 + w0 - 0.01;
    if (below) { place(g, 10, W); g.style.opacity = "0.6"; g.style.display = ""; }
    else if (inside && d >= d0) { place(g, 10 + (x - x0) * k, w * k); g.style.opacity = ""; g.style.display = ""; }
    else { g.style.display = "none"; }
  });
  document.getElementById("reset").setAttribute("visibility", "visible");
}
function reset() {
  frames.forEach(function (g) {
    place(g, parseFloat(g.getAttribute("data-x")), parseFloat(g.getAttribute("data-w")));
    g.style.display = ""; g.style.opacity = "";
  });
  document.getElementById("reset").setAttribute("visibility", "hidden");
}
function search(term) {
  var rx, hits = 0, total = 0;
  try { rx = term ? new RegExp(term) : null; } catch (e) { rx = null; }
  frames.forEach(function (g) {
    var r = g.querySelector("rect"), on = rx !== null && rx.test(nameOf(g));
    r.setAttribute("fill", on ? HI : g.getAttribute("data-fill"));
    g.setAttribute("data-match", on ? "1" : "0");
    if (parseInt(g.getAttribute("data-d"), 10) === 0) { total = parseInt(g.getAttribute("data-n"), 10); }
  });
  // The share matched counts each matched frame once, not again under a matched ancestor.
  var covered = [];
  frames.forEach(function (g) {
    if (g.getAttribute("data-match") !== "1") { return; }
    var x = parseFloat(g.getAttribute("data-x")), w = parseFloat(g.getAttribute("data-w"));
    if (covered.some(function (c) { return x >= c[0] - 0.01 && x + w <= c[1] + 0.01; })) { return; }
    covered.push([x, x + w]); hits += parseInt(g.getAttribute("data-n"), 10);
  });
  document.getElementById("matched").textContent =
    rx ? "Matched: " + (total ? (100 * hits / total).toFixed(1) : "0") + "%" : "";
  document.getElementById("search").textContent = rx ? "Reset Search" : "Search";
}
document.getElementById("reset").addEventListener("click", reset);
document.getElementById("search").addEventListener("click", function () {
  if (document.getElementById("search").textContent !== "Search") { search(""); return; }
  var term = window.prompt("Search frames (regular expression):", ""); if (term) { search(term); }
});
window.addEventListener("keydown", function (e) {
  if ((e.ctrlKey || e.metaKey) && e.key === "f") {
    e.preventDefault(); var term = window.prompt("Search frames (regular expression):", ""); if (term) { search(term); }
  } else if (e.key === "Escape") { search(""); reset(); }
});
(function () {
  var params = new URLSearchParams(window.location.search);
  if (params.get("s")) { search(params.get("s")); }
  var z = params.get("z");
  if (z !== null && frames[parseInt(z, 10)]) { zoom(frames[parseInt(z, 10)]); }
})();
"""
