"""POST /api/models/{id}/errors and the /errors page, on the test models (trained on the
first 30,000 characters of tinyshakespeare, which the server finds among its corpus paths)."""
from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.baselines import service
from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.model.data import split
from rnnscope.model.checkpoint import save_model
from rnnscope.model.network import ModelConfig
from rnnscope.model.train import TrainConfig, train
from tests.conftest import TEST_HOSTS, serving, watched_page
from tests.test_ngram import planted

BRACKETS = "(abcdefg)\n[hgfedcb]\n(dcbahgf)\n"


@pytest.fixture(scope="module")
def errors_settings(tmp_path_factory, data_dir, corpus):
    """The test models with their corpus on the server, and "brackets", a small LSTM trained
    briefly on openers and closers 8 apart (tests/test_ngram.py's planted corpus)."""
    root = tmp_path_factory.mktemp("errors")
    shutil.copytree(data_dir / "models", root / "models")
    (root / "tinyshakespeare.txt").write_text(corpus, encoding="utf-8")
    brackets = planted(1000, 0)
    (root / "brackets.txt").write_text(brackets, encoding="utf-8")
    result = train(brackets, ModelConfig("lstm", 1, 16, 1), TrainConfig(batch_size=8, seq_length=20, max_steps=30,
                                                                         eval_every=30), corpus_name="brackets.txt")
    save_model(result.model, root / "models" / "brackets.safetensors")
    return Settings(data_dir=root, load_bundled=False, allowed_hosts=TEST_HOSTS, max_errors_chars=2_000,
                    corpus_paths=(root / "tinyshakespeare.txt", root / "brackets.txt"))


@pytest.fixture
def api(errors_settings):
    with TestClient(create_app(errors_settings)) as c:
        yield c


def decode(encoded) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded["data"]), "<f2").astype(np.float64)


def test_the_validation_text_against_every_order(api, models, corpus):
    r = api.post("/api/models/lstm/errors", json={})
    assert r.status_code == 200, r.text
    data = r.json()
    _, validation = split(corpus, 0.1)
    assert data["source"] == "validation" and data["text"] == validation[:2_000]
    assert data["train_chars"] == len(corpus) - len(validation) and data["corpus"] == "tinyshakespeare.txt"
    assert len(data["ngram_means"]) == 20 and data["best_order"] == 1 + int(np.argmin(data["ngram_means"]))
    _, losses, _ = models["lstm"].run(data["text"])
    np.testing.assert_allclose(decode(data["model_loss"]), losses, rtol=2e-3, atol=2e-3)
    assert data["model_mean"] == pytest.approx(float(losses.mean()), rel=1e-5)
    b = data["breakdown"]
    assert b["characters"] == len(data["text"]) - 1
    assert sum(c["count"] for c in b["categories"]) == b["errors"] == int((losses > np.log(2)).sum())
    assert [c["name"] for c in b["categories"]] == ["n-gram", "dynamic memory", "rare words", "word starts",
                                                    "punctuation", "the rest"]


def test_a_text_of_ones_own_with_brackets(api):
    r = api.post("/api/models/brackets/errors", json={"text": BRACKETS, "max_order": 12})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["source"] == "request" and len(data["ngram_means"]) == 12
    (bin_,) = [b for b in data["long_range"] if b["count"]]
    assert (bin_["low"], bin_["count"]) == (6, 3)            # three closers, 8 back, in the 6-10 bin
    assert data["far_closers"] == 0.0
    r = api.post("/api/models/gru/errors", json={"text": "x{y}"})
    assert r.status_code == 422 and "drop_unknown" in r.text


@pytest.mark.parametrize("body,status,words", [
    ({"max_order": 0}, 422, "max_order"), ({"max_order": 21}, 422, "max_order"),
    ({"text": "a" * 2_001}, 422, "max_errors_chars"), ({"text": "a"}, 422, "text"),
])
def test_bad_requests_say_what_to_change(api, body, status, words):
    r = api.post("/api/models/lstm/errors", json=body)
    assert r.status_code == status and words in r.text.lower(), r.text


def test_a_model_whose_corpus_is_not_here(errors_settings, tmp_path):
    settings = errors_settings.model_copy(update={"corpus_paths": ()})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/models/lstm/errors", json={})
    assert r.status_code == 422 and "corpus is not on this server" in r.text


def test_counts_are_kept_in_memory_and_the_validation_text_on_disk(errors_settings, monkeypatch):
    calls = []
    real = service.kneser_ney_losses
    monkeypatch.setattr(service, "kneser_ney_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    text = {"text": "To be, or not to be: that is the question."}
    cache = errors_settings.data_dir / "cache" / "ngram"
    shutil.rmtree(cache, ignore_errors=True)
    with TestClient(create_app(errors_settings)) as c:
        first = c.post("/api/models/rnn/errors", json=text).json()
        assert c.post("/api/models/rnn/errors", json=text).json() == first
        assert len(calls) == 1
        default = c.post("/api/models/rnn/errors", json={}).json()
    assert len(calls) == 2
    # One file: the validation text's. People's own texts stay in memory, or the disk would
    # hold one file per text anyone ever sent.
    assert len(list(cache.glob("*.npz"))) == 1
    with TestClient(create_app(errors_settings)) as c:            # a restart reads the disk
        assert c.post("/api/models/rnn/errors", json={}).json() == default
    assert len(calls) == 2


def test_an_analysis_over_the_memory_budget_is_refused(errors_settings):
    settings = errors_settings.model_copy(update={"memory_budget": 50_000_000})
    with TestClient(create_app(settings)) as c:
        small = c.post("/api/models/lstm/errors", json={"text": "To be, or not."})
    assert small.status_code == 200
    tiny = errors_settings.model_copy(update={"memory_budget": 100_000})
    with TestClient(create_app(tiny)) as c:
        r = c.post("/api/models/lstm/errors", json={})
    assert r.status_code == 413 and "RNNSCOPE_MEMORY_BUDGET" in r.json()["detail"]


def test_the_page_draws_all_four_views(browser, errors_settings):
    with serving(create_app(errors_settings)) as url, watched_page(browser, 60_000) as (page, problems):
        page.goto(f"{url}/errors?model=lstm")
        page.wait_for_selector("#breakdown .main-svg")
        assert page.locator("#orders .bars .point").count() == 20          # one bar per order
        verdict = page.locator("#verdict").inner_text()
        assert "below the best n-gram" in verdict or "beats" in verdict
        assert page.locator("#chars .ch").count() == 2_000
        assert page.locator("#categories tbody tr").count() == 6
        # Shakespeare's validation start: no brackets with both ends, so an empty state, not an empty chart.
        assert "No closing bracket" in page.locator("#range-status").inner_text()
        page.select_option("#source", "mine")
        page.select_option("#model", "brackets")
        page.fill("#text", BRACKETS)
        page.click("#analyse")
        page.wait_for_selector("#range .main-svg")
        assert page.locator("#chars .ch").count() == len(BRACKETS)
        assert "model=brackets" in page.url
    assert not problems, problems
