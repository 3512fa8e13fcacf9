"""Browser tests: every page loads, reacts to input, and draws what the API returns.

Chromium (Debian's /usr/bin/chromium) is driven by Python playwright. Without it the tests
skip, unless RNNSCOPE_REQUIRE_BROWSER=1 (CI), when they fail. Screenshots go to
test-artifacts/ for a person to look at; the assertions never depend on them.
"""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Inside the vocabulary of conftest's models (the start of tinyshakespeare).
TEXT = "ROMEO:\nbut soft, what light through yonder window breaks?\nit is the east.\n"

# The pages' colour scales (static/js/common.js), restated so the test checks the page.
DIVERGING = [(-1, (33, 102, 172)), (-0.5, (146, 197, 222)), (0, (247, 247, 247)),
             (0.5, (244, 165, 130)), (1, (178, 24, 43))]
SEQUENTIAL = [(0, (247, 252, 245)), (0.25, (199, 233, 192)), (0.5, (116, 196, 118)),
              (0.75, (35, 139, 69)), (1, (0, 68, 27))]
SURPRISE = [(0, (179, 48, 0)), (0.1, (241, 105, 19)), (0.3, (253, 174, 107)),
            (0.6, (254, 230, 206)), (1, (255, 255, 255))]


def colour_at(stops, v: float) -> tuple[int, int, int]:
    """Linear in RGB between stops, clamped at the ends, rounded half up as JS Math.round."""
    lo, hi = stops[0][0], stops[-1][0]
    x = min(hi, max(lo, v))
    k = 1
    while k < len(stops) - 1 and x > stops[k][0]:
        k += 1
    (x0, c0), (x1, c1) = stops[k - 1], stops[k]
    u = (x - x0) / (x1 - x0)
    return tuple(math.floor(a + u * (b - a) + 0.5) for a, b in zip(c0, c1))


def parse_rgb(css: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def assert_colours(actual_css: list[str], expected: list[tuple[int, int, int]]) -> None:
    assert len(actual_css) == len(expected)
    for t, (css, want) in enumerate(zip(actual_css, expected)):
        got = parse_rgb(css)
        # One unit of slack: float32 in the page vs float64 here can round a .5 either way.
        assert all(abs(g - w) <= 1 for g, w in zip(got, want)), f"character {t}: {css} != rgb{want}"


def decode(encoded: dict) -> np.ndarray:
    """An encoded trace array as the page decodes it (float32): int8 is q * scale, the
    floats are themselves (times scale, 1 as the server sends them)."""
    dtype = {"int8": "<i1", "float16": "<f2", "float32": "<f4"}[encoded["dtype"]]
    q = np.frombuffer(base64.b64decode(encoded["data"]), dtype=dtype).reshape(encoded["shape"])
    return (q.astype(np.float64) * encoded["scale"]).astype(np.float32)


# ---- Browser (the live_server fixture comes from conftest.py) ------------------------------

@pytest.fixture
def api(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as client:
        def call(path: str, body: dict | None = None):
            r = client.get(path) if body is None else client.post(path, json=body)
            assert r.status_code == 200, r.text
            return r.json()
        yield call


def shoot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def plot_data(pg, element_id: str) -> list[dict]:
    return pg.evaluate(f"() => document.getElementById('{element_id}').data")


# ---- Pages ---------------------------------------------------------------------------------

def test_home_lists_every_model_with_links(page, live_server, api):
    models = api("/api/models")
    page.goto(live_server + "/")
    page.wait_for_selector(".model-card[data-model]")
    cards = page.locator(".model-card[data-model]")
    assert cards.count() == len(models)
    for m in models:
        card = page.locator(f'.model-card[data-model="{m["id"]}"]')
        assert m["name"] in card.inner_text()
        assert (f'{m["val_loss"]:.3f}' if m["val_loss"] is not None else "—") in card.inner_text()
        assert card.locator(f'a[href="/explore?model={m["id"]}"]').count() == 1
    page.wait_for_function("() => document.querySelectorAll('#hero-text .ch').length > 0")
    shoot(page, "home")


def test_explorer_colours_text_by_the_selected_neuron(page, live_server, api):
    trace_requests = []
    page.on("request", lambda r: "/trace" in r.url and trace_requests.append(r.url))
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(TEXT)}")
    page.wait_for_function(f"() => document.querySelectorAll('#charmap .ch').length === {len(TEXT)}")
    page.wait_for_function("() => document.getElementById('heatmap').data")

    # The page asks for float16: int8's one scale per array flattened small units (issue 9).
    trace = api("/api/models/lstm/trace", {"text": TEXT, "layers": [1], "quantities": ["h"], "top_k": 5,
                                           "encoding": "float16"})
    h = decode(trace["layers"][0]["quantities"]["h"])                    # (T, H)
    T, H = h.shape

    def span_colours():
        return page.eval_on_selector_all("#charmap .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")

    assert_colours(span_colours(), [colour_at(DIVERGING, v) for v in h[:, 0]])

    # The heatmap holds every neuron: z is (H, T).
    z = np.array(plot_data(page, "heatmap")[0]["z"])
    np.testing.assert_allclose(z, h.T, atol=1e-6)

    # Arrow keys step through neurons and wrap, from data already in the page.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.getElementById('neuron').value === '1'")
    assert_colours(span_colours(), [colour_at(DIVERGING, v) for v in h[:, 1]])
    assert "neuron=1" in page.url
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => document.getElementById('neuron').value === '{H - 1}'")

    # Clicking a heatmap row selects that neuron.
    page.locator("#heatmap").scroll_into_view_if_needed()
    x, y = page.evaluate("""() => {
        const gd = document.getElementById('heatmap'), fl = gd._fullLayout, r = gd.getBoundingClientRect();
        return [r.left + fl._size.l + fl.xaxis.l2p(4), r.top + fl._size.t + fl.yaxis.l2p(3)];
    }""")
    page.mouse.click(x, y)
    page.wait_for_function("() => document.getElementById('neuron').value === '3'")
    assert_colours(span_colours(), [colour_at(DIVERGING, v) for v in h[:, 3]])
    page.wait_for_function("() => document.getElementById('heatmap').layout.shapes[0].y0 === 2.5")
    assert page.evaluate("() => document.getElementById('heatmap').layout.shapes[0].y1") == 3.5
    # "This neuron" stretches the scale to the neuron's own range over the text.
    page.click("#range button[value=fit]")
    m = float(np.abs(h[:, 3]).max())
    assert_colours(span_colours(), [colour_at(DIVERGING, v / m) for v in h[:, 3]])
    assert "range=fit" in page.url
    page.click("#range button[value=unit]")
    assert len(trace_requests) == 1, "switching neurons must not fetch"

    # Hovering a character shows its top-5 predictions and its loss.
    page.hover('#charmap .ch[data-i="2"]')
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    assert tip.locator("tbody tr").count() == 5
    assert f'{trace["loss"][2]:.2f}' in tip.inner_text()
    assert trace["predictions"]["chars"][2][0].replace("\n", "↵").replace(" ", "␣") in tip.inner_text()
    shoot(page, "explore")

    # A gate is drawn on the sequential scale, after one new request.
    page.select_option("#quantity", "f")
    page.wait_for_function("() => document.getElementById('heatmap').data[0].zmin === 0")
    f = decode(api("/api/models/lstm/trace", {"text": TEXT, "layers": [1], "quantities": ["f"], "encoding": "float16"})
               ["layers"][0]["quantities"]["f"])
    assert_colours(span_colours(), [colour_at(SEQUENTIAL, v) for v in f[:, 3]])
    assert len(trace_requests) == 2
    assert "quantity=f" in page.url


def test_explorer_shows_the_api_error_and_can_drop_unknown_characters(page, live_server):
    page.goto(f"{live_server}/explore?model=gru&layer=0&quantity=z&neuron=0&text={quote('abc€d')}")
    status = page.locator("#status[data-state='error']")
    status.wait_for()
    assert "‘€’" in status.inner_text()
    shoot(page, "explore-error")
    page.click("#drop")
    page.wait_for_function("() => document.querySelectorAll('#charmap .ch').length === 4")
    # The box keeps what was typed; the text on screen shows what was left out, and where.
    assert page.input_value("#text") == "abc€d"
    assert page.eval_on_selector_all("#charmap .dropped", "els => els.map(e => e.textContent)") == ["€"]


def test_a_text_too_long_for_a_link_is_left_out_of_it(page, live_server):
    long_text = TEXT * 120                                  # 8,880 characters: over 8,000 encoded
    page.goto(f"{live_server}/explore?model=rnn&layer=0&quantity=h&neuron=1")
    page.locator("#charmap .ch").first.wait_for()
    page.fill("#text", long_text)
    page.click("#read")
    page.wait_for_function(f"() => document.querySelectorAll('#charmap .ch').length === {len(long_text)}")
    assert "text=" not in page.url and "neuron=1" in page.url
    assert "too long" in page.inner_text("#link-note")


def test_sample_colours_output_by_probability_and_follows_temperature(page, live_server, api):
    page.goto(f"{live_server}/sample?model=lstm&prime=ROMEO:&length=60&seed=7&top_k=0&temperature=1")
    page.wait_for_function("() => document.querySelectorAll('#output .ch').length === 60")
    body = {"prime": "ROMEO:", "length": 60, "temperature": 1.0, "top_k": 0, "seed": 7}
    want = api("/api/models/lstm/sample", body)
    got = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.textContent).join('')")
    assert got == want["text"].replace("\n", "↵")
    colours = page.eval_on_selector_all("#output .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert_colours(colours, [colour_at(SURPRISE, p) for p in want["probs"]])

    with page.expect_response(lambda r: r.url.endswith("/api/models/lstm/sample")):
        page.evaluate("""() => { const t = document.getElementById('temperature');
            t.value = '0.5'; t.dispatchEvent(new Event('input')); t.dispatchEvent(new Event('change')); }""")
    cooler = api("/api/models/lstm/sample", {**body, "temperature": 0.5})
    page.wait_for_function("want => [...document.querySelectorAll('#output .ch')].map(e => e.textContent).join('') === want",
                           arg=cooler["text"].replace("\n", "↵"))
    assert page.inner_text("#temperature-out") == "0.50"
    curl = page.inner_text("#curl")
    assert '"temperature": 0.5' in curl and "/api/models/lstm/sample" in curl and '"seed": 7' in curl
    assert "temperature=0.5" in page.url
    shoot(page, "sample")


def test_gradients_overlay_every_cell_and_follow_the_clicked_position(page, live_server, api):
    page.goto(f"{live_server}/gradients?text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    traces = plot_data(page, "grad-chart")
    for model in ("rnn", "gru", "lstm"):
        g = api(f"/api/models/{model}/gradients", {"text": TEXT})
        for layer in g["layers"]:
            h = next(t for t in traces if t["meta"] == [model, layer["layer"], "h"])
            np.testing.assert_allclose(h["y"], layer["h_grad_norm"], rtol=1e-6)
            assert len(h["x"]) == len(TEXT) - 1
            c = [t for t in traces if t["meta"] == [model, layer["layer"], "c"]]
            assert len(c) == (model == "lstm")
        sv = [t for t in plot_data(page, "sv-chart") if t["meta"][0] == model]
        assert len(sv) == sum(len(layer["singular_values"]) for layer in g["layers"])
    layout = page.evaluate("() => document.getElementById('grad-chart').layout")
    assert layout["yaxis"]["type"] == "log"
    sv_layout = page.evaluate("() => document.getElementById('sv-chart').layout")
    assert all(s["y0"] == 1 and s["y1"] == 1 for s in sv_layout["shapes"])
    shoot(page, "gradients")

    # Clicking character 12 explains its prediction: position 11, gradients for k = 0..11.
    page.click('#charmap .ch[data-i="12"]')
    page.wait_for_function("() => document.getElementById('grad-chart').data[0].x.length === 12")
    assert page.input_value("#position") == "11" and "position=11" in page.url
    want = api("/api/models/lstm/gradients", {"text": TEXT, "position": 11})["layers"][0]["h_grad_norm"]
    got = next(t for t in plot_data(page, "grad-chart") if t["meta"] == ["lstm", 0, "h"])["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_gates_scatter_matches_the_api_and_rnn_has_none(page, live_server, api):
    page.goto(f"{live_server}/gates?model=lstm&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('chart').data?.length > 0")
    want = api("/api/models/lstm/gates", {"text": TEXT})
    traces = plot_data(page, "chart")
    assert len(traces) == sum(len(layer["gates"]) for layer in want["layers"])
    for layer in want["layers"]:
        for g in layer["gates"]:
            t = next(t for t in traces if t["meta"] == [g["gate"], layer["layer"]])
            assert t["x"] == g["left"] and t["y"] == g["right"]
    shoot(page, "gates")

    page.select_option("#model", "rnn")
    page.locator("#chart-status[data-state='empty']").wait_for()
    assert "no gates" in page.inner_text("#chart-status")
    assert "model=rnn" in page.url


def test_empty_and_loading_states_are_drawn(page, live_server):
    # No models at all: every page says so and points home, instead of staying blank.
    page.route("**/api/models", lambda route: route.fulfill(json=[]))
    page.goto(live_server + "/")
    empty = page.locator("#models-status[data-state='empty']")
    empty.wait_for()
    assert "No models" in empty.inner_text() and "rnnscope train" in empty.inner_text()
    shoot(page, "home-empty")
    page.goto(live_server + "/explore")
    page.locator("#status[data-state='empty']").wait_for()
    page.unroute("**/api/models")

    # While the server works, a loading state shows; it gives way to the sample.
    held = []
    page.route("**/api/models/*/sample", lambda route: held.append(route))
    page.goto(f"{live_server}/sample?model=gru&length=20&seed=1")
    loading = page.locator("#status[data-state='loading']")
    loading.wait_for()
    assert "gru is writing 20 characters" in loading.inner_text()
    while not held:                           # the handler runs while playwright waits
        page.wait_for_timeout(20)
    held[0].continue_()
    page.wait_for_function("() => document.querySelectorAll('#output .ch').length === 20")
    assert page.locator("#status").is_hidden()
