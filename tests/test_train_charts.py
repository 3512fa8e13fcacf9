"""The Train page's charts after a very short run (one checkpoint, at its last step), found on a
trial: the gradient heatmap's step axis read 59.6 / 59.8 / 60 / 60.2 / 60.4, and the "Cells
forming" legend gave several concepts one colour, a concept's colour shifting with the
concepts a run skips. Checked in Chromium on two runs whose texts skip different concepts, and
on a server whose list of concepts is in another order (the page takes it from the server).

Debian's /usr/bin/chromium driven by Python playwright; without it the browser test skips,
unless RNNSCOPE_REQUIRE_BROWSER=1 (CI), when it fails.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import httpx
import pytest

from rnnscope.model.probes import CONCEPTS
from tests.test_log_axes import assert_log_axes_readable

ROOT = Path(__file__).resolve().parent.parent
OWNER = {"X-Rnnscope-Owner": "train-charts"}
# One checkpoint, at the last step (as the 200-step default gives a 60-step run), recorded.
SETTINGS = {"checkpoint_every_steps": 1000, "sample_every_steps": 0, "flush_seconds": 0.05,
            "concept_share": 1.0, "concept_text_chars": 1500}
RUN = {"cell": "lstm", "hidden_size": 16, "num_layers": 1, "batch_size": 4, "seq_length": 16,
       "learning_rate": 0.01, "max_steps": 20}
# Two colours a reader tells apart in a legend are at least this far apart in RGB (0-255 each):
# the old palette's two oranges (#e8590c, #d9480f) were 23 apart, its two blues 15.
DISTINCT_RGB = 60


@pytest.fixture(scope="module")
def training_server(tmp_path_factory):
    """An app that trains, served in this process (so it serves this checkout's pages)."""
    from tests.conftest import serving
    from tests.training_app import build_app

    with serving(build_app(tmp_path_factory.mktemp("train-charts"), **SETTINGS)) as url:
        yield url


def finished_run(url: str, name: str, text: str) -> int:
    """A RUN on `text`, trained to its end: its id."""
    files = {"file": (name, text.encode("utf-8"), "text/plain")}
    corpus = httpx.post(f"{url}/api/corpora", files=files, headers=OWNER, timeout=60)
    assert corpus.status_code == 201, corpus.text
    r = httpx.post(f"{url}/api/runs", json={"corpus_id": corpus.json()["id"], **RUN}, headers=OWNER, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_gradient_norm_within_a_decade_reads_off_its_axis(page, training_server):
    """Without clipping (whose threshold the axis also spans) and at a tiny learning rate the norm
    stays between 0.24 and 0.4: the fixed 1-2-5 ticks (0.2, 0.5) labelled none of it."""
    from tests.training_app import excerpt

    files = {"file": ("flat.txt", excerpt(12_000).encode("utf-8"), "text/plain")}      # not the other test's text
    corpus = httpx.post(f"{training_server}/api/corpora", files=files, headers=OWNER, timeout=60).json()
    r = httpx.post(f"{training_server}/api/runs", headers=OWNER, timeout=60,
                   json={"corpus_id": corpus["id"], **RUN, "learning_rate": 1e-4, "grad_clip": 0})
    assert r.status_code == 201, r.text
    page.goto(f"{training_server}/train?run={r.json()['id']}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
    norms = page.evaluate("document.getElementById('grad-chart').data[0].y")
    assert max(norms) / min(norms) < 10                                      # within a decade
    assert_log_axes_readable(page, "#grad-chart")


@pytest.fixture(scope="module")
def code_run(training_server) -> int:
    """A run on python (digits, brackets, strings, comments): its chart lists 16 concepts or more."""
    return finished_run(training_server, "router.py", (ROOT / "app/training/router.py").read_text(encoding="utf-8")[:20_000])


def test_each_concept_looks_as_its_place_in_the_servers_list(page, training_server, code_run, monkeypatch):
    """The page takes the concepts' order from the server (the /train route writes CONCEPTS'
    names into the chart's data-concepts), and a concept's look follows its place there: the
    first ten in ten colours, solid; the next ten in the same colours, dotted. Checked with the
    server's list reversed, which a copy of the list kept in train.js would not follow."""
    from rnnscope.app.training import router

    served = dict(reversed(CONCEPTS.items()))
    monkeypatch.setattr(router, "CONCEPTS", served)
    page.goto(f"{training_server}/train?run={code_run}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
    page.wait_for_function("() => document.getElementById('concepts-chart').data")
    assert page.evaluate("JSON.parse(document.getElementById('concepts-chart').dataset.concepts)") == list(served)
    traces = page.evaluate("() => document.getElementById('concepts-chart').data.map((t) => [t.name, t.line.color,"
                           " t.line.dash ?? 'solid'])")
    place = {name: list(served).index(name) for name, _, _ in traces}
    assert min(place.values()) < 10 <= max(place.values()), place          # concepts of both tens drawn
    for name, _, dash in traces:
        assert (dash == "solid") == (place[name] < 10), (name, place[name], dash)
    for (a, colour_a, _), (b, colour_b, _) in itertools.combinations(traces, 2):
        assert (colour_a == colour_b) == (place[a] % 10 == place[b] % 10), (a, colour_a, b, colour_b)


# The Cells forming chart as drawn: its plot area's height, the box of each legend entry and of
# the chart, and whether Plotly made the legend scroll.
CONCEPTS_DRAWN = """() => { const el = document.getElementById('concepts-chart'), box = (e) => {
    const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const bar = el.querySelector('.legend .scrollbar');
  return { plot: el._fullLayout._size.h, chart: box(el.querySelector('.main-svg')), entries: [...el.querySelectorAll('.legend .traces')].map(box),
           scrolls: !!bar && bar.getBoundingClientRect().height > 0, traces: el.data.length }; }"""


def test_every_concept_in_the_legend_shows_without_scrolling(page, training_server, code_run):
    """Beside the plot, the legend of 16 or 17 concepts scrolled (and on a phone took half the
    chart's width). Under the plot, in as many columns as the width holds, every entry shows
    whole, none over another, the plot keeps its height: at 1280 px, at 420 px, and when the
    window is narrowed or widened between the two (the legend's rows follow its columns)."""
    page.goto(f"{training_server}/train?run={code_run}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
    page.wait_for_function("() => document.getElementById('concepts-chart').data")
    for width in (1280, 420, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("() => { const el = document.getElementById('concepts-chart'),"
                               " svg = el.querySelector('.main-svg')?.getBoundingClientRect();"
                               " return svg && Math.round(svg.width) === el.clientWidth"
                               " && Math.round(svg.height) === el._fullLayout.height; }")    # redrawn at the new width
        drawn = page.evaluate(CONCEPTS_DRAWN)
        assert drawn["traces"] >= 16 and len(drawn["entries"]) == drawn["traces"], drawn
        assert not drawn["scrolls"], width
        assert drawn["plot"] >= 300, (width, drawn["plot"])
        left, top, right, bottom = drawn["chart"]
        for e in drawn["entries"]:
            assert left <= e[0] and e[2] <= right + 1 and top <= e[1] and e[3] <= bottom + 1, (width, e, drawn["chart"])
        for a, b in itertools.combinations(drawn["entries"], 2):
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (width, a, b)


# Each chart on /train as drawn: its container's box and its figure's (Plotly's svg), and every
# chart title and note of the run card with text in it.
RUN_CARD_DRAWN = """() => { const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const charts = ['loss-chart', 'grad-chart', 'gtt-chart', 'concepts-chart'].map((id) => document.getElementById(id));
  return { charts: Object.fromEntries(charts.map((el) => [el.id, { div: box(el), svg: box(el.querySelector('.main-svg')) }])),
           texts: [...document.querySelectorAll('#run-card .chart-title, #run-card .chart-note')]
             .filter((t) => t.textContent.trim() && t.getClientRects().length).map((t) => [t.id || t.textContent.slice(0, 30), box(t)]) }; }"""
# Every chart redrawn at the window's width (Plotly's resize waits 100 ms), its labels placed again.
CHARTS_AT_WIDTH = """() => ['loss-chart', 'grad-chart', 'gtt-chart', 'concepts-chart'].every((id) => {
  const el = document.getElementById(id), svg = el.querySelector('.main-svg')?.getBoundingClientRect();
  return svg && Math.round(svg.width) === el.clientWidth && Math.round(svg.height) === el._fullLayout.height; })"""


def overlaps(a, b) -> bool:
    return a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5


@pytest.mark.parametrize("widths", [(1280, 420, 1280), (420, 1280, 420)])
def test_no_chart_on_train_runs_over_another_after_a_resize(page, training_server, code_run, widths):
    """After the window went from 1280 to 420 px, the gradient heatmap lay over the Cells forming
    chart's title and note (and, widened again, the Cells forming chart over the Runs card):
    Plotly's resize drops a layout's height and sizes a chart to its container, which had no
    height of its own and collapsed to nothing under a figure that kept its 300 px. Loaded at
    either width and resized both ways, each figure lies inside its own container, over no other
    chart and no chart's title or note."""
    page.set_viewport_size({"width": widths[0], "height": 900})
    page.goto(f"{training_server}/train?run={code_run}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
    page.wait_for_function("() => document.getElementById('gtt-chart').data && document.getElementById('concepts-chart').data")
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function(CHARTS_AT_WIDTH)
        page.evaluate("new Promise((done) => setTimeout(done, 300))")       # any later resize or relayout
        page.wait_for_function(CHARTS_AT_WIDTH)
        drawn = page.evaluate(RUN_CARD_DRAWN)
        for name, chart in drawn["charts"].items():
            (l, t, r, b), (sl, st, sr, sb) = chart["div"], chart["svg"]
            assert l - 1 <= sl and sr <= r + 1 and t - 1 <= st and sb <= b + 1, (width, name, chart)
            for other, box in drawn["charts"].items():
                assert other == name or not overlaps(chart["svg"], box["svg"]), (width, name, other, drawn["charts"])
            for text, box in drawn["texts"]:
                assert not overlaps(chart["svg"], box), (width, name, text, box, chart)
        page.screenshot(path=str(ROOT / "test-artifacts" / f"train-charts-{'-'.join(map(str, widths))}-{width}.png"), full_page=True)


def rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[k:k + 2], 16) for k in (1, 3, 5))


def test_one_checkpoint_charts_have_whole_steps_and_a_look_per_concept(page, training_server):
    from tests.training_app import excerpt

    python = (ROOT / "model/probes.py").read_text(encoding="utf-8")[:20_000]       # digits, brackets, strings
    runs = [finished_run(training_server, "play.txt", excerpt(20_000)),           # no digit: skipped
            finished_run(training_server, "probes.py", python)]
    looks = []
    for run_id in runs:
        page.goto(f"{training_server}/train?run={run_id}")
        page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
        page.wait_for_function("() => document.getElementById('gtt-chart').data"
                               " && document.getElementById('concepts-chart').data")
        assert_log_axes_readable(page, "#grad-chart")
        assert page.evaluate("document.getElementById('gtt-chart').data[0].x") == [RUN["max_steps"]]
        ticks = page.eval_on_selector_all("#gtt-chart .xtick text", "ts => ts.map(t => t.textContent)")
        assert ticks == [str(RUN["max_steps"])], ticks                  # one column, one whole step
        ticks = page.eval_on_selector_all("#concepts-chart .xtick text", "ts => ts.map(t => t.textContent)")
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
        # As drawn: with Plotly's defaults where a trace leaves a style out.
        traces = page.evaluate("() => document.getElementById('concepts-chart').data.map((t) => [t.name, t.line.color,"
                               " t.line.dash ?? 'solid', t.marker?.color ?? t.line.color, t.marker?.symbol ?? 'circle'])")
        look = {name: (colour, dash, symbol) for name, colour, dash, marker, symbol in traces}
        assert all(marker == colour for _, colour, _, marker, _ in traces)     # the legend shows the marker
        for (a, (ca, *shape_a)), (b, (cb, *shape_b)) in itertools.combinations(look.items(), 2):
            if shape_a == shape_b:                                           # told apart by colour alone
                gap = sum((x - y) ** 2 for x, y in zip(rgb(ca), rgb(cb))) ** 0.5
                assert gap >= DISTINCT_RGB, (a, ca, b, cb)
        looks.append(look)
    play, code = looks
    assert "digit" in code and "digit" not in play                   # the runs list different concepts...
    assert list(play) != list(code)[:len(play)]
    shared = play.keys() & code.keys()
    assert {k: play[k] for k in shared} == {k: code[k] for k in shared}      # ...each in its own look on both


# Each "cell, step N" label's box, the y axis title's, and the chart's (the label's background
# rectangle is its box: the text inside it, with its padding).
LABELS_DRAWN = """() => { const el = document.getElementById('concepts-chart'), box = (e) => {
    const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  return { labels: [...el.querySelectorAll('.annotation .annotation-text-g')].map((g) => box(g.querySelector('rect.bg'))),
           texts: [...el.querySelectorAll('.annotation .annotation-text')].map((t) => t.textContent),
           ytitle: box(el.querySelector('.g-ytitle')), chart: box(el.querySelector('.main-svg')) }; }"""


# Seven cells forming, three of them early, as a real run's do: the labels a reader must tell
# apart, near the y axis.
EARLY_AND_LATE = {"quotes": 200, "string": 300, "comment": 300, "bracket_depth": 500, "line_position": 900,
                  "code_bracket_depth": 1400, "indentation": 2000}
# Six cells forming at one checkpoint (a short run's last is often the first whose units are
# clear), two before it.
SIX_AT_ONCE = {"quotes": 300, "string": 500, "inline_string": 1200, "brackets": 1200, "bracket_depth": 1200,
               "line_start": 1200, "word_start": 1200, "comment": 1200}


def forming_history(formed: dict[str, int]) -> dict:
    """A /concepts answer of a long run (20 checkpoints) in which the cells `formed` names form
    at the steps it gives."""
    steps = [100 * k for k in range(1, 21)]
    concepts = []
    for k, name in enumerate(CONCEPTS):
        at = formed.get(name)
        strength = [(0.62 if at and s >= at else 0.2 + 0.01 * k) for s in steps]
        concepts.append({"concept": name, "description": name, "graded": False, "formed_step": at,
                         "at_start": name in ("whitespace", "vowel"),
                         "best": [{"layer": 0, "quantity": "h", "unit": k, "score": v, "strength": v} for v in strength]})
    return {"text": "x", "steps": steps, "threshold": 0.5, "concepts": concepts, "skipped": {}}


def assert_labels_read_clear(page, url: str, run_id: int, formed: dict[str, int], widths: tuple[int, ...]) -> None:
    """The run's concept history replaced by `formed`'s, loaded at widths[0] and resized through
    `widths`: at each, every "cell, step N" label lies inside the chart, clear of the y axis title
    and of every other label, on one line on a wide plot and two on a narrow one."""
    page.route("**/api/runs/*/concepts", lambda route: route.fulfill(json=forming_history(formed)))
    page.set_viewport_size({"width": widths[0], "height": 900})
    page.goto(f"{url}/train?run={run_id}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
    page.wait_for_function(f"() => document.getElementById('concepts-chart').layout?.annotations?.length === {len(formed)}")
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("() => { const el = document.getElementById('concepts-chart'),"
                               " svg = el.querySelector('.main-svg')?.getBoundingClientRect();"
                               " return svg && Math.round(svg.width) === el.clientWidth && svg.height > 300; }")
        # The labels placed again after the resize's drawing: two frames later.
        page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        page.locator("#concepts-chart").scroll_into_view_if_needed()
        page.screenshot(path=str(ROOT / "test-artifacts" / f"train-cells-forming-{len(formed)}-{width}.png"))
        drawn = page.evaluate(LABELS_DRAWN)
        assert len(drawn["labels"]) == len(formed), drawn
        left, top, right, bottom = drawn["chart"]
        ytitle = drawn["ytitle"]
        for text, (x0, y0, x1, y1) in zip(drawn["texts"], drawn["labels"]):
            assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, (width, text, drawn)
            assert x0 >= ytitle[2] or y1 <= ytitle[1] or y0 >= ytitle[3], (width, text, ytitle)
        one_line = [re.fullmatch(r"\w+ cell, step [\d,]+", t) is not None for t in drawn["texts"]]
        assert all(one_line) if width >= 1000 else not any(one_line), (width, drawn["texts"])
        for (ta, a), (tb, b) in itertools.combinations(zip(drawn["texts"], drawn["labels"]), 2):
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (width, ta, tb, a, b)


def test_the_cells_forming_labels_read_clear_of_the_axis_at_420_px(page, training_server, code_run):
    """At 420 px the "cell, step N" labels (each text left of its arrow) ran over the y axis
    title, out of the chart and over each other. At 420 px every label lies inside the chart,
    clear of the y axis title and of every other label (on a run whose cells form early and
    late, two at one checkpoint), on two lines; at 1280 px on one line, placed the same way;
    back at 420 px, placed again."""
    assert_labels_read_clear(page, training_server, code_run, EARLY_AND_LATE, (420, 1280, 420))


def test_the_labels_of_cells_formed_at_one_checkpoint_stay_apart_at_1280_px(page, training_server, code_run):
    """At 1280 px the labels were staggered by their place in the list (four rows, below and left
    of each point), so cells formed at one checkpoint had theirs over each other. Six forming at
    one checkpoint: at 1280 px (loaded there, after narrowing to 420 and widening again) every
    label is inside the chart, on one line, clear of the others and of the y axis title."""
    assert_labels_read_clear(page, training_server, code_run, SIX_AT_ONCE, (1280, 420, 1280))
