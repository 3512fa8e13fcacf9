"""Compute in worker processes (issue 21, "every core"): traces, samples and gradients answered
by worker processes equal their answers in one process; requests that arrive together share a
pass inside a worker; a worker killed mid-request is replaced and the request answered, and a
request whose worker dies twice gets a 503 that says so. Nothing here is timed."""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference import readings
from rnnscope.app.main import create_app
from rnnscope.model.analysis import gate_saturation
from rnnscope.model.attribution import intervention, memory_horizon, saliency
from rnnscope.model.dynamics import fixed_points_for, read_layer, read_layer_piece
from rnnscope.model.groups import groups_of
from rnnscope.model.probes import unit_values
from tests.test_batching import F32_TOL, batchers_of, concurrently, decoded, rel_error

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n")


@pytest.fixture
def workers_client(settings):
    with TestClient(create_app(settings.model_copy(update={"compute_workers": 2}))) as c:
        yield c


@pytest.fixture
def threads_client(settings):
    with TestClient(create_app(settings.model_copy(update={"compute_workers": 0}))) as c:
        yield c


def pool_of(client):
    return client.app.state.compute_pool


def test_workers_answer_as_this_process_does(workers_client, threads_client):
    assert pool_of(threads_client) is None and len(pool_of(workers_client).workers) == 2
    requests = [("/api/models/lstm/trace", {"text": TEXT[:150], "encoding": "float32", "top_k": 3}),
                ("/api/models/gru/trace", {"text": TEXT[:40], "layers": [1], "quantities": ["h", "r"]}),
                ("/api/models/lstm/sample", {"prime": "All:", "length": 60, "temperature": 0.9, "seed": 3}),
                ("/api/models/rnn/gradients", {"text": TEXT[:80], "position": 70})]
    for path, body in requests:
        there, here = workers_client.post(path, json=body), threads_client.post(path, json=body)
        assert there.status_code == here.status_code == 200, there.text
        assert there.json() == here.json(), path
    # The work ran in the workers: each was sent the models it served.
    assert sum(bool(w.passes) for w in pool_of(workers_client).workers) == 0      # every pass closed
    assert set(pool_of(workers_client)._tokens)


def test_the_state_space_fixed_points_and_groups_compute_in_the_workers_as_here(workers_client, threads_client,
                                                                                 monkeypatch):
    pool, sent = pool_of(workers_client), []
    run = pool.run
    monkeypatch.setattr(pool, "run", lambda function, *a, **kw: sent.append(function) or run(function, *a, **kw))
    text = TEXT * 8
    for path, body in (("/api/models/lstm/states", {"text": text, "layer": 1}),
                       ("/api/models/gru/fixed-points", {"text": text, "layer": 0, "char": "e", "starts": 8}),
                       ("/api/models/lstm/fixed-points", {"text": text, "layer": 1, "char": " ", "starts": 4}),
                       ("/api/models/lstm/groups", {"text": text, "layer": 1, "components": 3})):
        there, here = workers_client.post(path, json=body), threads_client.post(path, json=body)
        assert there.status_code == here.status_code == 200, there.text
        there, here = there.json(), here.json()
        there.pop("seconds", None), here.pop("seconds", None)
        assert there == here, path
    # The fitted readings are files, fitted (PCA, a held input's mean) by a worker that maps them.
    assert set(sent) == {read_layer_piece, read_layer, fixed_points_for, groups_of, readings._mapped}
    kept = [reading for reading, _ in workers_client.app.state.state_readings._items.values()]
    assert kept and all(isinstance(reading.values, np.memmap) for reading in kept)


def test_every_other_reading_of_a_text_computes_in_the_workers_as_here(workers_client, threads_client, monkeypatch):
    pool, sent = pool_of(workers_client), []
    run = pool.run
    monkeypatch.setattr(pool, "run", lambda function, *a, **kw: sent.append(function) or run(function, *a, **kw))
    clamp = [{"layer": 0, "units": [1, 2], "value": 0.0}]
    for path, body in (("/api/models/gru/gates", {"text": TEXT}),
                       ("/api/models/lstm/saliency", {"text": TEXT, "position": 60}),
                       ("/api/models/rnn/horizon", {"text": TEXT, "positions": 3, "window": 40}),
                       ("/api/models/lstm/intervene", {"text": TEXT, "clamp": clamp, "prime": "All:", "length": 30}),
                       ("/api/models/lstm/contexts", {"text": TEXT, "layer": 1, "quantity": "c", "unit": 5})):
        there, here = workers_client.post(path, json=body), threads_client.post(path, json=body)
        assert there.status_code == here.status_code == 200, there.text
        assert there.json() == here.json(), path
    assert set(sent) == {gate_saturation, saliency, memory_horizon, intervention, unit_values}


def test_a_layer_read_in_pieces_is_the_layer_read_in_one_go(models):
    m = models["lstm"]
    ids = m.encode(TEXT * 12)
    whole = read_layer(m, ids, 1, chunk=64)
    pieces, state = [], None
    for s in range(0, len(ids), 128):
        piece, state = read_layer_piece(m, ids[s:s + 128], state, 1, chunk=64)
        pieces.append(piece)
    joined = dataclasses.replace(whole, ids=np.concatenate([p.ids for p in pieces]),
                                 values=np.concatenate([p.values for p in pieces]))
    for name in ("ids", "h", "c", "x"):
        assert np.array_equal(getattr(joined, name), getattr(whole, name)), name


def test_requests_arriving_together_share_one_pass_in_a_worker(workers_client, threads_client):
    gate = workers_client.app.state.compute_slots
    bodies = [{"text": TEXT[:n], "encoding": "float32", "top_k": 3} for n in (3, 20, 45, 90)]
    batcher = batchers_of(workers_client).get("lstm", "trace")
    slots = [gate.slot() for _ in range(gate.slots)]
    held = _Held(slots)
    answers = concurrently(workers_client, [("/api/models/lstm/trace", b) for b in bodies], held, batcher,
                           len(bodies) - 1)
    assert (batcher.alone_runs, batcher.passes) == (1, 1)             # three texts, one pass of one chunk
    for body, answer in zip(bodies, answers):
        assert answer.status_code == 200
        # A shared pass rounds as batched rows do, within float32 of the lone answer
        # (tests/test_batching.py holds the engines to that in one process).
        got, lone = answer.json(), threads_client.post("/api/models/lstm/trace", json=body).json()
        assert got["predictions"]["chars"] == lone["predictions"]["chars"]
        assert np.allclose(got["loss"], lone["loss"], atol=2e-6)
        assert rel_error(decoded(got["layers"][0]["quantities"]["h"]),
                         decoded(lone["layers"][0]["quantities"]["h"])) < F32_TOL


class _Held:
    """Every compute slot, held until close(), as tests/test_batching.py's `held` fixture."""

    def __init__(self, slots):
        self.slots = slots
        for s in slots:
            s.__enter__()

    def close(self):
        for s in self.slots:
            s.__exit__(None, None, None)


def kill_pinned_worker(pool, after: int = 0) -> list[int]:
    """SIGKILL the worker a pass is pinned to or a lone request runs on, as soon as one is
    (and again on the next such worker, `after` more times); the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + 60
    while len(killed) <= after and time.monotonic() < deadline:
        for w in list(pool.workers):
            if (w.passes or w.in_flight) and w.process.pid not in killed and w.process.is_alive():
                os.kill(w.process.pid, signal.SIGKILL)
                killed.append(w.process.pid)
                break
        time.sleep(0.001)
    return killed


def long_trace(client, answers: list) -> threading.Thread:
    """A 6,000-character trace (47 chunks) sent from a thread: long enough to be killed midway."""
    body = {"text": (TEXT * 30)[:6000], "layers": [0], "quantities": ["h"], "top_k": 1}

    def send():
        answers.append(client.post("/api/models/lstm/trace", json=body))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_worker_killed_mid_request_is_replaced_and_the_request_answered(workers_client, threads_client):
    pool = pool_of(workers_client)
    answers: list = []
    thread = long_trace(workers_client, answers)
    killed = kill_pinned_worker(pool)
    thread.join(120)
    assert len(killed) == 1 and pool.replaced == 1
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    body = {"text": (TEXT * 30)[:6000], "layers": [0], "quantities": ["h"], "top_k": 1}
    assert answer.json() == threads_client.post("/api/models/lstm/trace", json=body).json()
    # The pool is whole again, and the replacement serves.
    assert len(pool.workers) == 2 and all(w.process.is_alive() for w in pool.workers)
    assert killed[0] not in {w.process.pid for w in pool.workers}
    again = workers_client.post("/api/models/gru/trace", json={"text": TEXT[:30]})
    assert again.status_code == 200


def test_a_request_whose_worker_dies_twice_gets_a_503_that_says_so(workers_client):
    pool = pool_of(workers_client)
    answers: list = []
    thread = long_trace(workers_client, answers)
    killed = kill_pinned_worker(pool, after=1)
    thread.join(120)
    assert len(killed) == 2 and pool.replaced == 2
    (answer,) = answers
    assert answer.status_code == 503 and "Retry-After" in answer.headers
    assert "compute worker stopped" in answer.json()["detail"]
    assert len(pool.workers) == 2 and all(w.process.is_alive() for w in pool.workers)
    assert workers_client.post("/api/models/lstm/trace", json={"text": TEXT[:30]}).status_code == 200


def test_no_worker_outlives_the_app(settings):
    with TestClient(create_app(settings.model_copy(update={"compute_workers": 2}))) as c:
        processes = [w.process for w in pool_of(c).workers]
        assert all(p.is_alive() for p in processes)
    assert not any(p.is_alive() for p in processes)
