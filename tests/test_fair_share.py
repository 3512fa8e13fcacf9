"""Issue 18 item 7, one student must not crowd out thirty: the queue's compute bounded per
owner and in all (steps x the measured cost of a step), owners taking turns in the queue,
listings that show yours by default and everyone's a page at a time, identical texts
stored once, and a corpus deletable by its owner while anyone's runs train on it. Each
test failed before the change that fixed its defect, but the quota one, which guards that
storing a text once gives nobody a free quota."""
from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference.registry import make_entry
from rnnscope.app.settings import Settings
from rnnscope.model.bundled import bundled_paths
from tests.training_app import ENDLESS, FAST, OWNER, TINY, build_app, excerpt, upload, wait_for

A, B, C = OWNER, {"X-Rnnscope-Owner": "student-b"}, {"X-Rnnscope-Owner": "student-c"}
TOKEN = "t0ken"
ADMIN = {"X-Rnnscope-Owner": "the-teacher", "Authorization": f"Bearer {TOKEN}"}
STEP_SECONDS = 0.01             # what a step "measures" here: the queue's figures follow from it


def detail(r) -> str:
    d = r.json()["detail"]
    return d if isinstance(d, str) else " ".join(e["msg"] for e in d)


@pytest.fixture
def fixed_step_time(monkeypatch):
    """Every step shape times at STEP_SECONDS, so the queue's totals are exact."""
    monkeypatch.setattr("rnnscope.app.training.service.seconds_per_step", lambda *a, **k: STEP_SECONDS)


def queue_app(tmp_path, **settings):
    """An app whose worker is stopped once started, so runs stay queued for as long as a test looks."""
    return build_app(tmp_path, **FAST, **({"max_queued_runs": 100, "max_queued_runs_per_owner": 100} | settings))


def held_queue(client) -> None:
    client.app.state.training.trainer.stop()


def queue(client, corpus, headers, steps):
    return client.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, "max_steps": steps}, headers=headers)


# ---- the queue's compute ---------------------------------------------------------------------------

def test_the_issues_hours_of_runs_are_refused_with_the_defaults(tmp_path, fixed_step_time):
    """21 runs of 10M steps were queued (the first's ETA 6.6 h). With the default settings a
    run alone over the per-owner bound is a 422 that says how many steps fit."""
    defaults = Settings()
    with TestClient(queue_app(tmp_path, max_queued_seconds=defaults.max_queued_seconds,
                              max_queued_seconds_per_owner=defaults.max_queued_seconds_per_owner),
                    headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        assert queue(client, corpus, A, 10_000_000).status_code == 422     # (its history alone passes the memory budget)
        r = queue(client, corpus, A, 1_000_000)                              # 2.8 h at STEP_SECONDS
        assert r.status_code == 422, r.text
        limit = defaults.max_queued_seconds_per_owner
        assert "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER" in detail(r)
        assert f"at most {int(limit / STEP_SECONDS):,} steps fit" in detail(r)
        assert r.json()["detail"][0]["loc"] == ["body", "max_steps"]
        assert queue(client, corpus, A, int(limit / STEP_SECONDS)).status_code == 201


def test_queued_compute_is_bounded_per_owner_and_others_still_queue(tmp_path, fixed_step_time):
    with TestClient(queue_app(tmp_path, max_queued_seconds_per_owner=10), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        assert queue(client, corpus, A, 500).status_code == 201          # 5 s
        assert queue(client, corpus, A, 500).status_code == 201          # 10 s: at the limit
        r = queue(client, corpus, A, 1)
        assert r.status_code == 429 and r.headers["Retry-After"]
        assert "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER" in detail(r) and "have 10 s" in detail(r), detail(r)
        # Someone else's queue is their own.
        assert queue(client, corpus, B, 1000).status_code == 201
        cap = client.get("/api/training").json()
        assert cap["queued_seconds"] == pytest.approx(20) and cap["your_queued_seconds"] == pytest.approx(10)
        runs = client.get("/api/runs").json()
        assert [r["queued_seconds"] for r in runs] == [pytest.approx(5), pytest.approx(5)]


def test_many_owner_keys_meet_the_servers_bound(tmp_path, fixed_step_time):
    """Owner keys are free: a script with a new key per run meets the server-wide bound."""
    with TestClient(queue_app(tmp_path, max_queued_seconds=12, max_queued_seconds_per_owner=10),
                    headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        codes = [queue(client, corpus, {"X-Rnnscope-Owner": f"key-{k}"}, 500).status_code for k in range(5)]
        assert codes == [201, 201, 429, 429, 429]
        r = queue(client, corpus, {"X-Rnnscope-Owner": "key-9"}, 500)
        assert "(setting RNNSCOPE_MAX_QUEUED_SECONDS)" in detail(r) and "have 10 s" in detail(r), detail(r)


def test_a_burst_cannot_pass_the_compute_bound_together(tmp_path, fixed_step_time):
    """The total is checked and the run added in one transaction."""
    with TestClient(queue_app(tmp_path, max_queued_seconds_per_owner=30), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        assert queue(client, corpus, A, 10).status_code == 201       # the shape is timed (cached) first
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: queue(client, corpus, A, 490).status_code, range(24)))
        assert codes.count(201) == 6 and codes.count(429) == 18          # 0.1 + 6 x 4.9 + 4.9 > 30
        assert client.get("/api/training").json()["your_queued_seconds"] == pytest.approx(29.5)


def test_a_burst_cannot_pass_the_model_quota_together(tmp_path, fixed_step_time):
    """The owner's quota of model bytes holds for runs started at once: their checkpoints are
    checked and their rows added one run at a time, so exactly the runs that fit are queued."""
    from rnnscope.app.training.schemas import RunConfig

    with TestClient(queue_app(tmp_path), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        training = client.app.state.training
        disk = training.run_budget(RunConfig.model_validate({"corpus_id": corpus["id"], **TINY, "max_steps": 10}),
                                   training.store.get_corpus(corpus["id"]))[1]
        training.settings = training.settings.model_copy(update={"max_model_bytes_per_owner": 3 * disk + disk // 2})
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: queue(client, corpus, A, 10).status_code, range(16)))
        assert codes.count(201) == 3 and codes.count(413) == 13, codes


def test_resuming_counts_against_the_bound(tmp_path, fixed_step_time):
    with TestClient(queue_app(tmp_path, max_queued_seconds_per_owner=10), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        first = queue(client, corpus, A, 500).json()["id"]
        second = queue(client, corpus, A, 500).json()["id"]
        assert client.post(f"/api/runs/{second}/cancel").status_code == 200
        assert queue(client, corpus, A, 500).status_code == 201
        r = client.post(f"/api/runs/{second}/resume")
        assert r.status_code == 429 and "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER" in detail(r)
        assert client.post(f"/api/runs/{first}/cancel").status_code == 200
        assert client.post(f"/api/runs/{second}/resume").status_code == 200


def test_owners_take_turns_in_the_queue(tmp_path, fixed_step_time):
    """One person's three runs no longer keep another's first run waiting behind them all."""
    with TestClient(queue_app(tmp_path), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        a1, a2, a3 = (queue(client, corpus, A, 10).json()["id"] for _ in range(3))
        b1 = queue(client, corpus, B, 10).json()["id"]
        ahead = {r["id"]: r["ahead"] for r in client.get("/api/runs?owner=all").json()}
        assert ahead == {a1: 0, b1: 1, a2: 2, a3: 3}
        assert client.app.state.training.store.next_queued() == a1


# ---- listings -------------------------------------------------------------------------------------

def fake_models(client, owner_key: str, n: int, first_id: int) -> None:
    """n models of an owner in the registry, as n finished runs would publish them."""
    from rnnscope.app.web.security import owner_id

    registry = client.app.state.registry
    template = make_entry("template", bundled_paths()["gru"], bundled=False, cache=registry.cache)
    for k in range(first_id, first_id + n):
        registry.put(dataclasses.replace(template, id=f"run-{k}", name=f"run {k}", owner=owner_id(owner_key)))


def test_models_list_yours_by_default_and_everyones_a_page_at_a_time(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bundled_paths()["lstm"], models / "placed.safetensors")      # the operator's: shared
    with TestClient(build_app(tmp_path, **FAST), headers=A) as client:
        fake_models(client, B["X-Rnnscope-Owner"], 3004, first_id=1)         # the issue's 3,004 models
        fake_models(client, A["X-Rnnscope-Owner"], 2, first_id=5000)
        mine = client.get("/api/models")
        assert [m["id"] for m in mine.json()] == ["placed", "run-5001", "run-5000"]
        assert [m["yours"] for m in mine.json()] == [False, True, True] and mine.json()[0]["shared"]
        assert mine.headers["X-Total-Count"] == "2" and len(mine.content) < 2000
        theirs = client.get("/api/models", headers=B)
        assert theirs.headers["X-Total-Count"] == "3004" and len(theirs.json()) == 1 + 100
        everyone = client.get("/api/models?owner=all&limit=500&offset=3002")
        assert everyone.headers["X-Total-Count"] == "3006"
        assert [m["id"] for m in everyone.json()] == ["placed", "run-4", "run-3", "run-2", "run-1"]
        assert client.get("/api/models?limit=501").status_code == 422
        assert client.get("/api/models?owner=them").status_code == 422
        # Nor does a 404 list them all.
        r = client.get("/api/models/nope")
        assert r.status_code == 404 and "2,987 more" in detail(r) and len(r.content) < 1000
        # Anyone may still read anyone's model by its id.
        assert client.get("/api/models/run-1").json()["yours"] is False


def test_a_trained_model_is_its_owners(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=A) as client:
        corpus = upload(client, excerpt(5000)).json()
        run = queue(client, corpus, B, 2).json()
        model_id = wait_for(client, run["id"], ("completed",))["model_id"]
        assert model_id not in [m["id"] for m in client.get("/api/models").json()]
        assert [m["id"] for m in client.get("/api/models", headers=B).json()] == [model_id]
        assert model_id in [m["id"] for m in client.get("/api/models?owner=all").json()]
    # After a restart too: the registry reads the file, the store says whose it is.
    with TestClient(build_app(tmp_path, **FAST), headers=A) as client:
        assert client.get("/api/models").json() == []
        assert [m["id"] for m in client.get("/api/models", headers=B).json()] == [model_id]


def test_runs_and_corpora_list_yours_by_default(tmp_path, fixed_step_time):
    with TestClient(queue_app(tmp_path, token=TOKEN), headers=A) as client:
        held_queue(client)
        mine = upload(client, excerpt(5000)).json()
        theirs = upload(client, excerpt(6000), headers=B).json()
        ids = [queue(client, theirs, B, 10).json()["id"] for _ in range(3)]
        own = queue(client, mine, A, 10).json()["id"]
        assert [r["id"] for r in client.get("/api/runs").json()] == [own]
        assert [c["id"] for c in client.get("/api/corpora").json()] == [mine["id"]]
        r = client.get("/api/runs?owner=all&limit=2&offset=1")
        assert r.headers["X-Total-Count"] == "4" and [x["id"] for x in r.json()] == ids[::-1][:2]
        assert [c["id"] for c in client.get("/api/corpora?owner=all").json()] == [theirs["id"], mine["id"]]
        assert client.get("/api/runs?limit=0").status_code == 422
        # The admin sees everyone's, and may cancel them; another student may not.
        everyone = client.get("/api/runs?owner=all", headers=ADMIN).json()
        assert all(r["yours"] for r in everyone) and len(everyone) == 4
        assert client.post(f"/api/runs/{ids[0]}/cancel").status_code == 403
        assert client.post(f"/api/runs/{ids[0]}/cancel", headers=ADMIN).json()["status"] == "cancelled"


# ---- texts stored once ----------------------------------------------------------------------------

def test_thirty_uploads_of_one_text_are_stored_once(tmp_path):
    text = excerpt(20_000)
    size = len(text.encode())
    # Room for the text once and a half: before, the second upload was refused (507).
    with TestClient(build_app(tmp_path, max_corpus_bytes_total=size * 3 // 2), headers=A) as client:
        entries = []
        for k in range(30):
            r = upload(client, text, headers={"X-Rnnscope-Owner": f"student-{k}"})
            assert r.status_code == 201, r.text
            entries.append(r.json())
        assert len({c["id"] for c in entries}) == 30 and len({c["sha256"] for c in entries}) == 1
        files = list((tmp_path / "corpora").iterdir())
        assert [f.name for f in files] == [f"{entries[0]['sha256']}.txt"] and files[0].stat().st_size == size
        # Each sees and owns their own entry.
        for k in (0, 29):
            listed = client.get("/api/corpora", headers={"X-Rnnscope-Owner": f"student-{k}"}).json()
            assert [(c["id"], c["yours"]) for c in listed] == [(entries[k]["id"], True)]
        # A different text still meets the server's bound.
        r = upload(client, excerpt(21_000)[1000:])
        assert r.status_code == 507 and "RNNSCOPE_MAX_CORPUS_BYTES_TOTAL" in detail(r)
        # The text stays while any entry holds it.
        for k, c in enumerate(entries):
            assert client.delete(f"/api/corpora/{c['id']}",
                                 headers={"X-Rnnscope-Owner": f"student-{k}"}).status_code == 204
            assert files[0].exists() == (k < 29)


def test_the_owners_quota_counts_their_own_entries(tmp_path):
    """A text someone else stored still counts whole against your own quota."""
    text = excerpt(5000)
    with TestClient(build_app(tmp_path, max_corpus_bytes_per_owner=len(text.encode()) + 100), headers=A) as client:
        assert upload(client, text, headers=B).status_code == 201
        assert upload(client, text).status_code == 201           # A's entry: stored once, but A's
        r = upload(client, excerpt(6000)[1000:])
        assert r.status_code == 413 and "RNNSCOPE_MAX_CORPUS_BYTES_PER_OWNER" in detail(r)


# ---- a corpus in use by someone else's run ----------------------------------------------------------

def test_the_owner_deletes_a_corpus_others_train_on_and_their_runs_go_on(tmp_path):
    """Before: A's delete answered 409 while B's runs were queued or training on it, and A
    could not cancel them. Now A's entry goes at once; B's runs keep the text until they end."""
    with TestClient(build_app(tmp_path, **FAST, max_parallel_runs=1), headers=A) as client:
        corpus = upload(client, excerpt(5000)).json()
        blob = tmp_path / "corpora" / f"{corpus['sha256']}.txt"
        running = queue(client, corpus, B, ENDLESS).json()["id"]
        waiting = queue(client, corpus, B, 3).json()["id"]
        wait_for(client, running, ("running",))
        assert client.post(f"/api/runs/{running}/cancel").status_code == 403     # still B's to cancel
        assert client.delete(f"/api/corpora/{corpus['id']}").status_code == 204
        assert client.get(f"/api/corpora/{corpus['id']}").status_code == 404 and blob.exists()
        assert queue(client, corpus, B, 3).status_code == 404                     # no new runs on it
        assert client.post(f"/api/runs/{running}/cancel", headers=B).status_code == 200
        done = wait_for(client, waiting, ("completed", "failed"))
        assert done["status"] == "completed" and done["step"] == 3, done
        # Once no run holds it, the text goes (at the next upload, delete or start-up).
        upload(client, excerpt(3000))
        assert not blob.exists()


def test_texts_kept_by_corpus_id_move_to_their_sha256(tmp_path, fixed_step_time):
    """A data directory from before keeps corpora/<id>.txt; start-up moves each to its sha256
    and a run started before the upgrade still finds its text."""
    with TestClient(queue_app(tmp_path), headers=A) as client:
        held_queue(client)
        corpus = upload(client, excerpt(5000)).json()
        run_id = queue(client, corpus, A, 2).json()["id"]
    blob = tmp_path / "corpora" / f"{corpus['sha256']}.txt"
    blob.rename(tmp_path / "corpora" / f"{corpus['id']}.txt")
    (tmp_path / "corpora" / "99.txt").write_text("no row has it")
    with sqlite3.connect(tmp_path / "rnnscope.sqlite3") as db:     # as the old schema left it
        db.execute("UPDATE runs SET corpus_sha256 = NULL")
    with TestClient(build_app(tmp_path, **FAST), headers=A) as client:
        assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == [blob.name]
        assert client.get(f"/api/corpora/{corpus['id']}").status_code == 200
        assert wait_for(client, run_id, ("completed", "failed"))["status"] == "completed"
