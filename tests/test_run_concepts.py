"""Cells forming while a run trains (issue 23): concept strengths recorded at checkpoints, the
run's weight snapshots, bounded and thinned, each served as a model, and their refusals."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.training.snapshots import to_drop
from rnnscope.model.checkpoint import load_model
from rnnscope.model.probes import CONCEPTS, activations, rank_units
from tests.training_app import ENDLESS, FAST, OWNER, build_app, new_corpus, start, wait_for

# Every checkpoint recorded (concept_share 1: a tiny model's steps are shorter than a recording).
RECORD_ALL = FAST | {"concept_text_chars": 1500, "concept_share": 1.0}


@pytest.fixture
def client(tmp_path):
    with TestClient(build_app(tmp_path, **RECORD_ALL, run_snapshots=3), headers=OWNER) as c:
        yield c


# ---- thinning, pure ---------------------------------------------------------------------------------

def test_thinning_keeps_the_ends_and_spreads_the_rest():
    assert to_drop([20, 40, 60], 3) == []
    assert to_drop([20, 40, 60, 80], 3) == [40]                 # the earlier of equal gaps
    assert to_drop([0, 10, 20, 100], 3) == [10]                 # the one in the crowd
    assert to_drop([20, 40, 60], 1) == [20, 40] and to_drop([5, 7], 0) == [5, 7]
    # Thinned one checkpoint at a time, as a run does, 8 stay spread over 1,000 steps.
    kept: list[int] = []
    for step in range(20, 1001, 20):
        kept.append(step)
        kept = [s for s in kept if s not in to_drop(kept, 8)]
    assert len(kept) == 8 and kept[0] == 20 and kept[-1] == 1000
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    # Thinned as it goes, never re-placed: within half again of the even spacing (140).
    assert max(gaps) <= 1.5 * (1000 - 20) / 7


# ---- a run ------------------------------------------------------------------------------------------

def test_concepts_are_recorded_and_equal_a_probe_of_the_snapshot(client, tmp_path):
    corpus = new_corpus(client)
    run_id = start(client, corpus, max_steps=100)
    wait_for(client, run_id)
    history = client.get(f"/api/runs/{run_id}/concepts").json()
    assert history["steps"] == [20, 40, 60, 80, 100]
    text = history["text"]
    assert 1000 < len(text) <= 1500 and history["threshold"] == 0.85
    names = {c["concept"] for c in history["concepts"]}
    # Shakespeare has no digits or URLs: left out, with the reason.
    assert "digit" in history["skipped"] and "url" in history["skipped"] and "digit" not in names
    assert {"whitespace", "line_position", "vowel"} <= names

    snapshots = client.get(f"/api/runs/{run_id}/snapshots").json()
    assert [s["step"] for s in snapshots] == [20, 60, 100]      # 3 kept, spread out
    assert [s["model_id"] for s in snapshots] == [f"run-{run_id}@{s}" for s in (20, 60, 100)]
    # Each recorded strength is what model/probes gives on the snapshot of that step.
    for snap in snapshots:
        model = load_model(tmp_path / "snapshots" / f"{snap['model_id']}.safetensors")
        acts = activations(model, model.encode(text))
        k = history["steps"].index(snap["step"])
        for curve in history["concepts"]:
            concept = CONCEPTS[curve["concept"]]
            best = rank_units(acts, concept.indicator(text), concept.graded, top=1).ranked[0]
            got = curve["best"][k]
            assert (got["layer"], got["quantity"], got["unit"]) == (best.layer, best.quantity, best.unit)
            assert got["strength"] == pytest.approx(best.strength, abs=1e-9)
    # ... and what the probe route reports on the snapshot model.
    curve = next(c for c in history["concepts"] if c["concept"] == "line_position")
    r = client.post(f"/api/models/run-{run_id}@100/probe", json={"text": text, "concept": "line_position", "top": 1})
    assert r.status_code == 200, r.text
    assert r.json()["neurons"][0]["strength"] == pytest.approx(curve["best"][-1]["strength"], abs=1e-6)
    # Snapshots are served but not listed among the models.
    assert client.get(f"/api/models/run-{run_id}@60").status_code == 200
    assert not any("@" in m["id"] for m in client.get("/api/models").json())


def test_snapshots_count_against_the_disk_and_go_with_the_run(client, tmp_path):
    corpus = new_corpus(client)
    run_id = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, run_id, ("running",), checkpoint_step=lambda s: s is not None and s >= 80)
    client.post(f"/api/runs/{run_id}/cancel")
    wait_for(client, run_id, ("cancelled",))
    steps = [s["step"] for s in client.get(f"/api/runs/{run_id}/snapshots").json()]
    assert len(steps) == 3 and steps[0] == 20
    files = sorted((tmp_path / "snapshots").glob(f"run-{run_id}@*.safetensors"))
    assert len(files) == 3
    training = client.app.state.training
    on_disk = sum(p.stat().st_size for p in [*files, training.paths.model(run_id), training.paths.train_state(run_id)])
    assert training.run_files_bytes(run_id) == on_disk

    assert client.delete(f"/api/runs/{run_id}").status_code == 204
    assert not list((tmp_path / "snapshots").glob(f"run-{run_id}@*"))
    assert client.get(f"/api/models/run-{run_id}@{steps[0]}").status_code == 404
    assert training.store.concept_strengths(run_id) == []
    assert client.get(f"/api/runs/{run_id}/concepts").status_code == 404


def test_bad_snapshot_ids_and_runs_are_clear_4xx(client):
    corpus = new_corpus(client)
    run_id = start(client, corpus, max_steps=40)
    wait_for(client, run_id)
    r = client.get(f"/api/models/run-{run_id}@30")
    assert r.status_code == 404 and "no model 'run-" in r.json()["detail"]
    for bad in (f"run-{run_id}@", f"run-{run_id}@-1", f"run-{run_id}@x", f"run-0{run_id}@40", f"run-{run_id}@040",
                f"run-{run_id + 1}@40"):
        assert client.get(f"/api/models/{bad}").status_code == 404
    for path in ("/concepts", "/snapshots"):
        assert client.get(f"/api/runs/999{path}").status_code == 404
        assert client.get(f"/api/runs/0{path}").status_code == 422
    # Another owner may look at the run's snapshots (runs are watched by all) but not delete it.
    other = {"X-Rnnscope-Owner": "someone-else"}
    assert client.get(f"/api/runs/{run_id}/snapshots", headers=other).status_code == 200
    assert client.delete(f"/api/runs/{run_id}", headers=other).status_code in (401, 403)
    assert client.get(f"/api/models/run-{run_id}@40").status_code == 200
    # A snapshot is made when first asked for; its W_hh spectrum is its own, not the run's model's.
    r = client.post(f"/api/models/run-{run_id}@20/gradients", json={"text": "To be, or not to be"})
    assert r.status_code == 200, r.text
    latest = client.post(f"/api/models/run-{run_id}/gradients", json={"text": "To be, or not to be"}).json()
    assert r.json()["layers"][0]["singular_values"] != latest["layers"][0]["singular_values"]


def test_no_recording_when_it_would_cost_more_than_its_share(tmp_path):
    """concept_share 0: only the first checkpoint is recorded, to learn what recording costs."""
    with TestClient(build_app(tmp_path, **(RECORD_ALL | {"concept_share": 0.0})), headers=OWNER) as c:
        run_id = start(c, new_corpus(c), max_steps=100)
        wait_for(c, run_id)
        assert c.get(f"/api/runs/{run_id}/concepts").json()["steps"] == [20]
        # The explorer still has the run's snapshots: they do not depend on the recording.
        assert [s["step"] for s in c.get(f"/api/runs/{run_id}/snapshots").json()] == [20, 40, 60, 80, 100]


def test_snapshots_count_against_the_owners_quota(tmp_path):
    """A quota that holds a run's checkpoints but not its snapshots too refuses it, naming them."""
    from rnnscope.app.inference.compute import checkpoint_bytes
    from rnnscope.model.network import ModelConfig

    with TestClient(build_app(tmp_path, **RECORD_ALL, run_snapshots=8), headers=OWNER) as client:
        client.app.state.training.trainer.stop()      # runs stay queued: what they will take counts
        corpus = new_corpus(client)
        cfg = ModelConfig("lstm", corpus["preflight"]["vocab_size"], 128, 1)
        checkpoints = checkpoint_bytes(cfg, 10)
        training = client.app.state.training
        training.settings = training.settings.model_copy(update={"max_model_bytes_per_owner": int(1.5 * checkpoints)})
        run = {"corpus_id": corpus["id"], "cell": "lstm", "hidden_size": 128, "num_layers": 1, "batch_size": 4,
               "seq_length": 16, "max_steps": 10}
        r = client.post("/api/runs", json=run)
        assert r.status_code == 413 and "checkpoints and snapshots" in r.json()["detail"], r.text
        training.settings = training.settings.model_copy(update={"run_snapshots": 0})
        assert client.post("/api/runs", json=run).status_code == 201


def test_start_up_removes_the_snapshots_of_runs_that_are_gone(tmp_path):
    """A process killed between deleting a run's row and its files leaves snapshots nobody
    counts: the next start removes them, and keeps those of runs that exist."""
    with TestClient(build_app(tmp_path, **RECORD_ALL, run_snapshots=2), headers=OWNER) as c:
        run_id = start(c, new_corpus(c), max_steps=40)
        wait_for(c, run_id)
    kept = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert kept == [f"run-{run_id}@20.safetensors", f"run-{run_id}@40.safetensors"]
    stray = tmp_path / "snapshots" / f"run-{run_id + 5}@20.safetensors"
    stray.write_bytes((tmp_path / "snapshots" / kept[0]).read_bytes())
    with TestClient(build_app(tmp_path, **RECORD_ALL, run_snapshots=2), headers=OWNER) as c:
        assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == kept
        assert c.get(f"/api/models/run-{run_id}@20").status_code == 200
