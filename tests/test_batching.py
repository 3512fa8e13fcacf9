"""Concurrent requests on one model share one pass through the time loop (issue 10): every
request's answer equals its lone answer, for every cell, texts of different lengths, rows
joining a pass under way; samples equal bit for bit with the same seeds; over HTTP,
concurrent requests really are served by fewer passes than requests."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from app.compute import read
from model import network
from model.analysis import gradient_through_time
from model.batch import Reader, gradients_through_time
from model.cells import CELLS
from model.lm import LanguageModel
from model.network import ModelConfig
from model.sample import BatchSampler, generate
from model.vocab import Vocab

CHARS = "\n abcdefghij.,:ABC"
F32_TOL = 1e-5            # relative error per array, ||a - b|| / (||a|| + ||b||)
NOISE = 0.1              # weights perturbed this much stay contracting: a chaotic model would amplify any rounding over 700 steps


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


def tiny(cell: str, layers: int = 2, H: int = 24, seed: int = 0) -> LanguageModel:
    """Random weights scaled up so the states are far from zero and the gates saturate some."""
    cfg = ModelConfig(cell, len(CHARS), H, layers)
    params = network.init_params(cfg, seed)
    rng = np.random.default_rng(seed + 1)
    for p in params.values():
        p += rng.normal(0.0, NOISE, p.shape).astype(p.dtype)
    return LanguageModel(cfg, Vocab(list(CHARS)), params)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 37, 300, 301, 700][:n]
    return ["".join(rng.choice(list(CHARS), size=k)) for k in lengths]


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_batched_read_equals_each_text_read_alone(cell):
    """Texts of 1 to 700 characters read together in chunks of 64, two of them joining after
    the pass began (so rows sit at different offsets, each with its own carried state): every
    internal, loss and prediction equals the lone read of the same text."""
    model = tiny(cell)
    all_texts = texts(6)
    wanted = [(l, q) for l in range(2) for q in model.cell.quantities]
    alone = {i: read(model, model.encode(t), wanted, k=3) for i, t in enumerate(all_texts)}
    reader = Reader(model, chunk=64)
    got = {i: {key: [] for key in wanted} | {"logits": []} for i in range(len(all_texts))}
    for i in (0, 2, 3, 5):
        reader.add(i, model.encode(all_texts[i]))
    late = [1, 4]
    finished, passes = set(), 0
    while len(reader):
        if passes == 2:                              # join a pass under way
            for i in late:
                reader.add(i, model.encode(all_texts[i]))
        for piece in reader.step():
            assert piece.start == sum(len(x) for x in got[piece.key]["logits"])
            got[piece.key]["logits"].append(piece.logits.copy())
            for key in wanted:
                got[piece.key][key].append(piece.internals(model, *key).copy())
            if piece.done:
                finished.add(piece.key)
        passes += 1
    assert finished == set(range(len(all_texts)))
    for i, text in enumerate(all_texts):
        logits = np.concatenate(got[i]["logits"])
        assert logits.shape == (len(text), len(CHARS))
        lone_logits, _, _ = model.forward(model.encode(text)[None])
        assert rel_error(logits, lone_logits[0]) < F32_TOL, (cell, i)
        for key in wanted:
            assert rel_error(np.concatenate(got[i][key]), alone[i].internals[key]) < F32_TOL, (cell, i, key)


@pytest.mark.parametrize("cell", list(CELLS))
def test_batched_gradients_equal_each_text_alone(cell):
    """One BPTT pass over texts padded to the longest: each text's loss and ||dL/dh_k||,
    ||dL/dc_k|| at its own position equal the lone pass."""
    model = tiny(cell)
    cases = [(t, p) for t, p in zip(texts(6)[1:], (0, 20, 298, 150, 698))]
    batched = gradients_through_time(model, [(model.encode(t), p) for t, p in cases])
    for (text, position), g in zip(cases, batched):
        lone = gradient_through_time(model, text, position)
        assert g.position == lone.position == position
        assert abs(g.loss - lone.loss) <= 1e-5 * max(1.0, abs(lone.loss))
        for l in range(2):
            assert g.h_grad_norm[l].shape == (position + 1,)
            assert rel_error(g.h_grad_norm[l], lone.h_grad_norm[l]) < F32_TOL, (cell, position, l)
            if model.cell.has_cell_state:
                assert rel_error(g.c_grad_norm[l], lone.c_grad_norm[l]) < F32_TOL
            else:
                assert g.c_grad_norm is None and lone.c_grad_norm is None


SAMPLES = [  # prime, length, temperature, top_k, seed
    ("", 30, 1.0, 0, 1), ("ab", 1, 0.8, 0, 2), ("ABC: abc", 45, 1.3, 3, 3), ("a" * 40, 12, 0.0, 0, 4),
    ("j.", 45, 0.5, 0, 5), ("c", 0, 1.0, 0, 6),
]


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("layers", [1, 2])
def test_batched_samples_equal_each_sample_alone_bit_for_bit(cell, layers):
    """Rows with different primes, lengths, temperatures, top-k and seeds, two joining after
    the others started: each row's characters and probabilities are generate()'s exactly."""
    model = tiny(cell, layers)
    alone = [list(generate(model, p, n, t, k, s)) for p, n, t, k, s in SAMPLES]
    sampler = BatchSampler(model)
    got: dict[int, list] = {i: [] for i in range(len(SAMPLES))}
    for i in (0, 1, 2, 5):
        sampler.add(i, *SAMPLES[i])
    steps = 0
    while len(sampler) or steps < 4:
        if steps == 3:
            for i in (3, 4):
                sampler.add(i, *SAMPLES[i])
        for key, char, prob, last in sampler.step():
            got[key].append((char, prob))
            assert last == (len(got[key]) == SAMPLES[key][1])
        steps += 1
    for i, pairs in got.items():
        assert pairs == alone[i], (cell, layers, i)          # characters and probabilities, exactly
