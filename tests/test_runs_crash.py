"""A server killed with SIGKILL in the middle of a run loses only the steps after the last
checkpoint: after a restart the run is interrupted, it resumes from that checkpoint, its
history has no gap and no duplicate, and every file loads."""
from __future__ import annotations

import sqlite3

import httpx
import pytest

from rnnscope.model.checkpoint import load_model, load_train_state
from tests.training_app import OWNER, Server, excerpt, wait_for

CHECKPOINT_EVERY = 50
MAX_STEPS = 800
ENV = {"RNNSCOPE_CHECKPOINT_EVERY_STEPS": str(CHECKPOINT_EVERY), "RNNSCOPE_SAMPLE_EVERY_STEPS": "50",
       "RNNSCOPE_FLUSH_SECONDS": "0.05", "RNNSCOPE_CHECKPOINT_EVERY_SECONDS": "3600"}
RUN = {"cell": "lstm", "hidden_size": 24, "num_layers": 2, "batch_size": 8, "seq_length": 32,
       "learning_rate": 0.005, "dropout": 0.1, "max_steps": MAX_STEPS}


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for s in started:
        s.kill()


def test_sigkill_mid_run_then_resume(tmp_path, servers):
    first = Server(tmp_path, ENV).start()
    servers.append(first)
    with httpx.Client(base_url=first.url, timeout=30, headers=OWNER) as api:
        corpus = api.post("/api/corpora", files={"file": ("tiny.txt", excerpt(30_000).encode())}).json()
        run_id = api.post("/api/runs", json={"corpus_id": corpus["id"], **RUN}).json()["id"]
        # Past the fourth checkpoint and some way beyond it, so some logged steps must be redone.
        wait_for(api, run_id, ("running",), timeout=60,
                 checkpoint_step=lambda c: c is not None and c >= 4 * CHECKPOINT_EVERY,
                 step=lambda s: s % CHECKPOINT_EVERY >= 10)
        first.kill()                                  # SIGKILL: no shutdown, no final checkpoint
        assert first.process.returncode == -9

    # What the dead process left: a training state at a checkpoint, a model, a sound database.
    model_path = tmp_path / "models" / f"run-{run_id}.safetensors"
    _, state = load_train_state(tmp_path / "runs" / f"{run_id}.state.safetensors")
    checkpoint = state.step
    assert checkpoint % CHECKPOINT_EVERY == 0 and checkpoint >= 4 * CHECKPOINT_EVERY
    assert load_model(model_path).history["steps"] == checkpoint
    with sqlite3.connect(tmp_path / "rnnscope.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        logged = dict(db.execute("SELECT step, loss FROM metrics WHERE run_id = ?", (run_id,)).fetchall())
    assert sorted(logged) == list(range(1, max(logged) + 1))     # the metrics reach the checkpoint, no gap
    assert max(logged) > checkpoint

    second = Server(tmp_path, ENV).start()
    servers.append(second)
    with httpx.Client(base_url=second.url, timeout=30, headers=OWNER) as api:
        run = api.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "interrupted" and run["checkpoint_step"] <= checkpoint
        assert api.get(f"/api/models/run-{run_id}").status_code == 200     # the checkpoint is served
        r = api.post(f"/api/runs/{run_id}/resume")
        assert r.status_code == 200 and r.json()["status"] in ("queued", "running")
        run = wait_for(api, run_id, timeout=60)
        assert run["step"] == MAX_STEPS and run["checkpoint_step"] == MAX_STEPS

        # Continuous: every step once, in order.
        m = api.get(f"/api/runs/{run_id}/metrics").json()
        assert m["step"] == list(range(1, MAX_STEPS + 1))
        # Only the steps after the checkpoint were redone...
        assert [(a["from_step"], a["outcome"]) for a in run["attempts"]] == [(0, "interrupted"),
                                                                             (checkpoint, "completed")]
        # ...and redone exactly: resuming continues bit for bit, so the losses logged before
        # the kill, even past the checkpoint, are the ones logged after it.
        assert {s: m["loss"][s - 1] for s in logged} == logged
        samples = api.get(f"/api/runs/{run_id}/samples").json()
        assert [s["step"] for s in samples] == [s for s in range(50, MAX_STEPS + 1, 50) for _ in range(3)]
        g = api.get(f"/api/runs/{run_id}/gradients").json()
        assert g["steps"] == list(range(CHECKPOINT_EVERY, MAX_STEPS + 1, CHECKPOINT_EVERY))

    second.stop()
    assert second.process.returncode in (0, -15)      # uvicorn re-raises SIGTERM after shutting down
    # Every file loads.
    final = load_model(model_path)
    assert final.history["steps"] == MAX_STEPS and final.history["stopped"] == "max_steps"
    _, state = load_train_state(tmp_path / "runs" / f"{run_id}.state.safetensors")
    assert state.step == MAX_STEPS and state.history.step == list(range(1, MAX_STEPS + 1))
    assert state.history.loss == pytest.approx(m["loss"])
    # The text is kept once, by content (app/training/store.py's blob).
    assert (tmp_path / "corpora" / f"{corpus['sha256']}.txt").read_text(encoding="utf-8") == excerpt(30_000)
