"""Issue 8, item 8: every finished run's model stayed in memory. The registry keeps at most
RNNSCOPE_MAX_LOADED_MODELS trained models loaded, least recently used unloaded first, and
reads one back from its file when it is asked for again."""
from __future__ import annotations

import shutil

import numpy as np
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
