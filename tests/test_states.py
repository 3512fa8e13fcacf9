"""State space and fixed points: model/dynamics.py on hand-built maps with known answers,
the /states and /fixed-points routes, and the /states page in chromium."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import fsolve

from rnnscope.model.dynamics import (CHAR_CLASSES, MAPS, char_class, RNNMap, classify, find_fixed_points, fit_pca, layer_input, read_layer,
                            sample_starts, step_map)
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, init_params
from rnnscope.model.vocab import Vocab


# ---- PCA ---------------------------------------------------------------------------------------

def test_pca_of_a_random_orthogonal_embedding_recovers_the_variance_ordering():
    rng = np.random.default_rng(0)
    sd = np.array([1.0, 5.0, 0.2, 3.0, 0.05])                          # variances 1, 25, .04, 9, .0025
    Z = rng.standard_normal((20_000, 5)) * sd
    Q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    X = Z @ Q[:5] + rng.standard_normal(40)                            # rows in R^40, offset
    pca = fit_pca(X, k=3)
    order = np.argsort(-sd)[:3]                                        # latent axes 1, 3, 0
    np.testing.assert_allclose(pca.variance, sd[order] ** 2, rtol=0.05)
    np.testing.assert_allclose(pca.explained, sd[order] ** 2 / (sd ** 2).sum(), rtol=0.05)
    # Each component is the embedded latent axis, up to sign.
    np.testing.assert_allclose(np.abs(pca.components @ Q[order].T), np.eye(3), atol=0.02)
    P = pca.project(X)
    np.testing.assert_allclose(P.var(axis=0, ddof=1), pca.variance, rtol=1e-9)


# ---- a two-unit RNN with three fixed points -----------------------------------------------------

def hand_rnn(theta: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """W = R diag(2, 0.5) R^T, b = 0: one direction expands (gain 2 > 1), so tanh bends it
    into two stable attractors either side of a saddle at 0."""
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return R @ np.diag([2.0, 0.5]) @ R.T, np.zeros(2)


def grid_fixed_points(W, b, n=401):
    """Independently: roots of tanh(W h + b) - h found by fsolve from every point of a fine
    grid on [-1, 1]^2 where the residual is locally smallest, merged; stability from a
    centred finite-difference Jacobian."""
    g = np.linspace(-1, 1, n)
    H = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    res = np.linalg.norm(np.tanh(H @ W.T + b) - H, axis=1).reshape(n, n)
    pad = np.pad(res, 1, constant_values=np.inf)
    local = np.ones_like(res, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            local &= res <= pad[1 + di:1 + di + n, 1 + dj:1 + dj + n]
    roots = []
    for i, j in zip(*np.nonzero(local)):
        h = fsolve(lambda h: np.tanh(W @ h + b) - h, np.array([g[i], g[j]]), xtol=1e-13)
        if np.linalg.norm(np.tanh(W @ h + b) - h) < 1e-10 and all(np.linalg.norm(h - r) > 1e-6 for r in roots):
            roots.append(h)
    out = []
    for h in roots:
        eps = 1e-6
        J = np.stack([(np.tanh(W @ (h + e) + b) - np.tanh(W @ (h - e) + b)) / (2 * eps)
                      for e in np.eye(2) * eps], axis=1)
        out.append((h, classify(np.linalg.eigvals(J))))
    return out


def test_every_fixed_point_of_a_hand_built_rnn_is_found_and_classified():
    W, b = hand_rnn()
    expected = grid_fixed_points(W, b)
    assert sorted(k for _, k in expected) == ["saddle", "stable", "stable"]
    F = RNNMap(np.zeros((2, 1)), W, np.zeros(2), b, np.zeros(1))
    # Starts along real trajectories: runs of the map from random states.
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, (8, 2))
    traj = []
    for _ in range(10):
        s = F(s)
        traj.append(s)
    found = find_fixed_points(F, sample_starts(np.concatenate(traj), 40, seed=2)).points
    assert len(found) == 3
    for h, kind in expected:
        match = min(found, key=lambda p: np.linalg.norm(p.state - h))
        assert np.linalg.norm(match.state - h) < 1e-6
        assert match.kind == kind
        assert match.q < 1e-12
    saddle = next(p for p in found if p.kind == "saddle")
    np.testing.assert_allclose(saddle.state, 0, atol=1e-8)
    np.testing.assert_allclose(np.abs(saddle.eigenvalues), [2.0, 0.5], rtol=1e-8)   # W itself at 0


def test_a_map_with_one_attractor_and_one_repeller_is_classified():
    """Unstable: h' = tanh(3h + 0) per unit has three roots per axis; (0, 0) expands on both."""
    F = RNNMap(np.zeros((2, 1)), 3.0 * np.eye(2), np.zeros(2), np.zeros(2), np.zeros(1))
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 7)), -1).reshape(-1, 2)
    found = find_fixed_points(F, grid, max_polished=16).points
    kinds = sorted(p.kind for p in found)
    assert kinds == ["saddle"] * 4 + ["stable"] * 4 + ["unstable"]


# ---- the maps equal the model's own step, and their Jacobians equal finite differences ----------

def tiny_model(cell: str, layers: int = 2, H: int = 5, seed: int = 3) -> LanguageModel:
    vocab = Vocab(list("abc \n"))
    cfg = ModelConfig(cell, len(vocab), H, layers)
    params = {k: v.astype(np.float64) * 3 for k, v in init_params(cfg, seed, np.float64).items()}
    return LanguageModel(cfg, vocab, params)


@pytest.mark.parametrize("cell", list(MAPS))
@pytest.mark.parametrize("layer", [0, 1])
def test_the_step_map_is_the_models_own_step(cell, layer):
    m = tiny_model(cell)
    ids = m.encode("ab cab\nba c")
    reading = read_layer(m, ids, layer)
    S = reading.state()
    for t in range(1, len(ids)):
        x = np.eye(len(m.vocab))[ids[t]] if layer == 0 else reading.x[t].astype(np.float64)
        F = step_map(m, layer, x)
        np.testing.assert_allclose(F(S[t - 1][None])[0], S[t], atol=1e-12)


@pytest.mark.parametrize("cell", list(MAPS))
def test_the_jacobian_equals_centred_finite_differences(cell):
    m = tiny_model(cell)
    F = step_map(m, 0, layer_input(m, 0, 1))
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.8, 0.8, F.W_hh.shape[1] * (2 if cell == "lstm" else 1))
    J = F.jacobian(s)
    eps = 1e-6
    fd = np.stack([(F((s + e)[None])[0] - F((s - e)[None])[0]) / (2 * eps) for e in np.eye(len(s)) * eps], axis=1)
    np.testing.assert_allclose(J, fd, atol=1e-8)


@pytest.mark.parametrize("cell", list(MAPS))
def test_fixed_points_of_each_cell_are_fixed(cell):
    m = tiny_model(cell)
    ids = m.encode("ab cab\nba cc a b\n" * 4)
    reading = read_layer(m, ids, 1)
    F = step_map(m, 1, layer_input(m, 1, m.vocab.encode("a")[0], reading))
    found = find_fixed_points(F, sample_starts(reading.state(), 16)).points
    assert found
    for p in found:
        assert np.linalg.norm(F(p.state[None])[0] - p.state) < 1e-5
        assert p.kind == classify(np.linalg.eigvals(F.jacobian(p.state)))


# ---- REST ----------------------------------------------------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"


def test_states_project_a_text_with_the_pca_of_the_text_when_no_corpus_is_here(client, models):
    r = client.post("/api/models/lstm/states", json={"text": TEXT, "layer": 1, "quantity": "c", "components": 3,
                                                     "colour_by": "line_position"})
    assert r.status_code == 200, r.text
    body = r.json()
    m = models["lstm"]
    X = read_layer(m, m.encode(TEXT), 1).c
    pca = fit_pca(X, 3)
    assert body["fitted_on"] == "text" and body["fit_chars"] == len(TEXT)
    np.testing.assert_allclose(body["coords"], pca.project(X), atol=1e-3)
    np.testing.assert_allclose(body["explained"], pca.explained, atol=1e-4)
    assert body["colour"][:16] == list(range(15)) + [0] and body["graded"] and body["classes"] is None
    r = client.post("/api/models/gru/states", json={"text": "Ab \n,", "colour_by": "char_class"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [body["classes"][int(i)] for i in body["colour"]] == ["upper", "letter", "space", "newline", "punctuation"]
    assert [CHAR_CLASSES[int(i)] for i in char_class("7\té")] == ["digit", "space", "letter"]


def three_at_once(client, body: dict) -> list:
    """Three states requests for one projection, each colouring it its own way, sent a moment
    apart while the first is still reading or fitting (the slowed step sleeps 0.5 s): all
    answered, and with the same coordinates."""
    import threading
    import time

    answers = []

    def ask(colour):
        answers.append(client.post("/api/models/gru/states", json={**body, "colour_by": colour}))

    threads = [threading.Thread(target=ask, args=(c,)) for c in ("char_class", "line_position", "quotes")]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(60)
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert len({str(r.json()["coords"]) for r in answers}) == 1
    return answers


def test_concurrent_states_requests_read_their_fitted_text_once(client, monkeypatch):
    """Requests for the same layer's projection while its text is being read (a page's
    controls changed in quick succession, a class on one passage) wait for that reading
    instead of each reading the text again in a compute slot of its own."""
    import time

    from rnnscope.app.states import router

    reads, original = [], router.read_in_pieces

    def slow_read(*args, **kwargs):
        reads.append(1)
        time.sleep(0.5)                          # long enough for the others to arrive meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(router, "read_in_pieces", slow_read)
    three_at_once(client, {"text": TEXT + "Read by three requests at once.\n", "layer": 1})
    assert len(reads) == 1


def test_concurrent_states_requests_fit_their_projection_once(client, monkeypatch):
    """With the fitted text's reading kept, requests for the same projection while its PCA is
    being fitted wait for that fit instead of each fitting it again in a slot of its own."""
    import time

    from rnnscope.app.states import router

    fits, original = [], router.on_reading

    def slow_on_reading(state, function, *args):
        if function is router.layer_pca:
            fits.append(1)
            time.sleep(0.5)                      # long enough for the others to arrive meanwhile
        return original(state, function, *args)

    text = TEXT + "Fitted in three components by three requests at once.\n"
    first = client.post("/api/models/gru/states", json={"text": text, "layer": 0})       # reads, fits in 2
    assert first.status_code == 200, first.text
    monkeypatch.setattr(router, "on_reading", slow_on_reading)
    three_at_once(client, {"text": text, "layer": 0, "components": 3})
    assert len(fits) == 1


def test_fixed_points_come_in_the_states_projection(corpus_client, models):
    r = corpus_client.post("/api/models/rnn/fixed-points", json={"layer": 0, "char": " ", "starts": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fitted_on"] == "validation" and body["state"] == "h (32)" and body["points"]
    for p in body["points"]:
        assert p["q"] < body["tolerance"] and p["kind"] in ("stable", "unstable", "saddle")
        assert len(p["coords"]) == 2 and len(p["eigenvalues"]) == 6
        moduli = [abs(complex(*e)) for e in p["eigenvalues"]]
        assert moduli == sorted(moduli, reverse=True)
        assert (p["kind"] == "stable") == (p["unstable_directions"] == 0)
    r = corpus_client.post("/api/models/lstm/fixed-points", json={"layer": 1, "char": "e", "starts": 8,
                                                                  "quantity": "c", "components": 3})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "(h, c) (64)" and len(r.json()["explained"]) == 3
    assert r.json()["points"] or r.json()["slowest_q"] > r.json()["tolerance"]


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory, settings, corpus):
    """A client that finds the test models' training corpus, so the PCA is the validation text's."""
    from fastapi.testclient import TestClient

    from rnnscope.app.main import create_app

    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    with TestClient(create_app(settings.model_copy(update={"corpus_paths": (path,)}))) as c:
        yield c


def test_states_and_fixed_points_refuse_what_they_cannot_do(client):
    for route, body, words in (
            ("states", {"text": TEXT, "layer": 2}, "layer 2 does not exist"),
            ("states", {"text": TEXT, "quantity": "z"}, "quantity"),
            ("states", {"text": TEXT, "components": 4}, "less than or equal to 3"),
            ("states", {"text": TEXT, "colour_by": "nope"}, "colour_by"),
            ("states", {"text": "x" * 5_001}, "RNNSCOPE_MAX_STATE_CHARS"),
            ("states", {"text": TEXT + "€"}, "drop_unknown"),
            ("fixed-points", {"char": " "}, "send a text"),
            ("fixed-points", {"char": "ab", "text": TEXT}, "at most 1"),
            ("fixed-points", {"char": "€", "text": TEXT}, "not in the model's vocabulary"),
            ("fixed-points", {"char": " ", "text": TEXT, "starts": 129}, "RNNSCOPE_MAX_FIXED_POINT_STARTS"),
            ("fixed-points", {"char": "x", "text": TEXT, "layer": 1}, "never read")):
        r = client.post(f"/api/models/lstm/{route}", json=body)
        assert r.status_code == 422 and words in r.text, (route, body, r.text)
    r = client.post("/api/models/gru/states", json={"text": TEXT, "quantity": "c"})
    assert r.status_code == 422 and "no cell state" in r.text
    assert client.post("/api/models/nope/states", json={"text": TEXT}).status_code == 404
    assert client.post("/api/models/nope/fixed-points", json={"char": " ", "text": TEXT}).status_code == 404


def test_states_and_fixed_points_are_documented_with_their_limits(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["StatesRequest"]["properties"]["text"]["maxLength"] == 5_000
    assert schemas["FixedPointsRequest"]["properties"]["starts"]["maximum"] == 128
    assert "/api/models/{model_id}/states" in doc["paths"] and "/api/models/{model_id}/fixed-points" in doc["paths"]


# ---- Browser (page and live_server from conftest.py) -------------------------------------------

def test_the_states_page_draws_the_trajectory_and_the_scrubber_moves_the_highlight(page, live_server):
    from urllib.parse import quote

    page.goto(f"{live_server}/states?model=rnn&layer=1&colour=line_position&t=3&text={quote(TEXT)}")
    page.wait_for_selector("#chart[data-points]")
    drawn = page.evaluate("""() => { const d = document.getElementById('chart').data;
        return {n: d.length, steps: d[1].x.length, current: [d[2].x[0], d[2].y[0]], first: [d[1].x[3], d[1].y[3]],
                colours: d[1].marker.color.slice(0, 16)}; }""")
    assert drawn["steps"] == len(TEXT) and drawn["n"] == 3
    assert drawn["current"] == drawn["first"]                          # the ring sits on step 3
    assert drawn["colours"] == list(range(15)) + [0]                   # line position
    assert page.inner_text("#explained").startswith("Variance explained")
    assert page.inner_text(".ch.current") == TEXT[3] and page.input_value("#scrub") == "3"
    assert page.eval_on_selector("#layer", "e => e.value") == "1"
    page.locator("body").press("ArrowRight")
    page.locator("body").press("ArrowRight")
    page.wait_for_function("document.getElementById('chart').dataset.t === '5'")
    assert page.inner_text(".ch.current") == TEXT[5] and "t=5" in page.url
    moved = page.evaluate("() => { const d = document.getElementById('chart').data; "
                          "return [d[2].x[0] === d[1].x[5], d[2].y[0] === d[1].y[5]]; }")
    assert moved == [True, True]
    page.locator("#scrub").fill("20")
    page.wait_for_function("document.getElementById('chart').dataset.t === '20'")
    assert page.inner_text(".ch.current") == TEXT[20]
    page.locator("#chars .ch[data-i='9']").click()
    page.wait_for_function("document.getElementById('chart').dataset.t === '9'")
    # Clicking a dot selects its step: the one drawn nearest the click.
    page.evaluate("() => document.getElementById('chart').scrollIntoView({block: 'center'})")
    where = page.evaluate("""() => { const gd = document.getElementById('chart'), L = gd._fullLayout, d = gd.data[1];
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const px = (t) => [box.left + L.xaxis.l2p(d.x[t]), box.top + L.yaxis.l2p(d.y[t])];
        return {click: px(30), all: d.x.map((_, t) => px(t))}; }""")
    page.mouse.click(*where["click"])
    page.wait_for_function("document.getElementById('chart').dataset.t !== '9'")
    t = int(page.eval_on_selector("#chart", "e => e.dataset.t"))
    cx, cy = where["click"]
    assert (where["all"][t][0] - cx) ** 2 + (where["all"][t][1] - cy) ** 2 < 10 ** 2
    assert page.inner_text(".ch.current") == TEXT[t]
    # Fixed points for a space, drawn as their own traces by class.
    page.fill("#fp-char", " ")
    page.click("#fp-find")
    page.wait_for_function("document.getElementById('chart').dataset.fixed !== ''")
    kinds = page.evaluate("() => document.getElementById('chart').data.slice(3).map((t) => [t.meta, t.x.length])")
    summary = page.inner_text("#fp-summary")
    assert kinds and all(k in ("stable", "saddle", "unstable") for k, _ in kinds), kinds
    assert summary.startswith(f"{sum(n for _, n in kinds)} fixed point")
    assert "char=+" in page.url or "char=%20" in page.url
