"""Page defects seen on a trial (issue 19, "Also seen on that trial"), each checked in Chromium
where it showed: requests asked right the first time, buttons that wait until they can act,
headlines that fit the numbers drawn, and text on charts and boxes that neither overlaps nor
hides. Overlaps are measured on the rendered SVG (Plotly's text elements) and DOM boxes.

Debian's /usr/bin/chromium driven by Python playwright; without it the tests skip, unless
RNNSCOPE_REQUIRE_BROWSER=1 (CI), when they fail.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import watched_page

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 2

# Pairs of boxes, one from each selector, closer than `gap` pixels (a negative gap: overlapping
# by more than that).
OVERLAPS = """([first, second, gap]) => {
  const boxes = (sel) => [...document.querySelectorAll(sel)].map((e) => [e, e.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0 && r.height > 0);
  const hits = [];
  for (const [a, r] of boxes(first)) for (const [b, s] of boxes(second)) {
    if (a === b) continue;
    const near = r.left < s.right + gap && s.left < r.right + gap
      && r.top < s.bottom + gap && s.top < r.bottom + gap;
    if (near) {
      hits.push([a.textContent, b.textContent]);
    }
  }
  return hits;
}"""


@pytest.fixture(scope="module")
def tab(browser):
    """One tab for the module, so plotly.js is fetched once, not once a test; refused() below
    counts refused requests itself."""
    with watched_page(browser, timeout_ms=30_000) as (pg, errors):
        yield pg, errors


@pytest.fixture
def page(tab):
    """The module's tab at laptop size; an uncaught script error fails the test. listen() adds
    a listener for this test only."""
    pg, errors = tab
    errors.clear()
    pg.set_viewport_size({"width": 1280, "height": 900})
    added: list = []

    def listen(event, handler):
        pg.on(event, handler)
        added.append((event, handler))

    pg.listen = listen
    yield pg
    for event, handler in added:
        pg.remove_listener(event, handler)
    pg.goto("about:blank")
    assert not errors, errors


def overlaps(page, first: str, second: str, gap: float = -0.5) -> list[list[str]]:
    return page.evaluate(OVERLAPS, [first, second, gap])


def shoot(pg, name: str, selector: str | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target = pg.locator(selector) if selector else pg
    target.screenshot(path=str(ARTIFACTS / f"defects-{name}.png"))


def refused(page) -> list[str]:
    """Every API answer of 400 or more the page receives from now on (the list grows)."""
    seen: list[str] = []
    page.listen("response", lambda r: r.status >= 400 and "/api/" in r.url
                and seen.append(f"{r.status} {r.url}"))
    return seen


def drag(page, first: int, last: int) -> None:
    """Press on character `first`, move to `last`, release: a mouse selection in the explorer."""
    a = page.locator(f'#charmap .ch[data-i="{first}"]').bounding_box()
    b = page.locator(f'#charmap .ch[data-i="{last}"]').bounding_box()
    page.mouse.move(a["x"] + 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + 2, b["y"] + b["height"] / 2, steps=6)
    page.mouse.up()


# ---- 1. Match and top contexts: the text sent at once when the corpus is not here --------------

def test_match_asks_right_the_first_time(page, live_server):
    """The test models' corpus is not on the server: match (and top contexts, below) send the
    text on screen with their first request, instead of being refused (a red 422 in the
    console) and retrying with it."""
    errors = refused(page)
    posts: list[dict] = []
    page.listen("request", lambda r: r.method == "POST" and re.search(r"/(match|contexts)$", r.url)
            and posts.append(json.loads(r.post_data)))
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(PAGE_TEXT)}")
    page.wait_for_selector("#charmap .ch")
    start = PAGE_TEXT.index("Speak")
    drag(page, start, start + 4)
    page.click("#select-find")
    page.locator("#select-units tbody tr").first.wait_for()
    page.click("#select-match")
    page.locator("#select-matches .match").first.wait_for()
    assert len(posts) == 1 and posts[0]["text"] == PAGE_TEXT
    assert errors == []


def test_top_contexts_ask_right_the_first_time(page, live_server):
    errors = refused(page)
    posts: list[dict] = []
    page.listen("request", lambda r: r.method == "POST" and r.url.endswith("/contexts")
                and posts.append(json.loads(r.post_data)))
    page.goto(f"{live_server}/probe?model=lstm&concept=upper&text={quote(PAGE_TEXT)}")
    item = page.locator(".neuron-item").first
    item.wait_for()
    item.locator('[data-act="contexts"]').click()
    item.locator(".snippet").first.wait_for()
    assert len(posts) == 1 and posts[0]["text"] == PAGE_TEXT
    assert errors == []


# ---- 2 and 12. /states: the fixed-point button waits; its character box reads ----------------

def test_find_fixed_points_waits_for_the_projection(page, live_server):
    """The search starts from the projection's states: until it is drawn the button is disabled."""
    held = []
    page.route("**/api/models/*/states", lambda route: held.append(route))
    page.goto(f"{live_server}/states?model=lstm&text={quote(PAGE_TEXT)}")
    deadline = time.monotonic() + 20
    while not held:                                  # the page has asked for its projection
        assert time.monotonic() < deadline, "the page never asked for a projection"
        page.wait_for_timeout(20)
    button = page.locator("#fp-find")
    assert button.is_disabled()                      # nothing to search from yet: not clickable
    shoot(page, "states-loading", ".fp-controls")
    held[0].continue_()
    page.unroute("**/api/models/*/states")
    page.wait_for_function("() => document.getElementById('chart').dataset.points")
    assert button.is_enabled() and button.inner_text() == "Find fixed points"


def test_the_fixed_point_character_box_is_readable_and_shows_a_held_space(page, live_server):
    fixed_bodies: list[dict] = []
    page.listen("request", lambda r: r.url.endswith("/fixed-points")
                and fixed_bodies.append(json.loads(r.post_data)))
    page.goto(f"{live_server}/states?model=lstm&text={quote(PAGE_TEXT)}")
    page.wait_for_function("() => document.getElementById('chart').dataset.points")
    button = page.locator("#fp-find")
    box = page.locator("#fp-char").bounding_box()
    assert box["height"] >= 32 and box["width"] >= 36      # a box for one character, readable
    page.fill("#fp-char", " ")
    assert page.input_value("#fp-char") == "␣"             # a held space is shown, not blank
    button.click()
    page.wait_for_function("() => document.getElementById('chart').dataset.fixed !== ''")
    assert fixed_bodies[-1]["char"] == " "
    shoot(page, "states-fixed", ".fp-controls")


# ---- 5 and 8. /compare: a headline from the numbers drawn; axis titles clear of their ticks -----

def test_compare_headline_is_the_horizons_drawn(page, live_server):
    """The heading asks; the answer under it is computed from the horizons in the table."""
    page.goto(f"{live_server}/compare?models=lstm,gru,rnn&text={quote(PAGE_TEXT)}")
    page.locator("#verdict:not([hidden])").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#horizon-table tbody tr').length === 3")
    rows = page.eval_on_selector_all("#horizon-table tbody tr", """rows => rows.map(r => [
      r.cells[0].textContent.trim(), parseFloat(r.cells[1].querySelector('b').textContent),
      r.cells[2].textContent.split('·').map(parseFloat)])""")
    horizon = {m: h for m, h, _ in rows}
    layers = {m: per for m, _, per in rows}
    verdict = page.inner_text("#verdict")
    heading = page.inner_text("h1")
    assert "LSTM remember longer than the RNN" not in heading

    best = max(horizon, key=horizon.get)
    assert verdict.startswith(f"On this text the {best.upper()} remembers longest")
    for model, h in horizon.items():                      # every number said is a number drawn
        assert f"{h:.1f}" in verdict
    # A layer where a model behind on average reaches further is named; none is invented.
    order = sorted(horizon, key=horizon.get, reverse=True)
    for layer in range(len(layers[best])):
        swapped = any(layers[b][layer] > layers[a][layer] and horizon[a] > horizon[b]
                      for i, a in enumerate(order) for b in order[i + 1:])
        assert (f"Layer {layer} alone ranks them otherwise" in verdict) == swapped, (layer, layers, verdict)
    shoot(page, "compare-head", ".page-head")


def test_compare_axis_titles_clear_their_ticks_with_real_subscripts(page, bundled_server):
    """With the bundled models, whose gradients reach 10⁻¹⁸: the widest tick labels."""
    page.goto(f"{bundled_server}/compare?models=lstm,gru,rnn&text={quote(PAGE_TEXT)}")
    page.wait_for_selector("#chars-chart .y3tick text")
    page.wait_for_selector("#horizon-chart .ytick text")

    titles = page.eval_on_selector_all("#chars-chart .g-ytitle text, #chars-chart .g-y2title text, "
                                       "#chars-chart .g-y3title text",
                                       "ts => ts.map(t => t.textContent.replaceAll('\u200b', ''))")
    assert "‖∂L/∂xk‖" in titles and not any("_" in t for t in titles)        # a subscript, not x_k
    for axis in ("y", "y2", "y3"):
        # Clear by a few pixels: touching reads as one word ("‖∂L/∂x_k‖10⁻²" on the trial).
        title, ticks = f"#chars-chart .g-{axis}title text", f"#chars-chart .{axis}tick text"
        assert overlaps(page, title, ticks, 3) == [], axis
    assert overlaps(page, "#horizon-chart .g-ytitle text", "#horizon-chart .ytick text", 3) == []
    shoot(page, "compare-chars", "#chars-chart")


# ---- 6. The navigation on a phone -------------------------------------------------------------

def test_navigation_collapses_into_a_menu_on_a_narrow_screen(page, live_server):
    page.goto(f"{live_server}/sample")
    wide_links = page.locator(".site-nav a").count()
    assert page.locator(".site-header").bounding_box()["height"] < 70      # one row on a laptop
    assert not page.locator(".nav-menu").is_visible()
    page.set_viewport_size({"width": 420, "height": 800})
    assert page.locator(".site-header").bounding_box()["height"] < 70      # still one row at 420 px
    assert not page.locator(".site-nav").is_visible()
    menu = page.locator(".nav-menu summary")
    assert menu.is_visible()
    menu.click()
    links = page.locator(".nav-menu nav a")
    assert links.count() == wide_links and all(links.nth(k).is_visible() for k in range(wide_links))
    assert page.locator(".nav-menu nav a[aria-current='page']").inner_text() == "Sample"
    shoot(page, "nav-420")


# ---- 7. Passage titles shown whole ----------------------------------------------------------

TITLE_FITS = """() => {
  const s = document.getElementById('passage'), st = getComputedStyle(s);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
  const text = s.selectedOptions[0].textContent;
  const room = s.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight) - 20;  // the arrow
  return [text, ctx.measureText(text).width, room];
}"""


@pytest.mark.parametrize("path", ["/explore?model=lstm", "/gradients?models=lstm"])
def test_the_passage_menu_shows_a_whole_title(page, live_server, path):
    page.goto(live_server + path)
    page.wait_for_function("() => document.getElementById('passage').options.length > 1")
    page.select_option("#passage", index=1)
    text, width, room = page.evaluate(TITLE_FITS)
    assert text.startswith("Written by the model itself")        # the longest title there is
    assert width <= room, (text, width, room)


# ---- 10. /learn: labels, mode bar and ticks ---------------------------------------------------

def test_learn_power_iteration_labels_do_not_pile_up(page, live_server):
    page.goto(f"{live_server}/learn?chapter=3")
    page.wait_for_selector("#power-chart .textpoint text")
    labels = "#power-chart .textpoint text"
    assert page.locator(labels).count() >= 3 and overlaps(page, labels, labels) == []
    shoot(page, "learn-3", "#power-chart")


def test_learn_highway_legend_clear_of_the_mode_bar(page, live_server):
    page.goto(f"{live_server}/learn?chapter=6")
    page.wait_for_selector("#highway-chart .legend .traces")
    page.hover("#highway-chart .nsewdrag")                    # the mode bar shows on hover
    assert overlaps(page, "#highway-chart .modebar-btn", "#highway-chart .legend .traces") == []
    shoot(page, "learn-6", "#highway-chart")


def test_learn_line_cell_right_axis_has_round_ticks(page, bundled_server):
    page.goto(f"{bundled_server}/learn?chapter=7")
    page.wait_for_selector("#cell-chart .y2tick text")
    ticks = page.eval_on_selector_all("#cell-chart .y2tick text", "ts => ts.map(t => t.textContent)")
    values = [float(t.replace("−", "-")) for t in ticks]
    assert len(values) >= 3 and all(v == int(v) for v in values), ticks
    steps = {round(b - a, 6) for a, b in zip(values, values[1:])}
    assert len(steps) == 1 and steps.pop() in (1, 2, 5, 10, 20, 25, 50, 100), ticks
    shoot(page, "learn-7", "#cell-chart")


@pytest.fixture(scope="module")
def bundled_server(tmp_path_factory):
    """The app with the bundled models (chapter 7 reads unit 194 of the bundled LSTM)."""
    from rnnscope.app.main import create_app
    from rnnscope.app.settings import Settings
    from rnnscope.model.bundled import bundled_paths
    from tests.conftest import TEST_HOSTS, serving

    if "lstm" not in bundled_paths():
        pytest.skip("the bundled lstm is not in model/weights")
    settings = Settings(data_dir=tmp_path_factory.mktemp("bundled"), allowed_hosts=TEST_HOSTS)
    with serving(create_app(settings)) as url:
        yield url


# ---- 12. /sample: the curl command's URL never broken inside a word -------------------------

LINE_STARTS = """(needle) => {
  const code = document.querySelector('#curl code');
  const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
  const chars = [];                            // [node, offset] of every character, in order
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (let i = 0; i < n.length; i++) chars.push([n, i]);
  }
  const text = chars.map(([n, i]) => n.data[i]).join('');
  const at = text.indexOf(needle);
  if (at < 0) return null;
  const starts = [];                          // the URL's characters that begin a new line
  let top = null;
  for (let k = at; k < at + needle.length; k++) {
    const range = document.createRange();
    range.setStart(chars[k][0], chars[k][1]);
    range.setEnd(chars[k][0], chars[k][1] + 1);
    const t = Math.round(range.getBoundingClientRect().top);
    if (top !== null && t > top + 2) starts.push(text[k]);
    top = t;
  }
  return starts;
}"""


@pytest.mark.parametrize("width", [1280, 420])
def test_the_curl_url_wraps_only_between_path_segments(page, live_server, width):
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/sample?model=lstm&seed=7&length=20")
    url = f"{live_server}/api/models/lstm/sample"
    page.wait_for_function("(u) => document.querySelector('#curl code').textContent.includes(u)", arg=url)
    starts = page.evaluate(LINE_STARTS, url)
    assert starts is not None and all(c == "/" for c in starts), starts
    assert url in page.inner_text("#curl")                    # copied as one piece
    shoot(page, f"sample-curl-{width}", "#curl")


# ---- 9 and 11. /train: the vocabulary names invisible characters; the heatmap's axis reads ----

# Frequent checkpoints, rare samples: 25 columns in the gradient heatmap within seconds.
TRAIN_SETTINGS = {"checkpoint_every_steps": 16, "sample_every_steps": 400, "flush_seconds": 0.1}
# A few milliseconds a step.
TRAIN_FORM = {"hidden_size": "16", "num_layers": "1", "seq_length": "16", "batch_size": "4",
              "learning_rate": "0.01", "max_steps": "400"}


@pytest.fixture(scope="module")
def training_server(tmp_path_factory):
    """An app that trains, served in this process (so it serves this checkout's pages)."""
    from tests.conftest import serving
    from tests.training_app import build_app

    with serving(build_app(tmp_path_factory.mktemp("train-data"), **TRAIN_SETTINGS)) as url:
        yield url


@pytest.fixture(scope="module")
def form_feed_corpus(tmp_path_factory) -> Path:
    """An excerpt of tinyshakespeare with a form feed between its pages, as old texts have."""
    from tests.training_app import excerpt

    path = tmp_path_factory.mktemp("upload") / "pages.txt"
    text = excerpt(12_000)
    path.write_text(text[:6000] + "\x0c\n" + text[6000:], encoding="utf-8")
    return path


def test_train_vocabulary_names_invisible_characters(page, training_server, form_feed_corpus):
    page.goto(f"{training_server}/train")
    page.set_input_files("#file", str(form_feed_corpus))
    page.locator("#config-card:not([hidden])").wait_for()
    chip = page.locator("#vocab .v").filter(has=page.locator("b", has_text=re.compile("^FF$")))
    assert chip.count() == 1                                        # form feed shown by its name
    assert chip.get_attribute("title").startswith('"\\f"')
    blank = page.eval_on_selector_all("#vocab .v b", "bs => bs.filter(b => !b.textContent.trim() "
                                      "|| b.getBoundingClientRect().width < 4).map(b => b.textContent)")
    assert blank == []                                              # no chip without a visible name
    shoot(page, "train-vocab", "#vocab")


def test_train_gradient_heatmap_axis_reads_after_a_cancel(page, training_server, form_feed_corpus):
    """A run cancelled at an odd step and resumed: 25 checkpoints, one of them not round. The
    step axis's labels lie flat, apart from each other and from the axis title."""
    page.goto(f"{training_server}/train")
    page.set_input_files("#file", str(form_feed_corpus))
    page.locator("#config-card:not([hidden])").wait_for()
    for name, value in TRAIN_FORM.items():
        page.fill(f"#{name}", value)
    page.click("#start")
    page.wait_for_function("() => (document.getElementById('loss-chart').data?.[0]?.x || []).length >= 60")
    page.click("#cancel")
    page.locator("#run-status[data-status='cancelled']").wait_for()
    page.click("#resume")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=120_000)
    page.wait_for_function("() => (document.getElementById('gtt-chart').data?.[0]?.x || []).length >= 25")
    page.locator("#gtt-chart").scroll_into_view_if_needed()
    chart = "#gtt-chart"
    assert overlaps(page, f"{chart} .g-xtitle text", f"{chart} .xtick text", 3) == []
    assert overlaps(page, f"{chart} .g-ytitle text", f"{chart} .ytick text", 3) == []
    assert overlaps(page, f"{chart} .xtick text", f"{chart} .xtick text") == []
    rotated = page.eval_on_selector_all(f"{chart} .xtick text", "ts => ts.filter(t => /rotate\\((?!0)/.test("
                                        "t.getAttribute('transform') || '')).length")
    assert rotated == 0                                             # labels lie flat
    labels = page.eval_on_selector_all(f"{chart} .xtick text", "ts => ts.map(t => t.textContent)")
    ticks = [int(t.replace(",", "")) for t in labels]
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert len(ticks) >= 3 and len(steps) == 1, ticks              # evenly spaced steps...
    step = steps.pop()
    assert all(t % step == 0 for t in ticks), ticks                # ...and round
    assert str(step).rstrip("0") in ("1", "2", "25", "5"), ticks
    shoot(page, "train-gtt", chart)


# ---- 13. Log axes: enough labelled ticks to read a value off, whatever the range -------------------

LOG_AXES = """sel => { const el = document.querySelector(sel), fl = el._fullLayout;
  return Object.keys(fl).filter((k) => /^yaxis\\d*$/.test(k) && fl[k].type === 'log').map((k) => ({
    drawn: [...el.querySelectorAll(`.${fl[k]._id}tick text`)].map((t) => t.textContent.replaceAll('\\u200b', '')),
    vals: fl[k].tickmode === 'array' ? fl[k].tickvals : null, text: fl[k].ticktext ?? null })); }"""
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def label_value(label: str) -> float:
    """2×10⁻⁴, 10⁻⁴ or 0.5: the number a tick label the pages write stands for."""
    m = re.fullmatch(r"(?:([\d.]+)×)?10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)", label)
    return float(m.group(1) or 1) * 10 ** int(m.group(2).translate(SUPERSCRIPTS)) if m else float(label)


def readable(axes: list[dict]) -> None:
    """Each axis draws three labels or more, and a label the page wrote says its tick's value."""
    assert axes, "no log axis"
    for axis in axes:
        assert len(set(axis["drawn"])) >= 3, axis["drawn"]
        if axis["vals"] is not None:
            assert [label_value(t) for t in axis["text"]] == pytest.approx(axis["vals"], rel=1e-9), axis


def test_gradients_log_axes_are_readable_on_a_short_text(page, live_server):
    """A short text's gradients span a decade or two: one label ("1", or 10⁻⁴ and 10⁻³) was all
    a fixed dtick of one decade drew."""
    page.goto(f"{live_server}/gradients?models=lstm,gru,rnn&text=Speak")      # about 1 and 2 decades
    page.wait_for_function("() => document.getElementById('sv-chart').data?.length > 0")
    readable(page.evaluate(LOG_AXES, "#grad-chart"))
    readable(page.evaluate(LOG_AXES, "#sv-chart"))
    shoot(page, "gradients-short", "#grad-chart")


def test_learn_clipping_norm_axis_is_readable(page, live_server):
    page.goto(f"{live_server}/learn?chapter=5")
    page.wait_for_selector("#clip-chart .ytick text")
    axes = page.evaluate(LOG_AXES, "#clip-chart")
    assert len(axes) == 1
    readable(axes)
    shoot(page, "learn-5", "#clip-chart")
