"""Issue 8, item 8: every finished run's model stayed in memory. The registry keeps at most
RNNSCOPE_MAX_LOADED_MODELS trained models loaded, least recently used unloaded first, and
reads one back from its file when it is asked for again."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.training_app import build_app


def test_trained_models_are_unloaded_least_recently_used_first(data_dir, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for i in range(5):
        shutil.copy(data_dir / "models" / "lstm.safetensors", models / f"m{i}.safetensors")
    with TestClient(build_app(tmp_path, max_loaded_models=2)) as client:
        registry = client.app.state.registry
        cache = registry.cache
        assert len(cache) == 2                              # loading five kept the last two
        loads = cache.loads
        listed = client.get("/api/models").json()
        assert [m["id"] for m in listed] == [f"m{i}" for i in range(5)]
        assert all(m["parameters"] > 0 and m["cell"] == "lstm" for m in listed)
        assert cache.loads == loads                         # listing loads nothing
        text = {"text": "First Citizen:", "layers": [0], "quantities": ["h"], "encoding": "json"}
        answers = {i: client.post(f"/api/models/m{i}/trace", json=text).json() for i in (4, 3)}
        assert cache.loads == loads                         # the two kept ones are served from memory
        answers[0] = client.post("/api/models/m0/trace", json=text).json()
        assert len(cache) == 2 and cache.loads == loads + 1  # m0 read back, m4 (least recent) unloaded
        client.post("/api/models/m3/trace", json=text)
        assert cache.loads == loads + 1
        client.post("/api/models/m4/trace", json=text)
        assert cache.loads == loads + 2
        again = client.post("/api/models/m0/trace", json=text).json()
        assert np.array_equal(again["layers"][0]["quantities"]["h"]["values"], answers[0]["layers"][0]["quantities"]["h"]["values"])
        assert client.get("/api/models/m1").status_code == 200   # detail works on an unloaded model


def test_the_one_lru_keeps_its_size_most_recent():
    from rnnscope.app.inference.lru import LRU

    kept = LRU(2)
    made = []
    for key in ("a", "b", "a", "c"):            # "a" used again, so "b" is the least recent
        kept.get_or_make(key, lambda k=key: made.append(k) or k.upper())
    assert made == ["a", "b", "c"] and kept.get("b") is None and kept.get("a") == "A" and len(kept) == 2
    kept.make_room()
    assert len(kept) == 1
    nothing = LRU(0)
    nothing.put("x", 1)
    assert len(nothing) == 0


def test_a_value_being_made_is_made_once_for_everyone_who_asks():
    """Two requests missing the same key: the second waits for the first's value instead of
    making it again (a state-space fit read twice cost a class server a slot for seconds); if
    the first make fails, a waiter makes it itself; a make that must not be waited for
    (shared=False, the warmer's) neither registers nor waits."""
    import threading

    from rnnscope.app.inference.lru import LRU

    kept = LRU(2)
    started, release, made = threading.Event(), threading.Event(), []

    def slow():
        made.append("slow")
        started.set()
        release.wait(10)
        return "value"

    answers = []
    first = threading.Thread(target=lambda: answers.append(kept.get_or_make("k", slow)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: answers.append(kept.get_or_make("k", lambda: made.append("again") or "other")))
    waiter = threading.Thread(target=lambda: kept.wait_if_making("k"))
    second.start()
    waiter.start()
    second.join(0.2)
    waiter.join(0.2)
    assert second.is_alive() and waiter.is_alive()        # both wait while the first makes it
    release.set()
    for t in (first, second, waiter):
        t.join(10)
    assert answers == ["value", "value"] and made == ["slow"]

    def broken():
        started.set()
        release.wait(10)
        raise RuntimeError("the first make failed")

    started.clear()
    release.clear()
    failed = []
    first = threading.Thread(target=lambda: failed.append(pytest.raises(RuntimeError, kept.get_or_make, "f", broken)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: answers.append(kept.get_or_make("f", lambda: "made by the waiter")))
    second.start()
    second.join(0.2)
    assert second.is_alive()
    release.set()
    for t in (first, second):
        t.join(10)
    assert failed and answers[-1] == "made by the waiter"

    # The warmer's kind of make: nobody waits for it, and it waits for nobody.
    started.clear()
    release.clear()
    warmer = threading.Thread(target=lambda: kept.get_or_make("w", slow, shared=False))
    warmer.start()
    assert started.wait(10)
    kept.wait_if_making("w")                               # returns at once
    assert kept.get_or_make("w", lambda: "a request's") == "a request's"
    release.set()
    warmer.join(10)
