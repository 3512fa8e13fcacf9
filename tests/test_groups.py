"""Neurons in groups (model/groups.py, app/groups/router.py): NMF of a layer's units, proved
on a corpus with two planted, independent features."""
from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from rnnscope.model.groups import factorise, layer_values
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.probes import bracket_depth, inside_quotes
from rnnscope.model.train import TrainConfig, train


def two_feature_corpus(n_chars: int, seed: int) -> str:
    """Words whose letters say two things at once: upper case inside double quotes, p-w
    (instead of a-h) inside parentheses. After each word a quote and a bracket each toggle
    with probability 0.3, drawn apart, so the two features are independent (r ~ 0) and may
    overlap or interleave: 'ab" CD (RS" pq) ...'."""
    rng = np.random.default_rng(seed)
    quoted = bracketed = False
    out, size = [], 0
    while size < n_chars:
        word = "".join(rng.choice(list("pqrstuvw" if bracketed else "abcdefgh"), rng.integers(1, 5)))
        piece = word.upper() if quoted else word
        if rng.random() < 0.3:
            quoted = not quoted
            piece += '"'
        if rng.random() < 0.3:
            bracketed = not bracketed
            piece += "(" if bracketed else ")"
        piece += "\n" if rng.random() < 0.1 else " "
        out.append(piece)
        size += len(piece)
    return "".join(out)


def features(text: str) -> dict[str, np.ndarray]:
    return {"quotes": inside_quotes(text), "brackets": (bracket_depth(text) > 0).astype(np.float32)}


@pytest.fixture(scope="module")
def two_feature_model() -> LanguageModel:
    """A 1x16 LSTM trained for 600 steps (about 2 s) on the two-feature corpus."""
    with threadpool_limits(1):
        return train(two_feature_corpus(40_000, seed=0), ModelConfig("lstm", 1, 16, 1),
                     TrainConfig(batch_size=16, seq_length=64, max_steps=600, learning_rate=1e-2,
                                 eval_every=600, seed=0)).model


def correlations(tracks: np.ndarray, feature: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(tracks[:, k], feature)[0, 1] for k in range(tracks.shape[1])])


# ---- planted structure --------------------------------------------------------------------

def test_two_planted_features_become_two_groups(two_feature_model):
    text = two_feature_corpus(5000, seed=1)                  # held out: neither trained nor tuned on
    found = features(text)
    assert abs(np.corrcoef(found["quotes"], found["brackets"])[0, 1]) < 0.05           # independent
    with threadpool_limits(1):
        values = layer_values(two_feature_model, two_feature_model.encode(text), 0, "h")
        # The model learnt both: a unit follows each (else a failure here is training's, not NMF's).
        for name, f in found.items():
            assert np.abs(correlations(values, f)).max() >= 0.9, name
        # Three groups: one per planted feature and one for what the characters themselves drive.
        groups = factorise(values, 3)
    r = {name: correlations(groups.tracks, f) for name, f in found.items()}
    best = {name: int(np.argmax(np.abs(v))) for name, v in r.items()}
    # A group may be the feature or its complement (outside the quotes): a unit low inside
    # quotes is as much a quote unit, and NMF's parts are whatever is non-negative.
    assert best["quotes"] != best["brackets"], r
    for name, k in best.items():
        assert abs(r[name][k]) >= 0.8, (name, r)
        other = "brackets" if name == "quotes" else "quotes"
        assert abs(r[other][k]) < 0.3, (name, r)               # each group is one feature, not a mix
    assert 0 < groups.error < 1 and groups.share.sum() == pytest.approx(1.0)


def test_factorise_is_deterministic_and_tracks_a_new_text(two_feature_model):
    m = two_feature_model
    text, other = two_feature_corpus(2000, seed=2), two_feature_corpus(2000, seed=3)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = factorise(layer_values(m, m.encode(text), 0, "h"), 4)
        b = factorise(layer_values(m, m.encode(text), 0, "h"), 4)
        assert np.array_equal(a.weights, b.weights) and np.array_equal(a.tracks, b.tracks)
        assert a.weights.max(axis=1).tolist() == [1.0] * 4             # the heaviest unit weighs 1
        assert [u for u, _ in a.heaviest(0, 3)] == np.argsort(-a.weights[0])[:3].tolist()
        # Tracks over the text fitted, recomputed with the components held, agree with the fit's.
        again = a.track(layer_values(m, m.encode(text), 0, "h"))
        assert np.corrcoef(again[:, 0], a.tracks[:, 0])[0, 1] > 0.99
        assert a.track(layer_values(m, m.encode(other), 0, "h")).shape == (len(other), 4)
        with pytest.raises(ValueError):
            factorise(np.ones((50, 4), np.float32), 2)                   # constant units: nothing to group
        with pytest.raises(ValueError):
            factorise(np.zeros((50, 4), np.float32), 5)                  # more groups than units


# ---- REST --------------------------------------------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory, settings, corpus):
    """A client that finds the test models' training corpus, so /groups fits on its validation text."""
    from fastapi.testclient import TestClient

    from rnnscope.app.main import create_app

    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    with TestClient(create_app(settings.model_copy(update={"corpus_paths": (path,), "groups_cache_size": 2}))) as c:
        yield c


def test_groups_fit_the_validation_text_and_are_kept(corpus_client, models, corpus):
    body = {"layer": 1, "quantity": "h", "components": 4, "shown": 300, "top": 5}
    r = corpus_client.post("/api/models/lstm/groups", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["source"] == "validation" and got["corpus"] == "tiny.txt" and got["chars"] == 3000
    assert not got["cached"] and 0 < got["error"] < 1 and got["explained"] == pytest.approx(1 - got["error"] ** 2)
    assert got["text"] == corpus[-3000:][:300] and len(got["groups"]) == 4
    # The same as model/groups.py on the same values.
    m = models["lstm"]
    with threadpool_limits(1):
        want = factorise(layer_values(m, m.encode(corpus[-3000:]), 1, "h"), 4)
    for k, g in enumerate(got["groups"]):
        assert [u["unit"] for u in g["units"]] == [u for u, _ in want.heaviest(k, 5)]
        assert g["units"][0]["weight"] == 1.0 and len(g["track"]) == 300
        assert np.allclose(g["track"], want.tracks[:300, k], atol=2e-3)
    again = corpus_client.post("/api/models/lstm/groups", json=body).json()
    assert again["cached"] and again["groups"] == got["groups"]
    # A passage sent: tracks over it with the validation text's groups.
    sent = corpus_client.post("/api/models/lstm/groups", json={**body, "text": TEXT}).json()
    assert sent["cached"] and sent["text"] == TEXT and len(sent["groups"][0]["track"]) == len(TEXT)
    assert sent["groups"][0]["units"] == got["groups"][0]["units"]
    # groups_cache_size is 2: a third (model, layer, quantity, K) drops the least recent.
    for k in (2, 3):
        corpus_client.post("/api/models/lstm/groups", json={**body, "components": k})
    kept = corpus_client.app.state.groups_cache._items
    assert [key[4] for key in kept] == [2, 3]


def test_groups_fit_the_text_sent_when_the_corpus_is_elsewhere(client):
    r = client.post("/api/models/gru/groups", json={"layer": 0, "quantity": "z", "components": 3, "text": TEXT})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["source"] == "text" and got["corpus"] is None and got["chars"] == len(TEXT)
    assert all(len(g["track"]) == len(TEXT) and min(g["track"]) >= 0 for g in got["groups"])
    assert client.post("/api/models/gru/groups", json={"layer": 0, "quantity": "z", "components": 3,
                                                       "text": TEXT}).json()["cached"]


def test_groups_refuse_what_they_cannot_factorise(client):
    ok = {"layer": 0, "quantity": "h", "components": 4, "text": TEXT}
    for body, words in (
            ({"layer": 0}, "send a text"),
            ({**ok, "layer": 2}, "layer 2 does not exist"),
            ({**ok, "quantity": "z"}, "no quantity 'z'"),
            ({**ok, "components": 0}, "greater than or equal to 1"),
            ({**ok, "components": 33}, "RNNSCOPE_MAX_GROUPS_COMPONENTS"),
            ({**ok, "text": "x" * 20_001}, "RNNSCOPE_MAX_TEXT_CHARS"),
            ({**ok, "text": "Hi"}, "at least as many characters"),
            ({**ok, "components": 1, "text": "a"}, "nothing to factorise"),      # one character: constant
            ({**ok, "text": TEXT + "€"}, "drop_unknown"),
            ({**ok, "components": "4"}, "integer"),
            ({**ok, "colour": 1}, "Extra inputs")):
        r = client.post("/api/models/lstm/groups", json=body)
        assert r.status_code == 422 and words in r.text, (body, r.text)
    small = {"layer": 0, "quantity": "h", "components": 33, "text": TEXT}
    from rnnscope.app.main import create_app
    from fastapi.testclient import TestClient
    r = client.post("/api/models/nope/groups", json=ok)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    with TestClient(create_app(client.app.state.settings.model_copy(update={"max_groups_components": 64}))) as c:
        r = c.post("/api/models/lstm/groups", json=small)                # 33 allowed, but the layer has 32
        assert r.status_code == 422 and "at most 32" in r.text


def test_groups_are_documented_with_their_limits(client):
    doc = client.get("/openapi.json").json()
    props = doc["components"]["schemas"]["GroupsRequest"]["properties"]
    assert props["components"]["maximum"] == 32 and "/api/models/{model_id}/groups" in doc["paths"]


# ---- Browser (page and live_server from conftest.py) -------------------------------------

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 2


def reds(page) -> np.ndarray:
    """The red channel of each character's background in the explorer's text."""
    found = page.eval_on_selector_all("#charmap .ch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    return np.array([int(c.split("(")[1].split(",")[0]) for c in found], float)


def test_a_group_colours_the_text_by_its_track_and_a_unit_opens_its_neuron(page, live_server):
    page.goto(f"{live_server}/explore?model=lstm&layer=1&quantity=h&neuron=0&text={quote(PAGE_TEXT)}")
    page.wait_for_selector("#charmap .ch")
    page.fill("#groups-k", "3")
    page.click("#groups-run")
    rows = page.locator("#groups-list .group-row")
    rows.first.wait_for()
    assert rows.count() == 3 and rows.first.locator(".unit-chip").count() >= 1
    page.locator(".group-pick").nth(1).click()
    page.wait_for_function("new URLSearchParams(location.search).get('group') === '1'")
    assert "groups=3" in page.url and "group 1" in page.text_content("#coloured-by")
    want = page.request.post(f"{live_server}/api/models/lstm/groups", data={
        "layer": 1, "quantity": "h", "components": 3, "text": PAGE_TEXT, "top": 8}).json()["groups"][1]
    track = np.clip(np.array(want["track"]) / want["high"], 0, 1)
    darkness = 255 - reds(page)                                   # white (0) to dark green
    assert len(darkness) == len(track) and np.corrcoef(darkness, track)[0, 1] > 0.99
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explore-groups.png"), full_page=True)
    # The address brings the group back.
    page.goto(page.url)
    page.wait_for_function("document.querySelector('.group-pick[aria-pressed=\"true\"]')?.dataset.k === '1'")
    assert np.corrcoef(255 - reds(page), track)[0, 1] > 0.99
    chip = page.locator("#groups-list .group-row").nth(1).locator(".unit-chip").first
    unit = chip.text_content().lstrip("#")
    chip.click()
    page.wait_for_function(f"document.querySelector('#neuron').value === '{unit}'")
    page.wait_for_function("!new URLSearchParams(location.search).get('group')")
    assert f"h[{unit}]" in page.text_content("#coloured-by")
    assert page.locator(".group-pick[aria-pressed=true]").count() == 0
