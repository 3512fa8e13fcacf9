"""The maths, proven: finite differences, the naive lecture equations, and stepping."""
import numpy as np
import pytest

from rnnscope.model import network
from rnnscope.model.cells import CELLS
from rnnscope.model.layers import softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, State
from rnnscope.model.sample import Stepper
from rnnscope.model.vocab import Vocab
from tests.naive import cross_entropy, naive_forward

N, T, V, H = 2, 3, 4, 5          # tiny sizes: finite differences stay cheap and exact
EPS = 1e-6
TOL = 1e-6                       # relative error per tensor: ||a - b|| / (||a|| + ||b||)


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


def setup(cell, layers, seed=0):
    cfg = ModelConfig(cell, V, H, layers)
    params = network.init_params(cfg, seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    # Non-trivial weights everywhere, so no gradient is small by accident.
    for p in params.values():
        p += rng.normal(0.0, 0.3, p.shape)
    ids = rng.integers(0, V, (N, T))
    targets = rng.integers(0, V, (N, T))
    has_c = CELLS[cell].has_cell_state
    state = State(rng.normal(0, 0.5, (layers, N, H)), rng.normal(0, 0.5, (layers, N, H)) if has_c else None)
    # A gradient carried back from a later segment onto the final state: the loss gains
    # sum(w_h * h_T) (+ sum(w_c * c_T)), whose gradient is exactly (w_h, w_c).
    carried = State(rng.normal(size=state.h.shape), None if state.c is None else rng.normal(size=state.c.shape))
    return cfg, params, ids, targets, state, carried


def total_loss(cfg, params, ids, targets, state, carried):
    logits, final, _ = network.forward(cfg, params, ids, state)
    loss = softmax_cross_entropy(logits, targets, need_grad=False)[0] + np.sum(carried.h * final.h)
    if final.c is not None:
        loss += np.sum(carried.c * final.c)
    return loss


def numeric_grad(f, x):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        plus = f()
        x[i] = old - EPS
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * EPS)
    return grad


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_parameter_gradients_match_finite_differences(cell, layers):
    cfg, params, ids, targets, state, carried = setup(cell, layers)
    logits, _, cache = network.forward(cfg, params, ids, state)
    _, dlogits, _ = softmax_cross_entropy(logits, targets)
    grads = network.backward(cfg, params, dlogits, cache, carried)

    f = lambda: total_loss(cfg, params, ids, targets, state, carried)  # noqa: E731
    for name, p in params.items():
        assert rel_error(numeric_grad(f, p), grads.params[name]) < TOL, name
    # The gradient on the initial (carried-in) state, for the previous segment.
    assert rel_error(numeric_grad(f, state.h), grads.state.h) < TOL
    if state.c is not None:
        assert rel_error(numeric_grad(f, state.c), grads.state.c) < TOL


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_gradients_are_total_derivatives(cell, layers):
    """BPTT's dh_t (and dc_t) equal the finite-difference derivative of the loss with
    respect to a perturbation of h_t (c_t) seen by every later use of it."""
    cfg, params, ids, targets, state, _ = setup(cell, layers, seed=3)
    logits, _, cache = network.forward(cfg, params, ids, state)
    _, dlogits, _ = softmax_cross_entropy(logits, targets)
    grads = network.backward(cfg, params, dlogits, cache)

    h_delta = np.zeros((layers, N, T, H))
    c_delta = np.zeros((layers, N, T, H))
    has_c = state.c is not None

    def f():
        logits, _ = naive_forward(cell, params, ids, state.h, state.c, h_delta, c_delta if has_c else None)
        return cross_entropy(logits, targets)

    numeric_dh = numeric_grad(f, h_delta)
    for l in range(layers):
        assert rel_error(numeric_dh[l], grads.dh[l][:, 1:]) < TOL, f"dh layer {l}"
    if has_c:
        numeric_dc = numeric_grad(f, c_delta)
        for l in range(layers):
            assert rel_error(numeric_dc[l], grads.dc[l][:, 1:]) < TOL, f"dc layer {l}"


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fused_cells_equal_the_naive_lecture_equations(cell):
    cfg, params, ids, _, state, _ = setup(cell, 2, seed=5)
    logits, _, cache = network.forward(cfg, params, ids, state)
    naive_logits, records = naive_forward(cell, params, ids, state.h, state.c)
    assert rel_error(logits, naive_logits) < 1e-12
    vocab = Vocab("abcd")
    model = LanguageModel(cfg, vocab, params)
    single = network.forward(cfg, params, ids[:1], State(state.h[:, :1], None if state.c is None else state.c[:, :1]))[2]
    for l in range(2):
        for q in model.cell.quantities:
            assert rel_error(model.internals(single, l, q), records[l][q][0]) < 1e-12, (l, q)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_stepping_one_character_at_a_time_equals_the_whole_sequence(cell):
    cfg = ModelConfig(cell, V, 8, 2)
    params = network.init_params(cfg, 7, np.float64)
    model = LanguageModel(cfg, Vocab("abcd"), params)
    ids = np.random.default_rng(0).integers(0, V, 20)
    logits, final, _ = model.forward(ids[None])
    stepper = Stepper(model)
    stepped = np.stack([stepper.step(int(i)).copy() for i in ids])
    assert rel_error(stepped, logits[0]) < 1e-12
    assert rel_error(stepper.state.h, final.h) < 1e-12
    # Two segments with the state carried between them equal one pass.
    first, mid, _ = model.forward(ids[None, :9])
    second, end, _ = model.forward(ids[None, 9:], mid)
    assert rel_error(np.concatenate([first, second], axis=1), logits) < 1e-12
    assert rel_error(end.h, final.h) < 1e-12


def test_dropout_gradients_match_finite_differences():
    cfg, params, ids, targets, state, carried = setup("lstm", 2, seed=9)

    def run():
        return network.forward(cfg, params, ids, state, dropout=0.3, rng=np.random.default_rng(42))

    logits, _, cache = run()
    _, dlogits, _ = softmax_cross_entropy(logits, targets)
    grads = network.backward(cfg, params, dlogits, cache)
    assert any(m is not None and (m == 0).any() for m in cache.masks)
    f = lambda: softmax_cross_entropy(run()[0], targets, need_grad=False)[0]  # noqa: E731
    for name in ("rnn.weight_ih_l1", "rnn.weight_hh_l0", "decoder.weight"):
        assert rel_error(numeric_grad(f, params[name]), grads.params[name]) < TOL, name


def test_float32_forward_agrees_with_float64():
    cfg, params, ids, _, state, _ = setup("lstm", 2)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    s32 = State(state.h.astype(np.float32), state.c.astype(np.float32))
    l64 = network.forward(cfg, params, ids, state)[0]
    l32 = network.forward(cfg, p32, ids, s32)[0]
    assert l32.dtype == np.float32
    assert rel_error(l32.astype(np.float64), l64) < 1e-5
