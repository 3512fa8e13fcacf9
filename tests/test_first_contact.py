"""Issue 9: what a first visit shows, and the defects a first visit ran into. Browser tests
(Debian's chromium through playwright; they skip without it, as in test_pages.py) and the
per-model passages route."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tests.conftest import serving
from tests.test_pages import DIVERGING, assert_colours, colour_at, decode

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def shoot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# ---- Sample page ---------------------------------------------------------------------------

def test_sample_page_counts_overlapping_copied_spans_once(page, live_server):
    """/memorised may answer 147-171 and 150-174 for one copied passage: the page counts one."""
    def memorised(route):
        route.fulfill(json={"available": True, "corpus": "tiny.txt", "count": 4, "memorised_chars": 40,
                            "spans": [{"start": 5, "end": 25, "corpus_position": 100},
                                      {"start": 8, "end": 30, "corpus_position": 103},
                                      {"start": 30, "end": 35, "corpus_position": 300},
                                      {"start": 50, "end": 60, "corpus_position": 7}]})

    page.route("**/api/models/*/memorised", memorised)
    page.goto(f"{live_server}/sample?model=lstm&length=80&seed=3&min_span=5")
    page.wait_for_selector("dt.memorised-row")
    marked = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.classList.contains('memorised'))")
    assert [i for i, m in enumerate(marked) if m] == list(range(5, 35)) + list(range(50, 60))
    assert "2 spans of 5+ characters, 40 characters (50%)" in page.locator("#sample-stats").inner_text()


def test_sample_page_curl_carries_the_seed_the_server_drew(page, live_server):
    with page.expect_response(lambda r: r.url.endswith("/api/models/gru/sample")) as answer:
        page.goto(f"{live_server}/sample?model=gru&length=30")
    seed = answer.value.json()["seed"]
    page.wait_for_function("() => document.querySelectorAll('#output .ch').length === 30")
    page.wait_for_function("seed => document.getElementById('curl').textContent.includes(`\"seed\": ${seed}`)",
                           arg=seed)
    curl = page.inner_text("#curl")
    body = json.loads(re.search(r"-d '(.*)'", curl, re.S).group(1))
    # The command reproduces the text on screen.
    again = httpx.post(f"{live_server}/api/models/gru/sample", json=body, timeout=30).json()
    shown = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.textContent).join('')")
    assert again["text"].replace("\n", "↵") == shown


# ---- A server with a second LSTM of another depth -------------------------------------------

# Inside the vocabulary of conftest's models (the start of tinyshakespeare).
TEXT = "ROMEO:\nbut soft, what light through yonder window breaks?\nit is the east.\n"


# A corpus of code: its model knows '/', which tinyshakespeare has none of.
CODE = "".join(f'url_{k} = "https://example.com/stories/{k % 7}.html"  # page {k}: fetch(url_{k})\n'
               f'if not url_{k}.startswith("http"):\n    raise ValueError(url_{k})\n\n' for k in range(120))
URL = "https://example.com/stories/x.html"


@pytest.fixture(scope="module")
def more_models(tmp_path_factory, data_dir, corpus):
    """conftest's models; run-2, an LSTM of one layer (theirs have two) as a training run
    adds; code, an LSTM trained on CODE; and both corpora in <data_dir>/corpora, where the
    server finds a model's corpus by its sha256. Served on its own."""
    from rnnscope.app.main import create_app
    from rnnscope.app.settings import Settings
    from rnnscope.model.checkpoint import save_model
    from rnnscope.model.network import ModelConfig
    from rnnscope.model.train import TrainConfig, train

    root = tmp_path_factory.mktemp("more-models")
    (root / "models").mkdir()
    (root / "corpora").mkdir()
    for f in (data_dir / "models").glob("*.safetensors"):
        shutil.copy(f, root / "models" / f.name)
    (root / "corpora" / "head.txt").write_text(corpus, encoding="utf-8")
    (root / "corpora" / "code.txt").write_text(CODE, encoding="utf-8")
    quick = TrainConfig(batch_size=4, seq_length=16, max_steps=5, eval_every=5)
    with threadpool_limits(1):
        run = train(corpus, ModelConfig("lstm", 1, 16, 1), quick, corpus_name="tinyshakespeare.txt")
        code = train(CODE, ModelConfig("lstm", 1, 16, 2), quick, corpus_name="code.txt")
    save_model(run.model, root / "models" / "run-2.safetensors")
    save_model(code.model, root / "models" / "python.safetensors")
    with serving(create_app(Settings(data_dir=root, load_bundled=False))) as url:
        yield url


def swatch_colours(pg, selector: str) -> dict[str, str]:
    """model id -> the background of its chip's swatch."""
    return pg.evaluate(f"""() => Object.fromEntries([...document.querySelectorAll('{selector} label')].map(
        (l) => [l.querySelector('input').value, getComputedStyle(l.querySelector('.swatch')).backgroundColor]))""")


def css_colour(pg, colour: str) -> str:
    return pg.evaluate("c => { const d = document.createElement('div'); d.style.color = c; document.body.append(d); "
                       "const v = getComputedStyle(d).color; d.remove(); return v; }", colour)


# ---- Gradients page ------------------------------------------------------------------------

# Per y axis of a chart: its dtick (None: ticks where the page put them) and the labels drawn.
Y_AXES = """sel => { const el = document.querySelector(sel), fl = el._fullLayout;
  return Object.keys(fl).filter((k) => /^yaxis\\d*$/.test(k)).map((k) => [fl[k].tickmode === 'array' ? null : fl[k].dtick,
    [...el.querySelectorAll(`.${fl[k]._id}tick text`)].map((t) => t.textContent.replaceAll('\u200b', ''))]); }"""


def test_gradients_grid_lines_are_what_the_caption_says(page, live_server):
    page.goto(f"{live_server}/gradients?text={quote(TEXT * 3)}")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    axes = page.evaluate(Y_AXES, "#grad-chart")
    assert axes and all(len(labels) >= 3 for _, labels in axes), axes         # a value can be read off each
    ticks = {dtick for dtick, _ in axes}
    caption = page.inner_text("#grad-scale")
    if len(ticks) == 1 and isinstance(k := ticks.pop(), int):              # a grid line every 10^k, on every panel
        factor = "10" if k == 1 else "10" + "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for d in str(k))
        assert f"each labelled grid line down is a factor of {factor} smaller" in caption
    else:                                                                   # each panel its own
        assert caption == "Log scale: equal distances up are equal factors; each panel is labelled to fit its own range."


def test_model_colours_agree_and_every_model_has_a_legend_entry(page, more_models):
    page.goto(f"{more_models}/gradients?models=lstm,run-2&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    chips = swatch_colours(page, "#models")
    traces = page.evaluate("() => document.getElementById('grad-chart').data")
    for model in ("lstm", "run-2"):
        lines = [t for t in traces if t["meta"][0] == model]
        assert lines, model
        assert {css_colour(page, t["line"]["color"]) for t in lines} == {chips[model]}, model
        assert any(t.get("showlegend", True) for t in lines), f"{model} has no legend entry"
    assert chips["lstm"] != chips["run-2"]
    rows = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#summary tbody tr')].map(
        (tr) => [tr.dataset.model, getComputedStyle(tr.querySelector('.swatch')).backgroundColor]))""")
    assert rows == {m: chips[m] for m in ("lstm", "run-2")}
    shoot(page, "gradients-two-lstms")

    # The Compare page colours each model as the Gradients page does.
    page.goto(f"{more_models}/compare?models=lstm,run-2&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('chars-chart').data?.length > 0")
    assert swatch_colours(page, "#models") == chips
    for t in page.evaluate("() => document.getElementById('chars-chart').data"):
        if t.get("legendgroup") in chips and "line" in t:
            assert css_colour(page, t["line"]["color"]) == chips[t["legendgroup"]]


# ---- Explorer ------------------------------------------------------------------------------

def heatmap_point(pg, row: int, column: int = 4) -> tuple[float, float]:
    """Page coordinates of one cell of the explorer's heatmap."""
    return tuple(pg.evaluate("""([row, column]) => {
        const gd = document.getElementById('heatmap'), fl = gd._fullLayout, r = gd.getBoundingClientRect();
        return [r.left + fl._size.l + fl.xaxis.l2p(column), r.top + fl._size.t + fl.yaxis.l2p(row)];
    }""", [row, column]))


def test_a_heatmap_click_selects_the_clicked_row_right_after_hovering_another(page, live_server):
    """Plotly reports the last hovered point with a click, and throttles hovering to one per
    50 ms: a click soon after hovering another row used to select that row."""
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('heatmap').data")
    page.locator("#heatmap").scroll_into_view_if_needed()
    for hovered, clicked in ((10, 3), (20, 27), (5, 6), (30, 1), (12, 13)):
        page.mouse.move(*heatmap_point(page, hovered))
        page.mouse.click(*heatmap_point(page, clicked))
        page.wait_for_timeout(200)
        assert page.input_value("#neuron") == str(clicked), f"hovered {hovered}, clicked {clicked}"


def test_a_failed_read_clears_the_sidebar_and_says_why(page, live_server):
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(TEXT)}")
    page.wait_for_function(f"() => document.querySelectorAll('#charmap .ch').length === {len(TEXT)}")
    assert str(len(TEXT)) in page.inner_text("#text-stats")
    page.fill("#text", "abc€d")
    page.click("#read")
    page.locator("#status[data-state='error']").wait_for()
    stats = page.inner_text("#text-stats")
    assert str(len(TEXT)) not in stats and "Mean loss" not in stats
    assert "€" in stats
    assert page.locator("#variable-neurons .chip").count() == 0


# ---- Passages from each model's own corpus -------------------------------------------------

def test_each_model_offers_passages_of_its_own_corpus(more_models, corpus):
    from rnnscope.model.data import split

    lstm = httpx.get(f"{more_models}/api/models/lstm/passages").json()
    assert lstm["corpus"] == "head.txt"
    assert [p["part"] for p in lstm["passages"]] == ["validation"] * 3 + ["training"]
    train, val = split(corpus, 0.1)
    assert all(p["text"] in val for p in lstm["passages"][:3])
    assert corpus.startswith(lstm["passages"][3]["text"])
    assert all(p["text"].endswith("\n") and len(p["text"]) >= 300 for p in lstm["passages"])
    code = httpx.get(f"{more_models}/api/models/python/passages").json()
    assert code["corpus"] == "code.txt"
    assert code["passages"] and all(p["text"] in CODE for p in code["passages"])
    assert httpx.get(f"{more_models}/api/models/nope/passages").status_code == 404


def test_without_its_corpus_a_model_offers_a_passage_it_wrote_itself(live_server, models):
    """conftest's models trained on a head of tinyshakespeare that is on no corpus path."""
    answer = httpx.get(f"{live_server}/api/models/gru/passages").json()
    assert answer["corpus"] is None
    [passage] = answer["passages"]
    assert passage["part"] == "sample" and "itself" in passage["title"]
    assert passage["text"] and set(passage["text"]) <= set(models["gru"].vocab.chars)
    assert httpx.get(f"{live_server}/api/models/gru/passages").json() == answer      # the same each visit


def test_the_python_corpus_is_looked_for():
    """It ships with the bundled models: nothing beside the checkout is needed."""
    from rnnscope.app.inference.corpus_index import CorpusLibrary
    from rnnscope.app.settings import Settings

    assert "python-stdlib.txt.gz" in [p.name for p in CorpusLibrary(Settings()).candidates()]


def test_the_explorer_opens_on_the_models_own_text_and_its_liveliest_neuron(page, more_models):
    passages = httpx.get(f"{more_models}/api/models/python/passages").json()["passages"]
    page.goto(f"{more_models}/explore?model=python")
    page.wait_for_function("() => document.getElementById('heatmap').data")
    assert page.input_value("#text") == passages[0]["text"]
    assert "Citizen" not in page.input_value("#text")
    assert [o.strip() for o in page.locator("#passage option").all_inner_texts()][1:] == [p["title"] for p in passages]
    # h of the top layer, and the unit that varies most over the passage.
    assert page.input_value("#quantity") == "h" and page.input_value("#layer") == "1"
    trace = httpx.post(f"{more_models}/api/models/python/trace", json={
        "text": passages[0]["text"], "layers": [1], "quantities": ["h"], "encoding": "float16"}, timeout=30).json()
    h = decode(trace["layers"][0]["quantities"]["h"]).astype(np.float64)
    assert page.input_value("#neuron") == str(int(h.var(axis=0).argmax()))
    assert page.locator("#variable-neurons .chip").first.get_attribute("aria-pressed") == "true"
    assert f"neuron={h.var(axis=0).argmax()}" in page.url

    # Another model's passage gives way to this model's own when the model changes.
    page.select_option("#model", "lstm")
    page.wait_for_function("t => document.getElementById('text').value === t",
                           arg=httpx.get(f"{more_models}/api/models/lstm/passages").json()["passages"][0]["text"])
    shoot(page, "explore-first-view")


def test_c_past_its_range_is_coloured_on_the_neurons_own_scale(page, live_server):
    """The bundled LSTM's c runs to ±100 and more; conftest's small one does not, so its
    answer is made 40 times louder on the way to the page."""
    loud = 40.0

    def louder(route):
        response = route.fetch()
        data = response.json()
        for layer in data["layers"]:
            if "c" in layer["quantities"]:
                layer["quantities"]["c"]["scale"] *= loud
        route.fulfill(response=response, json=data)

    page.route("**/api/models/lstm/trace", louder)
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=c&neuron=3&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('heatmap').data")
    encoded = httpx.post(f"{live_server}/api/models/lstm/trace", json={
        "text": TEXT, "layers": [1], "quantities": ["c"], "encoding": "float16"},
        timeout=30).json()["layers"][0]["quantities"]["c"]
    encoded["scale"] *= loud
    c = decode(encoded)                                              # (T, H) as the page holds it

    def own(column):                                                 # 1st-99th percentiles, symmetric
        s = np.sort(column)
        lo, hi = s[int(np.floor(0.01 * (len(s) - 1)))], s[int(np.ceil(0.99 * (len(s) - 1)))]
        return max(abs(float(lo)), abs(float(hi)))

    past = [j for j in range(c.shape[1]) if np.abs(c[:, j]).max() > 1 + 1e-3]
    assert 3 in past
    spans = page.eval_on_selector_all("#charmap .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    m = own(c[:, 3])
    assert_colours(spans, [colour_at(DIVERGING, v / m) for v in c[:, 3]])
    assert len({s for s in spans}) > 5, "the text shows the neuron's variation, not one clamped colour"
    assert "1st–99th percentile" in page.inner_text("#range-hint")
    heat = page.evaluate("() => document.getElementById('heatmap').data[0]")
    assert (heat["zmin"], heat["zmax"]) == (-1, 1)
    z = np.array(heat["z"])
    for j in range(c.shape[1]):
        want = c[:, j] / own(c[:, j]) if j in past else c[:, j]
        np.testing.assert_allclose(z[j], want, atol=1e-5)
    np.testing.assert_allclose(np.array(heat["customdata"]), c.T, atol=1e-5)  # the hover reads true values
    # "−1 to +1" clamps as before.
    page.click("#range button[value=unit]")
    assert_colours(page.eval_on_selector_all("#charmap .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)"),
                   [colour_at(DIVERGING, v) for v in c[:, 3]])
    assert "range=unit" in page.url


# ---- Characters a model does not know -------------------------------------------------------

def test_unknown_characters_are_named_and_models_that_know_them_offered(page, more_models):
    page.goto(f"{more_models}/explore?model=lstm&layer=0&quantity=h&neuron=0&text={quote(URL)}")
    status = page.locator("#status[data-state='error']")
    status.wait_for()
    page.locator("#status button[data-model]").first.wait_for()
    assert "‘/’ ×4" in status.inner_text()
    offered = page.eval_on_selector_all("#status button[data-model]", "els => els.map(e => e.dataset.model)")
    assert offered == ["python"]                                       # the only vocabulary with '/'
    shoot(page, "explore-unknown")
    page.click("#status button[data-model=python]")
    page.wait_for_function(f"() => document.querySelectorAll('#charmap .ch').length === {len(URL)}")
    assert page.input_value("#model") == "python" and "model=python" in page.url
    assert page.input_value("#text") == URL


def test_dropping_characters_shows_which_and_where(page, more_models):
    page.goto(f"{more_models}/explore?model=lstm&layer=0&quantity=h&neuron=0&text={quote(URL)}")
    page.locator("#drop").click()
    kept = URL.replace("/", "")
    page.wait_for_function(f"() => document.querySelectorAll('#charmap .ch').length === {len(kept)}")
    assert page.eval_on_selector_all("#charmap .ch", "els => els.map(e => e.textContent).join('')") == kept
    # Each run of removed characters sits where it was, between the characters read.
    shown = page.eval_on_selector_all("#charmap .ch, #charmap .dropped",
                                      "els => els.map(e => e.classList.contains('dropped') ? `[${e.textContent}]` : e.textContent).join('')")
    assert shown == "https:[//]example.com[/]stories[/]x.html"
    assert "‘/’ ×4" in page.inner_text("#dropped-note")
    assert page.input_value("#text") == URL and "drop=1" in page.url     # the link reads it the same way
    shoot(page, "explore-dropped")
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#charmap .dropped').length === 3")


# ---- Home -----------------------------------------------------------------------------------

def test_home_suggests_training_and_the_quote_cell_when_the_python_model_is_here(page, live_server, more_models):
    page.goto(live_server + "/")
    page.wait_for_selector(".model-card[data-model]")
    cards = page.eval_on_selector_all(".views .view-card:not([hidden])", "els => els.map(e => e.getAttribute('href'))")
    assert cards[0].startswith("/explore?model=")                # no python model: the explorer first
    assert "/train" in cards
    assert page.locator("#start-quote").is_hidden()

    page.goto(more_models + "/")
    page.wait_for_selector(".model-card[data-model=python]")
    page.wait_for_function("() => !document.getElementById('start-quote').hidden")
    first = page.locator(".views .view-card:not([hidden])").first
    assert "quote cell" in first.inner_text()
    # One click from the picture of the quote cell to the live explorer on that neuron and a
    # passage full of strings (docs/analyses.md, "Karpathy's cells in Python source").
    href = first.get_attribute("href")
    assert href.startswith("/explore?model=python&layer=1&quantity=h&neuron=221&text=")
    text = parse_qs(urlsplit(href).query)["text"][0]
    assert text.count("'") >= 10 and text.endswith("\n")
    picture = first.locator("img")
    assert picture.get_attribute("src") == "/static/img/python-string-card.png"
    picture.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    shoot(page, "home-python")


def test_the_gradients_page_opens_on_the_first_models_own_text(page, more_models):
    passages = httpx.get(f"{more_models}/api/models/python/passages").json()["passages"]
    page.goto(f"{more_models}/gradients?models=python")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    assert page.input_value("#text") == passages[0]["text"]
    assert page.locator("#passage option").count() == len(passages) + 1


def test_gates_probe_and_compare_open_on_the_models_own_passages(page, more_models):
    def passages(model):
        return httpx.get(f"{more_models}/api/models/{model}/passages", timeout=30).json()["passages"]

    def text_becomes(text):
        page.wait_for_function("t => document.getElementById('text').value === t", arg=text)

    code, shakespeare = passages("python"), passages("lstm")
    page.goto(f"{more_models}/gates?model=python")
    text_becomes("\n".join(p["text"] for p in code))                 # all of them: steadier fractions
    assert [o.strip() for o in page.locator("#passage option").all_inner_texts()][2:] == [p["title"] for p in code]
    page.wait_for_function("() => document.getElementById('chart').data?.length > 0")
    page.select_option("#model", "lstm")                              # another model's text gives way
    text_becomes("\n".join(p["text"] for p in shakespeare))

    page.goto(f"{more_models}/probe?model=python&concept=string")
    text_becomes("\n".join(p["text"] for p in code[:2]))
    page.select_option("#model", "lstm")
    text_becomes("\n".join(p["text"] for p in shakespeare[:2]))
    page.goto(f"{more_models}/probe?model=python&text={quote(URL)}")    # a text of one's own stays
    page.select_option("#model", "lstm")
    page.wait_for_function("t => document.getElementById('passage').options[1]?.dataset.text === t",
                           arg=shakespeare[0]["text"])
    assert page.input_value("#text") == URL

    page.goto(f"{more_models}/compare?models=python")
    text_becomes(code[0]["text"])
    page.locator("#models input[value=lstm]").check()                 # the first ticked model's, in the list
    text_becomes(shakespeare[0]["text"])


# ---- A new user's trial: headings, menus, unknown characters and labels that say what is shown ----

def selected_passage(pg) -> tuple[str, str | None]:
    """The passage menu's chosen option: its title and the text it stands for."""
    return tuple(pg.eval_on_selector("#passage", "s => [s.selectedOptions[0].textContent, "
                                                 "s.selectedOptions[0].dataset.text ?? null]"))


def test_gates_heading_names_only_the_scatter_shown(page, more_models):
    """A gated model's scatter, then the RNN's "no gates": the heading no longer names the GRU."""
    page.goto(f"{more_models}/gates?model=gru&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('chart').data?.length > 0")
    assert page.inner_text("#chart-title").endswith(f"{len(TEXT)} characters")
    page.select_option("#model", "rnn")
    page.wait_for_function("() => document.getElementById('chart-status').textContent.includes('no gates')")
    assert page.inner_text("#chart-title") == "Saturation per gate"
    assert page.locator("#chart").is_hidden()


def test_gates_passage_menu_names_the_text_in_the_box(page, more_models):
    passages = httpx.get(f"{more_models}/api/models/lstm/passages").json()["passages"]
    assert len(passages) > 1
    page.goto(f"{more_models}/gates?model=lstm")
    page.wait_for_function("() => document.getElementById('chart').data?.length > 0")
    title, text = selected_passage(page)                  # all of them, and the menu says so
    assert title == f"All {len(passages)} passages, one after another"
    assert text == page.input_value("#text") == "\n".join(p["text"] for p in passages)
    page.select_option("#passage", index=2)
    assert selected_passage(page) == (passages[0]["title"], passages[0]["text"]) and page.input_value("#text") == passages[0]["text"]
    page.locator("#text").press("End")
    page.locator("#text").press_sequentially("!")         # a text of one's own is no passage
    assert selected_passage(page) == ("Pick a passage…", None)
    shoot(page, "gates-own-text")


def test_gradients_passage_menu_gives_way_to_a_typed_text(page, more_models):
    passages = httpx.get(f"{more_models}/api/models/lstm/passages").json()["passages"]
    page.goto(f"{more_models}/gradients?models=lstm")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    assert selected_passage(page) == (passages[0]["title"], passages[0]["text"])
    page.fill("#text", "Speak, speak.")
    assert selected_passage(page) == ("Pick a passage…", None)
    page.fill("#text", passages[0]["text"])               # and names a passage pasted back whole
    assert selected_passage(page)[0] == passages[0]["title"]


def test_gradients_offer_to_leave_out_characters_a_model_does_not_know(page, more_models):
    """The Shakespeare LSTM beside the code model on a line of code: the page names what the LSTM
    lacks (never the API's advice), and one click has it read the text without them, the curve
    at the places of the characters it read, for the same prediction as the code model."""
    text = 'if not url_3.startswith("http"):\n    raise ValueError(url_3)'
    chars = list(text)
    unknown = set(text) - set(httpx.get(f"{more_models}/api/models/lstm").json()["vocab"])
    assert ")" in unknown and not set(text) - set(httpx.get(f"{more_models}/api/models/python").json()["vocab"])
    page.goto(f"{more_models}/gradients?models=lstm,python&text={quote(text)}")
    page.wait_for_selector("#drop")
    status, row = page.inner_text("#status"), page.inner_text("#summary tr[data-model=lstm]")
    assert "drop_unknown" not in page.inner_text("body")
    for c in unknown:
        assert f"‘{c}’" in status and f"‘{c}’" in row
    assert status.startswith("lstm does not know")
    shoot(page, "gradients-unknown")

    page.click("#drop")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.some((t) => t.meta[0] === 'lstm')")
    assert "drop=1" in page.url
    # The last character is one the LSTM does not know: both explain the last one they both know.
    position = max(i for i in range(len(chars) - 1) if chars[i + 1] not in unknown)
    assert page.inner_text("#pos-label") == str(position)
    assert "The last character, ‘)’, is not in the vocabulary of lstm" in page.inner_text("#status")
    kept = [i for i in range(position + 1) if chars[i] not in unknown]
    want = httpx.post(f"{more_models}/api/models/lstm/gradients", timeout=30,
                      json={"text": text, "position": len(kept) - 1, "drop_unknown": True}).json()
    assert want["target"] == chars[position + 1]
    traces = page.evaluate("() => document.getElementById('grad-chart').data.map((t) => [t.meta, t.x, t.y])")
    for layer in want["layers"]:
        x, y = next((x, y) for meta, x, y in traces if meta == ["lstm", layer["layer"], "h"])
        assert x == kept and y == pytest.approx(layer["h_grad_norm"], rel=1e-6)
    assert all(x == list(range(position + 1)) for meta, x, _ in traces if meta[0] == "python")
    assert "read without" in page.inner_text("#summary tr[data-model=lstm]")
    struck = page.eval_on_selector_all("#charmap .ch", "s => s.filter((e) => e.style.textDecoration === 'line-through')"
                                                       ".map((e) => Number(e.dataset.i))")
    assert struck == [i for i, c in enumerate(chars) if c in unknown]
    shoot(page, "gradients-unknown-left-out")

    page.fill("#text", text + " ")                        # another text: asked again, as typed
    page.click("#compute")
    page.wait_for_selector("#drop")
    assert "drop=1" not in page.url


def test_compare_gate_labels_are_whole(page, more_models):
    """The slanted labels under the gate bars ("python L0 i") are inside the chart, not cut at its foot."""
    text = "if not url.startswith:\n    raise ValueError\n"
    page.goto(f"{more_models}/compare?models=lstm,python&text={quote(text)}")
    page.wait_for_function("() => document.getElementById('gates-chart').data?.some((t) => t.name.startsWith('python'))")
    page.wait_for_selector("#gates-chart .xtick text")
    cut = page.evaluate("""() => { const box = document.querySelector('#gates-chart .main-svg').getBoundingClientRect();
      return [...document.querySelectorAll('#gates-chart .xtick text')].filter((t) => {
        const r = t.getBoundingClientRect();
        return r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5; })
        .map((t) => t.textContent); }""")
    labels = page.eval_on_selector_all("#gates-chart .xtick text", "ts => ts.map((t) => t.textContent)")
    assert any(t.startswith("python L0") for t in labels) and cut == [], cut
