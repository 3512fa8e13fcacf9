"""One memory budget and one disk, consulted before work starts (issue 18, items 2 and 6).

The compute gate holds RNNSCOPE_MEMORY_BUDGET in bytes: a job over it alone is refused
naming the setting, jobs that would pass it together wait. A training run's peak is
estimated from its shape (app/inference/compute.py) and checked here against peaks measured in
subprocesses. A run's checkpoints are sized before it starts and held to the disk's margin
and to the model quotas; on a tiny tmpfs a checkpoint that cannot fit leaves nothing behind
and spends none of the store's reserve.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference.compute import checkpoint_bytes, training_peak_bytes
from rnnscope.app.inference.compute_gate import ComputeBusy, ComputeGate, OverBudget
from rnnscope.model.network import ModelConfig
from tests.test_shared_server import fill, tmpfs
from tests.training_app import FAST, OWNER, TINY, build_app, excerpt, start, upload, wait_for

MB = 1_000_000
# The issue's run: a 50 KB corpus and this shape took the server to 7.1 GB within 100 s.
ISSUE_RUN = {"cell": "lstm", "hidden_size": 1024, "num_layers": 2, "batch_size": 32, "seq_length": 1024}


def detail(r) -> str:
    d = r.json()["detail"]
    return d if isinstance(d, str) else d[0]["msg"]


# ---- the gate's byte budget ----------------------------------------------------------------------

def test_a_job_over_the_budget_alone_is_refused_naming_the_setting():
    gate = ComputeGate(2, 8, 5.0, memory_budget=100 * MB)
    with pytest.raises(OverBudget) as e:
        with gate.job(101 * MB, "this trace"):
            pass
    assert e.value.status_code == 413 and "RNNSCOPE_MEMORY_BUDGET" in e.value.detail
    assert "this trace" in e.value.detail and gate.held_bytes == 0 and gate.busy == 0
    with gate.job(100 * MB):
        assert gate.held_bytes == 100 * MB
    assert gate.held_bytes == 0


def test_jobs_that_would_pass_the_budget_together_wait_then_go_or_are_refused():
    gate = ComputeGate(2, 8, 0.3, memory_budget=100 * MB)
    with gate.job(60 * MB):
        # Another request: a free slot, but not the bytes. It waits max_wait_seconds, then a 503
        # naming the budget; what fits beside the first goes at once.
        answers = []

        def other(nbytes):
            try:
                with gate.job(nbytes):
                    answers.append(gate.held_bytes)
            except ComputeBusy as e:
                answers.append(e)
        for nbytes in (60 * MB, 40 * MB):
            thread = threading.Thread(target=other, args=(nbytes,))
            thread.start()
            thread.join(5.0)
        refused, fitted = answers
        assert refused.status_code == 503 and "RNNSCOPE_MEMORY_BUDGET" in refused.detail
        assert fitted == 100 * MB
    # A waiter goes as soon as the bytes are given back.
    gate = ComputeGate(2, 8, 10.0, memory_budget=100 * MB)
    assert gate.reserve(70 * MB) and not gate.reserve(40 * MB)
    entered = threading.Event()

    def second():
        with gate.job(40 * MB):
            entered.set()
    waiter = threading.Thread(target=second)
    waiter.start()
    assert not entered.wait(0.3)
    gate.release(70 * MB)
    waiter.join(5.0)
    assert entered.is_set() and gate.held_bytes == 0


def test_a_nested_job_takes_only_its_bytes():
    gate = ComputeGate(1, 0, 0.2, memory_budget=100 * MB)
    with gate:
        with gate.job(30 * MB):                     # one slot, already held by this thread: no deadlock
            assert gate.busy == 1 and gate.held_bytes == 30 * MB
    assert gate.busy == 0 and gate.held_bytes == 0


# ---- a run's memory, estimated from its shape ---------------------------------------------------------

def test_the_issues_run_is_refused_at_creation_naming_the_budget(tmp_path):
    with TestClient(build_app(tmp_path), headers=OWNER) as client:
        client.app.state.training.trainer.stop()     # what is queued stays queued
        corpus = upload(client, excerpt(50_000)).json()
        r = client.post("/api/runs", json={"corpus_id": corpus["id"], **ISSUE_RUN})
        assert r.status_code == 422, r.text
        assert "RNNSCOPE_MEMORY_BUDGET" in detail(r) and r.json()["detail"][0]["loc"] == ["body", "batch_size"]
        # The same model at char-rnn's batch fits, and so does the preflight's recommendation.
        rec = corpus["preflight"]["recommended"]
        fits = {k: rec[k] for k in ("cell", "hidden_size", "num_layers", "batch_size", "seq_length")}
        assert client.post("/api/runs", json={"corpus_id": corpus["id"], **fits, "max_steps": 1}).status_code == 201
        r = client.post("/api/runs", json={"corpus_id": corpus["id"], **ISSUE_RUN, "batch_size": 2,
                                           "seq_length": 100, "max_steps": 1})
        assert r.status_code == 201, r.text


def test_the_issues_run_needs_more_than_the_default_budget_and_a_long_history_counts():
    cfg = ModelConfig("lstm", 80, 1024, 2)
    peak = training_peak_bytes(cfg, 32, 1024, 50_000)
    assert 5_000 * MB < peak < 8_000 * MB          # the issue saw the server reach 7.1 GB
    assert training_peak_bytes(cfg, 32, 1024, 50_000, max_steps=1_000_000) > peak + 300 * MB


def test_a_run_that_cannot_fit_the_budget_now_waits_queued_until_the_bytes_are_free(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        gate = client.app.state.compute_slots
        corpus = upload(client, excerpt(5_000)).json()
        taken = gate.memory_budget - 1 * MB         # requests hold all but 1 MB; a TINY run needs ~8
        assert gate.reserve(taken)
        try:
            run_id = start(client, corpus, max_steps=5)
            for _ in range(6):                      # the scheduler looks every 0.5 s while a run waits for memory
                assert client.get(f"/api/runs/{run_id}").json()["status"] == "queued"
                threading.Event().wait(0.25)
        finally:
            gate.release(taken)
        wait_for(client, run_id)
        assert gate.held_bytes == 0                 # the run gave its bytes back


MEASURE = textwrap.dedent("""
    import json, os, sys, tempfile
    import numpy as np
    from rnnscope.app.inference.compute import training_peak_bytes
    from rnnscope.app.settings import Settings
    from rnnscope.app.training.attempt import (Cadence, Checkpoint, Job, gradient_passage, run_attempt,
                                              train_config)
    from rnnscope.app.training.schemas import RunConfig
    from rnnscope.model.checkpoint import save_model, save_train_state
    from rnnscope.model.network import ModelConfig
    from rnnscope.model.vocab import Vocab

    cell, H, L, B, T, chars, steps, dropout = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ.,\\n0123456789"), chars))
    config = RunConfig(corpus_id=1, cell=cell, hidden_size=H, num_layers=L, batch_size=B, seq_length=T,
                       max_steps=steps, dropout=dropout, eval_every=2)
    vocab = Vocab.from_text(text)
    model_cfg = ModelConfig(cell, len(vocab), H, L)
    settings = Settings(checkpoint_every_steps=2, sample_every_steps=2, sample_length=50)
    job = Job(1, "m", config, text, vocab, model_cfg, train_config(config), "c", gradient_passage(text, 100),
              Cadence.of(settings))
    out = tempfile.mkdtemp()

    def emit(message):                              # what the server's recorder writes at a checkpoint
        if isinstance(message, Checkpoint):
            save_model(message.model, os.path.join(out, "model"))
            save_train_state(os.path.join(out, "state"), message.model, message.state)

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:   # VmHWM from here on
        f.write("5")
    base = status("VmRSS:")
    run_attempt(job, None, emit, lambda: False)
    print(json.dumps({"peak": status("VmHWM:") - base,
                      "estimate": training_peak_bytes(model_cfg, B, T, chars, True, dropout, steps),
                      "files": sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))}))
""")

# cell, hidden, layers, batch, seq, corpus chars, steps (two checkpoints and validations), dropout
GRID = [("lstm", 256, 2, 32, 100, 20_000, 4, 0.0), ("gru", 256, 1, 16, 200, 20_000, 4, 0.25),
        ("rnn", 512, 2, 32, 64, 20_000, 4, 0.0), ("lstm", 384, 1, 16, 128, 20_000, 4, 0.25)]
# One BLAS thread, as the server's worker trains: a threaded BLAS on a loaded machine took minutes.
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@pytest.mark.parametrize("shape", GRID, ids=["-".join(map(str, s[:5])) for s in GRID])
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(shape):
    """VmHWM of a subprocess that trains the shape through two checkpoints, as the server's
    worker does, against training_peak_bytes; and the checkpoint files against checkpoint_bytes."""
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(shape)], capture_output=True, text=True,
                          timeout=300, env=os.environ | ONE_THREAD)
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)
    assert 0.75 * m["peak"] <= m["estimate"] <= 1.25 * m["peak"], m
    cell, H, L = shape[:3]
    expected = checkpoint_bytes(ModelConfig(cell, 50, H, L), shape[6])       # the text's 50 characters
    assert 0.9 * m["files"] <= expected <= 1.25 * m["files"], (m["files"], expected)


# ---- the disk: checkpoints sized before the run starts --------------------------------------------

def test_checkpoints_count_against_the_owners_and_everyones_model_quota(tmp_path):
    size = checkpoint_bytes(ModelConfig("lstm", 60, 128, 1), 10)
    with TestClient(build_app(tmp_path, **FAST, max_model_bytes_per_owner=int(2.5 * size),
                              max_model_bytes_total=int(3.5 * size), run_snapshots=0), headers=OWNER) as client:
        client.app.state.training.trainer.stop()     # runs stay queued: their checkpoints still count
        corpus = upload(client, excerpt(5_000)).json()
        run = {"corpus_id": corpus["id"], **TINY, "hidden_size": 128, "max_steps": 10}
        assert client.post("/api/runs", json=run).status_code == 201
        assert client.post("/api/runs", json=run).status_code == 201
        r = client.post("/api/runs", json=run)
        assert r.status_code == 413 and "RNNSCOPE_MAX_MODEL_BYTES_PER_OWNER" in detail(r), r.text
        other = {"X-Rnnscope-Owner": "someone-else"}
        assert client.post("/api/runs", json=run, headers=other).status_code == 201
        r = client.post("/api/runs", json=run, headers=other)
        assert r.status_code == 507 and "RNNSCOPE_MAX_MODEL_BYTES_TOTAL" in detail(r), r.text


def test_a_run_whose_checkpoints_cannot_fit_the_margin_is_refused_at_creation(tmp_path):
    with tmpfs(tmp_path / "data", "24m") as data_dir, \
            TestClient(build_app(data_dir, **FAST, min_free_bytes=4 * MB), headers=OWNER) as client:
        corpus = upload(client, excerpt(5_000)).json()
        big = {"corpus_id": corpus["id"], **TINY, "hidden_size": 512, "num_layers": 1, "max_steps": 10}
        r = client.post("/api/runs", json=big)          # 5 x 1.1M parameters x 4 bytes: 22 MB of checkpoints
        assert r.status_code == 507 and "RNNSCOPE_MIN_FREE_BYTES" in detail(r), r.text
        small = big | {"hidden_size": 128}              # ~2 MB
        assert client.post("/api/runs", json=small).status_code == 201


def test_a_checkpoint_that_cannot_fit_leaves_nothing_and_spends_no_reserve(tmp_path):
    """The issue's tiny margin: a failed checkpoint left 13.6 MB behind and ate the store's
    4 MB reserve, after which DELETE answered 507."""
    with tmpfs(tmp_path / "data", "32m") as data_dir, \
            TestClient(build_app(data_dir, **FAST | {"checkpoint_every_steps": 50}, min_free_bytes=1 * MB,
                                 run_snapshots=0), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        reserve = data_dir / "rnnscope.sqlite3.reserve"
        assert reserve.exists()
        client.app.state.training.trainer.stop()      # queued until the disk is filled
        run_id = start(client, corpus, hidden_size=256, max_steps=400)    # checkpoints of ~6 MB
        filler = fill(data_dir, leave=4 * MB)         # above the margin, short of a checkpoint
        client.app.state.training.trainer._stopping = False
        client.app.state.training.trainer.start()
        run = wait_for(client, run_id, ("interrupted",), timeout=60)
        assert "No space left on device" in run["error"] and "checkpoint" in run["error"], run
        assert not (data_dir / "models" / f"run-{run_id}.safetensors").exists()
        assert not (data_dir / "runs" / f"{run_id}.state.safetensors").exists()
        assert not list(data_dir.glob("*/.*.tmp")) and reserve.exists()
        assert client.post(f"/api/runs/{run_id}/cancel").status_code in (200, 409)
        assert client.delete(f"/api/runs/{run_id}").status_code == 204
        filler.unlink()


# ---- requests: each asks the gate for its estimated bytes --------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
REQUESTS = [("trace", {"text": TEXT}), ("probe", {"text": TEXT, "concept": "vowel"}),
            ("select", {"text": TEXT, "spans": [[0, 5]]}), ("match", {"text": TEXT, "length": 10, "units": [
                {"layer": 0, "quantity": "h", "unit": 0, "threshold": 0.0, "sign": 1}]}),
            ("states", {"text": TEXT, "layer": 0}), ("groups", {"text": TEXT, "layer": 0, "components": 2}),
            ("fixed-points", {"text": TEXT, "layer": 1, "char": "e", "starts": 4})]


@pytest.mark.parametrize("route, body", REQUESTS, ids=[r for r, _ in REQUESTS])
def test_every_request_that_reads_a_model_holds_its_bytes_of_the_budget(client, route, body):
    """The gate sees each request's estimated peak: over the budget alone a 413 naming the
    setting; while a run holds all but a megabyte, a 503 naming it after the wait; then 200."""
    gate = client.app.state.compute_slots
    asked = []
    job, hold = gate.job, gate.hold
    gate.job = lambda nbytes, what="", *cost: (asked.append(nbytes), job(nbytes, what, *cost))[1]
    gate.hold = lambda nbytes, what="": (asked.append(nbytes), hold(nbytes, what))[1]
    url = f"/api/models/lstm/{route}"
    try:
        r = client.post(url, json=body)
        assert r.status_code == 200, r.text
        assert asked and asked[0] > 1 * MB and gate.held_bytes == 0
        # Asked again, a request asks less where it reads less (a state-space fit kept): that.
        asked.clear()
        assert client.post(url, json=body).status_code == 200 and asked and asked[0] > 1 * MB
        budget, gate.memory_budget = gate.memory_budget, asked[0] - 1
        try:
            r = client.post(url, json=body)
            assert r.status_code == 413 and "RNNSCOPE_MEMORY_BUDGET" in detail(r), r.text
        finally:
            gate.memory_budget = budget
        wait, gate.max_wait_seconds = gate.max_wait_seconds, 0.2
        assert gate.reserve(budget - 1 * MB)              # a training run holds all but a megabyte
        try:
            r = client.post(url, json=body)
            assert r.status_code == 503 and "RNNSCOPE_MEMORY_BUDGET" in detail(r), r.text
        finally:
            gate.release(budget - 1 * MB)
            gate.max_wait_seconds = wait
    finally:
        gate.job, gate.hold = job, hold


def test_the_estimate_shows_a_runs_memory_and_checkpoints(tmp_path):
    with TestClient(build_app(tmp_path), headers=OWNER) as client:
        corpus = upload(client, excerpt(50_000)).json()
        assert corpus["preflight"]["estimate"]["memory_bytes"] > 8 * MB
        shape = {k: v for k, v in ISSUE_RUN.items() if k != "batch_size"} | {"batch_size": 2, "max_steps": 10}
        e = client.get(f"/api/corpora/{corpus['id']}/estimate", params=shape).json()
        assert e["memory_bytes"] == training_peak_bytes(ModelConfig("lstm", corpus["preflight"]["vocab_size"], 1024,
                                                                    2), 2, 1024, 45_000, max_steps=10)
        assert e["checkpoint_bytes"] > 5 * 4 * e["parameters"]


def test_a_queued_run_that_no_longer_fits_the_budget_fails_naming_it(tmp_path):
    """Admitted under a larger budget (a restart with a smaller RNNSCOPE_MEMORY_BUDGET), it
    fails when the scheduler comes to it instead of waiting for ever."""
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        trainer = client.app.state.training.trainer
        trainer.stop()
        corpus = upload(client, excerpt(5_000)).json()
        run_id = start(client, corpus, max_steps=5)
        client.app.state.compute_slots.memory_budget = 1 * MB       # below any run's estimate
        trainer._stopping = False
        trainer.start()
        run = wait_for(client, run_id, ("failed",))
        assert "RNNSCOPE_MEMORY_BUDGET" in run["error"], run


def test_cancel_on_a_full_disk_cancels_and_the_run_can_be_deleted(tmp_path):
    """The final checkpoint of a cancelled run cannot fit: the run is cancelled all the same
    (not interrupted), nothing of the checkpoint stays, and the run can be deleted."""
    with tmpfs(tmp_path / "data", "32m") as data_dir, \
            TestClient(build_app(data_dir, **FAST | {"checkpoint_every_steps": 100_000}, min_free_bytes=1 * MB,
                                 run_snapshots=0), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run_id = start(client, corpus, hidden_size=256, max_steps=20_000)     # checkpoints of ~7 MB
        wait_for(client, run_id, ("running",), step=lambda s: s > 2)
        filler = fill(data_dir, leave=3 * MB)         # above the margin, short of the final checkpoint
        assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
        run = wait_for(client, run_id, ("cancelled", "interrupted"), timeout=60)
        assert run["status"] == "cancelled" and "final checkpoint could not be written" in run["error"], run
        assert not (data_dir / "models" / f"run-{run_id}.safetensors").exists()
        assert (data_dir / "rnnscope.sqlite3.reserve").exists()
        assert client.delete(f"/api/runs/{run_id}").status_code == 204
        filler.unlink()
