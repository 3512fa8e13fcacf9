"""Issue 8: beyond capacity the answer is 503 with Retry-After, declared in /openapi.json on
every operation that waits for a compute slot, and a stream refuses before its first event."""
from __future__ import annotations

import contextlib

from fastapi.testclient import TestClient

from tests.training_app import build_app


def test_every_operation_that_waits_for_a_slot_declares_503(client):
    doc = client.get("/openapi.json").json()
    busy = {(p, m) for p, item in doc["paths"].items() for m, op in item.items() if "503" in op["responses"]}
    for path in ("trace", "gradients", "gates", "sample", "sample/stream", "probe", "intervene", "horizon"):
        assert (f"/api/models/{{model_id}}/{path}", "post") in busy, path
    assert ("/api/corpora/{corpus_id}/estimate", "get") in busy and ("/api/corpora", "post") in busy
    assert not {("/healthz", "get"), ("/api/models", "get"), ("/api/runs", "get")} & busy
    header = doc["paths"]["/api/models/{model_id}/trace"]["post"]["responses"]["503"]["headers"]
    assert "Retry-After" in header


def test_a_stream_without_room_is_refused_before_it_starts(data_dir):
    app = build_app(data_dir, max_concurrent_jobs=1, max_waiting_jobs=0)
    with TestClient(app) as client, contextlib.ExitStack() as held:
        held.enter_context(app.state.compute_slots.slot())         # the one slot, taken
        body = {"prime": "First", "length": 40, "seed": 1}
        r = client.post("/api/models/lstm/sample/stream", json=body)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "RNNSCOPE_MAX_WAITING_JOBS" in r.json()["detail"]
        r = client.post("/api/models/lstm/sample", json=body)
        assert r.status_code == 503 and "retry-after" in r.headers
        held.close()
        r = client.post("/api/models/lstm/sample/stream", json=body)
        assert r.status_code == 200 and "event: done" in r.text


def test_a_405_names_every_method_the_path_serves(client):
    """schemathesis (--checks all) found `OPTIONS /api/corpora` answering `Allow: POST` while
    GET serves the path too: Starlette names only the first route's methods."""
    for path, expected in [("/api/corpora", {"GET", "POST"}), ("/api/runs", {"GET", "POST"}),
                           ("/api/corpora/1", {"GET", "DELETE"})]:
        r = client.request("PUT", path)
        assert r.status_code == 405, path
        assert set(r.headers["allow"].split(", ")) >= expected, (path, r.headers["allow"])


def test_event_streams_are_bounded(tmp_path):
    """Helper's attack: 150 watchers of one run slowed /healthz to 0.42 s. Beyond
    RNNSCOPE_MAX_EVENT_STREAMS a stream is refused with 503 and Retry-After."""
    from tests.training_app import OWNER, excerpt, upload

    with TestClient(build_app(tmp_path, max_event_streams=1, events_max_seconds=0.3), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run = client.post("/api/runs", json={"corpus_id": corpus["id"], "cell": "lstm", "hidden_size": 8,
                                             "num_layers": 1, "batch_size": 2, "seq_length": 8,
                                             "max_steps": 10}).json()
        training = client.app.state.training
        assert training.event_streams.try_acquire()   # one stream open already
        r = client.get(f"/api/runs/{run['id']}/events")
        assert r.status_code == 503 and r.headers["retry-after"] and "RNNSCOPE_MAX_EVENT_STREAMS" in r.text
        training.event_streams.release()
        r = client.get(f"/api/runs/{run['id']}/events")
        assert r.status_code == 200 and training.event_streams.held == 0     # counted while open, and released


def test_all_corpora_together_are_bounded(tmp_path):
    """Owner keys are free, so the per-owner quota alone does not bound the disk."""
    from tests.training_app import excerpt, upload

    with TestClient(build_app(tmp_path, max_corpus_bytes_total=5000)) as client:
        assert upload(client, excerpt(3000), headers={"X-Rnnscope-Owner": "a"}).status_code == 201
        r = upload(client, excerpt(3001), headers={"X-Rnnscope-Owner": "b"})
        assert r.status_code == 507 and "RNNSCOPE_MAX_CORPUS_BYTES_TOTAL" in r.json()["detail"]
