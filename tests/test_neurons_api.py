"""The neuron routes: probe, contexts, intervene, saliency, horizon, memorised; each
against the model function it wraps, and each refusal a clear 4xx."""
from __future__ import annotations

import base64
import gc
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.main import create_app
from rnnscope.model.attribution import ablate, losses, memory_horizon, saliency
from rnnscope.model.probes import CONCEPTS, probe
from rnnscope.model.sample import sample
from tests.training_app import Server

TEXT = ('First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n'
        'First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n')


def decode(enc: dict) -> np.ndarray:
    dtype = {"int8": "<i1", "float16": "<f2", "float32": "<f4"}[enc["dtype"]]
    return np.frombuffer(base64.b64decode(enc["data"]), dtype=dtype).reshape(enc["shape"]).astype(np.float64) * enc["scale"]


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory, settings, corpus):
    """A client that finds the test models' training corpus (the first 30,000 characters
    of tinyshakespeare, by its sha256) in a corpus path."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    app = create_app(settings.model_copy(update={"corpus_paths": (path,)}))
    with TestClient(app) as c:
        yield c


def test_probe_ranks_like_the_model_function(client, models):
    r = client.post("/api/models/lstm/probe", json={"text": TEXT, "concept": "upper", "top": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    want = probe(models["lstm"], TEXT, CONCEPTS["upper"].indicator(TEXT), graded=False, top=5)
    assert body["units"] == 2 * 32 * 6 and body["graded"] is False
    assert body["positives"] == sum(c.isupper() for c in TEXT)
    got = [(n["layer"], n["quantity"], n["unit"]) for n in body["neurons"]]
    assert got == [(n.layer, n.quantity, n.unit) for n in want.ranked]
    assert body["neurons"][0]["score"] == pytest.approx(want.ranked[0].score)
    values = decode(body["values"])
    assert values.shape == (len(TEXT), 5)
    _, _, cache = models["lstm"].run(TEXT)
    top = want.ranked[0]
    column = models["lstm"].internals(cache, top.layer, top.quantity)[:, top.unit]
    np.testing.assert_allclose(values[:, 0], column, atol=2e-3 * max(1, np.abs(column).max()))


def test_probe_with_a_regex_and_a_graded_concept(client):
    r = client.post("/api/models/gru/probe", json={"text": TEXT, "regex": "Citizen"})
    assert r.status_code == 200, r.text
    assert r.json()["positives"] == 2 * len("Citizen") and r.json()["concept"] == "regex"
    r = client.post("/api/models/rnn/probe", json={"text": TEXT, "concept": "line_position"})
    assert r.status_code == 200 and r.json()["graded"] is True
    assert all(n["threshold"] is None for n in r.json()["neurons"])
    assert r.json()["units"] == 2 * 32                          # the vanilla RNN has h only


@pytest.mark.parametrize("regex,feature", [
    (r"(\w)\1", "a backreference (\\1 or (?P=name))"),
    (r"(?P<q>e)(?P=q)", "a backreference (\\1 or (?P=name))"),
    (r"\w+(?=:)", "a lookahead (?=...)"), (r"\w+(?!:)", "a negative lookahead (?!...)"),
    (r"(?<=:)\s", "a lookbehind (?<=...)"), (r"(?<!:)\n", "a negative lookbehind (?<!...)"),
    (r"e++", "a possessive quantifier (*+, ++, ?+ or {m,n}+)"), (r"(?>e|ea)r", "an atomic group (?>...)"),
    (r"(A)?l(?(1)l)", "a conditional group (?(1)yes|no)"),
])
def test_regex_features_that_need_backtracking_are_422_naming_them(client, regex, feature):
    r = client.post("/api/models/lstm/probe", json={"text": TEXT, "regex": regex})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "regex"] and error["type"] == "regex_unsupported"
    assert error["ctx"] == {"feature": feature} and feature in error["msg"] and "RE2" in error["msg"]


def test_a_catastrophic_regex_answers_at_once(client):
    # Python's re needs ~7 s for the first a's here (2^26 ways to split them) and twice that per extra a.
    text = "a" * 26 + "b\n" + "aaa"
    # Patterns run in worker processes started on first use: start them outside the timing.
    assert client.post("/api/models/lstm/probe", json={"text": text, "regex": "a", "top": 3}).status_code == 200
    for regex in (r"(a+)+$", r"(a|aa)+$", r"(a*)*$"):
        start = time.perf_counter()
        r = client.post("/api/models/lstm/probe", json={"text": text, "regex": regex, "top": 3})
        assert time.perf_counter() - start < 1.0, regex
        assert r.status_code == 200 and r.json()["positives"] == 3, r.text


def test_a_regex_too_slow_to_find_every_match_is_refused(settings):
    app = create_app(settings.model_copy(update={"max_regex_seconds": 0.05}))
    with TestClient(app) as c:
        r = c.post("/api/models/rnn/probe", json={"text": "a" * 10_000, "regex": r"a(?:[\w ]*?\w{20}z)?"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "regex_too_slow", r.text
    assert r.json()["detail"][0]["ctx"] == {"max_seconds": 0.05}


def test_health_stays_quick_while_a_catastrophic_regex_runs(tmp_path, data_dir):
    """A live server probed again and again for /(a+)+$/ in 20,000 characters while /healthz
    is asked every 10 ms. Python's re would hold the GIL for longer than the universe is old;
    RE2 finds no match at once, so each probe is refused (the concept holds nowhere)."""
    shutil.copytree(data_dir / "models", tmp_path / "models")
    server = Server(tmp_path, {"RNNSCOPE_MAX_PROBE_CHARS": "20000"}).start()
    body = {"text": "a" * 19_999 + "b", "regex": r"(a+)+$"}
    probes: list[tuple[float, httpx.Response]] = []

    def probe_for_three_seconds():
        with httpx.Client(base_url=server.url, timeout=30) as http:
            begin = time.perf_counter()
            while time.perf_counter() - begin < 3.0:
                start = time.perf_counter()
                r = http.post("/api/models/lstm/probe", json=body)
                probes.append((time.perf_counter() - start, r))

    # Patterns run in worker processes started on first use: start them outside the timing.
    assert httpx.post(f"{server.url}/api/models/lstm/probe", json={"text": "ab", "regex": "a"},
                      timeout=60).status_code == 200
    # The server's latency, not this process's: a full collection of the objects earlier
    # tests left here takes longer than the bound.
    gc.collect()
    gc.disable()
    try:
        worker = threading.Thread(target=probe_for_three_seconds)
        latencies = []
        with httpx.Client(base_url=server.url, timeout=2) as http:
            worker.start()
            while worker.is_alive() or len(latencies) < 100:
                start = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)
        worker.join(30)
    finally:
        gc.enable()
        server.kill()
    assert probes and all(r.status_code == 422 and r.json()["detail"][0]["type"] == "concept_constant"
                          for _, r in probes)
    assert max(seconds for seconds, _ in probes) < 1.0
    assert np.percentile(latencies, 99) < 0.1, sorted(latencies)[-5:]


@pytest.mark.parametrize("body,status,words", [
    ({"text": TEXT}, 422, "exactly one of concept and regex"),
    ({"text": TEXT, "concept": "upper", "regex": "a"}, 422, "exactly one"),
    ({"text": TEXT, "concept": "telepathy"}, 422, "Input should be"),
    ({"text": TEXT, "regex": "(unclosed"}, 422, "not a regular expression"),
    ({"text": TEXT, "regex": "a{99999999999999999999}"}, 422, "not a regular expression"),
    ({"text": TEXT, "regex": "x" * 201}, 422, "RNNSCOPE_MAX_REGEX_CHARS"),
    ({"text": "no digits here", "concept": "digit"}, 422, "holds nowhere"),
    ({"text": TEXT, "concept": "upper", "top": 101}, 422, "RNNSCOPE_MAX_PROBE_TOP"),
    ({"text": "a" * 10_001, "concept": "vowel"}, 422, "RNNSCOPE_MAX_PROBE_CHARS"),
    ({"text": "caf\u00e9 \u00e9", "concept": "vowel"}, 422, "vocabulary"),
])
def test_probe_refusals(client, body, status, words):
    r = client.post("/api/models/lstm/probe", json=body)
    assert r.status_code == status, r.text
    assert words in r.text


def test_contexts_read_the_validation_text_when_the_corpus_is_found(corpus_client, corpus, models):
    r = corpus_client.post("/api/models/lstm/contexts", json={"layer": 1, "quantity": "c", "unit": 3, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "validation" and body["corpus"] == "tiny.txt"
    val = corpus[-3000:]                                      # TrainConfig's val_fraction 0.1 of 30,000
    assert body["chars"] == len(val)
    m = models["lstm"]
    _, _, cache = m.run(val)
    column = m.internals(cache, 1, "c")[:, 3]
    assert [s["position"] for s in body["positive"]][0] == int(np.argmax(column))
    assert body["negative"][0]["value"] == pytest.approx(float(column.min()), abs=1e-5)
    for s in body["positive"] + body["negative"]:
        assert s["char"] == val[s["position"]] and val[s["position"] - len(s["before"]):s["position"]] == s["before"]
        assert len(s["values"]) == len(s["before"]) + 1 + len(s["after"])


def test_contexts_fall_back_to_the_text_sent(client):
    r = client.post("/api/models/gru/contexts", json={"layer": 0, "quantity": "z", "unit": 0})
    assert r.status_code == 422 and "send a text" in r.text
    r = client.post("/api/models/gru/contexts", json={"layer": 0, "quantity": "z", "unit": 0, "text": TEXT, "k": 2})
    assert r.status_code == 200 and r.json()["source"] == "text" and len(r.json()["positive"]) == 2
    for body, words in (({"layer": 2, "unit": 0, "text": TEXT}, "layer 2 does not exist"),
                        ({"layer": 0, "quantity": "c", "unit": 0, "text": TEXT}, "no quantity 'c'"),
                        ({"layer": 0, "unit": 32, "text": TEXT}, "unit 32 does not exist"),
                        ({"layer": 0, "unit": 0, "text": TEXT, "k": 21}, "RNNSCOPE_MAX_CONTEXTS")):
        r = client.post("/api/models/gru/contexts", json=body)
        assert r.status_code == 422 and words in r.text, r.text


def test_intervene_matches_the_clamped_model(client, models):
    body = {"text": TEXT, "clamp": [{"layer": 1, "units": [0, 1, 2], "value": 0.0}], "length": 60, "seed": 7}
    r = client.post("/api/models/lstm/intervene", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    m = models["lstm"]
    ids = m.encode(TEXT)
    clamp = ablate({1: [0, 1, 2]})
    np.testing.assert_allclose(out["loss"], losses(m, ids), atol=1e-4)
    np.testing.assert_allclose(out["clamped_loss"], losses(m, ids, clamp), atol=1e-4)
    assert out["sample"] == sample(m, "", 60, 0.8, seed=7)[0]
    assert out["clamped_sample"] == sample(m, "", 60, 0.8, seed=7, clamp=clamp)[0]
    assert out["clamped_loss"] != out["loss"]


def test_intervene_refusals(settings):
    app = create_app(settings.model_copy(update={"max_clamped_units": 40}))
    with TestClient(app) as client:
        for clamp, words in (([{"layer": 5, "units": [0]}], "layer 5 does not exist"),
                             ([{"layer": 0, "units": [99]}], "unit 99 does not exist"),
                             ([{"layer": 0, "units": []}], "at least 1"),
                             ([{"layer": 0, "units": list(range(32))}, {"layer": 1, "units": list(range(9))}],
                              "RNNSCOPE_MAX_CLAMPED_UNITS")):
            r = client.post("/api/models/rnn/intervene", json={"text": TEXT, "clamp": clamp})
            assert r.status_code == 422 and words in r.text, r.text
        # A unit named twice counts once: 3 x the same 32 units are 32 units, not 96.
        r = client.post("/api/models/rnn/intervene", json={
            "text": TEXT, "clamp": [{"layer": 0, "units": list(range(32))}] * 3, "length": 0})
        assert r.status_code == 200 and r.json()["sample"] == ""


def test_saliency_and_horizon_match_the_model_functions(client, models):
    r = client.post("/api/models/gru/saliency", json={"text": TEXT, "position": 40})
    assert r.status_code == 200, r.text
    want = saliency(models["gru"], TEXT[:42], 40)
    assert r.json()["target"] == TEXT[41] and len(r.json()["saliency"]) == 41
    # Every value at float32's precision, the smallest too: they span many decades on a log
    # axis, and rounding to a fixed number of decimals turned those under 1e-7 into 0.
    assert want.norms.min() < 1e-3 * want.norms.max()
    np.testing.assert_allclose(r.json()["saliency"], want.norms, rtol=1e-6)
    r = client.post("/api/models/lstm/horizon", json={"text": TEXT, "window": 60, "positions": 4})
    assert r.status_code == 200, r.text
    h = memory_horizon(models["lstm"], TEXT, 4, 60)
    assert [l["horizon"] for l in r.json()["layers"]] == pytest.approx(h.mean.tolist())
    assert r.json()["horizon"] == pytest.approx(float(h.mean.max()))
    assert len(r.json()["layers"][0]["profile"]) == 61
    np.testing.assert_allclose([l["profile"] for l in r.json()["layers"]], h.profile, rtol=1e-6)
    # window x positions is kept within max_horizon_chars (4,000) by shortening the window.
    r = client.post("/api/models/lstm/horizon", json={"text": TEXT * 40, "window": 1000, "positions": 64})
    assert r.status_code == 200 and r.json()["window"] == 4000 // 64 and len(r.json()["positions"]) == 64
    r = client.post("/api/models/lstm/saliency", json={"text": TEXT, "position": len(TEXT)})
    assert r.status_code == 422 and "position must be at most" in r.text


def test_memorised_spans_come_from_the_training_corpus(corpus_client, client, corpus):
    generated = "zq" + corpus[1000:1040] + "QZX" + corpus[5000:5012] + "!"
    r = corpus_client.post("/api/models/rnn/memorised", json={"text": generated, "min_length": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["available"] and body["corpus"] == "tiny.txt"
    for s in body["spans"]:
        assert s["pieces"] and s["start"] == s["pieces"][0]["start"] and s["end"] == max(p["end"] for p in s["pieces"])
        for p in s["pieces"]:
            piece = generated[p["start"]:p["end"]]
            assert len(piece) >= 10 and corpus[p["corpus_position"]:p["corpus_position"] + len(piece)] == piece
    # Issue 9, defect 4: overlapping spans (147-171 and 150-174) came back as two.
    assert all(a["end"] < b["start"] for a, b in zip(body["spans"], body["spans"][1:]))
    assert body["memorised_chars"] == sum(s["end"] - s["start"] for s in body["spans"]) >= 52
    assert body["count"] == len(body["spans"]) >= 2
    # Two copies that touch are one copied passage, made of two pieces.
    joined = "zq" + corpus[1000:1040] + corpus[1030:1060] + "!"
    r = corpus_client.post("/api/models/rnn/memorised", json={"text": joined, "min_length": 10}).json()
    assert r["count"] == 1 and len(r["spans"][0]["pieces"]) >= 2 and r["memorised_chars"] >= 70
    # Longer min_length: the 12-character span goes.
    r = corpus_client.post("/api/models/rnn/memorised", json={"text": generated, "min_length": 30})
    assert r.json()["count"] == 1
    # Without the corpus: said so, not an error.
    r = client.post("/api/models/rnn/memorised", json={"text": generated})
    assert r.status_code == 200 and r.json() == {"available": False, "corpus": None, "spans": [], "count": 0,
                                                 "memorised_chars": 0}


def test_pages_render(client):
    for path in ("/probe?model=lstm&concept=quotes", "/compare?models=lstm,gru"):
        r = client.get(path)
        assert r.status_code == 200 and "<main" in r.text


def test_probes_of_one_text_share_one_reading(client):
    for concept in ("vowel", "upper", "line_position"):
        assert client.post("/api/models/lstm/probe", json={"text": TEXT, "concept": concept}).status_code == 200
    cache = client.app.state.activation_cache
    assert len(cache._items) == 1
    client.post("/api/models/gru/probe", json={"text": TEXT, "concept": "vowel"})
    client.post("/api/models/lstm/probe", json={"text": TEXT + "A", "concept": "vowel"})
    assert len(cache._items) == 2                  # the oldest went: probe_cache_texts is 2


def test_horizon_says_how_many_characters_it_needs(client):
    r = client.post("/api/models/lstm/horizon", json={"text": "ab"})
    assert r.status_code == 422
    assert "at least 3 characters" in r.json()["detail"][0]["msg"]
