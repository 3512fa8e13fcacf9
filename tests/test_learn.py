"""The guided path /learn: the lecture's maths (model/lecture.py) proven, each chapter's route
checked against an independent computation, and the page stepped through in a browser."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rnnscope.model import lecture
from rnnscope.model.analysis import gradient_through_time

# ---- the maths ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_hello_learns_the_four_predictions_within_its_budget(seed):
    """h -> e, e -> l, l -> l, l -> o: the same input 'l' needs the hidden state to tell them apart."""
    result = lecture.train_hello(seed)
    assert len(result.history.loss) == lecture.HELLO_STEPS
    u = lecture.unroll(result.model, lecture.HELLO)
    predicted = [result.model.vocab.chars[i] for i in u.p.argmax(axis=1)]
    assert predicted == ["e", "l", "l", "o"]
    assert result.seconds < 0.5


def test_hello_unroll_is_the_lecture_equations():
    """Every number of the figure from h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h), y_t = W_hy h_t + b_y."""
    m = lecture.train_hello(3).model
    w = lecture.hello_weights(m)
    u = lecture.unroll(m, lecture.HELLO)
    h = np.zeros(3)
    for t, c in enumerate(lecture.HELLO[:-1]):
        x = np.eye(4)[m.vocab.chars.index(c)]
        np.testing.assert_allclose(u.x[t], x)
        np.testing.assert_allclose(u.h_prev[t], h, atol=1e-12)
        h = np.tanh(w["W_xh"] @ x + w["W_hh"] @ h + w["b_h"])
        y = w["W_hy"] @ h + w["b_y"]
        p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
        np.testing.assert_allclose(u.h[t], h, atol=1e-12)
        np.testing.assert_allclose(u.y[t], y, atol=1e-12)
        np.testing.assert_allclose(u.p[t], p, atol=1e-12)
        target = m.vocab.chars.index(lecture.HELLO[t + 1])
        assert u.loss[t] == pytest.approx(-np.log(p[target]))


def test_hello_is_the_same_network_for_the_same_seed():
    a, b = lecture.train_hello(5).model, lecture.train_hello(5).model
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    other = lecture.train_hello(6).model
    assert not np.array_equal(a.params["rnn.weight_hh_l0"], other.params["rnn.weight_hh_l0"])


@pytest.mark.parametrize("W, h0", [
    ([[1.0, 0.5], [0.2, 0.8]], [-0.5, 1.0]),
    ([[0.3, -1.2], [-0.7, 0.4]], [1.0, 0.1]),
    ([[-2.0, 0.4], [0.9, 1.1]], [0.2, -1.5]),
])
def test_power_iteration_converges_to_numpys_leading_eigenvector(W, h0):
    values, vectors = np.linalg.eig(np.array(W))
    lead = vectors[:, np.argmax(np.abs(values))].real
    r = lecture.power_iteration(np.array(W), np.array(h0), 200)
    h = r.trajectory[-1]
    assert abs(abs(h @ lead) / np.linalg.norm(h) / np.linalg.norm(lead) - 1) < 1e-9
    assert np.linalg.norm(h) == pytest.approx(1.0)
    np.testing.assert_allclose(np.abs(r.leading), np.abs(lead) / np.linalg.norm(lead), atol=1e-12)
    assert r.alignment[-1] == pytest.approx(1.0, abs=1e-9)


def test_power_iteration_without_a_dominant_real_eigenvalue_names_none():
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    r = lecture.power_iteration(rotation, np.array([1.0, 0.0]), 10)
    assert r.leading is None and np.isnan(r.alignment).all()
    zero = lecture.power_iteration(np.eye(2) * 2 + 0.1, np.zeros(2), 5)
    assert (zero.trajectory == 0).all()


def test_tanh_iteration_with_a_small_matrix_decays_to_zero():
    r = lecture.power_iteration(np.array([[0.5, 0.1], [0.0, 0.4]]), np.array([1.0, 1.0]), 60, "tanh")
    assert np.linalg.norm(r.trajectory[-1]) < 1e-12
    big = lecture.power_iteration(np.array([[2.0, 0.0], [0.0, 0.5]]), np.array([0.3, 0.3]), 60, "tanh")
    assert abs(big.trajectory[-1][0]) > 0.9 and abs(big.trajectory[-1][1]) < 1e-6   # tanh keeps it bounded


def test_rnn_jacobian_gain_is_the_product_of_step_jacobians():
    rng = np.random.default_rng(0)
    H, T = 5, 7
    W = rng.normal(0, 0.6, (H, H))
    hs = np.tanh(rng.normal(size=(T, H)))
    gains = lecture.rnn_jacobian_gain(W, hs, T - 1, 4)
    J = np.eye(H)
    expected = [1.0]
    for j in range(T - 1, T - 5, -1):
        J = J @ np.diag(1 - hs[j] ** 2) @ W
        expected.append(np.linalg.norm(J, "fro") / np.sqrt(H))
    np.testing.assert_allclose(gains, expected, rtol=1e-12)
    assert len(lecture.rnn_jacobian_gain(W, hs, 2, 10)) == 3          # k = 2, 1, 0


def test_rnn_jacobian_gain_of_a_wide_layer_is_estimated_from_fewer_rows():
    rng = np.random.default_rng(1)
    H, T = 200, 12
    W = rng.normal(0, 1.2 / np.sqrt(H), (H, H))
    hs = np.tanh(rng.normal(size=(T, H)))
    exact = lecture.rnn_jacobian_gain(W, hs, T - 1, 10)
    estimate = lecture.rnn_jacobian_gain(W, hs, T - 1, 10, max_rows=50)
    assert estimate[0] == 1.0 and len(estimate) == len(exact)
    np.testing.assert_allclose(estimate, exact, rtol=0.2)
    assert np.array_equal(estimate, lecture.rnn_jacobian_gain(W, hs, T - 1, 10, max_rows=50))   # seeded


def test_gate_product_is_the_running_product_of_gates():
    f = np.array([[0.5, 1.0], [0.9, 0.8], [0.2, 1.0]])
    rms, top = lecture.gate_product(f, 2, 5)
    # k = 2, 1, 0: the empty product, f_2, f_2 * f_1 (f_0 lies before h_0 and never enters).
    np.testing.assert_allclose(top, [1.0, 1.0, 0.8])
    np.testing.assert_allclose(rms, [1.0, np.sqrt((0.2**2 + 1) / 2), np.sqrt((0.18**2 + 0.64) / 2)])


def test_clipping_tames_the_run_that_explodes_without_it():
    from rnnscope.app.web.pages import PASSAGES

    text = PASSAGES[0][1]
    free = lecture.sgd_clipping_run(text, 64, 300, 1.0, 0.0, 0, 25)
    held = lecture.sgd_clipping_run(text, 64, 300, 1.0, 1.0, 0, 25)
    assert free.diverged and "exploding" in free.diverged and not any(free.clipped)
    assert held.diverged is None and len(held.loss) == 300 and held.loss[-1] < 1.0
    first = held.clipped.index(True)
    assert held.grad_norm[first] > 1.0 and all(n <= 1.0 for n in held.grad_norm[:first])
    # The same seed and batches: identical until the first clipped step changes the weights.
    assert held.loss[:first + 1] == free.loss[:first + 1]
    assert held.loss[first + 1] != free.loss[first + 1]


def test_scaled_recurrence_scales_only_W_hh(models):
    m = models["rnn"]
    s = lecture.scaled_recurrence(m, 0.5)
    for k, v in m.params.items():
        np.testing.assert_allclose(s.params[k], v * (0.5 if "weight_hh" in k else 1.0), rtol=1e-6)
    assert m.params["rnn.weight_hh_l0"] is not s.params["rnn.weight_hh_l0"]


# ---- the routes ----------------------------------------------------------------------------

def test_hello_route_lays_out_the_figure(client):
    r = client.post("/api/learn/hello", json={"seed": 2, "sample_length": 30})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["vocab"] == ["e", "h", "l", "o"] and d["hidden_size"] == 3
    assert [s["input"] for s in d["steps"]] == list("hell")
    assert [s["predicted"] for s in d["steps"]] == list("ello") == [s["target"] for s in d["steps"]]
    assert len(d["weights"]["W_hh"]) == 3 and len(d["weights"]["W_xh"][0]) == 4
    assert d["train_ms"] < 1000 and len(d["loss_history"]) == lecture.HELLO_STEPS
    assert len(d["sample"]) == 31 and set(d["sample"]) <= set("ehlo")
    again = client.post("/api/learn/hello", json={"seed": 3}).json()
    assert again["weights"] != d["weights"]


def test_unroll_route_first_input_effect(client):
    d = client.post("/api/learn/unroll", json={"seed": 0, "steps": 30}).json()
    assert d["first"] == ["e", "h", "l", "o"] and len(d["continuation"]) == 29
    h_run = d["first"].index("h")
    assert all(v == 0 for v in d["distance"][h_run])
    for k, row in enumerate(d["distance"]):
        if k != h_run:
            assert row[0] > 0.1 and row[-1] < row[0]        # the first input moves h_1; the effect fades


def test_power_route_matches_numpy(client):
    body = {"w11": 0.3, "w12": -1.2, "w21": -0.7, "w22": 0.4, "x0": 1.0, "y0": 0.1, "steps": 100}
    d = client.post("/api/learn/power", json=body).json()
    W = np.array([[0.3, -1.2], [-0.7, 0.4]])
    values, vectors = np.linalg.eig(W)
    lead = vectors[:, np.argmax(np.abs(values))].real
    assert abs(abs(np.dot(d["trajectory"][-1], lead)) - 1) < 1e-9
    assert d["spectral_radius"] == pytest.approx(np.abs(values).max())
    assert d["eigen"][0]["value"][0] == pytest.approx(values[np.argmax(np.abs(values))].real)
    bad = client.post("/api/learn/power", json=body | {"w11": 7})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "w11"]


def test_backward_norms_at_scale_1_equal_the_gradients_route(client):
    d = client.post("/api/learn/backward/rnn", json={"passage": 1, "position": 120, "scale": 1.0}).json()
    g = client.post("/api/models/rnn/gradients", json={"text": d["text"], "position": d["position"]}).json()
    assert d["position"] == 120 and d["target"] == g["target"] and d["loss"] == g["loss"]
    for mine, theirs in zip(d["layers"], g["layers"], strict=True):
        assert mine["h_grad_norm"] == theirs["h_grad_norm"]
        assert mine["blocks"][0]["sigma_max"] == pytest.approx(theirs["singular_values"][0]["values"][0])


def test_backward_scale_moves_the_curve_and_the_spectrum(client, models):
    one, half, two = (client.post("/api/learn/backward/rnn", json={"passage": 0, "position": 60, "scale": s})
                      .json() for s in (1.0, 0.5, 2.0))
    assert half["layers"][0]["blocks"][0]["spectral_radius"] == pytest.approx(
        one["layers"][0]["blocks"][0]["spectral_radius"] / 2)
    top = lambda d: d["layers"][-1]["h_grad_norm"]
    assert 0 < top(half)[40] < top(one)[40] < top(two)[40]   # 20 steps back: vanished more, or less
    text = half["text"][:half["position"] + 2]
    expected = gradient_through_time(lecture.scaled_recurrence(models["rnn"], 0.5), text, half["position"])
    np.testing.assert_allclose(top(half), expected.h_grad_norm[-1], rtol=1e-6)


def test_a_position_past_the_passage_is_its_last(client):
    d = client.post("/api/learn/backward/rnn", json={"passage": 3, "position": 9999}).json()
    assert d["position"] == len(d["text"]) - 2 and d["target"] == d["text"][-1]
    h = client.post("/api/learn/highway", json={"passage": 3, "position": 9999, "span": 10}).json()
    assert h["position"] == len(h["text"]) - 2


def test_backward_refuses_what_it_cannot_take(client):
    r = client.post("/api/learn/backward/rnn", json={"scale": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scale"]
    assert "2" in r.json()["detail"][0]["msg"]
    assert client.post("/api/learn/backward/nope", json={}).status_code == 404
    r = client.post("/api/learn/backward/rnn", json={"passage": 99})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "passage"]


def test_clipping_route_runs_both(client):
    body = {"passage": 0, "clip": 1.0, "learning_rate": 1.0, "steps": 300}
    d = client.post("/api/learn/clipping", json=body).json()
    free, held = d["runs"]
    assert free["clip"] == 0 and held["clip"] == 1.0
    assert free["diverged"] and held["diverged"] is None and len(held["loss"]) == 300
    r = client.post("/api/learn/clipping", json={"clip": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "clip"]


def test_highway_route_compares_the_three_paths(client, models):
    d = client.post("/api/learn/highway", json={"passage": 2, "span": 40}).json()
    assert {c["model"] for c in d["curves"]} == {"rnn", "lstm", "gru"}
    assert len(d["ks"]) == 41 and d["ks"][0] == d["position"] == len(d["text"]) - 2
    by = {c["model"]: c for c in d["curves"]}
    assert all(len(c["rms"]) == 41 and c["rms"][0] == 1.0 for c in d["curves"])
    m = models["lstm"]
    f = lecture.gates_of(m, d["text"][:d["position"] + 1], 1, "f")
    # k = position - 40: the forget gates of steps position - 39 .. position.
    expected = np.prod(f[d["position"] - 39: d["position"] + 1].astype(np.float64), axis=0)
    assert by["lstm"]["top"][-1] == pytest.approx(expected.max())
    assert by["lstm"]["rms"][-1] == pytest.approx(np.sqrt(np.mean(expected ** 2)))


# ---- the page ------------------------------------------------------------------------------

def plot(page, element_id: str) -> dict:
    """What Plotly drew in an element: its traces (type, name, meta, x, y) and layout meta."""
    return page.evaluate("""(id) => {
        const el = document.getElementById(id);
        return { meta: el.layout?.meta, traces: (el.data || []).map((t) => ({
            type: t.type, name: t.name, meta: t.meta, x: Array.from(t.x || []), y: Array.from(t.y || []),
            z: t.z ? t.z.map((r) => Array.from(r)) : null })) };
    }""", element_id)


def set_range(page, element_id: str, value: float, event: str = "change") -> None:
    page.evaluate("""([id, v, ev]) => { const el = document.getElementById(id); el.value = v;
        el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event(ev)); }""",
                  [element_id, value, event])


def wait_drawn(page, element_id: str, meta: str, count: int | None = None) -> dict:
    page.wait_for_function("""([id, meta]) => document.getElementById(id).layout?.meta === meta""",
                           arg=[element_id, meta])
    drawn = plot(page, element_id)
    if count is not None:
        assert len(drawn["traces"]) == count, drawn["traces"]
    return drawn


def test_learn_page_steps_through_every_chapter(page, live_server):
    page.goto(f"{live_server}/learn")
    chapters = page.locator("#chapters [data-chapter]")
    assert chapters.count() == len(page.locator(".learn-chapter").all()) >= 6

    # 1: the lecture figure, four rows of cells, one column per step.
    hello = wait_drawn(page, "hello-chart", "hello", 4)
    assert [t["meta"] for t in hello["traces"]] == ["p", "y", "h", "x"]
    assert hello["traces"][0]["x"] == ["t = 1: “h”", "t = 2: “e”", "t = 3: “l”", "t = 4: “l”"]
    x_rows = hello["traces"][3]["z"]                       # one-hot columns: exactly one 1 each
    assert [sum(col) for col in zip(*x_rows)] == [1, 1, 1, 1]
    p = hello["traces"][0]["z"]                           # rows in vocabulary order e, h, l, o
    assert [max(range(4), key=lambda j: p[j][t]) for t in range(4)] == [0, 2, 2, 3]   # e, l, l, o
    assert "Adam steps" in page.locator("#hello-summary").inner_text()
    assert page.locator("#hello-weights table").count() == 5            # W_xh, W_hh, b_h, W_hy, b_y
    losses = page.evaluate("() => document.getElementById('hello-chart').layout.annotations"
                           ".map((a) => a.text).filter((t) => t.startsWith('target'))")
    assert [t.split("“")[1][0] for t in losses] == list("ello")
    assert page.locator("#hello-sample-out").inner_text().startswith("h")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.locator("#hello-t").inner_text() == "3"
    assert "reads “l”" in page.locator("#hello-step").inner_text()
    assert "t=2" in page.url
    before = hello["traces"][2]["z"]
    page.click("#hello-train")
    page.wait_for_function("() => new URL(location).searchParams.get('seed') === '1'")
    page.wait_for_function("(z) => JSON.stringify(document.getElementById('hello-chart').data[2].z) !== z",
                           arg=json.dumps(before))

    # 2: one line per other first character, the distance falling.
    page.click("#chapter-next")
    unroll = wait_drawn(page, "unroll-chart", "unroll", 3)
    assert {t["name"] for t in unroll["traces"]} == {"first “e”", "first “l”", "first “o”"}
    assert "chapter=2" in page.url and "seed=1" in page.url
    set_range(page, "unroll-steps", 40)
    page.wait_for_function("() => document.getElementById('unroll-chart').data[0].x.length === 40")

    # 3: the trajectory ends on the leading eigenvector, whose line is drawn.
    page.click("#chapter-next")
    power = wait_drawn(page, "power-chart", "power")
    eig = [t for t in power["traces"] if t["meta"] == "eigenvector"]
    assert len(eig) == 2
    W = np.array([[1.0, 0.5], [0.2, 0.8]])
    values, vectors = np.linalg.eig(W)
    lead = vectors[:, np.argmax(values)]
    traj = next(t for t in power["traces"] if t["meta"] == "trajectory")
    assert len(traj["x"]) == 13 and abs(abs(np.dot([traj["x"][-1], traj["y"][-1]], lead)) - 1) < 1e-3
    assert np.dot([eig[0]["x"][1], eig[0]["y"][1]], lead) == pytest.approx(1.6, abs=1e-6) or \
        np.dot([eig[0]["x"][1], eig[0]["y"][1]], lead) == pytest.approx(-1.6, abs=1e-6)
    page.click("[data-mode=tanh]")
    page.wait_for_function("() => new URL(location).searchParams.get('mode') === 'tanh'")
    set_range(page, "power-w11", 0.3, "input")
    page.wait_for_function("() => new URL(location).searchParams.get('w') === '0.3,0.5,0.2,0.8'")
    # With w11 = 0.3 the spectral radius is below 1: tanh takes h to 0.
    page.wait_for_function("() => document.getElementById('power-eigen').textContent"
                           ".includes('shrinking towards 0')")

    # 4: the real RNN's gradient, one line per layer, equal to the gradients route's.
    page.click("#chapter-next")
    backward = wait_drawn(page, "backward-chart", "backward", 2)
    text = page.evaluate("() => document.getElementById('backward-passage').selectedOptions[0].textContent")
    assert text
    mine = page.request.post(f"{live_server}/api/learn/backward/rnn", data={"passage": 0}).json()
    theirs = page.request.post(f"{live_server}/api/models/rnn/gradients", data={"text": mine["text"]}).json()
    for trace, layer in zip(backward["traces"], theirs["layers"], strict=True):
        assert trace["y"] == [v if v else None for v in layer["h_grad_norm"]]
    page.fill("#backward-position", "100")
    page.dispatch_event("#backward-position", "change")
    page.wait_for_function("() => new URL(location).searchParams.get('position') === '100'")
    page.wait_for_function("() => document.getElementById('backward-chart').data[0].x.length === 101")
    page.fill("#backward-position", "")
    page.dispatch_event("#backward-position", "change")
    page.wait_for_function("() => document.getElementById('backward-chart').data[0].x.length > 101")
    set_range(page, "backward-scale", 1.5)
    page.wait_for_function("() => new URL(location).searchParams.get('scale') === '1.5'")
    page.wait_for_function("() => document.getElementById('backward-spectrum').textContent"
                           ".includes('× 1.50')")

    # 5: the norms and losses of both runs, the threshold drawn.
    page.click("#chapter-next")
    clip = wait_drawn(page, "clip-chart", "clipping", 4)
    assert [t["meta"] for t in clip["traces"]] == ["norm-0", "loss-0", "norm-1", "loss-1"]
    assert len(clip["traces"][2]["x"]) == 400 and len(clip["traces"][0]["x"]) < 400    # unclipped: blew up
    assert "stopped at step" in page.locator("#clip-caption").inner_text()
    set_range(page, "clip-threshold", 2.5)
    page.wait_for_function("() => new URL(location).searchParams.get('clip') === '2.5'")
    page.wait_for_function("() => document.getElementById('clip-chart').data[2].name === 'clipped at 2.5'")

    # 6: the RNN's Jacobian beside the LSTM's and GRU's gate products (and their best units).
    page.click("#chapter-next")
    highway = wait_drawn(page, "highway-chart", "highway", 5)
    assert [t["meta"] for t in highway["traces"]] == ["rnn-rms", "lstm-rms", "lstm-top", "gru-rms", "gru-top"]
    assert all(t["y"][0] == 1 and len(t["x"]) == 81 for t in highway["traces"])
    page.click("[data-layer=bottom]")
    page.wait_for_function("() => new URL(location).searchParams.get('layer') === 'bottom'")

    # 7: the cells, linked where the model is loaded.
    page.click("#chapter-next")
    page.wait_for_selector("#cells .view-card")
    links = page.eval_on_selector_all("#cells a.view-card", "els => els.map((a) => a.getAttribute('href'))")
    assert "/explore?model=lstm&layer=0&quantity=c&neuron=194" in links
    assert not any("python" in href for href in links)            # not loaded on the test server
    assert "Needs the bundled python model" in page.locator("#cells").inner_text()
    # The test server's lstm has 32 units, so unit 194 of the bundled one cannot be read: said, not drawn.
    page.wait_for_selector("#cell-status[data-state=empty]")
    assert "bundled Shakespeare LSTM" in page.locator("#cell-status").inner_text()
    assert page.locator("#cell-chart").is_hidden()
    assert page.locator("#chapter-next").is_disabled()


def test_learn_link_restores_a_chapter_with_its_settings(page, live_server):
    page.goto(f"{live_server}/learn?chapter=3&w=0.3,-1.2,-0.7,0.4&h0=1,0.1&iters=30")
    power = wait_drawn(page, "power-chart", "power")
    assert page.locator("[data-chapter='3'].learn-chapter").is_visible()
    assert page.locator(".learn-chapter[data-chapter='1']").is_hidden()
    traj = next(t for t in power["traces"] if t["meta"] == "trajectory")
    values, vectors = np.linalg.eig(np.array([[0.3, -1.2], [-0.7, 0.4]]))
    lead = vectors[:, np.argmax(np.abs(values))]
    assert len(traj["x"]) == 31 and abs(abs(np.dot([traj["x"][-1], traj["y"][-1]], lead)) - 1) < 1e-6
    page.goto(f"{live_server}/learn?chapter=4&model=nope")
    wait_drawn(page, "backward-chart", "backward", 2)                   # an unknown model falls back to rnn
    page.goto(f"{live_server}/learn?chapter=1&seed=4&t=3")
    wait_drawn(page, "hello-chart", "hello", 4)
    assert page.locator("#hello-t").inner_text() == "4"


def test_the_line_length_cell_chapter_7_draws_tracks_the_line():
    """Chapter 7 draws unit 194 of the bundled LSTM's layer-0 cell state as a line-length cell."""
    from rnnscope.app.web.pages import PASSAGES
    from rnnscope.model.bundled import bundled_paths
    from rnnscope.model.checkpoint import load_model

    path = bundled_paths().get("lstm")
    if path is None:
        pytest.skip("the bundled lstm is not in model/weights")
    m = load_model(path)
    text = PASSAGES[0][1]
    c = lecture.gates_of(m, text, 0, "c")[:, 194]
    column, run = [], 0
    for ch in text:
        column.append(run)
        run = 0 if ch == "\n" else run + 1
    assert np.corrcoef(c, column)[0, 1] < -0.7


def test_backward_reads_no_more_than_max_gradient_chars(settings):
    from fastapi.testclient import TestClient

    from rnnscope.app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"max_gradient_chars": 50}))) as c:
        d = c.post("/api/learn/backward/rnn", json={"passage": 0}).json()
    assert d["position"] == 49 and len(d["layers"][0]["h_grad_norm"]) == 50
