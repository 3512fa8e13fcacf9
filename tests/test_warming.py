"""The views' caches prepared ahead of requests (app/inference/warming.py): after start-up the
first state-space view of a model fits nothing; a new model (a run that ended, an import) is
prepared too; the warmer takes a compute slot only while the gate is idle and gives it up to a
request that waits; and it stops with the app, leaving no thread behind."""
from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference.compute_gate import ComputeGate, GaveWay, Stopped
from rnnscope.app.main import create_app
from rnnscope.app.matching.router import validation_text
from rnnscope.app.states.router import FIRST_VIEW
from tests.test_import import tutorial_model  # noqa: F401  (a fixture)

TEXT = "To be, or not to be: that is the question."
STATES = {"text": TEXT, "layer": 0, "quantity": "h", "colour_by": "char_class", "components": 2}
WAIT = 60.0          # a bound on waits for a thread, never a measure of speed


def until(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def warmer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rnnscope-warmer"]


def start_idle_work(gate: ComputeGate, nbytes: int) -> tuple[threading.Thread, threading.Event, threading.Event, list]:
    """Work done while the gate is idle, holding nbytes, in a thread: it sets `entered` once it
    holds its slot, waits for `go`, then pauses; `result` says if it gave its bytes away."""
    entered, go, result = threading.Event(), threading.Event(), []

    def warm():
        try:
            with gate.when_idle(nbytes, "warming", threading.Event()) as pause:
                entered.set()
                go.wait(WAIT)
                pause()
        except GaveWay:
            result.append("gave way")

    thread = threading.Thread(target=warm)
    thread.start()
    return thread, entered, go, result


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory, corpus):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


def fitted_key(app, model_id: str):
    """The state cache's key for the page's first view of `model_id`, and the text fitted."""
    from rnnscope.app.inference.deps import get_corpus_library
    from rnnscope.app.states.router import fit_text, get_fit_readings

    state = app.state
    entry = state.registry.get(model_id)
    text = fit_text(entry, get_corpus_library.on(state), state.settings, None)[0]
    return get_fit_readings.on(state), entry, text


def test_after_start_up_the_first_state_space_view_fits_nothing(settings, corpus_path):
    """The test models are served in file order (gru, lstm, rnn); the state cache keeps two
    readings, so the first two are fitted, and the third is not."""
    warm = create_app(settings.model_copy(update={"corpus_paths": (corpus_path,), "warm_on_start": True}))
    cold = create_app(settings.model_copy(update={"corpus_paths": (corpus_path,), "warm_on_start": False}))
    with TestClient(warm) as client, TestClient(cold) as cold_client:
        assert warm.state.warmer.idle.wait(WAIT)
        assert client.get("/healthz").json()["warming"] is False
        assert not hasattr(cold.state, "warmer")
        fits, entry, text = fitted_key(warm, "lstm")
        assert fits.size == 2 and len(fits) == 2
        layer, quantity, components = FIRST_VIEW
        kept = fits.get(fits._key(entry, layer, text))
        assert kept is not None and (quantity, components) in kept[1]
        assert fits.fit_chars(entry, layer, text) == 0
        _, rnn, rnn_text = fitted_key(warm, "rnn")
        assert fits.fit_chars(rnn, layer, rnn_text) == len(rnn_text)       # the cache holds two
        assert warm.state.compute_slots.background_slots >= 2
        r = client.post("/api/models/lstm/states", json=STATES)
        assert r.status_code == 200, r.text
        assert fits.get(fits._key(entry, layer, text)) is kept and len(fits) == 2   # nothing read again
        # The warmer's reading, paused between pieces, is the one a request would have made.
        assert r.json() == cold_client.post("/api/models/lstm/states", json=STATES).json()
        # A match is read ahead too, for the first model only (match_cache_models = 1).
        readings = warm.state.match_readings
        gru = warm.state.registry.get("gru")
        text, _ = validation_text(gru, warm.state.corpus_library, warm.state.settings)
        assert len(readings) == 1 and readings.kept(gru, text)
    assert not warmer_threads()


def test_the_bundled_models_are_prepared_first(tmp_path):
    """With the bundled models (on short validation stretches, to keep the test quick), the
    first two of them take the state cache's two places, and the first the match cache's one."""
    from tests.conftest import TEST_HOSTS

    from rnnscope.app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, allowed_hosts=TEST_HOSTS, warm_on_start=True,
                              max_state_fit_chars=2_000, max_match_chars=2_000))
    with TestClient(app) as client:
        assert app.state.warmer.idle.wait(WAIT)
        kept = {}
        for model_id in ("lstm", "gru", "rnn", "python"):
            fits, entry, text = fitted_key(app, model_id)
            kept[model_id] = fits.fit_chars(entry, 0, text) == 0
        assert kept == {"lstm": True, "gru": True, "rnn": False, "python": False}
        fits, entry, text = fitted_key(app, "lstm")
        before = fits.get(fits._key(entry, 0, text))
        assert client.post("/api/models/lstm/states", json=STATES).status_code == 200
        assert fits.get(fits._key(entry, 0, text)) is before
        lstm = app.state.registry.get("lstm")
        text, _ = validation_text(lstm, app.state.corpus_library, app.state.settings)
        assert len(app.state.match_readings) == 1 and app.state.match_readings.kept(lstm, text)
    assert not warmer_threads()


def test_a_model_whose_run_ended_is_prepared(tmp_path):
    """A run's model is served at each checkpoint and prepared once its run ends."""
    from tests.training_app import FAST, build_app, new_corpus, start, wait_for

    app = build_app(tmp_path / "data", warm_on_start=True, **FAST)
    with TestClient(app) as client:
        assert app.state.warmer.idle.wait(WAIT)
        run_id = start(client, new_corpus(client), max_steps=40)
        wait_for(client, run_id)

        def prepared() -> bool:            # the run is marked completed just before it is queued
            app.state.warmer.idle.wait(WAIT)
            kept_fits, entry, text = fitted_key(app, f"run-{run_id}")
            return kept_fits.fit_chars(entry, 0, text) == 0

        until(prepared)
        kept_fits, entry, text = fitted_key(app, f"run-{run_id}")
        before = kept_fits.get(kept_fits._key(entry, 0, text))
        assert client.post(f"/api/models/run-{run_id}/states", json=STATES | {"drop_unknown": True}).status_code == 200
        assert kept_fits.get(kept_fits._key(entry, 0, text)) is before
    assert not warmer_threads()


def test_an_imported_model_is_prepared(tmp_path, tutorial_model):  # noqa: F811 - the fixture imported above
    """A PyTorch model imported with its corpus as the vocabulary: its corpus, on the server,
    gives it a validation text to prepare the views on."""
    from tests.test_import import upload
    from tests.training_app import build_app

    _, model_path, corpus = tutorial_model
    app = build_app(tmp_path / "data", warm_on_start=True, corpus_paths=(corpus,))
    with TestClient(app) as client:
        assert app.state.warmer.idle.wait(WAIT)
        prepared = app.state.warmer.prepared
        r = upload(client, model_path, corpus)
        assert r.status_code == 201, r.text
        assert app.state.warmer.idle.wait(WAIT)      # queued before the answer was sent
        fits, entry, text = fitted_key(app, r.json()["model_id"])
        assert fits.fit_chars(entry, 0, text) == 0 and app.state.warmer.prepared > prepared
    assert not warmer_threads()


# ---- the gate: a slot only while idle, given up to a request that waits ----------------------

def test_work_done_while_idle_gives_its_slot_to_a_request_that_waits():
    gate = ComputeGate(1, 4, 30.0, memory_budget=10_000)
    stop = threading.Event()
    entered, go, inside, hold = (threading.Event() for _ in range(4))
    seen = {}

    def warm():
        with gate.when_idle(1_000, "warming", stop) as pause:
            entered.set()
            go.wait(WAIT)
            pause()                               # a request waits: it goes first
            seen["busy_after"] = gate.busy        # the slot is the warmer's again

    def request():
        with gate.expect(0.05):
            seen["busy"], seen["yields"] = gate.busy, gate.background_yields
            inside.set()
            hold.wait(WAIT)

    warmer = threading.Thread(target=warm)
    warmer.start()
    assert entered.wait(WAIT) and gate.background_slots == 1
    asker = threading.Thread(target=request)
    asker.start()
    until(lambda: gate.waiting == 1)               # the request waits for the warmer's slot
    assert gate.waited_behind_background == 1
    go.set()
    assert inside.wait(WAIT)
    assert seen == {"busy": 1, "yields": 1}        # granted the slot the warmer gave up
    assert gate.held_bytes == 1_000                # the warmer's arrays are still counted
    hold.set()
    asker.join(WAIT)
    warmer.join(WAIT)
    assert seen["busy_after"] == 1 and gate.background_slots == 2
    assert gate.busy == 0 and gate.held_bytes == 0


def test_work_done_while_idle_waits_for_the_requests_and_drops_bytes_a_request_needs():
    gate = ComputeGate(2, 4, 30.0, memory_budget=1_000)
    with gate.expect(0.05):                        # a request runs: the gate is not idle
        warmer, started, holding, result = start_idle_work(gate, 600)
        assert gate.background_slots == 0 and gate.held_bytes == 0
        assert not started.is_set()
    assert started.wait(WAIT)                      # idle once the request left
    with gate.job(300, "a small request", 0.05):  # fits beside the warmer: another slot, room left
        assert gate.busy == 2
    needs = threading.Event()

    def big():
        with gate.job(500, "a big request", 0.05):
            needs.set()

    asker = threading.Thread(target=big)
    asker.start()
    until(lambda: gate.waiting == 1)               # 600 + 500 > 1,000: it waits for the warmer's bytes
    holding.set()
    assert needs.wait(WAIT) and result == ["gave way"]
    asker.join(WAIT)
    warmer.join(WAIT)
    assert gate.held_bytes == 0 and gate.busy == 0


def test_work_done_while_idle_gives_its_bytes_to_a_batched_request_waiting_for_them():
    """A batched request holds bytes without a slot (gate.hold): the warmer sees it wait too."""
    gate = ComputeGate(2, 4, 30.0, memory_budget=1_000)
    got = threading.Event()

    def batched():
        with gate.hold(500, "a batched trace"):
            got.set()

    warmer, entered, go, result = start_idle_work(gate, 600)
    assert entered.wait(WAIT)
    asker = threading.Thread(target=batched)
    asker.start()
    until(lambda: gate._wanting_bytes == 1)
    go.set()
    assert got.wait(WAIT) and result == ["gave way"]
    asker.join(WAIT)
    warmer.join(WAIT)
    assert gate.held_bytes == 0 and gate.busy == 0


def test_work_waiting_for_an_idle_gate_stops_when_asked():
    gate = ComputeGate(1, 4, 30.0)
    stop, outcome = threading.Event(), []

    def warm():
        try:
            with gate.when_idle(0, "warming", stop):
                outcome.append("ran")
        except Stopped:
            outcome.append("stopped")

    with gate.expect(0.05):
        warmer = threading.Thread(target=warm)
        warmer.start()
        stop.set()
        gate.wake()
        warmer.join(WAIT)
    assert not warmer.is_alive() and outcome == ["stopped"]
