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
