"""Issue 8, one server for a whole class: the Host and Origin checks, owners and the admin
token, per-owner quotas, estimates inside the run limits and the compute gate, a bounded
compute queue that keeps /healthz fast, storage faults (injected and on a real full tmpfs)
that interrupt a run resumably, a supervised worker, a COMMIT that fails, an unusable data
directory, and start-up cleaning what a killed process leaves. Each test failed before the
commit that fixed its defect."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.app.training.store import Store
from rnnscope.model.checkpoint import load_train_state
from tests.conftest import serving
from tests.training_app import (ENDLESS, FAST, OWNER, TINY, assert_continuous, build_app, excerpt, new_corpus, start,
                                 upload, wait_for)

OTHER = {"X-Rnnscope-Owner": "another-student"}
TOKEN = "t0ken"
ADMIN = OTHER | {"Authorization": f"Bearer {TOKEN}"}
EVIL = "http://evil.example"


@pytest.fixture
def client(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as c:
        yield c


@pytest.fixture
def corpus(client) -> dict:
    return new_corpus(client)


def detail(r: httpx.Response) -> str:
    d = r.json()["detail"]
    return d if isinstance(d, str) else " ".join(e["msg"] for e in d)


class StepTimer:
    """Stands in for timing a real training step: counts the shapes timed, and checks each
    is timed inside a compute slot when given the gate to look at."""

    def __init__(self):
        self.shapes: list[tuple] = []
        self.gate = None

    def __call__(self, cfg, batch_size, seq_length, *args, **kw) -> float:
        if self.gate is not None:
            assert self.gate.busy >= 1, "a step was timed outside the compute gate"
        self.shapes.append((cfg.cell, cfg.hidden_size, cfg.num_layers, batch_size, seq_length))
        return 0.001


@pytest.fixture
def step_timer(monkeypatch) -> StepTimer:
    timer = StepTimer()
    # The service times the steps (with app.training.attempt's function).
    monkeypatch.setattr("rnnscope.app.training.service.seconds_per_step", timer)
    return timer


# ---- Host: DNS rebinding reaches the API under a foreign name --------------------------------------------

def test_a_foreign_host_is_refused_naming_the_setting(client):
    for method, path in [("GET", "/healthz"), ("GET", "/"), ("GET", "/api/runs"), ("POST", "/api/runs")]:
        r = client.request(method, path, headers={"Host": "evil.example"})
        assert r.status_code == 400, (path, r.text)
        assert "RNNSCOPE_ALLOWED_HOSTS" in r.json()["detail"] and "evil.example" in r.json()["detail"]
    r = upload(client, excerpt(2000), headers={"Host": "evil.example"})
    assert r.status_code == 400 and client.get("/api/corpora").json() == []


def test_allowed_hosts_come_from_the_environment_comma_separated(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSCOPE_ALLOWED_HOSTS", "a.example, b.example")
    settings = Settings(data_dir=tmp_path, load_bundled=False)
    assert settings.allowed_hosts == ("a.example", "b.example")
    with TestClient(create_app(settings)) as c:
        for host in ("a.example", "B.example:8000"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in ("testserver", "localhost", "c.example", "a.example.evil.example"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 400, host


def test_by_default_the_loopback_names_and_the_bind_address_are_served(tmp_path):
    with TestClient(build_app(tmp_path, host="10.1.2.3", allowed_hosts=())) as c:
        for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3", "10.1.2.3:80"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in ("testserver", "evil.example", "10.1.2.4", "localhost.evil.example", "", "[::2]:8000"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 400, host


# ---- Origin: any web page a student opens could change the server ----------------------------------------

def test_cross_site_state_changes_are_refused(client, corpus):
    run_id = start(client, corpus, max_steps=ENDLESS)
    # A form post from another site: multipart, so no CORS preflight protects it.
    r = upload(client, excerpt(3000), headers={"Origin": EVIL})
    assert r.status_code == 403 and "another site" in r.json()["detail"]
    # Body-less POSTs and a DELETE; the run does not even need to exist.
    for method, path in [("POST", f"/api/runs/{run_id}/cancel"), ("POST", "/api/runs/99/cancel"),
                         ("DELETE", f"/api/runs/{run_id}"), ("DELETE", f"/api/corpora/{corpus['id']}")]:
        for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Origin": "http://testserver.evil.example"},
                        {"Origin": "http://testserver:8080"}, {"Origin": "file://"},
                        {"Referer": f"{EVIL}/page.html"}, {"Origin": EVIL, "Referer": "http://testserver/"}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 403, (method, path, headers, r.text)
    assert [c["id"] for c in client.get("/api/corpora").json()] == [corpus["id"]]
    assert client.get(f"/api/runs/{run_id}").json()["status"] in ("queued", "running")
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200


def test_a_second_origin_header_or_a_websocket_does_not_get_round_the_check(client):
    r = client.post("/api/runs/1/cancel", headers=[("Origin", EVIL), ("Origin", "http://testserver")])
    assert r.status_code == 403
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as e:
        with client.websocket_connect("/ws", headers={"Origin": EVIL}):
            pass
    assert e.value.code == 1008


def test_same_origin_pages_and_clients_without_origin_pass(client):
    r = upload(client, excerpt(3000), headers={"Origin": "http://testserver"})
    assert r.status_code == 201, r.text
    c = r.json()
    body = {"corpus_id": c["id"], **TINY, "max_steps": 5}
    assert client.post("/api/runs", json=body, headers={"Referer": "http://testserver/train?x=1"}).status_code == 201
    assert client.post("/api/runs", json=body, headers={"Origin": "http://TESTSERVER:80"}).status_code == 201
    assert client.post("/api/runs", json=body).status_code == 201                  # curl: neither header
    # Reading is never refused for its Origin: a page elsewhere may compare models.
    assert client.get("/api/runs", headers={"Origin": EVIL}).status_code == 200


# ---- Owners and the admin token ----------------------------------------------------------------------------

def test_each_browser_gets_an_owner_key_in_a_strict_cookie(tmp_path):
    with TestClient(build_app(tmp_path, **FAST)) as browser, TestClient(browser.app) as other:
        r = browser.get("/")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("rnnscope_owner=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        c = upload(browser, excerpt(2000)).json()
        assert "set-cookie" not in browser.get("/api/corpora").headers           # kept, not made again
        assert browser.get(f"/api/corpora/{c['id']}").json()["yours"] is True
        assert other.get(f"/api/corpora/{c['id']}").json()["yours"] is False
        assert other.delete(f"/api/corpora/{c['id']}").status_code == 403
        assert browser.delete(f"/api/corpora/{c['id']}").status_code == 204


def test_only_the_owner_or_the_admin_changes_a_run_or_a_corpus(tmp_path):
    with TestClient(build_app(tmp_path, token=TOKEN, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run_id = start(client, corpus, max_steps=ENDLESS)
        wait_for(client, run_id, ("running",))
        for method, path in [("POST", "/cancel"), ("POST", "/resume"), ("DELETE", "")]:
            r = client.request(method, f"/api/runs/{run_id}{path}", headers=OTHER)
            assert r.status_code == 403 and "RNNSCOPE_TOKEN" in r.json()["detail"], path
        assert client.delete(f"/api/corpora/{corpus['id']}", headers=OTHER).status_code == 403
        # Reading stays open, so a class can compare its models.
        for path in ["", "/metrics", "/samples", "/gradients"]:
            assert client.get(f"/api/runs/{run_id}{path}", headers=OTHER).status_code == 200, path
        assert client.get(f"/api/corpora/{corpus['id']}", headers=OTHER).status_code == 200
        # A wrong token is an error, not an ordinary owner.
        r = client.post(f"/api/runs/{run_id}/cancel", headers=OTHER | {"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert client.post(f"/api/runs/{run_id}/cancel", headers=ADMIN).status_code == 200
        wait_for(client, run_id, ("cancelled",))
        assert client.post(f"/api/runs/{run_id}/resume", headers=ADMIN).status_code == 200
        wait_for(client, run_id, ("running",))
        assert client.post(f"/api/runs/{run_id}/cancel", headers=ADMIN).status_code == 200
        wait_for(client, run_id, ("cancelled",))
        assert client.delete(f"/api/runs/{run_id}", headers=ADMIN).status_code == 204
        assert client.delete(f"/api/corpora/{corpus['id']}", headers=ADMIN).status_code == 204


def test_the_admin_url_sets_a_cookie_and_drops_the_token_from_the_address(tmp_path):
    with TestClient(build_app(tmp_path, token=TOKEN, **FAST), headers=OWNER) as owner, \
            TestClient(owner.app, headers=OTHER) as admin:
        corpus = upload(owner, excerpt(2000)).json()
        r = admin.get("/train", params=[("token", TOKEN), ("tab", "runs"), ("x", "1"), ("x", "2")],
                      follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/train?tab=runs&x=1&x=2"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("rnnscope_admin=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie                       # a digest: the browser never stores the token
        assert admin.get(f"/api/corpora/{corpus['id']}").json()["yours"] is True
        assert admin.delete(f"/api/corpora/{corpus['id']}").status_code == 204
        for bad in [{"token": "wrong"}, [("token", TOKEN), ("token", "wrong")]]:
            r = owner.get("/", params=bad, follow_redirects=False)
            assert r.status_code == 401 and "rnnscope_admin" not in r.headers.get("set-cookie", "")
        # The redirect never leaves the server, whatever the path looks like.
        for path, location in [("//evil.example/", "/evil.example/"), ("/\\evil.example", "/evil.example"),
                               ("/caf\u00e9", "/caf%C3%A9")]:
            r = owner.get(f"http://testserver{path}", params={"token": TOKEN}, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == location, path
        # On a POST the token in the URL is no credential.
        r = owner.post("/api/runs/1/cancel", params={"token": TOKEN}, headers=OTHER)
        assert r.status_code == 404


def test_queued_runs_per_owner_are_bounded(tmp_path):
    with TestClient(build_app(tmp_path, max_queued_runs_per_owner=2, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        running = start(client, corpus, max_steps=ENDLESS)
        wait_for(client, running, ("running",))
        queued = [start(client, corpus, max_steps=5) for _ in range(2)]
        r = client.post("/api/runs", json={"corpus_id": corpus["id"], **TINY})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER" in r.json()["detail"]
        assert client.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, "max_steps": 5},
                           headers=OTHER).status_code == 201                       # another student's quota
        for run_id in [*queued, running]:
            assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200


def test_corpus_bytes_per_owner_are_bounded(tmp_path):
    with TestClient(build_app(tmp_path, max_corpus_bytes_per_owner=30_000, **FAST), headers=OWNER) as client:
        assert upload(client, excerpt(20_000)).status_code == 201
        r = upload(client, excerpt(15_000))
        assert r.status_code == 413 and "RNNSCOPE_MAX_CORPUS_BYTES_PER_OWNER" in r.json()["detail"]
        assert upload(client, excerpt(15_000), headers=OTHER).status_code == 201
        assert len(client.get("/api/corpora?owner=all").json()) == 2
        assert not list((tmp_path / "corpora").glob(".*"))                      # no temporary file left


def test_the_same_text_twice_is_one_corpus_per_owner(client, corpus):
    again = upload(client, excerpt(20_000), filename="copy.txt")
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["id"] == corpus["id"]
    theirs = upload(client, excerpt(20_000), headers=OTHER)
    assert theirs.status_code == 201 and theirs.json()["id"] != corpus["id"]
    # Stored once (issue 18), each owner with an entry of their own.
    assert [p.name for p in (client.app.state.settings.data_dir / "corpora").iterdir()] == [f"{corpus['sha256']}.txt"]


# ---- The estimate: a memory bomb any visitor could set off ------------------------------------------------

def test_the_memory_bomb_estimate_is_refused_without_timing_a_step(client, corpus, step_timer):
    r = client.get(f"/api/corpora/{corpus['id']}/estimate", params={
        "cell": "lstm", "hidden_size": 2048, "num_layers": 1, "batch_size": 1024, "seq_length": 2000})
    assert r.status_code == 422 and "RNNSCOPE_MAX_HIDDEN_SIZE" in detail(r)
    assert step_timer.shapes == []


def test_the_estimate_refuses_exactly_what_a_run_refuses(tmp_path, step_timer):
    limits = {"max_hidden_size": 64, "max_parameters": 40_000, "max_step_chars": 512,
              "max_queued_runs": 1000, "max_queued_runs_per_owner": 1000}
    with TestClient(build_app(tmp_path, **limits, **FAST), headers=OWNER) as client:
        client.app.state.training.trainer.stop()              # the accepted runs stay queued, untrained
        big, small = upload(client, excerpt(20_000)).json(), upload(client, excerpt(500)).json()
        outcomes, reasons = [], set()
        for c in (big, small):
            for cell in ("lstm", "gru", "rnn"):
                for hidden in (16, 64, 65):
                    for layers in (1, 4):
                        for batch, seq in ((4, 16), (8, 64), (9, 57), (1024, 2000)):
                            shape = {"cell": cell, "hidden_size": hidden, "num_layers": layers,
                                     "batch_size": batch, "seq_length": seq}
                            est = client.get(f"/api/corpora/{c['id']}/estimate", params=shape)
                            run = client.post("/api/runs", json={"corpus_id": c["id"], **shape, "max_steps": 1})
                            assert (est.status_code, run.status_code) in ((200, 201), (422, 422)), \
                                (c["chars"], shape, est.text, run.text)
                            outcomes.append(est.status_code)
                            if est.status_code == 422:
                                reasons.add(detail(est).split("(setting ")[-1][:40] if "setting" in detail(est)
                                            else "too few")
        assert 200 in outcomes and 422 in outcomes
        assert {r.split(")")[0] for r in reasons} == {"RNNSCOPE_MAX_HIDDEN_SIZE", "RNNSCOPE_MAX_PARAMETERS",
                                                     "RNNSCOPE_MAX_STEP_CHARS", "too few"}


def test_a_shape_is_timed_once(client, step_timer):
    corpus = upload(client, excerpt(20_000)).json()
    preflight = len(step_timer.shapes)             # the upload timed its recommended model
    rec = corpus["preflight"]["recommended"]
    same = {k: rec[k] for k in ("cell", "hidden_size", "num_layers", "batch_size", "seq_length")}
    url = f"/api/corpora/{corpus['id']}/estimate"
    assert client.get(url, params=same).status_code == 200
    assert len(step_timer.shapes) == preflight
    shape = {"cell": "gru", "hidden_size": 24, "num_layers": 2, "batch_size": 8, "seq_length": 32}
    first = client.get(url, params=shape | {"max_steps": 100}).json()
    second = client.get(url, params=shape | {"max_steps": 900}).json()
    assert len(step_timer.shapes) == preflight + 1
    assert first["seconds_per_step"] == second["seconds_per_step"] and second["max_steps"] == 900
    client.get(url, params=shape | {"hidden_size": 25})
    assert len(step_timer.shapes) == preflight + 2


def test_estimates_and_uploads_are_timed_and_counted_inside_the_compute_gate(tmp_path, step_timer, monkeypatch):
    import rnnscope.app.training.corpus_uploads as routes   # where an upload is ingested

    ingest, counted = routes.ingest, []

    def gated_ingest(*args, **kw):
        counted.append(gate.busy)
        return ingest(*args, **kw)

    monkeypatch.setattr(routes, "ingest", gated_ingest)
    with TestClient(build_app(tmp_path, max_concurrent_jobs=1, max_waiting_jobs=0, **FAST),
                    headers=OWNER) as client:
        gate = step_timer.gate = client.app.state.compute_slots
        corpus = upload(client, excerpt(20_000)).json()
        url = f"/api/corpora/{corpus['id']}/estimate"
        timed = {"cell": "gru", "hidden_size": 24, "num_layers": 2, "batch_size": 8, "seq_length": 32}
        assert client.get(url, params=timed).status_code == 200
        shapes = len(step_timer.shapes)
        with gate:                                 # another job holds the only slot; none may wait
            r = client.get(url, params=timed | {"hidden_size": 25})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert client.get(url, params=timed).status_code == 200     # from the cache: no slot needed
            # An upload is counted (and its preflight timed) in a slot too: refused before it is read.
            r = upload(client, "".join(chr(0x3b1 + i % 20) for i in range(3000)))
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert len(step_timer.shapes) == shapes and counted == [1]            # the first upload's, in its slot
        assert client.get(url, params=timed | {"hidden_size": 25}).status_code == 200
        assert len(client.get("/api/corpora").json()) == 1
        assert not list((tmp_path / "corpora").glob(".*"))


# ---- The compute gate: a bounded queue, refusals at once, /healthz untouched -------------------------------

LATENCY_PROBE = """
import json, sys, time, httpx
times = []
with httpx.Client(base_url=sys.argv[1], timeout=5) as c:
    c.get("/healthz")                       # the connection, not the server
    for i in range(200):                    # enough for a 99th percentile to mean something
        t0 = time.perf_counter()
        assert c.get(("/healthz", "/api/models", "/", "/api/runs")[i % 4]).status_code == 200
        times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def test_a_full_compute_queue_answers_503_at_once_and_healthz_stays_fast(tmp_path, monkeypatch):
    import rnnscope.app.inference.engines as analysis          # a trace is read there (trace_alone)
    from rnnscope.model.checkpoint import save_model
    from rnnscope.model.network import ModelConfig
    from rnnscope.model.train import TrainConfig, train

    release = threading.Event()
    read = analysis.read

    def slow_read(*args, **kw):
        release.wait(20)                           # a long job, holding its compute slot
        return read(*args, **kw)

    monkeypatch.setattr(analysis, "read", slow_read)
    trained = train(excerpt(2000), ModelConfig("lstm", 1, 16, 1), TrainConfig(batch_size=4, seq_length=16, max_steps=5))
    save_model(trained.model, tmp_path / "models" / "lstm.safetensors")
    # Compute in this process's threads: the slow read planted above lives here, not in a worker.
    app = build_app(tmp_path, max_concurrent_jobs=1, max_waiting_jobs=1, compute_workers=0, **FAST)
    body = {"text": "To be, or not to be", "layers": [0], "quantities": ["h"]}
    with serving(app) as url, httpx.Client(base_url=url, timeout=30, headers=OWNER) as c:
        # A run trains meanwhile, as in a class.
        corpus = c.post("/api/corpora", files={"file": ("t.txt", excerpt(20_000).encode())}).json()
        run_id = c.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, "max_steps": ENDLESS}).json()["id"]
        wait_for(c, run_id, ("running",))
        gate = app.state.compute_slots
        answers: list[httpx.Response] = []
        jobs = [threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/api/models/lstm/trace",
                                                                          json=body, timeout=30)))
                for _ in range(2)]
        for i, job in enumerate(jobs, 1):
            job.start()
            deadline = time.monotonic() + 10
            while gate.busy + gate.waiting < i:
                assert time.monotonic() < deadline, "the trace never reached the gate"
                time.sleep(0.01)
        assert (gate.busy, gate.waiting) == (1, 1)
        t0 = time.perf_counter()
        r = c.post("/api/models/lstm/trace", json=body)
        refused_in = time.perf_counter() - t0
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        assert "RNNSCOPE_MAX_WAITING_JOBS" in r.json()["detail"] and refused_in < 1.0

        # Measured from another process: a client in this one would wait for the interpreter too.
        times = json.loads(subprocess.run([sys.executable, "-c", LATENCY_PROBE, url], capture_output=True,
                                          text=True, check=True, timeout=60).stdout)
        assert (gate.busy, gate.waiting) == (1, 1)             # still saturated throughout
        assert c.get(f"/api/runs/{run_id}").json()["status"] == "running"
        release.set()
        for job in jobs:
            job.join(30)
        assert [a.status_code for a in answers] == [200, 200]
        c.post(f"/api/runs/{run_id}/cancel")
    assert np.percentile(times, 99) < 0.1, sorted(times)[-5:]


def test_a_job_that_waits_too_long_for_a_slot_is_refused():
    from rnnscope.app.inference.compute_gate import ComputeBusy, ComputeGate

    gate = ComputeGate(slots=1, max_waiting=4, max_wait_seconds=0.2)
    held, done = threading.Event(), threading.Event()

    def hold():
        with gate:
            with gate:                 # nested on one thread: the slot it holds, not a deadlock
                held.set()
                done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    t0 = time.monotonic()
    with pytest.raises(ComputeBusy) as e:
        with gate:
            pass
    assert 0.2 <= time.monotonic() - t0 < 2
    assert e.value.status_code == 503 and int(e.value.headers["Retry-After"]) >= 1
    assert "RNNSCOPE_MAX_WAIT_SECONDS" in e.value.detail and gate.waiting == 0
    done.set()
    holder.join(5)
    with gate:
        assert gate.busy == 1
    assert gate.busy == 0


# ---- Faults: a full disk, a failing worker, a failing COMMIT, an unusable data directory -------------------

def test_disk_full_at_a_checkpoint_interrupts_the_run_resumably(client, corpus, monkeypatch):
    import rnnscope.app.training.worker as worker

    real, calls = worker.save_train_state, []

    def second_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 2:                        # the checkpoint at step 40; step 20's is on disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kw)

    monkeypatch.setattr(worker, "save_train_state", second_fails)
    run_id = start(client, corpus, max_steps=60)
    run = wait_for(client, run_id, ("interrupted", "failed", "completed"))
    assert run["status"] == "interrupted" and "No space left on device" in run["error"], run
    assert run["checkpoint_step"] == 20
    _, state = load_train_state(client.app.state.settings.data_dir / "runs" / f"{run_id}.state.safetensors")
    assert state.step == 20
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    run = wait_for(client, run_id)
    assert [(a["from_step"], a["outcome"]) for a in run["attempts"]] == [(0, "interrupted"), (20, "completed")]
    assert_continuous(client, run_id, 60)
    # The worker lives on: another run trains.
    wait_for(client, start(client, corpus, max_steps=10))


def test_an_io_error_reading_the_checkpoint_interrupts_the_run(client, corpus, monkeypatch):
    import rnnscope.app.training.worker as worker

    run_id = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, run_id, ("running",), checkpoint_step=lambda s: s is not None)
    client.post(f"/api/runs/{run_id}/cancel")
    wait_for(client, run_id, ("cancelled",))

    def unreadable(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    real = worker.load_train_state
    monkeypatch.setattr(worker, "load_train_state", unreadable)
    client.post(f"/api/runs/{run_id}/resume")
    run = wait_for(client, run_id, ("interrupted", "failed"))
    assert run["status"] == "interrupted" and "Input/output error" in run["error"], run     # not failed
    monkeypatch.setattr(worker, "load_train_state", real)
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    wait_for(client, run_id, ("running",), step=lambda s: s > run["checkpoint_step"])
    client.post(f"/api/runs/{run_id}/cancel")
    assert_continuous(client, run_id, wait_for(client, run_id, ("cancelled",))["step"])


def test_checkpoints_and_uploads_are_refused_below_the_free_space_floor(client, corpus, monkeypatch):
    run_id = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, run_id, ("running",), checkpoint_step=lambda s: s is not None)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50_000_000))
    run = wait_for(client, run_id, ("interrupted",))
    assert "RNNSCOPE_MIN_FREE_BYTES" in run["error"] and "resume" in run["error"]
    r = upload(client, excerpt(3000))
    assert r.status_code == 507 and "RNNSCOPE_MIN_FREE_BYTES" in r.json()["detail"]
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    wait_for(client, run_id, ("running",), step=lambda s: s > run["step"])
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
    assert_continuous(client, run_id, wait_for(client, run_id, ("cancelled",))["step"])


def test_the_worker_survives_an_exception_in_its_own_bookkeeping(client, corpus, monkeypatch):
    store = client.app.state.training.store
    real, failures = store.update_run, []

    def fails_twice(run_id, *args, **fields):
        # The run's final status, then the worker's record of its own failure: both fail, as
        # they did on a full disk, and the exception escapes the worker's loop.
        if fields.get("status") in ("completed", "failed") and len(failures) < 2:
            failures.append(fields["status"])
            raise RuntimeError("injected: the store refused")
        return real(run_id, *args, **fields)

    monkeypatch.setattr(store, "update_run", fails_twice)
    first = start(client, corpus, max_steps=10)
    run = wait_for(client, first, ("interrupted",), timeout=20)
    assert "worker failed" in run["error"] and failures == ["completed", "failed"]
    assert client.post(f"/api/runs/{first}/resume").status_code == 200
    wait_for(client, first)
    wait_for(client, start(client, corpus, max_steps=10))


def test_cancel_and_delete_work_on_a_run_no_worker_trains(tmp_path):
    with TestClient(build_app(tmp_path, token=TOKEN, **FAST), headers=ADMIN) as client:
        corpus = upload(client, excerpt(2000)).json()
        training = client.app.state.training
        training.trainer.stop()                    # as a worker that died mid-run
        stranded = [training.store.add_run("stranded", corpus["id"], {"corpus_id": corpus["id"], **TINY}, 10, 10)
                    for _ in range(2)]
        for run_id in stranded:
            training.store.update_run(run_id, status="running", started=time.time())
        r = client.post(f"/api/runs/{stranded[0]}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert client.delete(f"/api/runs/{stranded[1]}").status_code == 204
        assert client.get(f"/api/runs/{stranded[1]}").status_code == 404


def test_a_failing_commit_rolls_back_and_the_connection_writes_again(tmp_path):
    store = Store(tmp_path / "rnnscope.sqlite3")
    run_id = store.add_run("before", 1, {}, 10, 10)
    with store.write() as db:
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        with store.write() as db:
            store.update_run(run_id, db, name="lost")
            db.execute("INSERT INTO child VALUES (42)")         # checked only at COMMIT, which fails
    assert store.get_run(run_id)["name"] == "before"
    store.update_run(run_id, name="after")                      # the same thread, the same connection
    assert store.get_run(run_id)["name"] == "after"
    store.close()


class CommitFails:
    """A connection whose COMMIT fails as on a full disk; everything else is the real one's."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            e = sqlite3.OperationalError("database or disk is full")
            e.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise e
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_an_upload_whose_commit_fails_leaves_neither_row_nor_file(client, monkeypatch):
    store = client.app.state.training.store
    real = store._conn
    monkeypatch.setattr(store, "_conn", lambda: CommitFails(real()))
    r = upload(client, excerpt(2000))
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
    monkeypatch.setattr(store, "_conn", real)
    assert client.get("/api/corpora").json() == []
    assert list((client.app.state.settings.data_dir / "corpora").iterdir()) == []
    assert upload(client, excerpt(2000)).status_code == 201          # the same connection writes again


def unusable_data_dirs(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    database_is_a_dir = tmp_path / "db-is-a-dir"
    (database_is_a_dir / "rnnscope.sqlite3").mkdir(parents=True)
    return [blocker / "data", Path("/proc/rnnscope-data"), database_is_a_dir]


def test_an_unusable_data_dir_ends_start_up_with_one_line_naming_it(tmp_path):
    from rnnscope.app.training.service import DataDirError

    for data_dir in unusable_data_dirs(tmp_path):
        with pytest.raises(DataDirError) as e:
            with TestClient(build_app(data_dir)):
                pass
        message = str(e.value)
        assert "\n" not in message and str(data_dir) in message and "RNNSCOPE_DATA_DIR" in message, message


def test_a_read_only_data_dir_ends_start_up_with_one_line_naming_it(tmp_path):
    from rnnscope.app.training.service import DataDirError

    data_dir = tmp_path / "data"
    with TestClient(build_app(data_dir)):             # a data dir in use before
        pass
    mount("--bind", str(data_dir), str(data_dir))
    try:
        mount("-o", "remount,bind,ro", str(data_dir))
        with pytest.raises(DataDirError) as e:
            with TestClient(build_app(data_dir)):
                pass
        assert "\n" not in str(e.value) and str(data_dir) in str(e.value) and "Read-only" in str(e.value)
    finally:
        subprocess.run(["umount", "-l", str(data_dir)], check=True)


# ---- A real full disk: a small tmpfs ------------------------------------------------------------------------

def mount(*args: str) -> None:
    """`mount args...`, or skip where this machine cannot (fail where RNNSCOPE_REQUIRE_TMPFS=1, as in CI)."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("RNNSCOPE_REQUIRE_TMPFS") == "1":
            pytest.fail(f"RNNSCOPE_REQUIRE_TMPFS=1 but `mount {' '.join(args)}` failed: {done.stderr.strip()}")
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path, leave: int, name: str = "filler") -> Path:
    """Take all but `leave` bytes of the file system `path` is on."""
    filler = path / name
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, shutil.disk_usage(path).free - leave))
    return filler


def test_a_real_full_disk_interrupts_the_run_and_the_server_recovers(tmp_path):
    """The issue's experiment: the data dir on a small tmpfs, filled while a run trains."""
    with tmpfs(tmp_path / "data", "16m") as data_dir, \
            TestClient(build_app(data_dir, **FAST | {"checkpoint_every_steps": 100}, min_free_bytes=0,
                                 run_snapshots=0), headers=OWNER) as client:   # the checkpoints alone fill it
        corpus = upload(client, excerpt(20_000)).json()
        model = TINY | {"hidden_size": 128}              # a checkpoint of ~2 MB
        first = start(client, corpus, **model, max_steps=500)
        queued = start(client, corpus, **model, max_steps=500)
        wait_for(client, first, ("running",), checkpoint_step=lambda s: s is not None)
        filler = fill(data_dir, leave=1_500_000)         # room for the database's writes, not a checkpoint
        run = wait_for(client, first, ("interrupted",), timeout=30)
        assert "No space left on device" in run["error"] and "resume" in run["error"], run
        _, state = load_train_state(data_dir / "runs" / f"{first}.state.safetensors")
        assert state.step == run["checkpoint_step"] < run["step"]

        more = fill(data_dir, leave=0, name="filler-2")   # not a byte left
        r = upload(client, excerpt(50_000))
        # Refused writing the file, or before, if the worker's last writes gave up the reserve.
        assert r.status_code == 507 and ("No space left on device" in r.json()["detail"]
                                         or "disk is full" in r.json()["detail"]), r.text
        # Cancel and delete still work: the store gives up the room it kept for its own writes.
        assert client.post(f"/api/runs/{queued}/cancel").status_code == 200     # queued, or training by now
        wait_for(client, queued, ("cancelled", "interrupted"))
        assert client.delete(f"/api/runs/{queued}").status_code == 204
        r = upload(client, excerpt(50_000))
        assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
        assert [c["id"] for c in client.get("/api/corpora").json()] == [corpus["id"]]
        assert not list(data_dir.glob("*/*.tmp")) and not list(data_dir.glob("*/.*.tmp"))

        filler.unlink()
        more.unlink()
        assert client.post(f"/api/runs/{first}/resume").status_code == 200
        run = wait_for(client, first, timeout=120)
        assert [(a["from_step"], a["outcome"]) for a in run["attempts"]] == \
            [(0, "interrupted"), (state.step, "completed")]
        assert_continuous(client, first, 500)
        assert client.get(f"/api/models/run-{first}").status_code == 200
        assert upload(client, excerpt(50_000)).status_code == 201


# ---- A kill mid-write: start-up cleans up ----------------------------------------------------------------------

def test_start_up_removes_what_a_killed_process_left(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        kept = upload(client, excerpt(2000)).json()
        lost = upload(client, excerpt(3000)).json()
        run_id = start(client, kept, max_steps=20)
        wait_for(client, run_id)
    strays = [tmp_path / "models" / ".run-1.safetensors.abc.tmp", tmp_path / "runs" / ".x.tmp",
              tmp_path / "corpora" / ".upload-1.tmp", tmp_path / "corpora" / "99.txt"]
    for stray in strays:
        stray.write_bytes(b"half written")
    (tmp_path / "corpora" / f"{lost['sha256']}.txt").unlink()       # a row without its file
    (tmp_path / "corpora" / "notes.txt").write_text("someone's own file")
    (tmp_path / "runs" / "a-directory.tmp").mkdir()                   # not ours: kept, and no crash
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        assert not any(p.exists() for p in strays)
        assert [c["id"] for c in client.get("/api/corpora").json()] == [kept["id"]]
        assert (tmp_path / "corpora" / f"{kept['sha256']}.txt").exists()
        assert (tmp_path / "corpora" / "notes.txt").exists()
        assert (tmp_path / "models" / f"run-{run_id}.safetensors").exists()
        assert (tmp_path / "runs" / f"{run_id}.state.safetensors").exists()
        assert (tmp_path / "runs" / "a-directory.tmp").is_dir()
        assert client.get(f"/api/models/run-{run_id}").status_code == 200


def test_a_corpus_whose_file_cannot_be_placed_leaves_no_row(client):
    sha = hashlib.sha256(excerpt(2000).encode()).hexdigest()
    blocked = client.app.state.settings.data_dir / "corpora" / f"{sha}.txt"
    blocked.mkdir()                                      # os.replace onto a directory fails
    r = upload(client, excerpt(2000))
    assert r.status_code == 507, r.text
    assert client.get("/api/corpora").json() == []
    assert not list(blocked.parent.glob(".*"))
    blocked.rmdir()
    assert upload(client, excerpt(2000)).status_code == 201
