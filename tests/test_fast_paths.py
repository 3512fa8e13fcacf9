"""The faster paths, held to the reference in float32: the time loop with b_hh folded into
the input term and contiguous transposed weights, the in-place backward, the batch-1
sampler stepper, the one-thread batch-1 forward, and compact corpus ids.

The references: the naive lecture equations (tests/naive.py) for values, PyTorch's own
cells in float64 for gradients, and the reference cells' float64 run, which finite
differences prove in test_model_math.py. Every cell, 1 and 2 layers, with carried state.
"""
import os

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from rnnscope.model import network
from rnnscope.model.cells import CELLS
from rnnscope.model.data import StreamBatches
from rnnscope.model.layers import blas_threads_for, one_blas_thread, set_blas_threads, softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, State
from rnnscope.model.sample import (GENERATE_BLOCK, Picker, Stepper, draw, generate, next_char_distribution,
                                   read_prime)
from rnnscope.model.vocab import Vocab, id_dtype
from tests.naive import naive_forward

if os.environ.get("RNNSCOPE_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch", reason="torch is not installed (`make test` installs torch==2.13.0 "
                                                   "where RNNSCOPE_REQUIRE_TORCH=1, as CI does)")

N, T, V, H = 3, 9, 7, 16
F32_TOL = 2e-5            # relative error per tensor, ||a - b|| / (||a|| + ||b||), for float32 against float64
TORCH_CELLS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
CASES = [(cell, layers) for cell in CELLS for layers in (1, 2)]


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


def setup(cell, layers, n=N, seed=0):
    """float64 weights made non-trivial, float32 copies, ids, targets, a carried state and
    a gradient carried back onto the final state."""
    cfg = ModelConfig(cell, V, H, layers)
    params64 = network.init_params(cfg, seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    for p in params64.values():
        p += rng.normal(0.0, 0.2, p.shape)
    params32 = {k: v.astype(np.float32) for k, v in params64.items()}
    ids = rng.integers(0, V, (n, T))
    targets = rng.integers(0, V, (n, T))
    has_c = CELLS[cell].has_cell_state
    h0 = rng.normal(0, 0.5, (layers, n, H))
    c0 = rng.normal(0, 0.5, (layers, n, H)) if has_c else None
    dh_T = rng.normal(size=h0.shape)
    dc_T = rng.normal(size=h0.shape) if has_c else None
    return cfg, params64, params32, ids, targets, State(h0, c0), State(dh_T, dc_T)


def as32(state):
    return State(state.h.astype(np.float32), None if state.c is None else state.c.astype(np.float32))


@pytest.mark.parametrize("cell,layers", CASES)
def test_float32_forward_equals_the_lecture_equations_with_carried_state(cell, layers):
    cfg, params64, params32, ids, _, state, _ = setup(cell, layers)
    logits, final, cache = network.forward(cfg, params32, ids, as32(state))
    naive_logits, records = naive_forward(cell, params64, ids, state.h, state.c)
    assert logits.dtype == np.float32
    assert rel_error(logits, naive_logits) < F32_TOL
    model = LanguageModel(cfg, Vocab("abcdefg"), params32)
    for l in range(layers):
        assert rel_error(final.h[l], records[l]["h"][:, -1]) < F32_TOL
        if final.c is not None:
            assert rel_error(final.c[l], records[l]["c"][:, -1]) < F32_TOL
        for q in model.cell.quantities:
            ours = np.stack([model.internals(network.forward(cfg, params32, ids[n:n + 1],
                                                             as32(State(state.h[:, n:n + 1], None if state.c is None else state.c[:, n:n + 1])))[2], l, q)
                             for n in range(N)])
            assert rel_error(ours, records[l][q]) < F32_TOL, (l, q)


class TorchCharModel(torch.nn.Module):
    def __init__(self, cell, layers):
        super().__init__()
        self.rnn = getattr(torch.nn, TORCH_CELLS[cell])(input_size=V, hidden_size=H, num_layers=layers)
        self.decoder = torch.nn.Linear(H, V)

    def forward(self, ids, state):
        x = torch.nn.functional.one_hot(ids.T, V).to(self.decoder.weight.dtype)
        out, final = self.rnn(x, state)
        return self.decoder(out).transpose(0, 1), final


@pytest.mark.parametrize("cell,layers", CASES)
def test_float32_backward_equals_torch_float64_with_carried_state(cell, layers):
    cfg, params64, params32, ids, targets, state, carried = setup(cell, layers, seed=3)
    logits, _, cache = network.forward(cfg, params32, ids, as32(state))
    _, dlogits, _ = softmax_cross_entropy(logits, targets)
    grads = network.backward(cfg, params32, dlogits, cache, as32(carried))

    ref = TorchCharModel(cell, layers).double()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params64.items()}, strict=True)
    h0 = torch.from_numpy(state.h.copy()).requires_grad_()
    c0 = None if state.c is None else torch.from_numpy(state.c.copy()).requires_grad_()
    ref_logits, final = ref(torch.from_numpy(ids), h0 if c0 is None else (h0, c0))
    loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
    h_T, c_T = (final, None) if c0 is None else final
    loss = loss + (h_T * torch.from_numpy(carried.h)).sum()
    if c_T is not None:
        loss = loss + (c_T * torch.from_numpy(carried.c)).sum()
    loss.backward()

    for name, p in ref.named_parameters():
        assert grads.params[name].dtype == np.float32
        assert rel_error(grads.params[name], p.grad.numpy()) < F32_TOL, name
    assert rel_error(grads.state.h, h0.grad.numpy()) < F32_TOL
    if c0 is not None:
        assert rel_error(grads.state.c, c0.grad.numpy()) < F32_TOL


@pytest.mark.parametrize("cell,layers", CASES)
def test_float32_state_gradients_equal_the_float64_reference(cell, layers):
    """dL/dh_t and dL/dc_t at every step (the gradient pages' values) from the in-place
    backward in float32 against the float64 run that finite differences prove."""
    cfg, params64, params32, ids, targets, state, carried = setup(cell, layers, seed=4)
    out = {}
    for name, params, st, ca in (("64", params64, state, carried), ("32", params32, as32(state), as32(carried))):
        logits, _, cache = network.forward(cfg, params, ids, st)
        _, dlogits, _ = softmax_cross_entropy(logits, targets)
        out[name] = network.backward(cfg, params, dlogits, cache, ca, input_grad=True)
    for l in range(layers):
        assert rel_error(out["32"].dh[l], out["64"].dh[l]) < F32_TOL
        if out["64"].dc[l] is not None:
            assert rel_error(out["32"].dc[l], out["64"].dc[l]) < F32_TOL
    assert rel_error(out["32"].dx, out["64"].dx) < F32_TOL


@pytest.mark.parametrize("cell,layers", CASES)
def test_batch_one_forward_on_one_thread_equals_the_batch(cell, layers):
    cfg, _, params32, ids, _, state, _ = setup(cell, layers, seed=5)
    st = as32(state)
    logits, final, _ = network.forward(cfg, params32, ids, st)
    for n in range(N):
        one = State(st.h[:, n:n + 1], None if st.c is None else st.c[:, n:n + 1])
        logits_n, final_n, _ = network.forward(cfg, params32, ids[n:n + 1], one)
        assert rel_error(logits_n[0], logits[n]) < F32_TOL
        assert rel_error(final_n.h[:, 0], final.h[:, n]) < F32_TOL


@pytest.mark.parametrize("cell,layers", CASES)
def test_sampler_stepper_equals_the_whole_sequence_with_carried_state(cell, layers):
    cfg, _, params32, ids, _, state, _ = setup(cell, layers, seed=6)
    model = LanguageModel(cfg, Vocab("abcdefg"), params32)
    st = State(as32(state).h[:, :1], None if state.c is None else as32(state).c[:, :1])
    seq = ids[0]
    logits, final, _ = model.forward(seq[None], st)
    stepper = Stepper(model, st)
    stepped = np.stack([stepper.step(int(i)).copy() for i in seq])
    assert rel_error(stepped, logits[0]) < F32_TOL
    assert rel_error(stepper.state.h, final.h) < F32_TOL
    if final.c is not None:
        assert rel_error(stepper.state.c, final.c) < F32_TOL
    # The stepper never writes into the state it was given.
    assert np.array_equal(st.h, as32(state).h[:, :1])


@pytest.mark.parametrize("cell", list(CELLS))
def test_clamped_stepper_equals_the_clamped_forward(cell):
    from rnnscope.model.layers import Clamp

    cfg, _, params32, ids, _, _, _ = setup(cell, 2, seed=7)
    model = LanguageModel(cfg, Vocab("abcdefg"), params32)
    clamp = {0: Clamp(np.array([1, 5]), 0.0), 1: Clamp(np.array([2]), np.float32(0.7))}
    logits, _, _ = model.forward(ids[:1], clamp=clamp)
    stepper = Stepper(model, clamp=clamp)
    stepped = np.stack([stepper.step(int(i)).copy() for i in ids[0]])
    assert rel_error(stepped, logits[0]) < F32_TOL


@pytest.mark.parametrize("cell", list(CELLS))
def test_sampled_probabilities_are_the_models_softmax(cell):
    """Each drawn character's reported probability is the softmax of the logits the
    whole-sequence forward gives for the text so far."""
    cfg, _, params32, _, _, _, _ = setup(cell, 2, seed=8)
    model = LanguageModel(cfg, Vocab("abcdefg"), params32)
    pairs = list(generate(model, "abc", 12, temperature=0.8, seed=1))
    text = "abc" + "".join(c for c, _ in pairs)
    logits, _, _ = model.forward(model.encode(text)[None])
    z = logits[0, 2:-1].astype(np.float64) / 0.8
    probs = np.exp(z - z.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    expected = probs[np.arange(len(pairs)), model.encode(text[3:])]
    assert rel_error([p for _, p in pairs], expected) < F32_TOL


def test_corpus_ids_take_the_smallest_type_and_train_the_same():
    assert id_dtype(65) == np.uint8 and id_dtype(255) == np.uint8
    assert id_dtype(256) == np.uint16 and id_dtype(65_535) == np.uint16 and id_dtype(65_536) == np.uint32
    text = "the quick brown fox jumps over the lazy dog. " * 40
    vocab = Vocab.from_text(text)
    small = vocab.encode(text, vocab.id_dtype)
    assert small.dtype == np.uint8 and np.array_equal(small, vocab.encode(text))
    big = Vocab([chr(0x4E00 + i) for i in range(300)])
    assert big.encode(big.to_string(), big.id_dtype).dtype == np.uint16
    assert big.encode(big.to_string(), big.id_dtype)[-1] == 299
    # Indexing, the one-hot gather and scatter, the loss and bincount take uint8 ids as they take int64.
    cfg = ModelConfig("lstm", len(vocab), 8, 2)
    params = network.init_params(cfg, 0)
    results = []
    for ids in (small, small.astype(np.int64)):
        x, y = StreamBatches(ids, 4, 20)[1]
        logits, _, cache = network.forward(cfg, params, x)
        loss, dlogits, _ = softmax_cross_entropy(logits, y)
        results.append((loss, network.backward(cfg, params, dlogits, cache).params, np.bincount(ids, minlength=len(vocab))))
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(results[0][1][k], results[1][1][k]) for k in params)
    assert np.array_equal(results[0][2], results[1][2])


def test_unknown_characters_are_still_named_in_every_id_type():
    vocab = Vocab("abc")
    for dtype in (np.int64, vocab.id_dtype):
        with pytest.raises(ValueError, match="'z'"):
            vocab.encode("abz" + "a" * 10, dtype)
        with pytest.raises(ValueError, match="'d'"):       # one past the last known code point
            vocab.encode("d", dtype)


def blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_one_blas_thread_overlapping_holders_restore_the_setting():
    before = blas_threads()
    outer = one_blas_thread()
    outer.__enter__()
    with blas_threads_for(1):                         # a second holder inside the first
        assert set(blas_threads()) <= {1}
    assert set(blas_threads()) <= {1}                 # the first still holds it
    outer.__exit__(None, None, None)
    assert blas_threads() == before
    with blas_threads_for(32):                        # a training batch keeps the caller's setting
        assert blas_threads() == before


def test_any_thread_sets_blas_threads_after_another_held_them():
    """threadpoolctl 3.8 ignores an OpenBLAS limit set from a thread other than the last that
    set one, until that thread lets go: a request thread's short read in one thread must not
    leave the server's own setting, made in another, doing nothing."""
    before = blas_threads()
    assert before, "NumPy's BLAS is not one threadpoolctl knows"
    try:
        with one_blas_thread():                       # this thread sets, then restores
            pass
        for threads in (2, 1):
            seen = []
            other = threading.Thread(target=lambda: (set_blas_threads(threads), seen.append(blas_threads())))
            other.start()
            other.join()
            assert seen == [[threads] * len(before)] and blas_threads() == [threads] * len(before)
    finally:
        set_blas_threads(before[0])


def reference_generate(model, prime, length, temperature, top_k, seed, clamp=None):
    """generate as it was written before the batch-1 work: one stepper step, then the
    distribution, then the draw, per character, each under its own error state."""
    rng = np.random.default_rng(seed)
    state, last = read_prime(model, prime, clamp)
    stepper = Stepper(model, state, clamp)
    logits = stepper.step(last)
    out = []
    for _ in range(length):
        probs = next_char_distribution(logits, temperature, top_k)
        char_id = draw(probs, rng)
        out.append((model.vocab.chars[char_id], float(probs[char_id])))
        logits = stepper.step(char_id)
    return out


@pytest.mark.parametrize("cell,layers", CASES)
def test_generate_writes_the_reference_samplers_text_and_probabilities_bit_for_bit(cell, layers):
    """generate steps in blocks of GENERATE_BLOCK characters under one error state and picks
    with Picker: the same characters and probabilities, exactly, at every length around a
    block's edge, every temperature (greedy included), with top-k and with a clamp."""
    from rnnscope.model.layers import Clamp

    cfg, _, params32, _, _, _, _ = setup(cell, layers, seed=9)
    model = LanguageModel(cfg, Vocab("abcdefg"), params32)
    block = GENERATE_BLOCK
    for length in (0, 1, block - 1, block, block + 1, 2 * block + 5):
        for temperature, top_k in ((1.0, 0), (0.6, 0), (2.5, 3), (1.0, 2), (0.0, 0)):
            seed = length * 7 + top_k
            ours = list(generate(model, "ab", length, temperature, top_k, seed))
            expected = reference_generate(model, "ab", length, temperature, top_k, seed)
            assert ours == expected, (length, temperature, top_k)
    clamp = {layers - 1: Clamp(np.array([1, 4]), np.float32(0.5))}
    assert (list(generate(model, "", 40, 0.9, 0, 3, clamp))
            == reference_generate(model, "", 40, 0.9, 0, 3, clamp))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_picker_equals_the_distribution_then_the_draw_bit_for_bit(dtype):
    """Picker (the sampler's fused softmax and draw) against next_char_distribution then draw:
    the same character and the same probability, exactly, for tiny to huge logits, broken
    ones (NaN, +-inf), greedy to hot temperatures and every kind of top-k."""
    rng = np.random.default_rng(10)
    cases = [rng.normal(0, s, 65).astype(dtype) for s in (1e-3, 1.0, 40.0, 1e30)]
    broken = rng.normal(0, 1, 65).astype(dtype)
    broken[[3, 9, 40]] = [np.nan, np.inf, -np.inf]
    cases += [broken, np.full(65, -np.inf, dtype)]
    pick = Picker(65)
    for logits in cases:
        for temperature in (0.0, 1e-4, 1e-3, 0.37, 1.0, 3.0, 1e30):
            for top_k in (0, 1, 5, 64, 65, 100):
                for _ in range(4):
                    seed = int(rng.integers(1 << 30))
                    probs = next_char_distribution(logits, temperature, top_k)
                    expected = draw(probs, np.random.default_rng(seed))
                    got = pick(logits, temperature, top_k, np.random.default_rng(seed))
                    assert got == (expected, float(probs[expected])), (temperature, top_k)
