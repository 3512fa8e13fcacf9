"""`import rnnscope` in a notebook: the importers equal the equations they name, written out
here in NumPy as a student would; the views hold the pages' numbers and colours."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

import rnnscope
from rnnscope import colours

ROOT = Path(__file__).resolve().parent.parent
TEXT = "hello world, hello there\nwho goes there?\n"


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax_losses(ys, ids):
    """-ln p(ids[t+1] | ids[..t]) from column logits ys[t] (V,)."""
    out = []
    for t in range(len(ids) - 1):
        y = ys[t] - ys[t].max()
        out.append(-(y[ids[t + 1]] - np.log(np.exp(y).sum())))
    return np.array(out)


def min_char_rnn_forward(Wxh, Whh, Why, bh, by, ids, V):
    """Karpathy's min-char-rnn lossFun, forward half, character by character."""
    h = np.zeros((Whh.shape[0], 1))
    hs, ys = [], []
    for i in ids:
        x = np.zeros((V, 1))
        x[i] = 1
        h = np.tanh(Wxh @ x + Whh @ h + bh)
        hs.append(h[:, 0])
        ys.append((Why @ h + by)[:, 0])
    return np.array(hs), softmax_losses(ys, ids)


def test_min_char_rnn_equals_its_own_equations():
    rng = np.random.default_rng(0)
    chars = list(set(TEXT))                      # his order: a set's, not sorted
    V, H = len(chars), 24
    Wxh, Whh, Why = rng.normal(0, 0.3, (H, V)), rng.normal(0, 0.3, (H, H)), rng.normal(0, 0.3, (V, H))
    bh, by = rng.normal(0, 0.1, (H, 1)), rng.normal(0, 0.1, (V, 1))
    model = rnnscope.from_min_char_rnn(Wxh, Whh, Why, bh, by, chars)
    hs, losses = min_char_rnn_forward(Wxh, Whh, Why, bh, by, [chars.index(c) for c in TEXT], V)
    trace = model.trace(TEXT)
    np.testing.assert_allclose(trace.loss, losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trace.layers[0].h, hs, rtol=0, atol=1e-6)


def lstm_stacked(W, b, Wy, by, xs):
    """The lecture notes: a = W [h; x] + b, gates in f, i, o, g order, column vectors."""
    H = W.shape[0] // 4
    h, c = np.zeros(H), np.zeros(H)
    hs, cs, ys = [], [], []
    for x in xs:
        a = W @ np.concatenate([h, x]) + b
        f, i, o, g = sigmoid(a[:H]), sigmoid(a[H:2 * H]), sigmoid(a[2 * H:3 * H]), np.tanh(a[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h), cs.append(c), ys.append(Wy @ h + by)
    return np.array(hs), np.array(cs), ys


def lstm_split(Wx, Wh, b, Wy, by, xs):
    """The assignment's lstm_step_forward: a = x Wx + h Wh + b, gates i, f, o, g, row vectors."""
    H = Wh.shape[0]
    h, c = np.zeros(H), np.zeros(H)
    hs, cs, ys = [], [], []
    for x in xs:
        a = x @ Wx + h @ Wh + b
        i, f, o, g = sigmoid(a[:H]), sigmoid(a[H:2 * H]), sigmoid(a[2 * H:3 * H]), np.tanh(a[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h), cs.append(c), ys.append(h @ Wy + by)
    return np.array(hs), np.array(cs), ys


@pytest.mark.parametrize("embedded", [False, True])
def test_lecture_notes_stacked_lstm_equals_its_equations(embedded):
    rng = np.random.default_rng(1)
    chars = sorted(set(TEXT))[::-1]
    V, H, D = len(chars), 16, (7 if embedded else len(chars))
    ids = [chars.index(c) for c in TEXT]
    E = rng.normal(0, 0.5, (V, D)) if embedded else np.eye(V)
    W, b = rng.normal(0, 0.3, (4 * H, H + D)), rng.normal(0, 0.2, 4 * H)
    Wy, by = rng.normal(0, 0.3, (V, H)), rng.normal(0, 0.1, V)
    hs, cs, ys = lstm_stacked(W, b, Wy, by, [E[i] for i in ids])
    model = rnnscope.from_arrays(chars, W=W, b=b, Wy=Wy, by=by, gates="fiog", embedding=E if embedded else None)
    trace = model.trace(TEXT)
    np.testing.assert_allclose(trace.loss, softmax_losses(ys, ids), rtol=0, atol=1e-6)
    np.testing.assert_allclose(trace.layers[0].h, hs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trace.layers[0].c, cs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("biases", [True, False])
def test_assignment_split_lstm_equals_its_equations(biases):
    rng = np.random.default_rng(2)
    chars = sorted(set(TEXT))
    V, H, D = len(chars), 12, 5
    ids = [chars.index(c) for c in TEXT]
    E = rng.normal(0, 0.5, (V, D))
    Wx, Wh = rng.normal(0, 0.3, (D, 4 * H)), rng.normal(0, 0.3, (H, 4 * H))
    b = rng.normal(0, 0.2, 4 * H) if biases else np.zeros(4 * H)
    Wy, by = rng.normal(0, 0.3, (H, V)), (rng.normal(0, 0.1, V) if biases else np.zeros(V))
    hs, cs, ys = lstm_split(Wx, Wh, b, Wy, by, [E[i] for i in ids])
    model = rnnscope.from_arrays(chars, Wx=Wx, Wh=Wh, b=b if biases else None, Wy=Wy, by=by if biases else None,
                                 gates="ifog", embedding=E)
    trace = model.trace(TEXT)
    np.testing.assert_allclose(trace.loss, softmax_losses(ys, ids), rtol=0, atol=1e-6)
    np.testing.assert_allclose(trace.layers[0].h, hs, rtol=0, atol=1e-6)


def test_importers_name_what_is_wrong():
    chars = sorted(set(TEXT))
    V, H = len(chars), 4
    with pytest.raises(ValueError, match="gates must name"):
        rnnscope.from_arrays(chars, W=np.zeros((4 * H, H + V)), Wy=np.zeros((V, H)), gates="ifgx")
    with pytest.raises(ValueError, match="either W"):
        rnnscope.from_arrays(chars, W=np.zeros((4 * H, H + V)), Wx=np.zeros((V, 4 * H)), Wh=np.zeros((H, 4 * H)),
                             Wy=np.zeros((V, H)))
    with pytest.raises(ValueError, match="more than once"):
        rnnscope.from_min_char_rnn(np.zeros((H, V)), np.zeros((H, H)), np.zeros((V, H)), np.zeros((H, 1)),
                                   np.zeros((V, 1)), ["a"] * V)
    with pytest.raises(FileNotFoundError, match="bundled model"):
        rnnscope.load("no-such-model")


def test_trace_holds_every_internal_and_the_pages_losses():
    lstm = rnnscope.load("lstm")
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    trace = lstm.trace(text)
    _, losses, _ = lstm.lm.run(text)
    np.testing.assert_allclose(trace.loss, losses, rtol=1e-5, atol=1e-6)
    assert trace.loss.shape == (len(text) - 1,)
    for layer in trace.layers:
        for q in ("h", "c", "i", "f", "g", "o"):
            assert layer.quantity(q).shape == (len(text), 256)
    assert trace.layers[1].f is trace.layers[1].gates["f"]
    with pytest.raises(ValueError, match="choose from"):
        trace.values(0, "z")


def test_coloured_text_is_self_contained_and_coloured_as_the_page():
    lstm = rnnscope.load("lstm")
    shown = lstm.show("To be, or not to be:\nthat is the question.", layer=0, quantity="c", neuron=194)
    page = shown._repr_html_()
    assert not re.search(r"(src|href)\s*=|https?://|<script|url\(", page, re.I), "the cell must not reach out"
    values, (lo, hi) = shown.values, shown.value_range
    first = colours.colour_at(colours.DIVERGING, -1 + (float(values[0]) - lo) / (hi - lo) * 2)
    assert f"background:{colours.rgb(first)}" in page
    assert page.count('title="') == len("To be, or not to be:\nthat is the question.")
    assert "top 5 guesses" in page


def test_figures_are_plotly_figures():
    import plotly.graph_objects as go
    rnn, lstm = rnnscope.load("rnn"), rnnscope.load("lstm")
    text = "To be, or not to be, that is the question: whether 'tis nobler"
    for fig in (rnn.gradients(text).plot(), lstm.gates(text).plot(), lstm.heatmap(text, neurons=[1, 2, 3])):
        assert isinstance(fig, go.Figure) and fig.data
    g = lstm.gradients(text, position=10)
    assert g.position == 10 and len(g.h) == 2 and g.h[0].shape == (11,)


def test_probe_finds_the_python_string_cell_and_sample_is_text():
    py = rnnscope.load("python")
    code = 'name = "hello world"\nif x:\n    print("a string", y)\n# done\nz = f("it", "is")\n'
    table = py.probe(code, concept="string", top=5)
    assert len(table.rows) == 5 and table.rows[0]["strength"] > 0.7
    assert "<table" in table._repr_html_() and "<th style='padding:2px 10px'>AUC</th>" in table._repr_html_()
    with pytest.raises(ValueError, match="holds nowhere|nowhere"):
        py.probe("x = 1\n", concept="string")
    sample = py.sample("def ", 40, seed=3)
    assert isinstance(sample, str) and len(sample) == 40 and len(sample.probabilities) == 40
    assert sample == py.sample("def ", 40, seed=3)


def test_serve_opens_a_notebook_model_in_the_web_app(tmp_path):
    rng = np.random.default_rng(0)
    chars = sorted(set(TEXT))
    V, H = len(chars), 8
    model = rnnscope.from_min_char_rnn(rng.normal(0, .1, (H, V)), rng.normal(0, .1, (H, H)),
                                       rng.normal(0, .1, (V, H)), np.zeros((H, 1)), np.zeros((V, 1)), chars,
                                       name="My RNN")
    server = rnnscope.serve(model, data_dir=tmp_path, bundled=False)
    try:
        assert [m["id"] for m in httpx.get(server.url + "/api/models").json()] == ["my-rnn"]
        assert httpx.get(server.link()).status_code == 200
        r = httpx.post(server.url + "/api/models/my-rnn/trace", json={"text": "hello"})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


NODE_CHECK = """
import { DIVERGING, SEQUENTIAL, SURPRISE, colourAt, inkOn, showChar } from "./common.mjs";
const values = JSON.parse(process.argv[2]);
const out = {};
for (const [name, stops] of [["DIVERGING", DIVERGING], ["SEQUENTIAL", SEQUENTIAL], ["SURPRISE", SURPRISE]]) {
  out[name] = { stops, colours: values.map((v) => colourAt(stops, v)), ink: values.map((v) => inkOn(colourAt(stops, v))) };
}
out.chars = [" ", "\\n", "\\f", "\\r", "\\x7f", "a", "\\u00a0", "\\u200d", "\\u00e9"].map(showChar);
console.log(JSON.stringify(out));
"""


def test_the_notebook_colours_equal_the_pages(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's colour maths cannot run outside a browser here")
    shutil.copy(ROOT / "static" / "js" / "common.js", tmp_path / "common.mjs")
    (tmp_path / "check.mjs").write_text(NODE_CHECK)
    values = [float(v) for v in np.linspace(-1.3, 1.3, 263)] + [-0.5, 0.25, 0.125, 0.7, 1 / 3]
    done = subprocess.run([node, "check.mjs", json.dumps(values)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=os.environ | {"NODE_NO_WARNINGS": "1"})
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    for name in ("DIVERGING", "SEQUENTIAL", "SURPRISE"):
        stops = getattr(colours, name)
        assert [[x, list(c)] for x, c in stops] == page[name]["stops"], name
        assert [list(colours.colour_at(stops, v)) for v in values] == page[name]["colours"], name
        assert [colours.ink_on(colours.colour_at(stops, v)) for v in values] == page[name]["ink"], name
    assert [colours.show_char(c) for c in [" ", "\n", "\f", "\r", "\x7f", "a", "\u00a0", "\u200d", "\u00e9"]] == page["chars"]


def test_from_torch_equals_torch():
    if os.environ.get("RNNSCOPE_REQUIRE_TORCH") == "1":
        import torch
    else:
        torch = pytest.importorskip("torch", reason="torch is not installed (`make test` installs torch==2.13.0 "
                                                    "where RNNSCOPE_REQUIRE_TORCH=1, as CI does)")

    class CharGRU(torch.nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab_size, 6)
            self.rnn = torch.nn.GRU(6, 10, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(10, vocab_size)

        def forward(self, ids):
            return self.head(self.rnn(self.embed(ids))[0])

    chars = sorted(set(TEXT))[::-1]                       # ids in an order of the caller's own
    torch.manual_seed(0)
    net = CharGRU(len(chars)).double()
    ids = torch.tensor([[chars.index(c) for c in TEXT]])
    with torch.no_grad():
        theirs = -torch.log_softmax(net(ids), -1)[0, :-1].gather(1, ids[0, 1:, None])[:, 0].numpy()
    for source in (net, net.state_dict()):
        np.testing.assert_allclose(rnnscope.from_torch(source, chars).trace(TEXT).loss, theirs, rtol=0, atol=1e-6)
