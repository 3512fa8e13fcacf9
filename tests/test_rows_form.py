"""The batch-1 floor (issue 21): a trace of one text and the sampler step the LSTM with its
few-rows form (cells.LSTMCell.row_step: gate blocks scaled by powers of two in
the weights, fewer NumPy calls). It must give forward_step's values bit for bit, so each test
runs the same work with the form switched off and asserts exact equality: float32 and float64,
carried states, clamps, and weights large enough that exp(-a) overflows to inf (sigmoid 0).
The sampler's softmax-and-draw shortcuts are held to the formulas they replace, also exactly."""
import math

import numpy as np
import pytest

from rnnscope.model import network
from rnnscope.model.cells import ROWS_CHUNK, LSTMCell, get_cell
from rnnscope.model.layers import Clamp, softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, State
from rnnscope.model.sample import F32_MAX, BatchSampler, Stepper, draw, generate, next_char_distribution
from rnnscope.model.vocab import Vocab

CHARS = "abcdefg"
V, H, T = len(CHARS), 24, 300


def model(dtype, spread: float, layers: int = 2, seed: int = 0) -> LanguageModel:
    """Weights made `spread` times noisier than init: at 10 (100 in float64) the gates saturate and exp overflows."""
    cfg = ModelConfig("lstm", V, H, layers)
    params = network.init_params(cfg, seed, dtype)
    rng = np.random.default_rng(seed + 1)
    for p in params.values():
        p += rng.normal(0.0, spread, p.shape).astype(dtype)
    return LanguageModel(cfg, Vocab(CHARS), params)


def carried(lm: LanguageModel, seed: int = 2) -> State:
    rng = np.random.default_rng(seed)
    shape = (lm.config.num_layers, 1, H)
    return State(rng.normal(0, 1, shape).astype(lm.dtype), rng.normal(0, 5, shape).astype(lm.dtype))


def without_rows_form(monkeypatch, fn):
    """fn() with every path back on forward_step, then the form restored."""
    with monkeypatch.context() as m:
        m.setattr(LSTMCell, "row_scale", ())
        assert not get_cell("lstm").has_rows_form
        return fn()


def overflows(lm: LanguageModel, ids) -> bool:
    """Whether exp(-a) overflows somewhere on this text, so the saturated case is really
    tested: a sigmoid gate is exactly 0 only then (1 / (1 + the largest finite exp) is not 0)."""
    _, _, cache = lm.forward(ids[None])
    return any((lc.acts[..., gate * H:(gate + 1) * H] == 0).any() for lc in cache.layers for gate in (0, 1, 3))


CASES = [(np.float32, 0.1), (np.float32, 10.0), (np.float64, 0.1), (np.float64, 100.0)]


@pytest.mark.parametrize("dtype,spread", CASES)
def test_batch_one_trace_equals_the_step_loop_bit_for_bit(monkeypatch, dtype, spread):
    lm = model(dtype, spread)
    ids = np.random.default_rng(3).integers(0, V, T)
    assert overflows(lm, ids) == (spread > 1)
    clamp = {1: Clamp(np.array([1, 5]), dtype(0.3))}
    for state, cl in ((None, None), (carried(lm), None), (carried(lm), clamp)):
        ours = lm.forward(ids[None], state, cl)
        ref = without_rows_form(monkeypatch, lambda: lm.forward(ids[None], state, cl))
        assert np.array_equal(ours[0], ref[0])
        assert np.array_equal(ours[1].h, ref[1].h) and np.array_equal(ours[1].c, ref[1].c)
        for a, b in zip(ours[2].layers, ref[2].layers):
            assert a.xa is None            # taken over as the activations' buffer: backward never reads it
            for name in ("acts", "stash", "hs", "cs"):
                x, y = getattr(a, name), getattr(b, name)
                assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y), name
                assert x.flags.c_contiguous, name


def test_a_batch_of_rows_still_takes_the_step_loop(monkeypatch):
    """N > 1 is training's and the batched reader's path: unchanged, so equal to it exactly."""
    lm = model(np.float32, 0.5)
    ids = np.random.default_rng(4).integers(0, V, (3, 50))
    ours = lm.forward(ids)
    ref = without_rows_form(monkeypatch, lambda: lm.forward(ids))
    assert np.array_equal(ours[0], ref[0])


@pytest.mark.parametrize("dtype,spread", CASES)
@pytest.mark.parametrize("layers", [1, 3])
def test_stepper_equals_the_step_loop_bit_for_bit(monkeypatch, dtype, spread, layers):
    lm = model(dtype, spread, layers)
    ids = np.random.default_rng(5).integers(0, V, T)
    state = carried(lm)
    clamp = {layers - 1: Clamp(np.array([0, 7]), dtype(-0.4)), 0: Clamp(np.array([3]), dtype(0.0))}

    def run():
        stepper = Stepper(lm, state, clamp)
        logits = np.stack([stepper.step(int(i)).copy() for i in ids])
        return logits, stepper.state, list(generate(lm, "abc", 100, 0.9, 2, seed=7))

    ours, ref = run(), without_rows_form(monkeypatch, run)
    assert np.array_equal(ours[0], ref[0])
    assert np.array_equal(ours[1].h, ref[1].h) and np.array_equal(ours[1].c, ref[1].c)
    assert ours[1].c.flags.c_contiguous
    assert ours[2] == ref[2]                      # characters and probabilities
    assert np.array_equal(state.c, carried(lm).c)  # the stepper never writes into its given state


def test_batched_samples_equal_the_step_loops_samples(monkeypatch):
    lm = model(np.float32, 10.0)

    def run():
        sampler = BatchSampler(lm)
        for key, (prime, seed) in enumerate((("ab", 1), ("", 2), ("gfe", 3))):
            sampler.add(key, prime, 40, 1.0, 0, seed)
        out = []
        while len(sampler):
            out += sampler.step()
        return out

    assert run() == without_rows_form(monkeypatch, run)


def old_distribution(logits, temperature, top_k=0):
    """next_char_distribution as it was written before the batch-1 work: the reference."""
    z = logits.astype(np.float64)
    if not math.isfinite(z.max()):
        z = np.nan_to_num(z, nan=-F32_MAX, posinf=F32_MAX, neginf=-F32_MAX)
    if not temperature >= 1e-3:
        probs = np.zeros_like(z)
        probs[int(np.argmax(z))] = 1.0
        return probs
    z /= temperature
    if 0 < top_k < z.size:
        cutoff = np.partition(z, -top_k)[-top_k]
        z[z < cutoff] = -np.inf
    z -= z.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


def test_the_softmax_and_the_draw_equal_their_reference_formulas_bit_for_bit():
    rng = np.random.default_rng(6)
    cases = [rng.normal(0, s, 65).astype(np.float32) for s in (0.01, 1.0, 30.0, 1e30)]
    broken = rng.normal(0, 1, 65).astype(np.float32)
    broken[[3, 9, 40]] = [np.nan, np.inf, -np.inf]
    cases.append(broken)
    for logits in cases:
        for temperature in (0.0, 1e-3, 0.37, 1.0, 3.0, 1e30):
            for top_k in (0, 1, 5, 65):
                ours = next_char_distribution(logits, temperature, top_k)
                assert np.array_equal(ours, old_distribution(logits, temperature, top_k))
                seed = int(rng.integers(1 << 30))
                u = np.random.default_rng(seed).random()
                cdf = np.cumsum(ours)
                expected = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), ours.size - 1)
                while ours[expected] == 0.0:
                    expected -= 1
                assert draw(ours, np.random.default_rng(seed)) == expected


@pytest.mark.parametrize("dtype,spread", CASES)
def test_backward_through_a_batch_one_trace_equals_the_step_loops_bit_for_bit(monkeypatch, dtype, spread):
    """The one-row loop keeps no xa (it became the activations); backward, which reads only
    its shape, gives the step loop's gradients exactly."""
    lm = model(dtype, spread)
    rng = np.random.default_rng(8)
    ids, targets = rng.integers(0, V, (1, 60)), rng.integers(0, V, (1, 60))
    state = carried(lm)

    def grads():
        logits, _, cache = network.forward(lm.config, lm.params, ids, state)
        _, dlogits, _ = softmax_cross_entropy(logits, targets)
        return network.backward(lm.config, lm.params, dlogits, cache, input_grad=True)

    ours, ref = grads(), without_rows_form(monkeypatch, grads)
    assert all(np.array_equal(ours.params[k], ref.params[k]) for k in ref.params)
    assert all(np.array_equal(a, b) for a, b in zip(ours.dh + ours.dc, ref.dh + ref.dc))
    assert np.array_equal(ours.dx, ref.dx)


def test_a_batch_one_trace_equals_the_step_loop_at_every_chunk_edge(monkeypatch):
    """forward_rows copies its [g | c] rows out every ROWS_CHUNK steps: texts ending on,
    just before and just after a chunk's edge give the step loop's values exactly."""
    lm = model(np.float32, 1.0)
    state = carried(lm)
    for T_ in (1, ROWS_CHUNK - 1, ROWS_CHUNK, 2 * ROWS_CHUNK, 2 * ROWS_CHUNK + 1):
        ids = np.random.default_rng(T_).integers(0, V, T_)
        ours = lm.forward(ids[None], state)
        ref = without_rows_form(monkeypatch, lambda ids=ids: lm.forward(ids[None], state))
        assert np.array_equal(ours[0], ref[0]) and np.array_equal(ours[1].c, ref[1].c), T_
        for a, b in zip(ours[2].layers, ref[2].layers):
            assert all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("acts", "stash", "hs", "cs")), T_
