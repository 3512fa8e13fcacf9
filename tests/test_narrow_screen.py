"""Every page fits a phone's width: at 420 px nothing makes the page scroll sideways (a long
option in a menu, a line of code, a table, a chart, a side column of fixed width). Found on a
trial where /explore was 527 px wide while its header stayed 420.

Debian's /usr/bin/chromium driven by Python playwright; without it the test skips, unless
RNNSCOPE_REQUIRE_BROWSER=1 (CI), when it fails.
"""
from __future__ import annotations

from tests.test_page_frame import framed_pages

PHONE = {"width": 420, "height": 900}

# The outermost elements reaching past the viewport's right edge (their parent does not): what
# to look at when a page is too wide.
STICKING_OUT = """(width) => [...document.querySelectorAll('body *')]
  .filter((e) => e.getBoundingClientRect().right > width + 0.5
    && e.parentElement.getBoundingClientRect().right <= width + 0.5)
  .slice(0, 5)
  .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}`
    + ` ${e.className && e.className.baseVal === undefined ? '.' + e.className.trim().replaceAll(' ', '.') : ''}`
    + ` right=${Math.round(e.getBoundingClientRect().right)}`)"""


def test_no_page_scrolls_sideways_on_a_phone(app, client, live_server, page):
    paths = sorted(framed_pages(app, client))
    assert {"/explore", "/gates", "/sample", "/train", "/compare"} <= set(paths)
    page.set_viewport_size(PHONE)
    too_wide = {}
    for path in paths:
        page.goto(live_server + path)
        page.wait_for_load_state("networkidle")          # the first answers drawn: tables, charts
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[path] = (width, page.evaluate(STICKING_OUT, PHONE["width"]))
    assert too_wide == {}, too_wide


# Each /gates panel's plot area, and the x tick labels drawn for it: [x, y, width, height].
GATE_PANELS = """() => [...document.querySelectorAll('#chart .draglayer > .xy, #chart .draglayer > [class^="x"]')]
  .filter((g) => g.querySelector('.nsewdrag'))
  .map((g) => {
    const box = (e) => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
    const id = [...g.classList].find((c) => /^x\\d*y\\d*$/.test(c));
    const ticks = [...document.querySelectorAll(`#chart .subplot.${id} .xaxislayer-above text`)];
    return { panel: box(g.querySelector('.nsewdrag')), ticks: ticks.map(box) };
  })"""
READABLE_PANEL_PX = 150


# The panels and their ticks, read again two frames later until nothing moved: a resize redraws
# the chart, and its axes' ticks may be drawn a frame after the panels.
SETTLED_GATE_PANELS = f"""async () => {{
  const read = () => JSON.stringify(({GATE_PANELS})());
  const frames = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  let before = read();
  for (;;) {{ await frames(); const now = read(); if (now === before) return JSON.parse(now); before = now; }}
}}"""


def gate_panels(page, expect_rows: int | None = None) -> list[dict]:
    """The LSTM's four panels as drawn, once there are four (and in `expect_rows` rows) and they
    stopped moving."""
    # Inside the window: a resize re-lays the rows at once and the width after Plotly's own
    # resize, a moment later (a CI run read four rows 1,010 px wide at 420 px).
    page.wait_for_function(f"() => {{ const p = ({GATE_PANELS})(); return p.length === 4"
                           + " && p.every((x) => x.panel[0] + x.panel[2] <= window.innerWidth)"
                           + (f" && new Set(p.map((x) => Math.round(x.panel[1]))).size === {expect_rows}" if expect_rows else "")
                           + "; }")
    return page.evaluate(SETTLED_GATE_PANELS)


def overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_gate_panels_wrap_to_stay_readable_on_a_phone(live_server, page):
    """At 420 px /gates drew the LSTM's four panels side by side, 58 px each, their titles run
    together. There they wrap, each panel square and at least READABLE_PANEL_PX across, with
    its own x axis under it; at 1280 px (and after widening the window) they stay in one row."""
    page.set_viewport_size(PHONE)
    page.goto(live_server + "/gates?model=lstm")
    for width, rows in ((PHONE["width"], 4), (1280, 1), (PHONE["width"], 4)):
        page.set_viewport_size({"width": width, "height": PHONE["height"]})
        panels = gate_panels(page, rows)
        boxes = [p["panel"] for p in panels]
        if width == 1280:
            assert len({round(b[1]) for b in boxes}) == 1, boxes          # the wide layout: one row
            continue
        assert all(b[2] >= READABLE_PANEL_PX and abs(b[2] - b[3]) <= 3 for b in boxes), boxes
        assert not any(overlap(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]), boxes
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        for p in panels:                                 # each axis's ticks just under its own panel
            x, y, w, h = p["panel"]
            assert p["ticks"] and all(x - 30 <= t[0] and t[0] + t[2] <= x + w + 30 and y + h <= t[1] <= y + h + 30
                                      for t in p["ticks"]), p
