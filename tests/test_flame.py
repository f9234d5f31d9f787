"""Folded stacks and the SVG flame graph, the SVG checked in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ctrace.run import flame
from tests.conftest import need

NS = {"s": "http://www.w3.org/2000/svg"}
HOSTILE = '</title><script>alert(1)</script><text y="0">"\'&'
COUNTS = {
    ("main", "serve", "handle", "parse"): 30,
    ("main", "serve", "handle", "reply"): 12,
    ("main", "accept"): 10,
    ("main", HOSTILE): 3,
    ("_start", "__libc_start_main", "main;with;semicolons"): 1,
}


def test_fold_is_stackcollapse_format_and_parses_back() -> None:
    text = flame.fold(COUNTS)
    lines = text.splitlines()
    assert "main;serve;handle;parse 30" in lines
    assert "main;accept 10" in lines
    assert "_start;__libc_start_main;main:with:semicolons 1" in lines  # ';' would split the frame
    for line in lines:
        stack, _, n = line.rpartition(" ")
        assert n.isdigit() and stack and "\n" not in stack
    back = flame.parse_folded(text)
    assert back[("main", "serve", "handle", "parse")] == 30
    assert sum(back.values()) == sum(COUNTS.values())


def test_fold_merges_and_drops_empty() -> None:
    assert flame.fold({("a", "b"): 2, ("a", "b\n"): 0, (): 5}) == "a;b 2\n"
    assert flame.fold({("a;b",): 1, ("a:b",): 2}) == "a:b 3\n"


def _frames(root: ET.Element) -> list[dict[str, object]]:
    out = []
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if g.get("class") != "f":
            continue
        rect = g.find("s:rect", NS)
        text = g.find("s:text", NS)
        title = g.find("s:title", NS)
        assert rect is not None and text is not None and title is not None
        out.append(
            {
                "depth": int(g.get("data-d", "-1")),
                "name": (title.text or "").rsplit(" (", 1)[0],
                "x": float(rect.get("x", "0")),
                "w": float(rect.get("width", "0")),
                "y": float(rect.get("y", "0")),
                "fill": rect.get("fill"),
                "label": text.text or "",
                "shown": g.get("style", ""),
            }
        )
    return out


def test_svg_is_xml_and_names_cannot_inject() -> None:
    root = ET.fromstring(flame.svg(COUNTS, "ctrace: <parse> in nginx"))
    assert len(root.findall(".//s:script", NS)) == 1  # ours; the hostile name stays text
    title = root.find(".//s:text[@id='title']", NS)
    assert title is not None and title.text == "ctrace: <parse> in nginx"
    names = {f["name"] for f in _frames(root)}
    assert HOSTILE in names


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need(path is not None, "chromium is not installed (hack/setup.sh installs it)")
    assert path is not None
    return path


def _browser(args: list[str], url: str, tmp: Path) -> str:
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}"]
    done = subprocess.run([*argv, *args, url], capture_output=True, text=True, timeout=90, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flame") / "graph.svg"
    path.write_text(flame.svg(COUNTS, "ctrace: uprobe parse in nginx (pid 4242)"))
    return path


def _check_nesting(frames: list[dict[str, object]]) -> None:
    by_depth: dict[int, list[dict[str, object]]] = {}
    for f in frames:
        by_depth.setdefault(int(str(f["depth"])), []).append(f)
    for depth, level in by_depth.items():
        for f in level:
            if depth == 0:
                continue
            x, w, y = float(str(f["x"])), float(str(f["w"])), float(str(f["y"]))
            parents = [
                p
                for p in by_depth[depth - 1]
                if float(str(p["x"])) - 0.01 <= x and x + w <= float(str(p["x"])) + float(str(p["w"])) + 0.01
            ]
            assert len(parents) == 1, f"{f['name']} has no single parent around it"
            assert float(str(parents[0]["y"])) - y == flame.FRAME, "a child sits one level above its parent"


def test_chromium_renders_nesting_names_and_search(graph: Path, tmp_path: Path) -> None:
    dom = _browser(["--dump-dom"], f"{graph.as_uri()}?s=^(parse|reply)$", tmp_path)
    root = ET.fromstring(dom)
    frames = _frames(root)
    _check_nesting(frames)
    parse = next(f for f in frames if f["name"] == "parse")
    assert parse["label"] == "parse", "a wide frame shows its name"
    for f in frames:
        assert str(f["name"]).startswith(str(f["label"]).removesuffix("..")), "a label is its frame's name"
        assert (f["fill"] == "rgb(230,0,230)") == (f["name"] in ("parse", "reply")), f"search highlight: {f['name']}"
    matched = root.find(".//s:text[@id='matched']", NS)
    assert matched is not None and matched.text == f"Matched: {100 * 42 / 56:.1f}%"


def test_chromium_zoom(graph: Path, tmp_path: Path) -> None:
    first = _frames(ET.fromstring(graph.read_text()))
    handle = next(i for i, f in enumerate(first) if f["name"] == "handle")
    frames = _frames(ET.fromstring(_browser(["--dump-dom"], f"{graph.as_uri()}?z={handle}", tmp_path)))
    zoomed = frames[handle]
    assert zoomed["x"] == 10 and zoomed["w"] == flame.WIDTH - 20
    hidden = {f["name"] for f in frames if "display: none" in str(f["shown"])}
    assert "accept" in hidden and "parse" not in hidden
    parse = next(f for f in frames if f["name"] == "parse")
    assert float(str(parse["w"])) == pytest.approx((flame.WIDTH - 20) * 30 / 42, abs=0.05)


def test_chromium_screenshot(graph: Path, tmp_path: Path) -> None:
    """Renders to a PNG (test_stacks keeps the screenshot of a real run's graph)."""
    shot = tmp_path / "flame.png"
    height = ET.fromstring(graph.read_text()).get("height")
    _browser(
        ["--hide-scrollbars", f"--window-size={flame.WIDTH},{height}", f"--screenshot={shot}"],
        f"{graph.as_uri()}?s=handle",
        tmp_path,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
