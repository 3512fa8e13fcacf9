"""Training runs through the API: every route, every refusal, the files a run leaves, the
event stream, cancel and resume, start-up and shutdown."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.web.security import owner_id
from rnnscope.app.training.store import Store
from rnnscope.model.checkpoint import load_model, load_train_state
from tests.training_app import (ENDLESS, FAST, OWNER, TINY, assert_continuous, build_app, excerpt, new_corpus,
                                 start, upload, wait_for)


@pytest.fixture(autouse=True, params=["thread", pytest.param("ray", marks=pytest.mark.cluster)])
def executor(request, monkeypatch) -> str:
    """Every test here runs under both executors: in this process, and on the Ray cluster."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    monkeypatch.setenv("RNNSCOPE_EXECUTOR", request.param)      # read by every build_app's Settings
    # One run at a time, as the queue tests expect, whatever the cluster's CPUs.
    monkeypatch.setenv("RNNSCOPE_MAX_PARALLEL_RUNS", "1")
    return request.param


@pytest.fixture
def client(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as c:
        yield c


@pytest.fixture
def corpus(client) -> dict:
    return new_corpus(client)


def events(client, run_id: int, **kw) -> list[tuple[str, str | None, dict]]:
    """(event, id, data) of a whole stream; ends at the `end` event."""
    out, fields = [], {}
    with client.stream("GET", f"/api/runs/{run_id}/events", **kw) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:                          # a blank line ends an event
                if "data" in fields:
                    out.append((fields.get("event"), fields.get("id"), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return out


# ---- a run from start to finish ------------------------------------------------------------------

def test_a_run_trains_and_leaves_a_model_every_view_serves(client, corpus, tmp_path):
    run_id = start(client, corpus, max_steps=60, name="tiny")
    run = wait_for(client, run_id)
    assert run["name"] == "tiny" and run["corpus_name"] == "excerpt"
    assert run["step"] == run["checkpoint_step"] == 60 and run["error"] is None
    assert run["model_id"] == f"run-{run_id}"
    assert run["train_loss"] < np.log(corpus["preflight"]["vocab_size"])      # it learned something
    assert run["best_val_loss"] <= run["val_loss"] + 1e-9
    assert run["eta_seconds"] is None and run["finished"] >= run["started"]
    assert [(a["from_step"], a["to_step"], a["outcome"]) for a in run["attempts"]] == [(0, 60, "completed")]

    m = assert_continuous(client, run_id, 60)
    assert m["val_step"] == [10, 20, 30, 40, 50, 60]                          # max_steps / 20, at least 10
    assert all(g > 0 for g in m["grad_norm"]) and all(c > 0 for c in m["chars_per_sec"])
    assert len(m["clipped"]) == 60
    samples = client.get(f"/api/runs/{run_id}/samples").json()
    assert [(s["step"], s["temperature"]) for s in samples] == [(s, t) for s in (20, 40, 60)
                                                                for t in (0.5, 0.8, 1.0)]
    assert all(len(s["text"]) == 200 for s in samples)
    assert client.get(f"/api/runs/{run_id}/samples", params={"since": 40}).json() == samples[-3:]

    g = client.get(f"/api/runs/{run_id}/gradients").json()
    assert g["steps"] == [20, 40, 60] and len(g["passage"]) == 100
    assert g["target"] == g["passage"][g["position"] + 1]
    assert len(g["layers"]) == 1 and len(g["layers"][0]["h_grad_norm"]) == 3
    rows = g["layers"][0]["h_grad_norm"] + g["layers"][0]["c_grad_norm"]
    assert all(len(row) == g["position"] + 1 for row in rows)

    # The files load, and the model is the best-validation weights of a 60-step state.
    model = load_model(tmp_path / "models" / f"run-{run_id}.safetensors")
    assert model.config.hidden_size == 16
    assert model.history["steps"] == 60 and model.history["stopped"] == "max_steps"
    assert model.history["best_val_loss"] == pytest.approx(run["best_val_loss"])
    _, state = load_train_state(tmp_path / "runs" / f"{run_id}.state.safetensors")
    assert state.step == 60 and state.history.step == list(range(1, 61))
    assert state.history.loss == pytest.approx(m["loss"])

    # The model is in the registry, for every page and route.
    models = {x["id"]: x for x in client.get("/api/models").json()}
    assert models[f"run-{run_id}"]["name"] == "tiny"
    assert client.get(f"/api/models/run-{run_id}").status_code == 200
    sample = client.post(f"/api/models/run-{run_id}/sample", json={"length": 20, "seed": 1})
    assert sample.status_code == 200 and len(sample.json()["text"]) == 20


def test_defaults_fill_everything_but_the_corpus(client, corpus):
    run_id = client.post("/api/runs", json={"corpus_id": corpus["id"]}).json()["id"]
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["config"] == {"corpus_id": corpus["id"], "cell": "lstm", "hidden_size": 128, "num_layers": 2,
                             "seq_length": 100, "batch_size": 32, "learning_rate": 0.002, "dropout": 0.0,
                             "max_steps": 2000, "grad_clip": 5.0, "eval_every": None, "seed": 0, "name": None}
    assert run["name"] == "LSTM 2x128 on excerpt" and run["max_steps"] == 2000
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
    wait_for(client, run_id, ("cancelled",))


def test_the_same_seed_gives_the_same_run(client, corpus):
    a = start(client, corpus, max_steps=25, dropout=0.1, num_layers=2, seed=7)
    b = start(client, corpus, max_steps=25, dropout=0.1, num_layers=2, seed=7)
    wait_for(client, a), wait_for(client, b)
    losses = [client.get(f"/api/runs/{r}/metrics").json()["loss"] for r in (a, b)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_every_cell_trains(client, corpus, cell):
    run = wait_for(client, start(client, corpus, cell=cell, max_steps=20))
    g = client.get(f"/api/runs/{run['id']}/gradients").json()
    assert g["layers"][0]["c_grad_norm"] is None and len(g["steps"]) == 1


# ---- the event stream ---------------------------------------------------------------------------

def test_events_of_a_finished_run_resume_from_since_or_last_event_id(client, corpus):
    run_id = start(client, corpus, max_steps=60)
    wait_for(client, run_id)
    evs = events(client, run_id, params={"since": 55})
    assert evs[0][0] == "status" and evs[0][2]["status"] == "completed"
    steps = [e for e in evs if e[0] == "step"]
    assert [d["step"] for _, _, d in steps] == [56, 57, 58, 59, 60]
    assert [i for _, i, _ in steps] == ["56", "57", "58", "59", "60"]
    last = steps[-1][2]
    assert last["val_loss"] is not None and [s["temperature"] for s in last["samples"]] == [0.5, 0.8, 1.0]
    assert steps[0][2]["samples"] is None and steps[0][2]["val_loss"] is None
    assert set(last) == {"step", "loss", "grad_norm", "clipped", "chars_per_sec", "learning_rate", "epoch",
                         "eta_seconds", "val_loss", "samples"}
    assert evs[-1][0] == "end" and evs[-1][2]["step"] == 60
    # A reconnecting EventSource sends Last-Event-ID; the larger of it and `since` wins.
    evs = events(client, run_id, headers={"Last-Event-ID": "58"}, params={"since": 10})
    assert [d["step"] for e, _, d in evs if e == "step"] == [59, 60]
    assert len([e for e in events(client, run_id) if e[0] == "step"]) == 60


def test_events_follow_a_running_run_without_gaps(client, corpus):
    run_id = start(client, corpus, max_steps=ENDLESS)
    seen = []
    with client.stream("GET", f"/api/runs/{run_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("id: "):           # the id of a step event is its step
                seen.append(int(line[4:]))
                if len(seen) == 80:
                    break
    assert seen == list(range(1, 81))
    client.post(f"/api/runs/{run_id}/cancel")
    run = wait_for(client, run_id, ("cancelled",))
    evs = events(client, run_id, params={"since": run["step"] - 1})
    assert [e for e, _, _ in evs] == ["status", "step", "end"]


def test_a_stream_closes_after_its_time_and_reconnects_without_gaps(tmp_path):
    with TestClient(build_app(tmp_path, **FAST | {"events_max_seconds": 0.5}), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run_id = start(client, corpus, max_steps=ENDLESS)
        wait_for(client, run_id, ("running",), step=lambda s: s > 0)    # a Ray actor takes a moment to start
        steps, last = [], None
        for _ in range(3):
            headers = {} if last is None else {"Last-Event-ID": last}
            evs = events(client, run_id, headers=headers)       # ends by itself, without an `end`
            assert "end" not in [e for e, _, _ in evs]
            steps += [d["step"] for e, _, d in evs if e == "step"]
            last = str(steps[-1])
        assert steps == list(range(1, len(steps) + 1))
        client.post(f"/api/runs/{run_id}/cancel")
        wait_for(client, run_id, ("cancelled",))


# ---- cancel, resume, delete ----------------------------------------------------------------------

def test_cancel_checkpoints_and_resume_continues_exactly(client, corpus, tmp_path):
    run_id = start(client, corpus, max_steps=300)
    wait_for(client, run_id, ("running",), step=lambda s: s >= 30)
    r = client.post(f"/api/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    run = wait_for(client, run_id, ("cancelled",))
    stopped = run["step"]
    assert run["checkpoint_step"] == stopped < 300 and run["model_id"] == f"run-{run_id}"
    _, state = load_train_state(tmp_path / "runs" / f"{run_id}.state.safetensors")
    assert state.step == stopped
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 409

    r = client.post(f"/api/runs/{run_id}/resume")
    assert r.status_code == 200 and r.json()["status"] in ("queued", "running")
    run = wait_for(client, run_id)
    assert run["step"] == 300
    attempts = [(a["from_step"], a["outcome"]) for a in run["attempts"]]
    assert attempts == [(0, "cancelled"), (stopped, "completed")]
    resumed = assert_continuous(client, run_id, 300)

    # Bit for bit the run that never stopped.
    straight = start(client, corpus, max_steps=300)
    wait_for(client, straight)
    assert client.get(f"/api/runs/{straight}/metrics").json()["loss"] == resumed["loss"]


def test_a_queued_run_cancels_at_once_and_waits_its_turn(client, corpus):
    first = start(client, corpus, max_steps=ENDLESS)
    second = start(client, corpus, max_steps=20)
    assert client.get(f"/api/runs/{second}").json()["status"] == "queued"
    r = client.post(f"/api/runs/{second}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["error"] == "cancelled before it started"
    assert client.get(f"/api/runs/{second}/gradients").json()["steps"] == []
    assert client.post(f"/api/runs/{second}/resume").json()["status"] == "queued"
    assert client.get(f"/api/runs/{second}").json()["status"] == "queued"      # the first still trains
    client.post(f"/api/runs/{first}/cancel")
    wait_for(client, second)                                                   # then the second runs, from 0
    assert_continuous(client, second, 20)


@pytest.mark.parametrize("action", ["resume", "cancel"])
def test_a_completed_run_neither_resumes_nor_cancels(client, corpus, action):
    run_id = start(client, corpus, max_steps=10)
    wait_for(client, run_id)
    r = client.post(f"/api/runs/{run_id}/{action}")
    assert r.status_code == 409 and "completed" in r.json()["detail"]


def test_delete(client, corpus, tmp_path):
    running = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, running, ("running",), checkpoint_step=lambda s: s is not None)
    r = client.delete(f"/api/runs/{running}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    client.post(f"/api/runs/{running}/cancel")
    wait_for(client, running, ("cancelled",))
    assert client.get(f"/api/models/run-{running}").status_code == 200

    assert client.delete(f"/api/runs/{running}").status_code == 204
    assert client.get(f"/api/runs/{running}").status_code == 404
    assert client.get(f"/api/models/run-{running}").status_code == 404
    assert f"run-{running}" not in [m["id"] for m in client.get("/api/models").json()]
    assert not (tmp_path / "models" / f"run-{running}.safetensors").exists()
    assert not (tmp_path / "runs" / f"{running}.state.safetensors").exists()
    assert client.delete(f"/api/runs/{running}").status_code == 404
    # Ids are never reused, so a new run cannot pick up the old one's files.
    assert start(client, corpus, max_steps=5) == running + 1


# ---- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, where", [
    ({"hidden_size": 0}, "hidden_size"),
    ({"hidden_size": "16"}, "hidden_size"),            # strict: no strings for numbers
    ({"num_layers": 9}, "num_layers"),
    ({"cell": "transformer"}, "cell"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"dropout": 1.0}, "dropout"),
    ({"max_steps": 0}, "max_steps"),
    ({"seq_length": -1}, "seq_length"),
    ({"name": "x" * 101}, "name"),
    ({"epochs": 3}, "epochs"),                          # unknown fields are refused, not ignored
    ({"batch_size": 512, "seq_length": 64}, "batch_size"),   # more than the training text
])
def test_bad_run_configs_are_refused(client, corpus, fields, where):
    r = client.post("/api/runs", json={"corpus_id": corpus["id"], **fields})
    assert r.status_code == 422, r.text
    assert where in [str(p) for e in r.json()["detail"] for p in e["loc"]]


def test_limits_are_settings(tmp_path):
    app = build_app(tmp_path, max_hidden_size=64, max_parameters=50_000, max_step_chars=1000)
    with TestClient(app) as client:
        corpus = upload(client, excerpt(20_000)).json()
        for fields, setting in [
                ({"hidden_size": 65}, "RNNSCOPE_MAX_HIDDEN_SIZE"),
                ({"hidden_size": 64, "num_layers": 2}, "RNNSCOPE_MAX_PARAMETERS"),
                ({"hidden_size": 16, "batch_size": 40, "seq_length": 26}, "RNNSCOPE_MAX_STEP_CHARS")]:
            r = client.post("/api/runs", json={"corpus_id": corpus["id"], **fields})
            assert r.status_code == 422 and setting in r.json()["detail"][0]["msg"], r.text


def test_unknown_corpus_is_404(client):
    r = client.post("/api/runs", json={"corpus_id": 42})
    assert r.status_code == 404 and "no corpus 42" in r.json()["detail"]


def test_the_queue_is_bounded(tmp_path):
    with TestClient(build_app(tmp_path, max_queued_runs=1, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        running = start(client, corpus, max_steps=ENDLESS)
        wait_for(client, running, ("running",))
        waiting = start(client, corpus, max_steps=5)
        r = client.post("/api/runs", json={"corpus_id": corpus["id"], **TINY})
        assert r.status_code == 429 and "RNNSCOPE_MAX_QUEUED_RUNS" in r.json()["detail"]
        client.post(f"/api/runs/{waiting}/cancel")
        other = start(client, corpus, max_steps=5)            # the slot is free again
        r = client.post(f"/api/runs/{waiting}/resume")         # and taken
        assert r.status_code == 429 and "RNNSCOPE_MAX_QUEUED_RUNS" in r.json()["detail"]
        client.post(f"/api/runs/{running}/cancel")
        wait_for(client, other)
        assert client.post(f"/api/runs/{waiting}/resume").status_code == 200
        wait_for(client, waiting)


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "2.5", str(2**64), "lstm", "%2e%2e"])
def test_bad_run_ids(client, bad):
    for method, path in [("GET", ""), ("GET", "/metrics"), ("GET", "/samples"), ("GET", "/events"),
                         ("GET", "/gradients"), ("POST", "/cancel"), ("POST", "/resume"), ("DELETE", "")]:
        assert client.request(method, f"/api/runs/{bad}{path}").status_code == 422, (method, path)


def test_unknown_run_is_404_everywhere(client):
    for method, path in [("GET", ""), ("GET", "/metrics"), ("GET", "/samples"), ("GET", "/events"),
                         ("GET", "/gradients"), ("POST", "/cancel"), ("POST", "/resume"), ("DELETE", "")]:
        r = client.request(method, f"/api/runs/99{path}")
        assert r.status_code == 404 and "no run 99" in r.json()["detail"], (method, path)


def test_bad_query_values(client, corpus):
    run_id = start(client, corpus, max_steps=5)
    for path in ["/metrics?since=-1", "/metrics?max_points=1", "/samples?since=x", "/events?since=-5"]:
        assert client.get(f"/api/runs/{run_id}{path}").status_code == 422, path
    wait_for(client, run_id)
    # A garbled Last-Event-ID is ignored, not an error.
    assert len([e for e in events(client, run_id, headers={"Last-Event-ID": "junk"}) if e[0] == "step"]) == 5


def test_metrics_are_thinned_to_max_points(client, corpus):
    run_id = start(client, corpus, max_steps=100)
    wait_for(client, run_id)
    m = client.get(f"/api/runs/{run_id}/metrics", params={"max_points": 20}).json()
    assert m["stride"] == 5 and m["step"][:3] == [5, 10, 15]
    assert m["val_step"] == list(range(10, 101, 10))          # validation points are all kept
    after = client.get(f"/api/runs/{run_id}/metrics", params={"since": 90}).json()
    assert after["step"] == list(range(91, 101))


# ---- the token ------------------------------------------------------------------------------------------

def test_others_runs_need_the_token_reads_do_not(tmp_path):
    """A class shares the server: only the owner, or the admin's token, changes a run."""
    other = {"X-Rnnscope-Owner": "another-student"}
    admin = other | {"Authorization": "Bearer t0ken"}
    with TestClient(build_app(tmp_path, token="t0ken", **FAST)) as client:     # its cookie: the owner
        corpus = upload(client, excerpt(20_000)).json()
        body = {"corpus_id": corpus["id"], **TINY, "max_steps": ENDLESS}
        run_id = client.post("/api/runs", json=body).json()["id"]
        wait_for(client, run_id, ("running",))
        assert client.get(f"/api/runs/{run_id}").json()["yours"] is True
        assert client.get(f"/api/runs/{run_id}", headers=other).json()["yours"] is False
        for method, path in [("POST", "/cancel"), ("POST", "/resume"), ("DELETE", "")]:
            r = client.request(method, f"/api/runs/{run_id}{path}", headers=other)
            assert r.status_code == 403 and "RNNSCOPE_TOKEN" in r.json()["detail"], path
            assert client.request(method, f"/api/runs/{run_id}{path}",
                                  headers=other | {"Authorization": "Bearer nope"}).status_code == 401
        for path in ["", "/metrics", "/samples", "/gradients"]:
            assert client.get(f"/api/runs/{run_id}{path}", headers=other).status_code == 200
        assert client.get("/api/runs", headers=other).status_code == 200
        assert client.delete(f"/api/corpora/{corpus['id']}", headers=other).status_code == 403
        assert client.post(f"/api/runs/{run_id}/cancel", headers=admin).status_code == 200     # the admin
        wait_for(client, run_id, ("cancelled",))
        assert client.delete(f"/api/runs/{run_id}").status_code == 204                        # the owner


def test_openapi_declares_the_bearer_scheme(client):
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # Optional: needed only when the server has a token.
    assert doc["paths"]["/api/runs"]["post"]["security"] == [{"HTTPBearer": []}, {}]
    assert "security" not in doc["paths"]["/api/runs"]["get"]


# ---- start-up and shutdown ------------------------------------------------------------------------------

def test_shutdown_checkpoints_the_run_and_start_up_marks_it_interrupted(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run_id = start(client, corpus, max_steps=ENDLESS)
        wait_for(client, run_id, ("running",), step=lambda s: s >= 30)
    # The lifespan stopped the worker, which wrote a checkpoint at the step it stopped on.
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "interrupted" and "resume" in run["error"]
        assert run["checkpoint_step"] == run["step"] >= 30
        assert run["attempts"][0]["outcome"] == "interrupted"
        assert client.get(f"/api/models/run-{run_id}").json()["name"] == run["name"]   # served again
        assert_continuous(client, run_id, run["step"])
        client.post(f"/api/runs/{run_id}/resume")
        wait_for(client, run_id, ("running",), step=lambda s: s > run["step"] + 5)
        client.post(f"/api/runs/{run_id}/cancel")
        after = wait_for(client, run_id, ("cancelled",))
        assert_continuous(client, run_id, after["step"])


def test_a_run_left_running_by_a_dead_process_is_interrupted(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
    store = Store(tmp_path / "rnnscope.sqlite3")          # as a killed server leaves it
    config = {"corpus_id": corpus["id"], **TINY, "max_steps": 15}
    run_id = store.add_run("orphan", corpus["id"], config, 15, 10, owner=owner_id(OWNER["X-Rnnscope-Owner"]))
    store.update_run(run_id, status="running", started=time.time())
    store.close()
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "interrupted"
        client.post(f"/api/runs/{run_id}/resume")
        wait_for(client, run_id)                          # no checkpoint: it starts over
        assert_continuous(client, run_id, 15)


def test_a_run_whose_corpus_file_vanished_fails_with_a_reason(client, corpus, tmp_path):
    (tmp_path / "corpora" / f"{corpus['sha256']}.txt").unlink()
    run = wait_for(client, start(client, corpus, max_steps=5), ("failed",))
    assert "deleted" in run["error"]


def test_a_diverging_run_fails_with_char_rnns_message(client, corpus):
    run = wait_for(client, start(client, corpus, max_steps=500, learning_rate=1.0, grad_clip=0.0,
                                 cell="rnn", hidden_size=64), ("failed", "completed"))
    # Training is seeded, so this run diverges every time: a completed one is a regression.
    assert run["status"] == "failed" and "exploding" in run["error"]
    assert_continuous(client, run["id"], run["step"])


def test_runs_train_side_by_side_up_to_max_parallel_runs(tmp_path, executor):
    with TestClient(build_app(tmp_path, max_parallel_runs=2, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        first, second, third = (start(client, corpus, max_steps=ENDLESS) for _ in range(3))
        for run_id in (first, second):
            wait_for(client, run_id, ("running",), step=lambda s: s > 0)
        assert client.get(f"/api/runs/{third}").json()["status"] == "queued"      # two at a time
        assert client.post(f"/api/runs/{first}/cancel").status_code == 200
        wait_for(client, third, ("running",), step=lambda s: s > 0)                # takes the free slot
        for run_id in (second, third):
            assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
        for run_id in (first, second, third):
            run = wait_for(client, run_id, ("cancelled",))
            assert_continuous(client, run_id, run["step"])
            assert run["attempts"][0]["worker"].startswith("this server" if executor == "thread" else "ray node")


def test_the_training_capacity_names_the_executor_its_machines_and_the_queue(client, corpus, executor):
    r = client.get("/api/training")
    assert r.status_code == 200, r.text
    cap = r.json()
    assert cap["executor"] == executor and cap["parallel_runs"] == 1 and cap["run_cpus"] == 1
    assert (cap["running"], cap["queued"]) == (0, 0)
    alive = [n for n in cap["nodes"] if n["alive"]]
    assert alive and all(n["where"].startswith("this server" if executor == "thread" else "ray node") for n in alive)
    first = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, first, ("running",), step=lambda s: s > 0)
    second = start(client, corpus, max_steps=10)
    cap = client.get("/api/training").json()
    assert (cap["running"], cap["queued"]) == (1, 1)
    listed = {r["id"]: r for r in client.get("/api/runs").json()}
    assert listed[first]["worker"].startswith("this server" if executor == "thread" else "ray node")
    assert listed[second]["worker"] is None                      # not taken up yet
    client.post(f"/api/runs/{first}/cancel")
    wait_for(client, second)


def test_a_new_attempt_takes_the_run_step_back_to_its_checkpoint(tmp_path):
    """A resumed run's step agrees with its history from the moment the attempt starts, even
    before its first step lands (a Ray actor takes a moment to start)."""
    store = Store(tmp_path / "rnnscope.sqlite3")
    run_id = store.add_run("r", 1, {}, 100, 100)
    store.log(run_id, [(s, 1.0, 1.0, 0, 1.0, 0.1, 0.0, None, None) for s in range(1, 41)], {"step": 40})
    store.truncate_history(run_id, 20)
    assert store.get_run(run_id)["step"] == 20
    assert [m["step"] for m in store.metrics(run_id)] == list(range(1, 21))
