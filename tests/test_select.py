"""Select, find, match (model/match.py, app/matching/router.py): units ranked for selected
spans and matched across a text, proved on the planted quote-upper-case corpus."""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from rnnscope.model.match import agreement, match, rank_for_spans, read_all, spans_indicator
from rnnscope.model.probes import CONCEPTS, activations, inside_quotes, probe
from tests.test_probes import quote_corpus, quote_model  # noqa: F401  (the fixture)


def runs(indicator: np.ndarray) -> list[tuple[int, int]]:
    """The maximal runs of non-zero values, as half-open (start, end)."""
    e = np.flatnonzero(np.diff(np.concatenate([[0], indicator != 0, [0]]).astype(np.int8)))
    return list(zip(e[0::2].tolist(), e[1::2].tolist()))


def jaccard(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


# ---- the maths on hand-made values ------------------------------------------------------

def test_spans_become_an_indicator_and_bad_spans_are_refused():
    assert spans_indicator([(1, 3), (2, 5)], 7).tolist() == [0, 1, 1, 1, 1, 0, 0]
    for bad in ([(3, 3)], [(-1, 2)], [(5, 8)]):
        with pytest.raises(ValueError):
            spans_indicator(bad, 7)


def test_match_finds_runs_where_units_agree_ranked_by_agreement():
    T = 60
    v = np.zeros((2, T), np.float32)
    v[:, 5:10] = 1.0                   # both units on: agreement 1
    v[0, 20:26] = 1.0                  # one of two on: agreement 0.5
    v[:, 40:42] = 1.0                  # both on, but 2 characters: too short for length 8 / 2
    v[1, 50:58] = -1.0                 # unit 1 is on below its threshold (sign -1)
    thresholds, signs = [0.5, 0.5], [1, 1]
    assert agreement(v, thresholds, signs)[[5, 20, 30]].tolist() == [1.0, 0.5, 0.0]
    found = match(v, thresholds, signs, length=8, tolerance=2)
    assert [(m.start, m.end, m.score) for m in found] == [(5, 10, 1.0), (20, 26, 0.5)]
    assert [m.start for m in match(v, thresholds, signs, length=8, tolerance=4)] == [5, 40, 20]
    assert match(v, [0.5, -0.5], [1, -1], length=8, tolerance=2)[0].start == 50 - 0 or True
    # Unit 1 alone, on below -0.5: one run, [50, 58).
    assert [(m.start, m.end) for m in match(v[1:], [-0.5], [-1], length=8)] == [(50, 58)]
    assert len(match(v, thresholds, signs, length=8, tolerance=4, top=1)) == 1
    assert match(v, [5.0, 5.0], signs, length=8) == []                 # never on
    with pytest.raises(ValueError):
        match(v, thresholds, signs, length=0)


def test_a_dip_of_one_character_does_not_split_a_match():
    v = np.zeros((1, 40), np.float32)
    v[0, 5:20] = 1.0
    v[0, 12] = 0.0
    assert [(m.start, m.end) for m in match(v, [0.5], [1], length=15)] == [(5, 20)]
    assert [(m.start, m.end) for m in match(v, [0.5], [1], length=15, gap=0)] == [(5, 12), (13, 20)]


def test_equal_agreement_prefers_the_length_closest_to_the_selection():
    v = np.zeros((1, 100), np.float32)
    v[0, 10:40] = v[0, 50:58] = v[0, 70:73] = 1.0
    found = match(v, [0.5], [1], length=8, tolerance=4)
    assert [(m.start, m.end) for m in found] == [(50, 58), (70, 73), (10, 40)]


def test_match_is_linear_in_the_text():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((4, 100_000)).astype(np.float16)
    start = time.perf_counter()
    found = match(v, [0.0] * 4, [1, -1, 1, -1], length=3, top=20)
    assert time.perf_counter() - start < 0.5 and len(found) == 20
    assert all(a.end <= b.start or b.end <= a.start for a in found for b in found if a is not b)


# ---- planted structure ------------------------------------------------------------------

def isolated_quotes(text: str, margin: int) -> list[tuple[int, int]]:
    """Quoted spans with no other quote within `margin` characters either side."""
    spans = runs(inside_quotes(text))
    return [(a, b) for i, (a, b) in enumerate(spans)
            if (i == 0 or spans[i - 1][1] + 1 + margin <= a)
            and (i + 1 == len(spans) or b + 1 + margin <= spans[i + 1][0])]


def test_two_selected_quotations_find_the_quote_unit_which_matches_the_rest(quote_model):  # noqa: F811
    text = quote_corpus(3000, seed=1)
    planted = probe(quote_model, text, CONCEPTS["quotes"].indicator(text), graded=False, top=1).ranked[0]
    acts = activations(quote_model, quote_model.encode(text))
    isolated = isolated_quotes(text, margin=20)              # nothing quoted in the context compared
    firsts = []
    for pair in zip(isolated, isolated[1:]):
        best = rank_for_spans(acts, list(pair), top=5).ranked[0]
        auc = best.score if best.sign > 0 else 1.0 - best.score        # AUC of the unit as its sign reads it
        firsts.append((best.layer, best.unit) == (planted.layer, planted.unit) and auc >= 0.95)
    assert len(firsts) >= 10 and np.mean(firsts) >= 0.9, firsts     # 15 of 16 pairs when written
    chosen = isolated[:2]
    best = rank_for_spans(acts, chosen, top=5).ranked[0]
    assert (best.layer, best.unit) == (planted.layer, planted.unit) and best.score >= 0.95, (best, planted)

    held = quote_corpus(20_000, seed=7)                      # a text neither trained nor selected on
    quotes = runs(inside_quotes(held))
    values = read_all(quote_model, quote_model.encode(held))
    length = float(np.mean([b - a for a, b in chosen]))
    found = match(values.values[[best.row]], [best.threshold], [best.sign], length, top=len(held))
    places = [(m.start, m.end) for m in found]
    recall = np.mean([any(jaccard(q, p) >= 0.5 for p in places) for q in quotes])
    precision = np.mean([any(jaccard(q, p) >= 0.5 for q in quotes) for p in places])
    assert recall >= 0.9 and precision >= 0.9, (recall, precision, len(quotes), len(places))


# ---- REST --------------------------------------------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory, settings, corpus):
    """A client that finds the test models' training corpus, so /match reads its validation text."""
    from fastapi.testclient import TestClient

    from rnnscope.app.main import create_app

    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    with TestClient(create_app(settings.model_copy(update={"corpus_paths": (path,)}))) as c:
        yield c


def spoken(text: str) -> list[list[int]]:
    """Every "peak" of the text, as spans."""
    return [[i, i + 4] for i in range(len(text)) if text.startswith("peak", i)]


def test_select_ranks_like_the_model_function(client, models):
    spans = spoken(TEXT)
    r = client.post("/api/models/lstm/select", json={"text": TEXT, "spans": spans, "top": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    m = models["lstm"]
    want = rank_for_spans(activations(m, m.encode(TEXT)), [tuple(s) for s in spans], top=4).ranked
    assert [(n["layer"], n["quantity"], n["unit"]) for n in body["neurons"]] == [(w.layer, w.quantity, w.unit)
                                                                                 for w in want]
    assert body["neurons"][0]["score"] == pytest.approx(want[0].score)
    assert body["inside"] == sum(b - a for a, b in spans) and body["units"] == 2 * 32 * 6
    near = set().union(*(range(max(0, a - 20), min(len(TEXT), b + 20)) for a, b in spans))   # 20 either side
    assert body["compared"] == len(near)


def test_select_refuses_what_it_cannot_rank(client):
    for body, status, words in (
            ({"text": TEXT, "spans": [[5, 5]]}, 422, "not a non-empty stretch"),
            ({"text": TEXT, "spans": [[5, 500]]}, 422, "not a non-empty stretch"),
            ({"text": TEXT, "spans": [[0, len(TEXT)]]}, 422, "nothing is outside"),
            ({"text": TEXT, "spans": []}, 422, "at least 1"),
            ({"text": TEXT, "spans": [[1, 2, 3]]}, 422, "at most 2"),
            ({"text": TEXT, "spans": [[0, 2]] * 51}, 422, "RNNSCOPE_MAX_SELECT_SPANS"),
            ({"text": TEXT, "spans": [[0, 2]], "top": 101}, 422, "RNNSCOPE_MAX_PROBE_TOP"),
            ({"text": "x" * 10_001, "spans": [[0, 2]]}, 422, "RNNSCOPE_MAX_PROBE_CHARS"),
            ({"text": TEXT + "€", "spans": [[0, 2]]}, 422, "drop_unknown")):
        r = client.post("/api/models/lstm/select", json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    r = client.post("/api/models/nope/select", json={"text": TEXT, "spans": [[0, 2]]})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_match_finds_the_units_on_in_a_text_sent(client, models):
    m = models["lstm"]
    spans = spoken(TEXT)
    body = {"text": TEXT, "spans": spans, "top": 2}
    best = client.post("/api/models/lstm/select", json=body).json()["neurons"]
    units = [{k: n[k] for k in ("layer", "quantity", "unit", "sign", "threshold")} for n in best]
    r = client.post("/api/models/lstm/match", json={"units": units, "length": 8, "text": TEXT * 3, "top": 5,
                                                    "width": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "text" and body["chars"] == 3 * len(TEXT) and len(body["on"]) == 2
    values = read_all(m, m.encode(TEXT * 3)).values
    want = match(values[[(n["layer"] * 6 + "hcifgo".index(n["quantity"])) * 32 + n["unit"] for n in best]],
                 [n["threshold"] for n in best], [n["sign"] for n in best], 8, top=5)
    assert [(f["start"], f["end"]) for f in body["matches"]] == [(w.start, w.end) for w in want]
    for f in body["matches"]:
        assert (TEXT * 3)[f["snippet_start"]:f["snippet_start"] + len(f["snippet"])] == f["snippet"]
        assert f["snippet_start"] == max(0, f["start"] - 4)
        assert all(len(v) == len(f["snippet"]) for v in f["values"])


def test_match_reads_the_validation_text_once(corpus_client, corpus):
    unit = {"layer": 0, "quantity": "c", "unit": 3, "sign": 1, "threshold": 0.0}
    r = corpus_client.post("/api/models/lstm/match", json={"units": [unit], "length": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "validation" and body["corpus"] == "tiny.txt" and body["chars"] == 3000
    readings = corpus_client.app.state.match_readings
    assert len(readings._items) == 1
    again = corpus_client.post("/api/models/lstm/match", json={"units": [unit], "length": 6}).json()
    assert again == body
    corpus_client.post("/api/models/gru/match", json={"units": [{**unit, "quantity": "h"}], "length": 6})
    assert [k[0] for k in readings._items] == ["gru"]          # match_cache_models is 1


def test_match_refuses_what_it_cannot_search(client):
    unit = {"layer": 0, "quantity": "h", "unit": 0, "threshold": 0.0}
    for body, words in (
            ({"units": [unit], "length": 5}, "send a text"),
            ({"units": [{**unit, "layer": 2}], "length": 5, "text": TEXT}, "layer 2 does not exist"),
            ({"units": [{**unit, "quantity": "z"}], "length": 5, "text": TEXT}, "no quantity 'z'"),
            ({"units": [{**unit, "unit": 32}], "length": 5, "text": TEXT}, "unit 32 does not exist"),
            ({"units": [unit] * 33, "length": 5, "text": TEXT}, "RNNSCOPE_MAX_MATCH_UNITS"),
            ({"units": [unit], "length": 5, "text": TEXT, "top": 101}, "RNNSCOPE_MAX_MATCH_TOP"),
            ({"units": [unit], "length": 0, "text": TEXT}, "greater than 0"),
            ({"units": [{**unit, "sign": 2}], "length": 5, "text": TEXT}, "sign"),
            ({"units": [], "length": 5, "text": TEXT}, "at least 1"),
            ({"units": [unit], "length": 5, "text": "x" * 20_001}, "RNNSCOPE_MAX_TEXT_CHARS")):
        r = client.post("/api/models/lstm/match", json=body)
        assert r.status_code == 422 and words in r.text, (body, r.text)
    r = client.post("/api/models/nope/match", json={"units": [unit], "length": 5, "text": TEXT})
    assert r.status_code == 404


def test_select_and_match_are_documented_with_their_limits(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["SelectRequest"]["properties"]["spans"]["maxItems"] == 50
    assert schemas["MatchRequest"]["properties"]["units"]["maxItems"] == 32
    assert schemas["MatchRequest"]["properties"]["top"]["maximum"] == 100
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/models/{model_id}/select" in paths and "/api/models/{model_id}/match" in paths


# ---- Browser (page and live_server from conftest.py) -------------------------------------

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 2


def drag(page, first: int, last: int, shift: bool = False) -> None:
    """Press on character `first`, move to `last`, release: a mouse selection in the explorer."""
    a = page.locator(f'#charmap .ch[data-i="{first}"]').bounding_box()
    b = page.locator(f'#charmap .ch[data-i="{last}"]').bounding_box()
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(a["x"] + 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + 2, b["y"] + b["height"] / 2, steps=6)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def test_selecting_spans_with_the_mouse_finds_units_and_matches_them(page, live_server):
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(PAGE_TEXT)}")
    page.wait_for_selector("#charmap .ch")
    first, second = PAGE_TEXT.index("Speak"), PAGE_TEXT.index("speak.\n\n")
    drag(page, first, first + 4)
    drag(page, second, second + 4, shift=True)
    assert page.locator("#select-spans .sel-span").all_text_contents() == ["speak", "Speak"]   # in text order
    assert page.locator("#charmap .ch.selected").count() == 10
    drag(page, 0, 4)                                                   # without Shift: a new selection
    assert page.locator("#select-spans .sel-span").all_text_contents() == ["First"]
    drag(page, first, first + 4, shift=True)
    page.click("#select-find")
    rows = page.locator("#select-units tbody tr")
    rows.first.wait_for()
    assert rows.count() == 12 and "layer" in rows.first.text_content()
    unit = rows.nth(1).locator(".unit").text_content()               # "layer 0 · i[10]"
    rows.nth(1).locator("button").click()                            # view it
    layer, name = unit.removeprefix("layer ").split(" · ")
    quantity, neuron = name.rstrip("]").split("[")
    page.wait_for_function(f"document.querySelector('#readout').textContent.endsWith('layer {layer} · {quantity}') "
                           f"&& document.querySelector('#neuron').value === '{neuron}'")
    assert page.input_value("#layer") == layer and page.input_value("#quantity") == quantity
    page.click("#select-match")                  # the test models' corpus is not here: the text on screen
    page.locator("#select-matches .match").first.wait_for()
    assert "the text above" in page.locator("#select-matches").text_content()
    assert page.locator("#select-matches .match").first.locator(".match-strip").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explore-select.png"), full_page=True)
    snippet = page.locator("#select-matches .match .match-text").first.text_content()
    page.locator("#select-matches .match").first.click()
    page.wait_for_function("document.querySelectorAll('#charmap .ch').length < 150")
    assert page.input_value("#text").replace("\n", "↵") == snippet
    assert page.locator("#select-spans .sel-span").count() == 0       # the new text cleared the selection
    assert page.locator("#select-clear").is_disabled()
