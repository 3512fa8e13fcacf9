"""Concurrent requests on one model share one pass through the time loop (issue 10): every
request's answer equals its lone answer, for every cell, texts of different lengths, rows
joining a pass under way; samples equal bit for bit with the same seeds; over HTTP,
concurrent requests really are served by fewer passes than requests."""
from __future__ import annotations

import base64
import contextlib
import json
import threading
import time

import numpy as np
import pytest

from rnnscope.app.inference.compute import read
from rnnscope.model import network
from rnnscope.model.analysis import gradient_through_time
from rnnscope.model.batch import Reader, gradients_through_time
from rnnscope.model.cells import CELLS
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.sample import BatchSampler, generate
from rnnscope.model.vocab import Vocab

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


# --- over HTTP --------------------------------------------------------------------------------

def concurrently(client, requests: list[tuple[str, dict]], held, batcher, queued: int) -> list:
    """Send the requests from threads while the test holds every compute slot, wait until
    one of them waits at the gate to run alone and the rest in `batcher`, free the slots; the
    responses in request order. The one alone runs beside the shared pass."""
    answers: list = [None] * len(requests)

    def send(i: int) -> None:
        path, body = requests[i]
        answers[i] = client.post(path, json=body)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(batcher._pending) < queued:
        assert time.monotonic() < deadline, f"{len(batcher._pending)} of {queued} requests queued"
        time.sleep(0.01)
    held.close()                                     # the worker takes a slot: one pass for all
    for t in threads:
        t.join(60)
    return answers


@pytest.fixture
def held(client):
    """Every compute slot, taken by the test until it closes this."""
    with contextlib.ExitStack() as stack:
        gate = client.app.state.compute_slots
        for _ in range(gate.slots):
            stack.enter_context(gate.slot())
        yield stack


def batchers_of(client):
    """The app's batchers, as a route receives them."""
    from rnnscope.app.inference.batching import get_batchers
    from tests.conftest import run_coroutine

    class Req:
        app = client.app

    return run_coroutine(get_batchers(Req(), client.app.state.compute_slots))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_concurrent_traces_share_a_pass_and_each_answer_is_its_lone_answer(client, held, cell):
    base = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    bodies = [{"text": base[:n], "encoding": "float32", "top_k": 3} for n in (1, 5, 17, 40, 61)]
    bodies.append({"text": base[:30], "layers": [1], "quantities": ["h"], "encoding": "float32"})
    batcher = batchers_of(client).get(cell, "trace")
    path = f"/api/models/{cell}/trace"
    answers = concurrently(client, [(path, b) for b in bodies], held, batcher, len(bodies) - 1)
    assert (batcher.alone_runs, batcher.passes) == (1, 1)    # five texts under one chunk: one pass
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        lone = client.post(path, json=body).json()
        got = r.json()
        assert got["text"] == lone["text"] and got["predictions"]["chars"] == lone["predictions"]["chars"]
        assert np.allclose(got["loss"], lone["loss"], atol=2e-6)
        for a, b in zip(got["layers"], lone["layers"]):
            for q in a["quantities"]:
                assert rel_error(decoded(a["quantities"][q]), decoded(b["quantities"][q])) < F32_TOL
    assert (batcher.alone_runs, batcher.passes) == (1 + len(bodies), 1)    # each lone request alone


def decoded(array: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(array["data"]), "<f4").reshape(array["shape"]) * array["scale"]


def test_concurrent_samples_share_steps_and_write_their_lone_texts(client, held):
    bodies = [{"prime": p, "length": n, "temperature": t, "seed": s}
              for p, n, t, s in [("ROMEO:", 40, 1.0, 1), ("", 25, 0.8, 2), ("First", 1, 1.0, 3),
                                 ("a", 40, 0.0, 4), ("ROMEO:", 40, 1.0, 5)]]
    batcher = batchers_of(client).get("lstm", "sample")
    answers = concurrently(client, [("/api/models/lstm/sample", b) for b in bodies], held, batcher, len(bodies) - 1)
    assert batcher.alone_runs == 1 and batcher.passes <= 40    # a step serves every row: 40, not 146
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        assert r.json() == client.post("/api/models/lstm/sample", json=body).json()
        stream = client.post("/api/models/lstm/sample/stream", json=body).text
        assert r.json()["text"] == "".join(json.loads(line[6:])["text"] for line in stream.splitlines()
                                           if line.startswith("data: ") and '"probs"' in line)


def test_concurrent_gradients_share_a_bptt_pass(client, held):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    bodies = [{"text": text[:n]} for n in (2, 9, 30, 61)] + [{"text": text, "position": 3}]
    batcher = batchers_of(client).get("gru", "gradients")
    answers = concurrently(client, [("/api/models/gru/gradients", b) for b in bodies], held, batcher, len(bodies) - 1)
    assert (batcher.alone_runs, batcher.passes) == (1, 1)
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        got, lone = r.json(), client.post("/api/models/gru/gradients", json=body).json()
        assert got["position"] == lone["position"] and got["target"] == lone["target"]
        assert abs(got["loss"] - lone["loss"]) < 1e-5
        for a, b in zip(got["layers"], lone["layers"]):
            assert rel_error(a["h_grad_norm"], b["h_grad_norm"]) < F32_TOL


def test_a_full_queue_is_refused_with_503_and_no_request_fails_otherwise(data_dir):
    """With the one slot held and no room to wait at the gate, a batched request is refused
    with 503 and Retry-After (the server-wide capacity), then served once the slot frees."""
    from fastapi.testclient import TestClient

    from tests.training_app import build_app

    app = build_app(data_dir, max_concurrent_jobs=1, max_waiting_jobs=0)
    with TestClient(app) as client, contextlib.ExitStack() as stack:
        stack.enter_context(app.state.compute_slots.slot())
        body = {"text": "First Citizen:"}
        for route in ("trace", "gradients"):
            r = client.post(f"/api/models/lstm/{route}", json=body)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        stack.close()
        for route in ("trace", "gradients"):
            assert client.post(f"/api/models/lstm/{route}", json=body).status_code == 200


def test_a_worker_between_pieces_lets_waiting_work_go_first():
    """A batcher's worker keeps its slot while work keeps coming; between pieces it gives
    the slot to whatever waits at the gate and takes one again after, so no route starves."""
    from rnnscope.app.inference.compute_gate import ComputeGate

    gate = ComputeGate(slots=1, max_waiting=4, max_wait_seconds=5)
    order: list[str] = []
    waiting = threading.Event()

    def other() -> None:
        waiting.set()
        with gate:
            order.append("other")

    with gate.slot():
        held = time.monotonic()
        assert gate.let_waiting_go_first(held) == held          # nobody waits: keeps the slot
        t = threading.Thread(target=other)
        t.start()
        waiting.wait(5)
        while gate.waiting < 1:
            time.sleep(0.001)
        gate.let_waiting_go_first(held)                          # the other job runs, then this resumes
        order.append("worker")
        assert gate.busy == 1
    t.join(5)
    assert order == ["other", "worker"] and gate.busy == 0 and gate.waiting == 0


def test_a_pass_that_fails_while_taking_in_queued_requests_answers_every_one_of_them():
    """An error while a pass takes in queued requests (planted: the batch bound raises) fails
    the requests it had taken and the one it was looking at, instead of losing them to wait
    for ever; the rest are taken in by the next pass."""
    from rnnscope.app.inference.batching import Batcher
    from rnnscope.app.inference.compute_gate import ComputeGate
    from rnnscope.app.inference.engines import Engine, Job
    from rnnscope.app.settings import Settings

    class Broken(Engine):
        def fits(self, job, joining):
            raise RuntimeError("planted")

        def admit(self, job):
            self.jobs.append(job)

        def step(self):
            for job in list(self.jobs):
                self.jobs.remove(job)
                job.finish("served")

    gate = ComputeGate(slots=1, max_waiting=16, max_wait_seconds=20)
    batcher = Batcher("trace", gate, Settings(compute_workers=0))
    batcher.make_engine = Broken
    model, answers = object(), []

    def ask():
        try:
            answers.append(batcher.run(Job(model, None, 1.0), lambda: "alone"))
        except RuntimeError as e:
            answers.append(str(e))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    with gate.slot():                                     # everything queues behind the test
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(batcher._pending) < 5:
            assert time.monotonic() < deadline, "the requests did not queue"
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a request was lost and waits for ever"
    assert sorted(answers) == sorted(["alone"] + ["planted"] * 4 + ["served"])
