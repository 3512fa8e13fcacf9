"""Every log axis on the pages labels at least three ticks, each label the value at its tick:
common.js's logAxis builds them all. Axes built by hand showed, on a short range, Plotly's
small digits between the powers of ten (a "2" for 0.2, read as 2: /learn's chapter 2 at three
steps read 2 3 … 9 1 2), or a single label; /train's fixed 1-2-5 ticks stopped at 5×10⁴ and put
fifteen labels on a run whose norm spans seven decades.

Debian's /usr/bin/chromium driven by Python playwright; without it the browser tests skip,
unless RNNSCOPE_REQUIRE_BROWSER=1 (CI), when they fail.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Per log axis of a chart: its name and, per tick drawn, [label, log10 of the tick's value]. A
# raised exponent (Plotly's power format draws it in a tspan shifted up) is written ^exponent.
LOG_TICKS = """(sel) => { const el = document.querySelector(sel), fl = el._fullLayout;
  const label = (t) => [...t.childNodes].map((n) => n.nodeName === 'tspan' && (n.getAttribute('dy') || '').startsWith('-')
    ? '^' + n.textContent : n.textContent).join('').replaceAll('\\u200b', '');
  return Object.keys(fl).filter((k) => /^[xy]axis\\d*$/.test(k) && fl[k].type === 'log').map((k) => [k,
    [...el.querySelectorAll(`.${fl[k]._id}tick text`)].map((t) => [label(t), t.__data__.x])]); }"""

SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def label_value(label: str) -> float:
    """The number a reader takes a tick label for: 0.25, 4000, 10^−3 or 10⁻³, 2×10⁻⁴."""
    text = label.replace("−", "-").translate(SUPERSCRIPTS)
    power = re.fullmatch(r"(?:([\d.]+)×)?10\^?(-?\d+)", text) if ("^" in label or "×" in label
                                                                    or any(c in label for c in "⁰¹²³⁴⁵⁶⁷⁸⁹")) else None
    if power:
        return float(power.group(1) or 1) * 10 ** int(power.group(2))
    assert re.fullmatch(r"\d+(\.\d+)?", text), label
    return float(text)


def assert_log_axes_readable(page, selector: str) -> dict[str, list[str]]:
    """Each log axis drawn in `selector` labels three ticks or more, each with its own value;
    returns the labels by axis."""
    axes = page.evaluate(LOG_TICKS, selector)
    assert axes, f"no log axis in {selector}"
    for name, ticks in axes:
        labels = [label for label, _ in ticks]
        assert len(ticks) >= 3, (selector, name, labels)
        for label, exponent in ticks:
            assert math.isclose(label_value(label), 10 ** exponent, rel_tol=0.01), (selector, name, label, 10 ** exponent)
    return {name: [label for label, _ in ticks] for name, ticks in axes}


def test_no_page_script_builds_a_log_axis_by_hand():
    by_hand = {path.name for path in (ROOT / "static/js").glob("*.js")
               if path.name != "common.js" and re.search(r"""type:\s*["']log["']""", path.read_text(encoding="utf-8"))}
    assert by_hand == set(), f"{sorted(by_hand)}: use common.js's logAxis"


# /learn's charts on log axes: chapter -> (chart, its layout's meta).
LEARN_LOG_CHARTS = {2: ("unroll-chart", "unroll"), 4: ("backward-chart", "backward"), 5: ("clip-chart", "clipping"),
                    6: ("highway-chart", "highway")}


@pytest.mark.parametrize("query", ["", "&steps=3&position=3&span=10"], ids=["default", "short-ranges"])
def test_learn_log_axes_are_readable(page, live_server, query):
    for chapter, (chart, meta) in LEARN_LOG_CHARTS.items():
        page.goto(f"{live_server}/learn?chapter={chapter}{query}")
        page.wait_for_function("([id, meta]) => document.getElementById(id).layout?.meta === meta", arg=[chart, meta])
        assert_log_axes_readable(page, f"#{chart}")


@pytest.mark.parametrize("text", ["To be, or not to be, that is the question:\n" * 6, "To be, or not"],
                         ids=["lines", "a few words"])
def test_compare_gradient_rows_are_readable(page, live_server, text):
    page.goto(f"{live_server}/compare?text={quote(text)}")
    page.wait_for_function("() => document.getElementById('chars-chart').data?.some((t) => t.yaxis === 'y3')")
    labels = assert_log_axes_readable(page, "#chars-chart")
    assert set(labels) == {"yaxis2", "yaxis3"}
